"""What a kubelet, the workload controllers, backup-container and Patroni
would do in HCAP's namespace, for the OpenShift restore tests: everything
else is the real API server behind the stand-in (tests/harness/kubeapi.py).

    cluster = HcapCluster(openshift_real, pg, backup_folder, database="rbo_x").start()
    ...
    cluster.stop()

* A controller thread (the kube controllers and kubelet) keeps the pods of
  the server's DeploymentConfig and of the Patroni StatefulSet equal to their
  ``spec.replicas`` in the real API server: it deletes pods (the StatefulSet's
  highest ordinals first) and creates new ones, Running and Ready, new
  Patroni members as streaming replicas in their ``status`` annotation.
* Exec handlers run REAL commands for the pods: in the backup pod,
  ``sha256sum``, ``gunzip -c`` (streamed) and ``find`` on a folder of this
  test mapped to ``/backups``, and ``./backup.sh -1`` (a real backup of the
  database with ops.backups.local_backup); in the Patroni pods, ``psql``
  against the test PostgreSQL (stdin streamed as it arrives; a connection
  that drops before the end of input kills it, as closing an exec's stdin
  would end psql) and ``patronictl`` (``list -f json``, ``switchover``,
  ``reinit``), whose state lives in the real API server: the leader
  ConfigMap's ``leader`` annotation and each pod's ``status`` annotation.
* ``fail`` makes a command fail: ``cluster.fail["backup.sh"] = "disk full"``
  (keys: ``backup.sh``, ``gunzip``, ``sha256sum``, ``psql``, ``switchover``,
  ``reinit``).  ``execs`` lists (pod, argv) in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.harness.kubeapi import LOG_BACKUP_POD, MERGE, PATRONI_PODS, mark_ready

EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"
SERVER_LABELS = {"app": "hcap-server", "deploymentconfig": "hcap-server"}
PATRONI_LABELS = {"app": "hcap-patroni", "statefulset": "hcap-patroni", "cluster-name": "hcap-patroni",
                  "app.kubernetes.io/name": "patroni"}


def exit_status(code: int) -> str:
    if code == 0:
        return '{"metadata":{},"status":"Success"}'
    return json.dumps({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


class HcapCluster:
    def __init__(self, real, pg, backup_folder: Path, *, database: str, server_replicas: int = 3):
        self.real, self.kube, self.ns, self.pg = real, real.kube, real.namespace, pg
        self.folder = Path(backup_folder)
        self.database = database
        self.fail: dict[str, str] = {}
        self.execs: list[tuple[str, list[str]]] = []
        self.backups_taken = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.server_replicas = server_replicas
        self.new_member_state = "streaming"  # what a Patroni member created by a scale-up reports

    # -- set-up ----------------------------------------------------------------
    def start(self) -> "HcapCluster":
        ns = f"/api/v1/namespaces/{self.ns}"
        # the database the restore may touch, with the test server's superuser
        self.kube.admin("PATCH", f"{ns}/secrets/hcap-patroni", {"stringData": {
            "superuser-username": self.pg.user, "superuser-password": self.pg.password,
            "db-name": self.database}}, content_type=MERGE)
        # the server's DeploymentConfig at its production size; one CronJob already suspended
        self.scale_to("DeploymentConfig", "hcap-server", self.server_replicas)
        self.kube.admin("DELETE", f"/apis/apps/v1/namespaces/{self.ns}/deployments/hcap-server")
        self.real.standin.websocket(EXEC, self._exec)
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def scale_to(self, kind: str, name: str, replicas: int) -> None:
        path = (f"/apis/apps.openshift.io/v1/namespaces/{self.ns}/deploymentconfigs/{name}"
                if kind == "DeploymentConfig" else f"/apis/apps/v1/namespaces/{self.ns}/statefulsets/{name}")
        self.kube.admin("PATCH", path, {"spec": {"replicas": replicas}}, content_type=MERGE)

    # -- the controllers and kubelet ----------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # reported by the test's assertions on the world
                self.errors.append(repr(exc))
            self._stop.wait(0.1)

    def pods(self, selector: str) -> list[dict]:
        return self.kube.admin("GET", f"/api/v1/namespaces/{self.ns}/pods?labelSelector={selector}")["items"]

    def reconcile(self) -> None:
        with self._lock:
            dc = self.kube.admin("GET", f"/apis/apps.openshift.io/v1/namespaces/{self.ns}/deploymentconfigs/"
                                        "hcap-server")
            want = int(dc["spec"].get("replicas") or 0)
            pods = sorted(p["metadata"]["name"] for p in self.pods("deploymentconfig=hcap-server"))
            for name in pods[want:]:
                self._delete(name)
            for i in range(len(pods), want):
                self._create(f"hcap-server-7-p{int(time.time() * 1000) % 100000}{i}", SERVER_LABELS, None)
            sts = self.kube.admin("GET", f"/apis/apps/v1/namespaces/{self.ns}/statefulsets/hcap-patroni")
            want = int(sts["spec"].get("replicas") or 0)
            have = {p["metadata"]["name"] for p in self.pods("cluster-name=hcap-patroni")}
            for i in range(len(PATRONI_PODS)):
                name = f"hcap-patroni-{i}"
                if i >= want and name in have:
                    self._delete(name)
                elif i < want and name not in have:
                    status = {"state": self.new_member_state, "role": "replica", "version": "2.1.7",
                              "conn_url": f"postgres://10.1.0.{20 + i}:5432/postgres"}
                    self._create(name, dict(PATRONI_LABELS, role="replica"), {"status": json.dumps(status)})

    def _create(self, name, labels, annotations) -> None:
        self.kube.admin("POST", f"/api/v1/namespaces/{self.ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels,
                                                            "annotations": annotations or {}},
            "spec": {"containers": [{"name": labels["app"], "image": f"{labels['app']}:latest"}]}})
        mark_ready(self.kube, self.ns, name, "10.1.0.99")

    def _delete(self, name) -> None:
        self.kube.admin("DELETE", f"/api/v1/namespaces/{self.ns}/pods/{name}?gracePeriodSeconds=0",
                        expect=(200, 202, 404))

    # -- Patroni's state in the API server ------------------------------------------
    def leader(self) -> str:
        cm = self.kube.admin("GET", f"/api/v1/namespaces/{self.ns}/configmaps/hcap-patroni-leader")
        return cm["metadata"]["annotations"]["leader"]

    def set_member(self, name: str, **status) -> None:
        pod = self.kube.admin("GET", f"/api/v1/namespaces/{self.ns}/pods/{name}")
        current = json.loads(pod["metadata"].get("annotations", {}).get("status") or "{}")
        current.update(status)
        self.kube.admin("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{name}",
                        {"metadata": {"annotations": {"status": json.dumps(current)}}}, content_type=MERGE)

    def set_leader(self, name: str) -> None:
        old = self.leader()
        self.kube.admin("PATCH", f"/api/v1/namespaces/{self.ns}/configmaps/hcap-patroni-leader",
                        {"metadata": {"annotations": {"leader": name}}}, content_type=MERGE)
        for pod in self.pods("cluster-name=hcap-patroni"):
            member = pod["metadata"]["name"]
            if member in (old, name):
                role = "master" if member == name else "replica"
                self.set_member(member, role=role, state="running" if member == name else "streaming")

    def members(self) -> list[dict]:
        leader = self.leader()
        out = []
        for pod in sorted(self.pods("cluster-name=hcap-patroni"), key=lambda p: p["metadata"]["name"]):
            status = json.loads(pod["metadata"].get("annotations", {}).get("status") or "{}")
            name = pod["metadata"]["name"]
            out.append({"Cluster": "hcap-patroni", "Member": name, "Host": pod["status"].get("podIP"),
                        "Role": "Leader" if name == leader else "Replica",
                        "State": "running" if name == leader else status.get("state", "streaming"),
                        "TL": 1, "Lag in MB": 0 if name == leader else status.get("lag_mb", 0)})
        return out

    # -- exec -------------------------------------------------------------------------
    def _exec(self, req, ws) -> None:
        pod, argv = req.match["pod"], req.query["command"]
        with self._lock:
            self.execs.append((pod, list(argv)))
        try:
            if pod == LOG_BACKUP_POD:  # the log database's backup-container: no backups in these tests
                if argv[0] == "find":
                    ws.send_channel(3, exit_status(0))
                else:
                    ws.send_channel(2, f"sh: {argv[0]}: not here\n")
                    ws.send_channel(3, exit_status(127))
            elif pod.startswith("hcap-backup-"):
                self._backup_pod(argv, ws)
            elif pod.startswith("hcap-patroni-"):
                self._patroni_pod(pod, argv, ws)
            else:
                ws.send_channel(2, f"no such command here: {argv[0]}\n")
                ws.send_channel(3, exit_status(127))
        except (OSError, ConnectionError):
            pass  # the client went away

    def _local(self, path: str) -> str:
        assert path.startswith("/backups/"), path
        return str(self.folder / path[len("/backups/"):])

    def _failing(self, key, ws) -> bool:
        message = self.fail.get(key)
        if message is None:
            return False
        ws.send_channel(2, f"{key}: {message}\n")
        ws.send_channel(3, exit_status(1))
        return True

    def _backup_pod(self, argv, ws) -> None:
        if argv[0] == "sha256sum":
            if self._failing("sha256sum", ws):
                return
            self._run([argv[0], self._local(argv[-1])], ws, rewrite=(str(self.folder) + "/", "/backups/"))
        elif argv[0] == "gunzip":
            if self._failing("gunzip", ws):
                return
            proc = subprocess.Popen(["gunzip", "-c", "--", self._local(argv[-1])], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            try:
                while True:
                    chunk = proc.stdout.read(1 << 16)
                    if not chunk:
                        break
                    ws.send_channel(1, chunk)
            finally:
                proc.stdout.close()
                rc = proc.wait()
            err = proc.stderr.read()
            if err:
                ws.send_channel(2, err)
            ws.send_channel(3, exit_status(rc))
        elif argv[0] == "find":
            self._run(["find", str(self.folder), *argv[2:]], ws)
        elif argv[:2] == ["./backup.sh", "-1"]:
            if self._failing("backup.sh", ws):
                return
            from ops import backups
            from tests.test_restore_ops import ci

            self.backups_taken += 1
            when = datetime(2026, 11, 25, 2, 0, self.backups_taken, tzinfo=timezone.utc)
            entry = backups.local_backup(ci(self.pg, self.database), str(self.folder), "hcap-patroni", now=when)
            ws.send_channel(1, f"Backing up hcap-patroni/{self.database} ...\nBackup written to "
                               f"/backups/{entry.path[len(str(self.folder)) + 1:]}\n")
            ws.send_channel(3, exit_status(0))
        else:
            ws.send_channel(2, f"sh: {argv[0]}: not found\n")
            ws.send_channel(3, exit_status(127))

    def _run(self, argv, ws, rewrite=None) -> None:
        proc = subprocess.run(argv, capture_output=True, timeout=120)
        out = proc.stdout
        if rewrite:
            out = out.replace(rewrite[0].encode(), rewrite[1].encode())
        if out:
            ws.send_channel(1, out)
        if proc.stderr:
            ws.send_channel(2, proc.stderr)
        ws.send_channel(3, exit_status(proc.returncode))

    def _patroni_pod(self, pod, argv, ws) -> None:
        if argv[0] == "psql":
            if argv[1:] != ["--version"] and self._failing("psql", ws):
                return
            self._psql(argv, ws)
        elif argv[0] == "patronictl":
            args = argv[3:] if argv[1:2] == ["-c"] else argv[1:]
            if args[:1] == ["list"]:
                ws.send_channel(1, json.dumps(self.members()))
                ws.send_channel(3, exit_status(0))
            elif args[:1] == ["switchover"]:
                if self._failing("switchover", ws):
                    return
                candidate = args[args.index("--candidate") + 1]
                current = args[2] if args[1] in ("--leader", "--master") else None
                if current != self.leader():
                    ws.send_channel(2, f"Error: Member {current} is not the leader of cluster hcap-patroni\n")
                    ws.send_channel(3, exit_status(1))
                    return
                self.set_leader(candidate)
                ws.send_channel(1, f"Successfully switched over to \"{candidate}\"\n")
                ws.send_channel(3, exit_status(0))
            elif args[:1] == ["reinit"]:
                if self._failing("reinit", ws):
                    return
                self.set_member(args[2], state="streaming", lag_mb=0)
                ws.send_channel(1, f"Success: reinitialize for member {args[2]}\n")
                ws.send_channel(3, exit_status(0))
            else:
                ws.send_channel(2, "Usage: patronictl [OPTIONS] COMMAND [ARGS]...\n")
                ws.send_channel(3, exit_status(2))
        else:
            ws.send_channel(2, f"sh: {argv[0]}: not found\n")
            ws.send_channel(3, exit_status(127))

    def _psql(self, argv, ws) -> None:
        if argv[1:] == ["--version"]:
            return self._run(["psql", "--version"], ws)
        self._psql_session(argv, ws)

    def _psql_session(self, argv, ws) -> None:
        """psql as the pod's local superuser: the argv's -U (and the socket)
        become the test server's host, port and superuser; stdin is passed
        on as it arrives."""
        args = list(argv[1:])
        if "-U" in args:
            i = args.index("-U")
            del args[i:i + 2]
        local = ["psql", "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", self.pg.user, *args]
        proc = subprocess.Popen(local, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ, PGPASSWORD=self.pg.password))
        outputs = {}

        def collect(name, stream):
            outputs[name] = stream.read()

        readers = [threading.Thread(target=collect, args=(n, s), daemon=True)
                   for n, s in (("out", proc.stdout), ("err", proc.stderr))]
        for t in readers:
            t.start()
        closed = False
        try:
            while True:
                frame = ws.recv()
                if frame is None:
                    break  # the connection dropped before the end of input
                _opcode, payload = frame
                if payload[:1] == b"\x00":
                    try:
                        proc.stdin.write(payload[1:])
                    except (BrokenPipeError, OSError):
                        pass
                elif payload == b"\xff\x00":
                    closed = True
                    break
                elif ws.closed:
                    break
        finally:
            if not closed:
                proc.kill()
            try:
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            rc = proc.wait(timeout=600)
            for t in readers:
                t.join(60)
        if not closed:
            return
        if outputs.get("out"):
            ws.send_channel(1, outputs["out"])
        if outputs.get("err"):
            ws.send_channel(2, outputs["err"])
        ws.send_channel(3, exit_status(rc))

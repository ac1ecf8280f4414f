"""The openshift source: files listed and read by exec in the server pod.  The
pods, RBAC and exec authorisation are a real kube-apiserver's (behind the
stand-in API); exec itself is the stand-in's websocket handler, whose "pod"
runs the argv it receives (find, cat, npm) for real on a local folder mapped
to the pod path."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ops import errors
from ops.migrations import applied, sources
from ops.migrations import report as reports
from tests.harness.kubeapi import BACKUP_POD, SERVER_POD, kube_api, mark_ready, openshift_real  # noqa: F401
from tests.test_migrations import FIXTURE, NODE_PG_MIGRATE, SAMPLE_ORDER, fresh_db, run_tool  # noqa: F401

POD_DIR = "/opt/app-root/src/server/migrations"
EXEC = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/exec"


def install_pod(openshift_real, local_dir: Path, db_url: str | None = None):
    """Route exec: the argv runs with the pod path mapped to local_dir.  The
    pods themselves (hcap-server-7-abcde, the backup pod) are the real server's."""
    seen = []

    def exec_handler(req, ws):
        argv = req.query["command"]
        seen.append((req.match["pod"], list(argv)))
        if argv == ["./backup.sh", "-1"]:
            assert req.match["pod"] == BACKUP_POD
            ws.send_channel(1, "Backing up 'hcap-patroni:5432/hcap' ...\nDatabase backup complete.\n")
            ws.send_channel(3, '{"metadata":{},"status":"Success"}')
            return
        if argv[:1] == ["npm"]:
            # the server image's `npm run migrate up`: node-pg-migrate against its database
            assert argv == ["npm", "--prefix", str(Path(POD_DIR).parent), "run", "migrate", "up"]
            local = [NODE_PG_MIGRATE, "up", "--migrations-dir", str(local_dir)]
            env = dict(os.environ, DATABASE_URL=db_url, NO_COLOR="1")
        else:
            assert argv[0] in ("find", "cat"), argv
            local = [a.replace(POD_DIR, str(local_dir)) for a in argv]
            env = dict(os.environ)
        proc = subprocess.run(local, capture_output=True, env=env, timeout=120)
        if proc.stdout:
            ws.send_channel(1, proc.stdout)
        if proc.stderr:
            ws.send_channel(2, proc.stderr)
        if proc.returncode == 0:
            ws.send_channel(3, '{"metadata":{},"status":"Success"}')
        else:
            ws.send_channel(3, '{"metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":'
                               f'[{{"reason":"ExitCode","message":"{proc.returncode}"}}]}}}}')

    openshift_real.standin.websocket(EXEC, exec_handler)
    return seen


@pytest.fixture
def pod_folder(tmp_path):
    folder = tmp_path / "pod-migrations"
    shutil.copytree(FIXTURE, folder)
    return folder


def driver_for(openshift_real, pod_dir=POD_DIR):
    return openshift_real.driver(migrations_pod_dir=pod_dir)


def test_pod_source_lists_like_the_tool(openshift_real, pod_folder, fresh_db):  # noqa: F811
    _, url, conninfo = fresh_db
    (pod_folder / "odd name with space_x.js").write_text("exports.up = () => {};\n")
    os.symlink(pod_folder / "1590000000000_applicants.js", pod_folder / "1580000000000_linked.js")
    seen = install_pod(openshift_real, pod_folder)
    source = driver_for(openshift_real)
    listing = source.migration_files()
    local = sources.LocalFolder(str(pod_folder)).migration_files().names
    assert sorted(listing.names) == sorted(local)
    assert "assets" not in listing.names and ".gitkeep" not in listing.names
    assert "odd name with space_x.js" in listing.names and "1580000000000_linked.js" in listing.names
    assert listing.pod == SERVER_POD and listing.location == f"pod {SERVER_POD}:{POD_DIR}"
    pod, argv = seen[0]
    assert pod == SERVER_POD
    assert argv[:2] == ["find", POD_DIR + "/"] and "-printf" in argv
    text = source.read_migration("1600000000000_employer-expressions.sql", listing)
    assert text == (pod_folder / "1600000000000_employer-expressions.sql").read_text()
    assert seen[-1][1] == ["cat", "--", f"{POD_DIR}/1600000000000_employer-expressions.sql"]
    n_exec = len(seen)
    for bad in ("../../etc/passwd", "assets", ".gitkeep", "-n"):
        with pytest.raises(errors.NotFound):
            source.read_migration(bad, listing)
    assert len(seen) == n_exec  # refused before any exec
    # merged with the real table, statuses as for the local folder
    (pod_folder / "odd name with space_x.js").unlink()
    (pod_folder / "1580000000000_linked.js").unlink()
    assert run_tool(pod_folder, url, "up", "2")[0] == 0
    report = reports.build_report(driver_for(openshift_real), conninfo, "pgmigrations", "public")
    assert report.complete
    assert [i.name for i in report.by_status(reports.APPLIED)] == SAMPLE_ORDER[:2]
    assert [i.name for i in report.by_status(reports.PENDING)] == SAMPLE_ORDER[2:]
    assert SERVER_POD in report.source


def test_pod_source_errors(openshift_real, tmp_path):
    install_pod(openshift_real, tmp_path / "not-there")
    with pytest.raises(sources.SourceMissing, match=f"does not exist in pod {SERVER_POD}"):
        driver_for(openshift_real).migration_files()
    openshift_real.kube.admin("PATCH", f"/api/v1/namespaces/{openshift_real.namespace}/pods/{SERVER_POD}/status",
                              {"status": {"phase": "Failed"}}, content_type="application/merge-patch+json")
    with pytest.raises(sources.SourceMissing, match="no running server pod"):
        driver_for(openshift_real).migration_files()
    with pytest.raises(errors.Invalid):
        driver_for(openshift_real, "relative/path")


def test_pod_source_picks_newest_running_pod(openshift_real, pod_folder):
    kube, ns = openshift_real.kube, openshift_real.namespace
    seen = install_pod(openshift_real, pod_folder)
    # creationTimestamp has one-second resolution: the new pod is created once the clock
    # has left the old pod's second, and its name sorts first, so only its age can pick it
    old = kube.admin("GET", f"/api/v1/namespaces/{ns}/pods/{SERVER_POD}")["metadata"]["creationTimestamp"]
    while time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) <= old:
        time.sleep(0.05)
    kube.admin("POST", f"/api/v1/namespaces/{ns}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "hcap-server-0-newest", "labels": {"app": "hcap-server", "deploymentconfig": "hcap-server"}},
        "spec": {"containers": [{"name": "hcap-server", "image": "hcap-server:latest"}]}})
    mark_ready(kube, ns, "hcap-server-0-newest", "10.1.0.77")
    driver_for(openshift_real).migration_files()
    assert seen[0][0] == "hcap-server-0-newest"


def test_pod_up_streams_the_tool_output(openshift_real, pod_folder, fresh_db):  # noqa: F811
    _, url, conninfo = fresh_db
    (pod_folder / "1630000000000_broken-backfill.js").unlink()
    install_pod(openshift_real, pod_folder, db_url=url)
    driver = driver_for(openshift_real)
    lines = []
    result = driver.migrate_up(driver.migration_files(), on_line=lines.append)
    assert result.returncode == 0, result.output
    assert lines[0] == f"$ npm --prefix {Path(POD_DIR).parent} run migrate up   (in pod {SERVER_POD})"
    assert "Migrations complete!" in lines
    assert [r.name for r in applied.read_applied(conninfo).rows] == SAMPLE_ORDER[:5]


@pytest.mark.django_db
def test_openshift_page_and_apply_job(openshift_real, pod_folder, fresh_db, settings, client_as, run_jobs):  # noqa: F811
    """PLATFORM=openshift end to end: the page lists the pod's files; the job
    backs up with backup.sh in the backup pod, then runs `npm run migrate up`
    by exec in the server pod; its output lands in the job log."""
    from hcapadmin.jobs.models import Job

    _, url, conninfo = fresh_db
    (pod_folder / "1630000000000_broken-backfill.js").unlink()
    assert run_tool(pod_folder, url, "up", "1")[0] == 0
    seen = install_pod(openshift_real, pod_folder, db_url=url)
    settings.PLATFORM = "openshift"
    settings.OPENSHIFT_API_URL = openshift_real.url
    settings.OPENSHIFT_NAMESPACE = openshift_real.namespace
    settings.OPENSHIFT_CA_FILE = openshift_real.ca_file
    settings.OPENSHIFT_TOKEN = openshift_real.portal_token
    settings.MANAGED_DATABASE_URL = url
    client = client_as("admin")
    html = client.get("/migrations/").content.decode()
    assert "4 pending; the next deploy will apply them." in html
    assert f"pod {SERVER_POD}:{POD_DIR}" in html
    detail = client.get("/migrations/1600000000000_employer-expressions/").content.decode()
    assert "employer_expressions" in detail and "<code>down</code> at line 8" in detail
    response = client.post("/migrations/apply/", {"confirm": "apply", "expected": SAMPLE_ORDER[1:5]})
    assert response.status_code == 302
    run_jobs()
    job = Job.objects.get(kind="migrations.apply")
    assert job.status == "succeeded", (job.error, job.log)
    assert "Database backup complete." in job.log
    assert "npm --prefix /opt/app-root/src/server run migrate up" in job.log
    assert "Migrations complete!" in job.log
    argvs = [argv for _pod, argv in seen]
    assert argvs.index(["./backup.sh", "-1"]) < argvs.index(["npm", "--prefix", "/opt/app-root/src/server", "run",
                                                             "migrate", "up"])
    assert [r.name for r in applied.read_applied(conninfo).rows] == SAMPLE_ORDER[:5]
    assert {req.bearer for req in openshift_real.standin.requests} == {openshift_real.portal_token}

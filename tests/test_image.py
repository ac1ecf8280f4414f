"""The image runs as OpenShift runs it: an arbitrary UID with group 0, no
passwd entry, ``HOME`` unset, a read-only root with only ``/tmp`` writable.

There is no container engine here, so the test builds the image's layout
itself: it copies what the Dockerfile's ``COPY`` lines copy, runs the
Dockerfile's own ``RUN`` lines that follow them (collectstatic, ...), then
starts the Dockerfile's ``CMD`` (gunicorn) and the worker command of
deploy/openshift/hcapadmin.yaml, each in a private mount namespace
(``unshare --mount``) where ``/`` and the app directory are remounted
read-only and ``/tmp`` stays writable, as a random UID with group 0
(``setpriv --reuid=<uid> --regid=0 --clear-groups``).  The Python
environment (.venv) stands in for the image's pip-installed packages.

The processes must serve ``/healthz`` and ``/readyz``, and a manual backup
submitted through the API must succeed on the worker.  Needs root (for
``unshare`` and ``setpriv``); skipped otherwise.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.test_jobs_workers import wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


# Inside the namespace: /tmp becomes its own (writable) mount, then / and every
# other mount (but /proc, /sys, /dev) and the app directory are remounted
# read-only, then the process drops to the UID.
# Before that, a directory on the way to the Python interpreter that other
# users cannot enter (pyenv under /root, mode 0700) is replaced by a stand-in
# holding only the interpreter's entry, so the UID can run the same Python.
CONFINE = r"""
set -e
app="$1"; uid="$2"; shift 2
while [ "$1" != "--" ]; do  # expose: a closed directory, the one entry in it, a stand-in
  mkdir -p "$3/$2"; mount --bind "$1/$2" "$3/$2"; mount --rbind "$3" "$1"; shift 3
done
shift
mount --bind /tmp /tmp
mount -o remount,bind,ro /
awk '{print $5}' /proc/self/mountinfo | while read -r mount_point; do
  case "$mount_point" in
    /|/tmp|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;;
    *) mount -o remount,bind,ro "$mount_point" 2>/dev/null || true ;;
  esac
done
mount --bind "$app" "$app"
mount -o remount,bind,ro "$app"
cd "$app"
exec setpriv --reuid="$uid" --regid=0 --clear-groups --inh-caps=-all -- "$@"
"""


# --- the Dockerfile, read as the build reads it -------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text()
    text = re.sub(r"\\\n", " ", text)  # continuation lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_cmd() -> list[str]:
    (cmd,) = [json.loads(rest) for word, rest in dockerfile_instructions() if word == "CMD"]
    return cmd


def worker_command() -> list[str]:
    template = yaml.safe_load((ROOT / "deploy" / "openshift" / "hcapadmin.yaml").read_text())
    (worker,) = [o for o in template["objects"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "hcapadmin-worker"]
    return worker["spec"]["template"]["spec"]["containers"][0]["command"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_uid() -> int:
    """A UID from OpenShift's usual range that has no passwd entry."""
    while True:
        uid = random.randint(1_000_000_000, 1_999_999_999)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid


def closed_ancestors(path: Path, stage: Path) -> list[str]:
    """(directory, entry, stand-in) triples for each directory on the way to
    ``path`` that others may not enter."""
    triples = []
    parts = path.resolve().parts
    for depth in range(1, len(parts) - 1):
        directory = Path(*parts[:depth + 1])
        if not os.stat(directory).st_mode & 0o001:
            standin = stage / f"standin-{depth}"
            standin.mkdir(mode=0o755)
            triples += [str(directory), parts[depth + 1], str(standin)]
    return triples


def _can_confine() -> str | None:
    if os.geteuid() != 0:
        return "needs root (unshare --mount, setpriv)"
    for tool in ("unshare", "setpriv", "mount"):
        if not shutil.which(tool):
            return f"{tool} (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                            "mount --bind /tmp /tmp && mount -o remount,bind,ro /"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private read-only mount namespace here: {probe.stderr.strip()[:200]}"
    return None


# --- the image's file system ----------------------------------------------------------------
@pytest.fixture(scope="module")
def image():
    why = _can_confine()
    if why:
        pytest.skip(why)
    # Under /tmp (writable in the namespace) but not under pytest's 0700 tmp dirs.
    base = Path(tempfile.mkdtemp(prefix="hcapadmin-image-"))
    os.chmod(base, 0o755)
    app = base / "app"
    workdir = None
    instructions = dockerfile_instructions()
    last_copy = max(i for i, (word, _) in enumerate(instructions) if word == "COPY")
    build_env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **dockerfile_env()}
    build_env.pop("HOME", None)
    try:
        for index, (word, rest) in enumerate(instructions):
            if word == "WORKDIR":
                workdir = rest
                assert workdir == "/app", "the test maps the image's /app onto its copy"
                app.mkdir()
            elif word == "COPY" and workdir:
                *sources, dest = shlex.split(rest)
                for source in sources:
                    src = ROOT / source
                    into = dest.endswith("/") or dest == "."  # COPY a b ./  vs  COPY dir ./dir
                    target = (app / dest / src.name) if into else (app / dest)
                    if src.is_dir():
                        shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, target)
            elif word == "RUN" and index > last_copy:
                # the build steps on the copied app (collectstatic, ...); the
                # steps before it install the dependencies the .venv provides.
                command = rest.replace("/app", str(app))
                result = subprocess.run(["sh", "-c", command], cwd=app, env=build_env, capture_output=True, text=True,
                                        timeout=600)
                assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
        assert (app / "staticfiles" / "staticfiles.json").is_file(), "static files are not collected at build"
        yield {"base": base, "app": app}
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def confined(image, pg, redis_url, mongo_url):
    """confined(argv, name) starts argv in the image's conditions and returns
    the Popen (output in proc.log_path); everything is stopped afterwards."""
    from django.conf import settings as django_settings
    from django.db import connection

    from hcapadmin.audit.keys import sandbox_audit_keys

    base, app = image["base"], image["app"]
    uid = random_uid()
    secrets = base / f"secrets-{uid}"
    secrets.mkdir(mode=0o750)
    os.chown(secrets, 0, 0)
    audit_key = sandbox_audit_keys(django_settings.SECRET_KEY)  # the test process's chain key
    values = {
        "SECRET_KEY": django_settings.SECRET_KEY,
        "HCAPADMIN_AUDIT_KEY": ",".join(f"{k}:{v.decode()}" for k, v in audit_key.items()),
        "DATABASE_URL": pg.url(connection.settings_dict["NAME"]),
        "REDIS_URL": redis_url,
        "MONGO_URL": mongo_url,
        "HCAPADMIN_MANAGED_DATABASE_URL": pg.url("hcap"),
    }
    for name, value in values.items():  # as OpenShift mounts a Secret: group 0 may read
        path = secrets / name
        path.write_text(value + "\n")
        os.chown(path, 0, 0)
        os.chmod(path, 0o440)
    backups = base / f"backups-{uid}"  # stands in for a mounted volume the UID may write
    backups.mkdir()
    os.chown(backups, uid, 0)
    env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", **dockerfile_env()}
    env.pop("HOME", None)  # no HOME, no passwd entry
    env.update({f"{name}_FILE": str(secrets / name) for name in values})
    env.update({
        "ALLOWED_HOSTS": "127.0.0.1",
        "HCAPADMIN_HTTPS": "true",
        "HCAPADMIN_PLATFORM": "local",
        "HCAPADMIN_BACKUP_DIR": str(backups),
        "HCAPADMIN_LOCAL_ACCOUNTS": "true",  # HTTP Basic for the API call below
        "HCAPADMIN_JOB_HEARTBEAT_SECONDS": "1",
    })
    stage = base / f"expose-{uid}"
    stage.mkdir(mode=0o755)
    expose = closed_ancestors(Path(sys.base_prefix), stage)
    started = []

    def start(argv, name):
        log = open(base / f"{name}-{uid}.log", "w+b")
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", CONFINE,
                                 "confine", str(app), str(uid), *expose, "--", *argv],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log.name
        proc.uid = uid
        started.append((proc, log))
        return proc

    yield start
    for proc, log in started:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()


def read_log(proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")


def http(port, method, path, *, auth=None, body=None, host="127.0.0.1"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body)
    request.add_header("Host", host)
    request.add_header("X-Forwarded-Proto", "https")  # as OpenShift's router sends
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None, b""


# --- the Dockerfile as OpenShift needs it ---------------------------------------------------------
def test_dockerfile_runs_as_non_root_without_home_or_bytecode_writes():
    env = dockerfile_env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert "HOME" not in env, "HOME would point into the read-only image"
    (user,) = [rest for word, rest in dockerfile_instructions() if word == "USER"]
    assert user.isdigit() and int(user) != 0, "USER must be a numeric non-root UID (runAsNonRoot)"
    cmd = dockerfile_cmd()
    assert cmd[0] == "gunicorn" and "0.0.0.0:8080" in cmd
    # gunicorn's control socket would go to $HOME/.gunicorn (or ./~/.gunicorn without HOME)
    assert "--no-control-socket" in cmd


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_image_serves_and_runs_a_job_as_an_arbitrary_uid_with_only_tmp_writable(image, confined, settings):
    # The test's users are hashed with its fast hasher; the image runs the production one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    from hcapadmin.accounts.demo import ensure_demo_users
    from hcapadmin.jobs.models import Job

    password = "image-test-" + "p" * 12
    ensure_demo_users(password=password)

    # What the processes may write: /tmp only, not the app, not /var/tmp, not HOME.
    probe = confined([sys.executable, "-c", (
        "import os, sys, tempfile\n"
        "print('uid', os.getuid(), 'gid', os.getgid(), 'home', os.environ.get('HOME'), 'python', sys.version)\n"
        "for d in ('.', 'hcapadmin', 'staticfiles', '/var/tmp', os.path.expanduser('~')):\n"
        "    try:\n"
        "        open(os.path.join(d, 'probe-write'), 'w').close(); print('WRITABLE', d)\n"
        "    except OSError as exc:\n"
        "        print('refused', d, exc.strerror)\n"
        "with tempfile.NamedTemporaryFile() as fh: print('tmp ok', fh.name)\n")], "probe")
    assert probe.wait(timeout=120) == 0, read_log(probe)
    out = read_log(probe)
    assert f"uid {probe.uid} gid 0 home None python {sys.version}" in out, out
    assert "WRITABLE" not in out and "tmp ok /tmp/" in out, out
    assert "refused /var/tmp Read-only file system" in out, out  # world-writable, but the root is read-only

    port = free_port()
    cmd = [arg if arg != "0.0.0.0:8080" else f"127.0.0.1:{port}" for arg in dockerfile_cmd()]
    web = confined(cmd, "web")
    worker = confined(worker_command(), "worker")

    def healthy():
        assert web.poll() is None, "gunicorn exited:\n" + read_log(web)
        return http(port, "GET", "/healthz")[0] == 200

    wait_for(healthy, 180, "gunicorn to serve /healthz")
    def worker_started():
        assert worker.poll() is None, "the worker exited:\n" + read_log(worker)
        return "jobs_worker: queue" in read_log(worker)

    wait_for(worker_started, 180, "the worker to start")
    status, body = http(port, "GET", "/readyz")
    assert status == 200 and json.loads(body) == {
        "status": "ok", "components": {"database": "ok", "redis": "ok", "mongodb": "ok", "platform": "ok"}}, body
    # collected static files are served (whitenoise's manifest, no finders)
    status, _ = http(port, "GET", "/login/")
    assert status == 200

    status, body = http(port, "POST", "/api/v1/backups", auth=f"admin:{password}", body=b"{}")
    assert status == 202, body
    job_id = json.loads(body)["job"]

    def finished():
        status, body = http(port, "GET", f"/api/v1/jobs/{job_id}", auth=f"admin:{password}")
        assert status == 200, body
        data = json.loads(body)
        return data if data["status"] in ("succeeded", "failed", "cancelled", "abandoned") else None

    result = wait_for(finished, 300, "the backup job to finish")
    assert result["status"] == "succeeded", (result, read_log(worker))
    assert Job.objects.get(pk=job_id).status == "succeeded"
    written = list((image["base"] / f"backups-{web.uid}").rglob("*.sql.gz"))
    assert len(written) == 1, written

    for proc in (web, worker):
        log = read_log(proc)
        for symptom in ("Read-only file system", "Permission denied", "Failed to start control socket",
                        "Traceback"):
            assert symptom not in log, f"{symptom!r} in the log:\n{log}"

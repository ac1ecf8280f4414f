"""`make run`: the sandbox.

Starts private PostgreSQL, Redis and FerretDB under ./var (loopback only),
seeds demo data once, creates the demo accounts, then runs gunicorn and one
RQ worker until Ctrl-C, which stops everything it started.  A second run
reuses ./var.

With HCAPADMIN_SANDBOX_KUBE=true it also starts the tests' real
kube-apiserver and etcd (devtools/kube.py) with one demo user per portal
role, points the portal's OpenShift token login at it (the platform driver
stays local) and prints one ``oc login`` line per role.  That server lives
in a fresh temporary folder outside ./var and its tokens change every run:
they are printed to the terminal and written nowhere else but the server's
own token file, which goes when the sandbox stops.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from devtools import services

ROOT = services.ROOT
VAR = ROOT / "var"
PY = sys.executable

# Fixed private ports for the sandbox's own services (loopback only).
PG_PORT = int(os.environ.get("HCAPADMIN_SANDBOX_PG_PORT", "55432"))
REDIS_PORT = int(os.environ.get("HCAPADMIN_SANDBOX_REDIS_PORT", "56379"))
MONGO_PORT = int(os.environ.get("HCAPADMIN_SANDBOX_MONGO_PORT", "57017"))


def kube_enabled(environ=None) -> bool:
    """HCAPADMIN_SANDBOX_KUBE, read as the portal's settings read booleans."""
    from hcapadmin.lib import env

    return env.boolean("HCAPADMIN_SANDBOX_KUBE", False, environ=environ)


def start_kube():
    """(KubeAPI, its temporary folder, the portal's settings for token login)."""
    from devtools.kube import sandbox_settings, start_sandbox_kube

    workdir = Path(tempfile.mkdtemp(prefix="hcapadmin-sandbox-kube-"))
    try:
        kube = start_sandbox_kube(workdir)
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return kube, workdir, sandbox_settings(kube)


def token_login_banner(kube) -> str:
    """What the terminal shows for token login: one ``oc login`` line per role."""
    from devtools.kube import oc_login_lines

    lines = "".join(f"    {role:<9} {line}\n" for role, line in oc_login_lines(kube).items())
    return f"  OpenShift token login (paste a line into the login page; new tokens each run):\n{lines}"


def log(message: str) -> None:
    print(f"[sandbox] {message}", flush=True)


def _secret_key() -> str:
    path = VAR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _environment(pg: services.Postgres) -> dict:
    port = os.environ.get("HCAPADMIN_PORT", "8000")
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "hcapadmin.settings",
        "SECRET_KEY": _secret_key(),
        "DATABASE_URL": pg.url("hcapadmin"),
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        "MONGO_URL": f"mongodb://127.0.0.1:{MONGO_PORT}/",
        "HCAPADMIN_PLATFORM": "local",
        "HCAPADMIN_MANAGED_DATABASE_URL": pg.url("hcap"),
        "HCAPADMIN_BACKUP_DIR": str(VAR / "backups"),
        "HCAPADMIN_LOG_BACKUP_DIR": str(VAR / "log-backups"),
        "HCAPADMIN_MIGRATIONS_DIR": str(VAR / "migrations"),
        "HCAPADMIN_SANDBOX": "true",
        "HCAPADMIN_LOCAL_ACCOUNTS": "true",
        "HCAPADMIN_HTTPS": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "HCAPADMIN_PORT": port,
    })
    env.setdefault("HCAPADMIN_DEMO_PASSWORD", "hcap-demo-password")
    return env


def manage(env: dict, *args: str) -> None:
    subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=True)


def wait_ready(url: str, timeout: float = 60) -> dict:
    import json

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                last = json.load(response)
                if last["status"] == "ok":
                    return last
        except Exception as exc:  # not up yet
            last = {"status": "starting", "error": str(exc)}
        time.sleep(0.5)
    return last or {}


def main() -> int:
    started = time.monotonic()
    VAR.mkdir(exist_ok=True)
    os.chmod(VAR, 0o755)
    for sub in ("backups", "migrations"):
        (VAR / sub).mkdir(exist_ok=True)
    children: list[subprocess.Popen] = []
    pg = services.Postgres.create(VAR / "pg" / "data", PG_PORT)
    redis = services.Redis(REDIS_PORT, VAR / "redis")
    ferret = None
    kube = kube_dir = None
    stopping = False

    def stop(*_):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # A second Ctrl-C (or a SIGINT relayed by a wrapper) must not cut
        # the shutdown short and leave servers running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log("stopping ...")
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in reversed(children):
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if ferret:
            ferret.stop()
        if kube:
            kube.stop()
        if kube_dir:
            shutil.rmtree(kube_dir, ignore_errors=True)
        redis.stop()
        pg.stop()
        log("stopped")

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        if pg.running():
            log("PostgreSQL already running from an earlier sandbox; restarting it")
            pg.stop()
        pg.start()
        for name in ("hcapadmin", "hcap", "ferretdb"):
            pg.create_database(name)
        redis.start(persist=True)
        ferret = services.FerretDB(MONGO_PORT, VAR / "ferretdb", pg.url("ferretdb")).start()
        env = _environment(pg)
        log("services up: PostgreSQL :%d, Redis :%d, FerretDB :%d" % (PG_PORT, REDIS_PORT, MONGO_PORT))
        if kube_enabled():
            log("starting kube-apiserver and etcd for OpenShift token login ...")
            kube, kube_dir, kube_env = start_kube()
            env.update(kube_env)
            log(f"kube-apiserver up: {kube.url}")
        manage(env, "migrate", "--noinput", "-v", "0")
        manage(env, "collectstatic", "--noinput", "-v", "0")
        if not (VAR / ".seeded").exists():
            log("seeding demo data (first run only; takes a minute) ...")
            manage(env, "sandbox_seed")
            (VAR / ".seeded").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manage(env, "demo_accounts")
        port = env["HCAPADMIN_PORT"]
        children.append(subprocess.Popen(
            [PY, "-m", "gunicorn", "hcapadmin.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--threads", "4", "--timeout", "120", "--access-logfile", str(VAR / "access.log"),
             "--error-logfile", str(VAR / "gunicorn.log")],
            cwd=ROOT, env=env))
        children.append(subprocess.Popen([PY, "manage.py", "jobs_worker"], cwd=ROOT, env=env))
        url = f"http://127.0.0.1:{port}"
        ready = wait_ready(url)
        log(f"readiness: {ready.get('status')} ({time.monotonic() - started:.1f}s since start)")
        print(
            "\n"
            f"  HCAP Ops Portal sandbox: {url}\n"
            f"  Demo logins (password: {env['HCAPADMIN_DEMO_PASSWORD']}):\n"
            "    admin     takes backups, verifies, applies migrations, browses logs\n"
            "    approver  signs off restore requests\n"
            "    auditor   reviews and exports the audit trail\n"
            "    viewer    read-only\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        if kube:
            print(token_login_banner(kube), flush=True)  # the terminal only: never logged or stored
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = [c.args[2] if len(c.args) > 2 else c.args for c in children if c.poll() is not None]
        log(f"a process exited unexpectedly: {failed}")
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"cannot start: {exc}")
        return 1
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())

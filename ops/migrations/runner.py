"""Running the real ``node-pg-migrate up`` on this machine (the local
driver's ``migrate_up``), stopping it cleanly, and reading why it failed.

On OpenShift the server image runs it (``pod_up_argv``, exec'd by the
OpenShift driver in the pod the files were listed in)."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg

from ops import pg
from ops.errors import Timeout, Unavailable


@dataclass(frozen=True)
class UpResult:
    """How one ``up`` run ended: its exit code and its whole output (lines)."""

    returncode: int
    output: str


def local_up_argv(binary: str, migrations_dir: str, table: str, schema: str) -> list[str]:
    return [binary, "up", "--migrations-dir", migrations_dir, "--migrations-table", table,
            "--migrations-schema", schema]


def run_local_up(binary: str, migrations_dir: str, database_url: str, table: str, schema: str, *, on_line=None,
                 timeout: float = 1800, check=None) -> tuple[int, str]:
    """Run the real ``node-pg-migrate up``.  The database URL goes in the
    environment (DATABASE_URL), never in argv.  Returns (exit code, output).

    ``check`` (optional) is called about every 0.2 s while the tool runs and
    may raise to stop it (cancel, lost lock).  Past ``timeout`` seconds it
    raises ``Timeout``.  Whenever the tool is stopped early (by ``check``, by
    the timeout, or by an exception such as the worker's own job timeout
    arriving here), its whole process group is killed, and its PostgreSQL
    sessions, found by their application_name, are terminated and gone before
    this returns or raises: a killed client does not end a statement its
    server is still running, nor the transaction and the advisory lock
    node-pg-migrate holds.  ``on_line`` is only called from the calling
    thread.
    """
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "NODE_OPTIONS",
                                                        "NODE_EXTRA_CA_CERTS")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["DATABASE_URL"] = database_url
    env["NO_COLOR"] = "1"
    app_name = f"{UP_APPLICATION_NAME}-{uuid.uuid4().hex[:12]}"
    env["PGAPPNAME"] = app_name  # node-postgres reads it; the URL carries no application_name of its own
    lines: list[str] = []
    secret = _url_password(database_url)
    with tempfile.TemporaryDirectory(prefix="npm-") as cwd:  # no stray .env is picked up by dotenv
        try:
            proc = subprocess.Popen(local_up_argv(binary, migrations_dir, table, schema), cwd=cwd, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace", bufsize=1, start_new_session=True)
        except OSError as exc:
            raise Unavailable(f"cannot start node-pg-migrate ({binary}): {exc.strerror}") from None
        output: queue.Queue = queue.Queue()

        def read():
            try:
                for raw in proc.stdout:
                    output.put(raw)
            finally:
                output.put(None)

        reader = threading.Thread(target=read, name="node-pg-migrate-output", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        finished = False
        try:
            while True:
                try:
                    raw = output.get(timeout=0.2)
                except queue.Empty:
                    raw = ""
                if raw is None:
                    break
                if raw:
                    line = raw.rstrip("\n")
                    if secret and secret in line:  # never let the password reach a log
                        line = line.replace(secret, "***")
                    lines.append(line)
                    if on_line:
                        on_line(line)
                    continue
                if check:
                    check()
                if time.monotonic() > deadline:
                    raise Timeout(f"node-pg-migrate up ran longer than {timeout:g} seconds and was stopped")
            returncode = proc.wait()
            finished = True
        finally:
            if not finished:
                stop_process_group(proc)
                try:
                    count = terminate_sessions(database_url, app_name)
                except Unavailable as exc:  # keep the reason the run stopped; say what is left behind
                    line = f"WARNING: {exc}"
                else:
                    line = (f"Stopped node-pg-migrate and ended its {count} database session(s)." if count
                            else "Stopped node-pg-migrate.")
                lines.append(line)
                if on_line:
                    on_line(line)
            reader.join(timeout=10)
    return returncode, "\n".join(lines)


UP_APPLICATION_NAME = "hcapadmin-node-pg-migrate"


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (it was started with
    start_new_session=True) and wait until ``proc`` is reaped and no process
    of the group is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    # Grandchildren, if any, were killed too; wait until the group is empty.
    # The deadline only guards against a zombie nobody reaps (no init in a
    # container): a SIGKILLed process cannot run on.
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def terminate_sessions(database_url: str, application_name: str, timeout: float = 30) -> int:
    """Terminate the PostgreSQL sessions named ``application_name`` and wait
    until they are gone; returns how many there were.  Raises Unavailable
    when the database cannot be reached to do so."""
    sql_terminate = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name = %s AND pid <> pg_backend_pid()")
    sql_left = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()"
    what = "could not end the stopped node-pg-migrate's database sessions: the managed database"
    try:
        with pg.connect(database_url, timeout=5, what=what, autocommit=True,
                        application_name="hcapadmin-cleanup") as conn:
            terminated = conn.execute(sql_terminate, [application_name]).fetchone()[0]
            give_up = time.monotonic() + timeout
            while conn.execute(sql_left, [application_name]).fetchone()[0]:
                if time.monotonic() > give_up:
                    raise Unavailable(f"the database sessions of the stopped node-pg-migrate ({application_name}) "
                                      f"were still there {timeout:g} s after being terminated")
                time.sleep(0.05)
    except psycopg.Error as exc:
        raise Unavailable("could not end the stopped node-pg-migrate's database sessions: "
                          f"{pg.first_line(exc)}") from None
    return terminated


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password and len(password) >= 4 else None


def pod_up_argv(project_dir: str) -> list[str]:
    return ["npm", "--prefix", project_dir, "run", "migrate", "up"]


_ERROR_LINE = re.compile(r"^\s*(\w*[Ee]rror|Can't get migration files): ")


def error_excerpt(output: str, limit: int = 600) -> str:
    """The line of node-pg-migrate's output that says why it failed (the
    error it prints last, without the stack), else the last lines."""
    lines = [line for line in output.splitlines() if line.strip()]
    found = [line.strip() for line in lines if _ERROR_LINE.match(line)]
    if found:
        return found[-1][:limit]
    return "\n".join(lines[-5:])[:limit]

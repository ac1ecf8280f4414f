"""A throwaway PostgreSQL server for checking a backup away from the live one.

Verifying a backup means running its SQL.  Doing that on the live server is
not harmless: the roles section re-applies role attributes and grants (a role
whose LOGIN was revoked after the backup would get it back), the load can fill
the production data volume, and whatever the file contains runs there.  So
verification restores into a private server the worker starts itself, as
backup-container does inside its own pod: ``initdb`` in a new temporary
folder, the server listening only on a Unix socket inside that folder (no TCP,
so nothing else on the machine can reach it; trust authentication is therefore
local to this worker), configured for speed rather than durability (the data
is thrown away), and the folder removed when done -- also after a failure, a
cancel or a timeout, because ``ThrowawayPostgres`` is a context manager whose
exit always stops the server and deletes the folder.  The server also gets a
parent-death signal (``setpriv --pdeathsig``), so it stops even if the worker
itself is killed outright.

The server must be the backup's major version: pg_dump's ``-- Dumped from
database version N.x`` line (``DUMPED_FROM_RE``, read ahead by
``ops.backups.SafeSQLReader.peek_major``) gives it, and ``bindir`` finds
``/usr/lib/postgresql/N/bin`` (Debian's layout) or says clearly that this major
version is not installed.

PostgreSQL refuses to run as root; when the worker is root, ``initdb`` and
``postgres`` run as the unprivileged ``postgres`` system user
(``unprivileged_user``), who then owns the temporary folder.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from ops.errors import Unavailable

PG_ROOT = Path("/usr/lib/postgresql")
# pg_dump's header line naming the server the dump was taken from.
DUMPED_FROM_RE = re.compile(rb"-- Dumped from database version (\d+)(?:\.\d+)?")
# How far into a file the header is looked for: pg_dumpall's roles section
# comes first and is small for HCAP, but a cluster with many roles has a long one.
HEADER_SEARCH_BYTES = 64 << 20
# A Unix socket path is limited to 107 bytes on Linux.
MAX_SOCKET_PATH = 107
SERVER_SETTINGS = {
    "listen_addresses": "''",  # Unix socket only
    "unix_socket_permissions": "0700",
    "max_connections": "10",
    "shared_buffers": "32MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "1GB",
    "autovacuum": "off",
    "logging_collector": "off",
}
# Generous: initdb plus start-up take about a second on an idle machine.
START_DEADLINE_SECONDS = 120

Check = Callable[[], None]


def bindir(major: int) -> Path:
    """The server binaries of PostgreSQL ``major``; Unavailable if that
    version is not installed on this machine."""
    path = PG_ROOT / str(int(major)) / "bin"
    if not (path / "initdb").is_file() or not (path / "postgres").is_file():
        installed = sorted(p.parent.name for p in PG_ROOT.glob("*/bin/initdb")) if PG_ROOT.is_dir() else []
        raise Unavailable(
            f"the backup was taken from PostgreSQL {major}, but PostgreSQL {major} is not installed on the worker "
            f"({path} is missing; installed: {', '.join(installed) or 'none'}); "
            f"install postgresql-{major} to verify it")
    return path


def unprivileged_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's own) unless we
    are root, in which case the ``postgres`` system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no 'postgres' user to run a throwaway PostgreSQL as") from None


def _as_user(account: pwd.struct_passwd | None) -> dict:
    """Popen keyword arguments that run the child as ``account`` (no
    supplementary groups), or nothing."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _server_env(account: pwd.struct_passwd | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k not in ("HOME", "USER", "LOGNAME")}
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    env["LC_ALL"] = "C.UTF-8"
    return env


class ThrowawayPostgres:
    """``with ThrowawayPostgres(major, check=...) as server:`` gives a running
    server (``server.conninfo(dbname)``, ``server.psql``); leaving the block
    stops it and removes its folder, whatever happened inside."""

    def __init__(self, major: int, *, check: Check | None = None, parent: str | None = None):
        self.bindir = bindir(major)
        self.check = check
        self.parent = parent
        self.folder: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.user = "postgres"

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> "ThrowawayPostgres":
        try:
            self._start()
        except OSError as exc:  # no room or no permission for the folder, a binary that cannot run
            self.close()
            raise Unavailable(f"could not start a throwaway PostgreSQL server: {exc}") from None
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        account = unprivileged_user()
        self.folder = Path(tempfile.mkdtemp(prefix="hcapadmin-verify-", dir=self.parent))
        if len(str(self.folder / ".s.PGSQL.5432")) > MAX_SOCKET_PATH:
            raise Unavailable(f"temporary folder path {self.folder} is too long for a PostgreSQL socket; "
                              "set TMPDIR to a shorter path")
        if account is not None:
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        datadir = self.folder / "data"
        env = _server_env(account)
        initdb = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(datadir), "-U", self.user, "--auth-local=trust",
             "--auth-host=reject", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, text=True, env=env, cwd=self.folder, stdin=subprocess.DEVNULL, **_as_user(account))
        if initdb.returncode != 0:
            raise Unavailable(f"initdb of the throwaway server failed: {initdb.stderr.strip()[-500:]}")
        settings = dict(SERVER_SETTINGS, unix_socket_directories=f"'{self.folder}'")
        with open(datadir / "postgresql.conf", "a") as fh:
            fh.write("\n# throwaway verification server (ops.pgsandbox)\n")
            fh.write("".join(f"{key} = {value}\n" for key, value in settings.items()))
        argv = [str(self.bindir / "postgres"), "-D", str(datadir)]
        setpriv = shutil.which("setpriv")
        if setpriv:
            # SIGQUIT (immediate shutdown) if the worker dies without cleaning up
            argv = [setpriv, "--pdeathsig", "QUIT", "--"] + argv
        log = open(self.folder / "server.log", "wb")
        with log:
            if account is not None:
                os.chown(log.name, account.pw_uid, account.pw_gid)
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.folder, **_as_user(account))
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        pg_isready = self.bindir / "pg_isready"
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"the throwaway PostgreSQL server exited while starting: {self._log_tail()}")
            ready = subprocess.run([str(pg_isready), "-q", "-h", str(self.folder), "-U", self.user, "-d", "postgres"],
                                   stdin=subprocess.DEVNULL, capture_output=True, env=_server_env(None))
            if ready.returncode == 0:
                return
            if self.check:
                self.check()
            if time.monotonic() > deadline:
                raise Unavailable(f"the throwaway PostgreSQL server did not start: {self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace").strip()[-500:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server (immediate shutdown: its data is thrown away) and
        remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # -- use --------------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.folder} user={self.user} dbname={dbname}"

    @property
    def psql(self) -> str:
        return str(self.bindir / "psql")

    def env(self) -> dict:
        """The environment for client programs talking to this server."""
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

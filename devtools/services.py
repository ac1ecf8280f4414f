"""Start and stop private PostgreSQL, Redis and FerretDB servers.

Used by the sandbox (``make run``, state under ./var) and by the test harness
(throwaway instances on free ports).  Everything listens on 127.0.0.1 only.
PostgreSQL refuses to run as root, so when we are root its server runs as the
``postgres`` system user and owns its data directory.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"


# Ports for the servers we start are drawn from below the kernel's ephemeral
# range: a port the kernel hands out for bind(0) is one it may also give an
# outgoing connection (a test's HTTP call, psql) in the moment between our
# check and the server's own bind, which then fails with "address already in use".
_LISTEN_PORTS_FLOOR = 10000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on, outside the ephemeral range when there is
    room below it (so no outgoing connection can take it before the server
    binds it), chosen at random so that test runs side by side rarely meet."""
    low, _high = _ephemeral_range()
    if low - _LISTEN_PORTS_FLOOR >= 1000:
        rng = secrets.SystemRandom()
        for _ in range(64):
            port = rng.randrange(_LISTEN_PORTS_FLOOR, low)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None, name: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name or 'server'} exited with code {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name or 'server'} did not listen on port {port} within {timeout:g}s")


def ensure_port_free(port: int, name: str) -> None:
    """Refuse to start when something already listens on ``port`` (for
    example a server left over from an earlier sandbox): otherwise the new
    server would fail to bind while the readiness check talked to the old one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise RuntimeError(
                f"cannot start {name}: something already listens on 127.0.0.1:{port} "
                "(a server left over from an earlier run?); stop it or choose another port"
            )


def pg_bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found; run `make install`")


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


@dataclass
class Postgres:
    datadir: Path
    port: int
    password: str
    user: str = "postgres"
    log: Path = field(init=False)

    def __post_init__(self):
        self.log = self.datadir.parent / "postgres.log"

    # -- lifecycle ----------------------------------------------------------
    @classmethod
    def create(cls, datadir: Path, port: int, *, fast: bool = False) -> "Postgres":
        datadir = Path(datadir)
        datadir.parent.mkdir(parents=True, exist_ok=True)
        password_file = datadir.parent / "postgres.password"
        if not (datadir / "PG_VERSION").exists():
            password = secrets.token_urlsafe(18)
            password_file.write_text(password)
            datadir.mkdir(mode=0o700, exist_ok=True)
            _chown_postgres(datadir)
            pwfile = datadir.parent / ".initdb-pw"
            pwfile.write_text(password)
            _chown_postgres(pwfile)
            try:
                subprocess.run(
                    _as_postgres() + [str(pg_bindir() / "initdb"), "-D", str(datadir), "-U", "postgres",
                                      "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                                      "-E", "UTF8", "--locale=C.UTF-8"],
                    check=True, capture_output=True, text=True,
                )
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"initdb failed: {exc.stderr.strip()}") from None
            finally:
                pwfile.unlink(missing_ok=True)
            conf = ["listen_addresses = '127.0.0.1'", f"unix_socket_directories = '{datadir}'", "max_connections = 200"]
            if fast:
                conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
            with open(datadir / "postgresql.conf", "a") as fh:
                fh.write("\n# hcapadmin\n" + "\n".join(conf) + "\n")
        pg = cls(datadir=datadir, port=port, password=password_file.read_text().strip())
        return pg

    def start(self) -> "Postgres":
        self.log.touch()
        _chown_postgres(self.log)
        result = subprocess.run(
            _as_postgres() + [str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log),
                              "-o", f"-p {self.port}", "-w", "-t", "60", "start"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
        return self

    def stop(self) -> None:
        subprocess.run(
            _as_postgres() + [str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
            capture_output=True, text=True,
        )

    def running(self) -> bool:
        return subprocess.run(_as_postgres() + [str(pg_bindir() / "pg_ctl"), "-D", str(self.datadir), "status"],
                              capture_output=True).returncode == 0

    # -- helpers --------------------------------------------------------------
    def url(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        user = user or self.user
        password = self.password if password is None else password
        return f"postgres://{quote(user)}:{quote(password, safe='')}@127.0.0.1:{self.port}/{quote(dbname)}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        result = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", dbname, "-v", "ON_ERROR_STOP=1",
             "-qAtc", sql],
            capture_output=True, text=True, env=env,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str, exist_ok: bool = True) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
        if exists:
            if not exist_ok:
                raise RuntimeError(f"database {name} exists")
            return
        self.psql(f'CREATE DATABASE "{name}"')


@dataclass
class Redis:
    port: int
    workdir: Path
    proc: subprocess.Popen | None = None

    def start(self, persist: bool = False) -> "Redis":
        self.workdir.mkdir(parents=True, exist_ok=True)
        ensure_port_free(self.port, "redis")
        args = [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--daemonize", "no", "--protected-mode", "yes",
                "--save", "60 1" if persist else "", "--appendonly", "no", "--logfile", str(self.workdir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, 15, self.proc, "redis")
        return self

    def stop(self) -> None:
        _terminate(self.proc)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@dataclass
class FerretDB:
    port: int
    workdir: Path
    postgres_url: str
    proc: subprocess.Popen | None = None

    def start(self) -> "FerretDB":
        self.workdir.mkdir(parents=True, exist_ok=True)
        ensure_port_free(self.port, "ferretdb")
        binary = TOOLS_BIN / "ferretdb"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing; run `make install`")
        args = [str(binary), "--handler=postgresql", f"--postgresql-url={self.postgres_url}",
                f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.workdir}", "--telemetry=disable",
                f"--debug-addr=127.0.0.1:{free_port()}", "--log-level=WARN"]
        log = open(self.workdir / "ferretdb.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for_port(self.port, 30, self.proc, "ferretdb")
        return self

    def stop(self) -> None:
        _terminate(self.proc)

    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"


def _terminate(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

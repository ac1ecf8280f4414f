"""What a platform driver can do, split by capability.

Everything that differs between running on this machine and running on
OpenShift is a method of one of these capabilities; the rest of the portal
asks the configured driver and never checks which platform it is on.  Each
capability is an abstract class; ``PlatformDriver`` composes them all, so a
driver implements every method, and one that cannot do something on its
platform raises ``Unsupported`` (an ``ops.errors.Invalid``: callers show it
as a refusal, never as a crash).  Methods return the dataclasses below, never
loose dicts.

* ``Backups``: list, take, verify (``ops.backups.BackupEntry``, ``VerifyFindings``);
* ``Database``: the managed PostgreSQL server's databases (version, create,
  rename, drop, block/allow connections, end sessions, size);
* ``Migrations``: node-pg-migrate's files where ``up`` runs, reading one, running ``up``;
* ``Cluster``: Patroni members and leader (``ClusterState``);
* ``Workloads``: scaling Deployments/StatefulSets/DeploymentConfigs, waiting
  for their pods, suspending and resuming CronJobs;
* ``Exec``: a command in a pod with streamed stdin and output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ops.errors import Invalid, Unavailable
from ops.logbackups import MONGODUMP_UNAVAILABLE

if TYPE_CHECKING:
    from ops.backups import BackupEntry
    from ops.migrations.runner import UpResult
    from ops.migrations.sources import MigrationFiles

Log = Callable[[str], None]
Check = Callable[[], None]


class Unsupported(Invalid):
    """The platform this driver runs on has no such operation (for example
    scaling workloads on the local platform)."""


def database_name(name) -> str:
    """``name`` if PostgreSQL accepts it as a database identifier (1-63
    bytes, no NUL); Invalid otherwise.  Drivers always quote it as an
    identifier, so any other character is safe."""
    if not isinstance(name, str) or not name or "\0" in name or len(name.encode()) > 63:
        raise Invalid("a database name is 1 to 63 bytes without NUL characters")
    return name


# --- the dataclasses drivers return ----------------------------------------------------
@dataclass(frozen=True)
class VerifyFindings:
    """What a verification found: one line for people, and the details kept
    with the verification record (table counts, the pod that ran it, ...)."""

    summary: str
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterMember:
    name: str
    role: str
    state: str
    lag: int | None = None
    timeline: int | None = None
    host: str | None = None


@dataclass(frozen=True)
class ClusterState:
    """``mode`` is "patroni" or "single" (one server, no Patroni)."""

    mode: str
    leader: str | None
    members: list[ClusterMember] = field(default_factory=list)


@dataclass(frozen=True)
class ServerVersion:
    number: int   # server_version_num, e.g. 160004
    text: str     # server_version, e.g. "16.4 (Debian 16.4-1)"

    @property
    def major(self) -> int:
        return self.number // 10000


@dataclass(frozen=True)
class ScaleResult:
    kind: str
    name: str
    previous: int   # replicas before the change, to scale back to
    replicas: int   # replicas asked for now


@dataclass(frozen=True)
class CronJobState:
    name: str
    was_suspended: bool   # before the change, to restore it


@dataclass(frozen=True)
class WorkloadState:
    kind: str       # DeploymentConfig or Deployment
    name: str
    replicas: int   # what it asks for now
    selector: str   # label selector of its pods, "k=v,k2=v2"


@dataclass(frozen=True)
class DatabaseCredentials:
    """The managed server's superuser credentials (the password is never
    shown: not in repr, logs or step records)."""

    user: str
    password: str = field(repr=False)
    database: str = ""  # the application's database


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


# --- capabilities ------------------------------------------------------------------------
class Backups(ABC):
    @abstractmethod
    def list_backups(self) -> list[BackupEntry]:
        """Every backup file the platform holds, newest first."""

    @abstractmethod
    def take_backup(self, *, log: Log | None = None, check: Check | None = None, now=None) -> BackupEntry | None:
        """Take one backup now; returns the new entry, or None when the
        platform does not say which file it wrote."""

    @abstractmethod
    def verify_backup(self, entry: BackupEntry, *, log: Log | None = None,
                      check: Check | None = None) -> VerifyFindings:
        """Restore ``entry`` somewhere throwaway and check it; raises
        ops.backups.VerifyFailed."""

    @abstractmethod
    def backup_checksum(self, entry: BackupEntry, *, check: Check | None = None) -> str:
        """The SHA-256 (hex) of the backup file as it is now, read where the
        file lives; raises ops.errors.NotFound when it is gone."""

    # The log database's (MongoDB) backups, made by backup-container's log
    # backup pod (ops.logbackups).  Where mongodump cannot run they are only
    # listed and checked.
    takes_log_backups = False  # True where backup.sh -1 can run for the log database

    def list_log_backups(self) -> list[BackupEntry]:
        """The log database's backups (engine "mongo"), newest first."""
        return []

    def take_log_backup(self, *, log: Log | None = None, check: Check | None = None) -> BackupEntry | None:
        raise Unavailable(MONGODUMP_UNAVAILABLE)

    def verify_log_backup(self, entry: BackupEntry, *, log: Log | None = None,
                          check: Check | None = None) -> VerifyFindings:
        raise Unavailable("log backups cannot be verified on this platform")


class Database(ABC):
    """Databases of the managed PostgreSQL server, named by identifiers
    (always quoted as identifiers, never spliced into SQL text)."""

    @abstractmethod
    def managed_database(self) -> str | None:
        """The name of the database the portal operates on, when the driver knows it."""

    @abstractmethod
    def server_version(self) -> ServerVersion: ...

    @abstractmethod
    def create_database(self, name: str, *, owner: str | None = None) -> None: ...

    @abstractmethod
    def rename_database(self, name: str, new_name: str) -> None: ...

    @abstractmethod
    def drop_database(self, name: str, *, missing_ok: bool = False) -> None: ...

    @abstractmethod
    def block_connections(self, name: str) -> None:
        """New connections to ``name`` are refused (existing ones stay)."""

    @abstractmethod
    def allow_connections(self, name: str) -> None: ...

    @abstractmethod
    def end_sessions(self, name: str) -> int:
        """Terminate every other session on ``name`` and wait until they are
        gone; returns how many there were."""

    @abstractmethod
    def database_size(self, name: str) -> int:
        """Bytes on disk (``pg_database_size``)."""

    @abstractmethod
    def database_credentials(self) -> DatabaseCredentials:
        """The managed server's superuser credentials where the platform keeps them."""

    @abstractmethod
    def maintenance_conninfo(self) -> str:
        """A libpq connection string with which the portal administers the
        managed server (create, rename and drop databases: ops.restore).  It
        may hold a password: for psycopg only, never logged or stored."""


class Migrations(ABC):
    @abstractmethod
    def migrations_location(self) -> str:
        """Where the files are listed, for people (before a listing names a pod)."""

    @abstractmethod
    def migration_files(self) -> MigrationFiles:
        """The migrations folder where ``up`` will run; raises
        ops.migrations.sources.SourceMissing when it is not there."""

    @abstractmethod
    def read_migration(self, filename: str, files: MigrationFiles | None = None) -> str:
        """The text of ``filename``, which must be in ``files`` (listed again
        when not given); NotFound otherwise."""

    @abstractmethod
    def migrate_up(self, files: MigrationFiles | None = None, *, on_line: Log | None = None,
                   timeout: float = 1800, check: Check | None = None) -> UpResult:
        """The real ``node-pg-migrate up``, where ``files`` were listed,
        each output line to ``on_line`` as it arrives (the command first)."""


class Cluster(ABC):
    @abstractmethod
    def cluster_state(self) -> ClusterState: ...

    @abstractmethod
    def patroni_members(self) -> list[dict]:
        """Patroni's own view of its members (``patronictl list -f json``)."""

    @abstractmethod
    def patroni_switchover(self, leader: str, candidate: str) -> str:
        """Make ``candidate`` the leader with Patroni's switchover."""

    @abstractmethod
    def patroni_reinit(self, member: str) -> str:
        """Reinitialise a replica from the leader."""


class Workloads(ABC):
    @abstractmethod
    def scale(self, kind: str, name: str, replicas: int) -> ScaleResult:
        """Set the replicas of a Deployment, StatefulSet or DeploymentConfig
        through its scale subresource; returns the count before."""

    @abstractmethod
    def wait_pods_gone(self, selector: str, *, timeout: float = 600, check: Check | None = None,
                       poll: float = 1.0) -> None:
        """Return once no pod matches ``selector``; Timeout past ``timeout``."""

    @abstractmethod
    def wait_pods_ready(self, selector: str, count: int, *, timeout: float = 600, check: Check | None = None,
                        poll: float = 1.0) -> list[str]:
        """Return the names once ``count`` matching pods are Running and Ready."""

    @abstractmethod
    def suspend_cronjobs(self, names: Iterable[str] | None = None) -> list[CronJobState]:
        """Suspend the CronJobs (the configured ones by default); returns
        each one's state before, for ``resume_cronjobs``."""

    @abstractmethod
    def resume_cronjobs(self, states: Iterable[CronJobState]) -> None:
        """Put each CronJob back to its state before ``suspend_cronjobs``."""

    @abstractmethod
    def server_workload(self) -> WorkloadState:
        """The application server's workload (DeploymentConfig, else Deployment)."""

    @abstractmethod
    def replicas_of(self, kind: str, name: str) -> int:
        """The replicas a workload asks for now."""

    @abstractmethod
    def cronjob_states(self) -> list[CronJobState]:
        """The database CronJobs and whether each is suspended now."""

    @abstractmethod
    def wait_pod_count(self, selector: str, count: int, *, timeout: float = 600, check: Check | None = None,
                       poll: float = 1.0) -> list[str]:
        """Return the names once at most ``count`` pods match ``selector``."""


class Exec(ABC):
    @abstractmethod
    def exec(self, pod: str, argv: list[str], *, container: str | None = None, timeout: float = 600,
             stdin: Iterable[bytes | str] | None = None, on_stdout: Log | None = None,
             on_stderr: Log | None = None, check: Check | None = None) -> ExecResult:
        """Run ``argv`` (a list, never a shell string) in ``pod``, feeding it
        ``stdin`` chunk by chunk, then end of input."""


class PlatformDriver(Backups, Database, Migrations, Cluster, Workloads, Exec, ABC):
    name: str = ""

    @abstractmethod
    def ping(self, timeout: float = 2.0) -> None:
        """Return when the platform answers; raise ops.errors.OpsError if not."""

    @abstractmethod
    def describe(self) -> str:
        """A short label for logs and the readiness probe."""

    @abstractmethod
    def banner(self) -> str:
        """The platform part of the environment banner on every page."""

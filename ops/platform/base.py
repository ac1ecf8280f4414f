"""The interface both platform drivers implement."""

from __future__ import annotations

from abc import ABC, abstractmethod


class PlatformDriver(ABC):
    name: str = ""

    @abstractmethod
    def ping(self, timeout: float = 2.0) -> None:
        """Return when the platform answers; raise ops.errors.OpsError if not."""

    @abstractmethod
    def describe(self) -> str:
        """A short label for the environment banner."""

    # --- backups (issue 4) -------------------------------------------------------
    def list_backups(self) -> list:
        """Every backup file the platform holds (ops.backups.BackupEntry), newest first."""
        raise NotImplementedError

    def take_backup(self, *, log=None, check=None, now=None):
        """Take one backup now; returns the new BackupEntry (or None when the
        platform does not say which file it wrote)."""
        raise NotImplementedError

    def verify_backup(self, entry, *, log=None, check=None) -> dict:
        """Restore ``entry`` somewhere throwaway and check it; returns findings,
        raises ops.backups.VerifyFailed."""
        raise NotImplementedError

    # --- log database (MongoDB) backups: ops.logbackups ---------------------------
    takes_log_backups = False  # True where backup.sh -1 can run for the log database

    def list_log_backups(self) -> list:
        """The log database's backups (BackupEntry, engine "mongo"), newest first."""
        return []

    def take_log_backup(self, *, log=None, check=None):
        from ops.errors import Unavailable
        from ops.logbackups import MONGODUMP_UNAVAILABLE

        raise Unavailable(MONGODUMP_UNAVAILABLE)

    def verify_log_backup(self, entry, *, log=None, check=None) -> dict:
        from ops.errors import Unavailable

        raise Unavailable("log backups cannot be verified on this platform")

    def cluster_members(self) -> dict:
        """{"mode": "patroni"|"single", "leader": name|None, "members": [{name, role, state, ...}]}"""
        raise NotImplementedError

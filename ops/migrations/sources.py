"""Where migration files come from, and what a listing of them is.

A platform driver lists and reads the files where ``up`` will run them (a
folder on this machine, or the folder inside the running server pod) and
returns a ``MigrationFiles``; reading one file is only ever allowed for a
name taken from that listing, never used to build a path from input.  The
folder on this machine is ``LocalFolder``; the pod's folder is listed with
``pod_list_argv`` and parsed with ``parse_pod_listing`` by the OpenShift
driver.  ``up_down_lines`` finds where a file defines ``up`` and ``down``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ops.errors import Invalid, NotFound
from ops.migrations.ordering import is_migration_entry


class SourceMissing(NotFound):
    """The migrations folder (or the server pod holding it) is not there."""


@dataclass(frozen=True)
class MigrationFiles:
    """One listing of a migrations folder: the entries node-pg-migrate would
    load (unsorted, as the folder gave them), a label saying where they were
    read, and the pod they were read in (OpenShift), so that reading a file
    or running ``up`` afterwards happens in the same place."""

    names: list[str] = field(default_factory=list)
    location: str = ""
    pod: str | None = None


class LocalFolder:
    """The migrations folder on this machine."""

    def __init__(self, path: str):
        self.path = path

    def migrations_location(self) -> str:
        return f"folder {self.path}"

    def migration_files(self) -> MigrationFiles:
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries if e.is_symlink() or e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            raise SourceMissing(f"migrations folder {self.path} does not exist") from None
        except NotADirectoryError:
            raise SourceMissing(f"migrations folder {self.path} is not a folder") from None
        except PermissionError:
            raise SourceMissing(f"migrations folder {self.path} cannot be read (permission denied)") from None
        return MigrationFiles([n for n in names if is_migration_entry(n)], self.migrations_location())

    def read_migration(self, filename: str, files: MigrationFiles | None = None) -> str:
        files = self.migration_files() if files is None else files
        if filename not in files.names:
            raise NotFound(f"no migration file {filename}")
        try:
            with open(os.path.join(self.path, filename), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError as exc:
            raise SourceMissing(f"cannot read {filename}: {exc.strerror}") from None


def pod_folder(path: str) -> str:
    """The pod's migrations folder without a trailing slash; Invalid unless absolute."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise Invalid("the pod's migrations folder must be an absolute path")
    return path.rstrip("/") or "/"


def pod_list_argv(folder: str) -> list[str]:
    """``find`` printing the folder's files and symlinks NUL-separated, so odd names survive."""
    return ["find", folder + "/", "-mindepth", "1", "-maxdepth", "1", "(", "-type", "f", "-o", "-type", "l", ")",
            "-printf", "%f\\0"]


def parse_pod_listing(stdout: str) -> list[str]:
    return [n for n in stdout.split("\0") if is_migration_entry(n)]


def pod_read_argv(folder: str, filename: str) -> list[str]:
    return ["cat", "--", f"{folder}/{filename}"]


_UP_DOWN = [
    ("up", re.compile(r"^\s*(exports\.up\b|module\.exports\.up\b|export\s+(async\s+)?(const|function|let|var)\s+up\b"
                      r"|(async\s+)?function\s+up\b|up\s*[:(]|--[\s-]*up\s+migration)", re.I)),
    ("down", re.compile(r"^\s*(exports\.down\b|module\.exports\.down\b|export\s+(async\s+)?(const|function|let|var)\s+"
                        r"down\b|(async\s+)?function\s+down\b|down\s*[:(]|--[\s-]*down\s+migration)", re.I)),
]


def up_down_lines(source: str) -> dict[str, int | None]:
    """1-based line numbers where ``up`` and ``down`` are defined (or None)."""
    found: dict[str, int | None] = {"up": None, "down": None}
    for number, line in enumerate(source.splitlines(), start=1):
        for which, pattern in _UP_DOWN:
            if found[which] is None and pattern.search(line):
                found[which] = number
    return found

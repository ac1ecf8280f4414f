"""node-pg-migrate 8.0.4's rules for migration files, copied from its
``dist/legacy/migration.js`` and ``runner.js`` (and checked against the real
tool in tests/test_migrations.py):

* a migration file is a directory entry that is a file or a symlink and whose
  name does not start with a dot; subfolders are ignored;
* files are sorted by the numeric value of the prefix before the first ``_``
  (13 digits: milliseconds since the epoch; 17 digits: ``YYYYMMDDHHmmssSSS``
  UTC; anything else: logged as an error and taken as ``Number(prefix) || 0``),
  ties by a numeric-aware, punctuation-ignoring name comparison;
* ``up`` compares the i-th applied row with the i-th file for every i up to
  the shorter list and refuses at the first mismatch with
  ``Not run migration X is preceding already run migration Y``.

Pure functions of names: no files, no database."""

from __future__ import annotations

import os
import re
import unicodedata
from datetime import datetime, timezone

KNOWN_EXTENSIONS = ("js", "cjs", "mjs", "ts", "sql")
NAME_PATTERN = re.compile(r"^(?P<ts>\d{13}|\d{17})_(?P<title>[^/]+)\.(?P<ext>[A-Za-z0-9]+)$")
# What a migration name in a URL or a form may look like: anything a file
# name or a varchar(255) row can hold, minus path separators, control
# characters and a leading dot.  Names are only ever looked up in what was
# read, never used to build a path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f/\\]")


def valid_name(name: str) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".") and not _CONTROL.search(name)


_JS_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?)$", re.I)


def _js_number(text: str) -> float:
    """``Number(text) || 0`` for the strings a file-name prefix can be."""
    s = text.strip()
    if s == "":
        return 0
    low = s.lower()
    try:
        if re.fullmatch(r"0x[0-9a-f]+", low):
            return int(low, 16)
        if re.fullmatch(r"0o[0-7]+", low):
            return int(low[2:], 8)
        if re.fullmatch(r"0b[01]+", low):
            return int(low[2:], 2)
        if s in ("Infinity", "+Infinity"):
            return float("inf")
        if s == "-Infinity":
            return float("-inf")
        if _JS_NUMBER.match(s):
            value = float(s)
            if value.is_integer() and abs(value) < 2**53:
                return int(value)
            return value
    except ValueError:
        pass
    return 0  # NaN || 0


def _utc17_ms(prefix: str) -> int | None:
    try:
        moment = datetime(int(prefix[0:4]), int(prefix[4:6]), int(prefix[6:8]), int(prefix[8:10]),
                          int(prefix[10:12]), int(prefix[12:14]), int(prefix[14:17]) * 1000, tzinfo=timezone.utc)
    except ValueError:
        return None  # JavaScript: Invalid Date -> NaN
    return int(moment.timestamp()) * 1000 + int(prefix[14:17])


def numeric_prefix(filename: str) -> tuple[float | None, bool]:
    """(sort value, prefix readable) like node-pg-migrate's getNumericPrefix.
    The value is None where JavaScript would compute NaN (an impossible
    17-digit date); node-pg-migrate then falls back to the name comparison."""
    prefix = filename.split("_")[0]
    if prefix and prefix.isascii() and prefix.isdigit():
        if len(prefix) == 13:
            return int(prefix), True
        if len(prefix) == 17:
            value = _utc17_ms(prefix)
            return value, value is not None
    return _js_number(prefix), False


# names that are not "<13 digits>_<name>.js|.sql" (the common case, which needs no warning)
_SUSPICIOUS = re.compile(r"^(?!\d{13}_[^\n]*[^\n.]\.(?:js|sql)$)[^\n]*$", re.M)


def suspicious_names(ordered: list[str]) -> list[str]:
    """The names that need a closer look by name_warning(), found with one
    regex pass over all of them."""
    return _SUSPICIOUS.findall("\n".join(ordered))


_TOKEN = re.compile(r"\d+|.", re.S)


def name_key(name: str) -> tuple:
    """Sort key approximating ``a.localeCompare(b, undefined, {numeric: true,
    sensitivity: 'variant', ignorePunctuation: true})``: punctuation and spaces
    ignored, digit runs compared as numbers and before letters, letters
    compared without case first, lower case before upper case on a tie."""
    primary, secondary, tertiary = [], [], []
    for token in _TOKEN.findall(unicodedata.normalize("NFD", name)):
        if token[0].isdigit() and token.isascii():
            primary.append((0, int(token), ""))
        elif unicodedata.combining(token):
            if secondary:
                secondary[-1] = secondary[-1] + (ord(token),)
        elif token.isalpha():
            primary.append((1, 0, token.casefold()))
            secondary.append(())
            tertiary.append(0 if token.islower() or not token.isupper() else 1)
        elif token.isspace() or _is_punctuation(token):
            continue
        else:  # symbols ($, +, =, ...) are not ignored by ICU; they sort before digits
            primary.append((-1, ord(token), ""))
    return tuple(primary), tuple(secondary), tuple(tertiary)


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "P"


def migration_name(filename: str) -> str:
    """``basename(path, extname(path))`` (names never start with a dot here)."""
    i = filename.rfind(".")
    return filename[:i] if i > 0 else filename


def is_migration_entry(filename: str) -> bool:
    return bool(filename) and not filename.startswith(".") and "/" not in filename and "\0" not in filename


def _sort_value(filename: str):
    prefix = filename.split("_", 1)[0]
    if len(prefix) == 13 and prefix.isdigit() and prefix.isascii():
        return int(prefix)  # the common case, fast
    value, _ok = numeric_prefix(filename)
    return 0 if value is None else value


def sort_filenames(filenames) -> list[str]:
    """node-pg-migrate's order.  Timestamps first (cheap), the name
    comparison only among equal timestamps.  (An impossible 17-digit date is
    NaN in JavaScript, which Array.prototype.sort's comparator treats as
    "equal", falling back to the name comparison; it is placed at 0 here, the
    closest total order.)"""
    filenames = list(filenames)
    values = [int(f[:13]) if f[13:14] == "_" and f[:13].isdigit() and f[:13].isascii() else _sort_value(f)
              for f in filenames]
    order = sorted(range(len(filenames)), key=values.__getitem__)
    if len(set(values)) == len(values):
        return [filenames[i] for i in order]
    out: list[str] = []
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and values[order[j]] == values[order[i]]:
            j += 1
        group = [filenames[k] for k in order[i:j]]
        if len(group) > 1:
            group.sort(key=name_key)  # stable: ties keep directory order
        out.extend(group)
        i = j
    return out


def name_warning(filename: str) -> str | None:
    match = NAME_PATTERN.match(filename)
    if match:
        if len(match["ts"]) == 17 and _utc17_ms(match["ts"]) is None:
            return (f"{filename}: the 17-digit prefix is not a valid UTC date; node-pg-migrate cannot "
                    "order it by time")
        if match["ext"].lower() not in KNOWN_EXTENSIONS:
            return (f"{filename}: extension .{match['ext']} is not .js/.cjs/.mjs/.ts/.sql; node-pg-migrate cannot "
                    "load it and `up` fails")
        return None
    value, _ok = numeric_prefix(filename)
    return (f"{filename}: name does not follow <timestamp>_<name>.<ext> (13- or 17-digit timestamp); "
            f"node-pg-migrate sorts it as {value:g}")


def unloadable(filename: str) -> bool:
    """node-pg-migrate imports every non-.sql file as a module; Node refuses
    unknown extensions (ERR_UNKNOWN_FILE_EXTENSION), so `up` fails to start."""
    ext = os.path.splitext(filename)[1]
    return bool(ext) and ext[1:].lower() not in KNOWN_EXTENSIONS


def encoded_date(filename: str) -> datetime | None:
    value, ok = numeric_prefix(filename)
    if not ok or value is None:
        return None
    try:
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None



def check_order(run_names: list[str], file_names: list[str]) -> tuple[str, str] | None:
    """node-pg-migrate's checkOrder: (not run X, already run Y) at the first mismatch."""
    for run_name, file_name in zip(run_names, file_names):
        if run_name != file_name:
            return file_name, run_name
    return None


def refusal_message(pair: tuple[str, str]) -> str:
    return f"Not run migration {pair[0]} is preceding already run migration {pair[1]}"


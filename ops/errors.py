"""Errors the operations layer raises.  Each carries a message fit to show a
person (no secrets, no stack traces)."""


class OpsError(Exception):
    """Base class."""


class Unavailable(OpsError):
    """A dependency (database, API, pod) cannot be reached."""


class NotFound(OpsError):
    """The thing asked for does not exist."""


class Forbidden(OpsError):
    """The platform refused (for example an OpenShift 403)."""


class Invalid(OpsError):
    """The input is not acceptable (bad name, bad value)."""


class Timeout(OpsError):
    """The operation took longer than allowed."""


class Conflict(OpsError):
    """The request clashes with the current state (for example another job
    already holds the target)."""

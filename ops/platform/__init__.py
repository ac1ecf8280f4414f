"""Platform drivers: one interface (``base.PlatformDriver``), two drivers."""

from __future__ import annotations

from ops.platform.base import PlatformDriver


def make_driver(kind: str, **config) -> PlatformDriver:
    if kind == "local":
        from ops.platform.local import LocalDriver

        return LocalDriver(**config)
    if kind == "openshift":
        from ops.platform.openshift import OpenShiftDriver

        return OpenShiftDriver(**config)
    raise ValueError(f"unknown platform {kind!r}")

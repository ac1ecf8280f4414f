"""Platform drivers: the capabilities in ``base`` (one abstract class each,
composed by ``base.PlatformDriver``), and two drivers, ``local`` and
``openshift``."""

from __future__ import annotations

from ops.platform.base import PlatformDriver
from ops.platform.local import LocalDriver
from ops.platform.openshift import OpenShiftDriver

DRIVERS: dict[str, type[PlatformDriver]] = {"local": LocalDriver, "openshift": OpenShiftDriver}


def make_driver(kind: str, **config) -> PlatformDriver:
    try:
        driver_class = DRIVERS[kind]
    except KeyError:
        raise ValueError(f"unknown platform {kind!r}") from None
    return driver_class(**config)

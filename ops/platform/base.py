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

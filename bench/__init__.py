"""Benchmarks (`make bench`).  Each module bench/bench_<name>.py defines
``run(stack) -> list[Result]``; figures that are ratios are measured side by
side in the same run, so they hold on any machine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    benchmark: str          # e.g. "logs: page 1000 / page 1"
    value: float
    unit: str               # "s", "x", "MB", "docs/s", ...
    target: str = ""        # e.g. "<= 1.5"
    passed: bool | None = None  # None when there is no target

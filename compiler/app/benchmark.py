"""Latency and throughput of loaded artifacts (`infer-compile bench`).

Several runners are measured in alternation (A, B, A, B, ...) so that machine noise (turbo,
other processes) hits all of them alike and their ratio stays meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import TensorSpec
from infer_compile.core.numerics import Feeds
from infer_compile.targets import Runner

BENCH_SCHEMA = "infer-compile.bench/1"


@dataclass
class Timing:
    """Latencies of one runner at one batch size."""

    label: str
    batch: int
    seconds: list[float]

    def to_json(self) -> dict:
        ms = np.asarray(self.seconds) * 1000
        total = float(np.sum(self.seconds))
        return {
            "artifact": self.label, "batch": self.batch, "iterations": len(self.seconds),
            "latency_ms": {"mean": float(ms.mean()), "min": float(ms.min()), "p50": float(np.percentile(ms, 50)),
                           "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
                           "max": float(ms.max())},
            "throughput": self.batch * len(self.seconds) / total if total > 0 else float("inf"),  # samples/s
        }


def with_batch(specs: list[TensorSpec], batch: int | None) -> list[TensorSpec]:
    """``specs`` with a dynamic leading (batch) dim set to ``batch``; refuses a batch the artifact cannot take."""
    if batch is None:
        return specs
    if batch < 1:
        raise UserInputError(f"--batch-size {batch} must be at least 1", hint="for example --batch-size 8")
    resized = []
    for spec in specs:
        first = spec.shape[0] if spec.shape else None
        if isinstance(first, int) and first >= 0 and first != batch:
            raise UserInputError(f"input '{spec.name}' has a fixed batch of {first}; cannot run batch {batch}",
                                 hint="rebuild with a dynamic batch dimension, or drop --batch-size")
        resized.append(replace(spec, shape=(batch, *spec.shape[1:])) if spec.shape else spec)
    return resized


def feed_batch(feeds: Feeds) -> int:
    """The batch the feeds carry (first dim of the first input), for throughput."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def measure(runners: dict[str, tuple[Runner, Feeds]], *, warmup: int, iterations: int,
            tick: Callable[[], None] | None = None) -> list[Timing]:
    """Warm each runner up, then time ``iterations`` runs of each, alternating between runners."""
    for runner, feeds in runners.values():
        for _ in range(warmup):
            runner.run(feeds)
    timings = {label: Timing(label, feed_batch(feeds), []) for label, (_, feeds) in runners.items()}
    for _ in range(iterations):
        for label, (runner, feeds) in runners.items():
            start = time.perf_counter()
            runner.run(feeds)
            timings[label].seconds.append(time.perf_counter() - start)
            if tick:
                tick()
    return list(timings.values())

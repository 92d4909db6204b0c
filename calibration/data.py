"""Calibration settings (what the user asked for) and data (the samples read for one build)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.calibration.calibrators import METHODS
from infer_compile.calibration.readers import (
    CalibrationWarning,
    ImageFolderReader,
    ImagePreprocess,
    Keep,
    Reader,
    open_reader,
    validated,
)
from infer_compile.core.errors import UserInputError
from infer_compile.core.ir import TensorSpec
from infer_compile.core.numerics import Feeds

# Fewer samples than this rarely cover a data distribution's tails.
FEW_SAMPLES = 16


@dataclass(frozen=True)
class CalibrationSettings:
    """``--calib`` and friends."""

    source: str | Path  # folder (a Path, so build-cache keys hash its contents), pkg.mod:fn or "synthetic"
    method: str = "minmax"
    percentile: float = 99.99
    max_samples: int = 128
    cache: Path | None = None  # JSON range cache, reused when model and data hashes match
    preprocess: ImagePreprocess = field(default_factory=ImagePreprocess)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"unknown calibration method '{self.method}'",
                                 hint=f"use one of: {', '.join(METHODS)}")
        if self.max_samples < 1:
            raise UserInputError(f"--calib-samples {self.max_samples} must be at least 1",
                                 hint="it is how many samples to calibrate on; leave it out for 128")
        if not 0 < self.percentile <= 100:
            raise UserInputError(f"--percentile {self.percentile} is not in (0, 100]", hint="e.g. 99.99")


class ReaderSamples:
    """The validated samples of ``reader``, up to ``max_samples``: re-iterable, each pass reads them again
    (from disk for --calib folders), so only the sample being used is in memory."""

    def __init__(self, reader: Reader, inputs: list[TensorSpec], max_samples: int) -> None:
        self.reader = reader
        self.inputs = inputs
        self.max_samples = max_samples

    def __iter__(self) -> Iterator[Feeds]:
        total = 0
        for sample in validated(self.reader, self.inputs):
            yield sample
            total += sample_count(sample)
            if total >= self.max_samples:
                return

    def subset(self, keep: Keep, feeds: int) -> Reiterable:
        """The first ``feeds`` samples' subset ``keep`` accepts; only those are read."""
        return Reiterable(lambda: validated(self.reader, self.inputs, keep, stop=feeds))


@dataclass(frozen=True)
class Reiterable:
    """Samples produced anew on every pass by ``start`` (e.g. a filter or a map over ReaderSamples)."""

    start: Callable[[], Iterator[Feeds]]

    def __iter__(self) -> Iterator[Feeds]:
        return self.start()


def subset(samples: Iterable[Feeds], keep: Keep, feeds: int) -> Iterable[Feeds]:
    """The samples (of ``feeds``) whose position ``keep`` accepts; re-iterable like ``samples``."""
    if isinstance(samples, ReaderSamples):
        return samples.subset(keep, feeds)
    return Reiterable(lambda: (sample for index, sample in enumerate(samples) if keep(index)))


@dataclass(frozen=True)
class Summary:
    """What one pass over the samples learns: the samples (batch rows) in each feed and the data digest."""

    rows: tuple[int, ...]
    digest: str | None  # None: not computed (only a range cache is keyed by it)


def summarize_samples(samples: Iterable[Feeds], digest: bool = True) -> Summary:
    """One pass: rows per feed and (``digest``) sha256 over the sample bytes (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    rows = []
    for sample in samples:
        rows.append(sample_count(sample))
        for name in sorted(sample) if digest else ():
            array = np.ascontiguousarray(sample[name])
            h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            h.update(array.data)
    return Summary(tuple(rows), h.hexdigest() if digest else None)


def held_out_rule(feeds: int) -> Keep:
    """Which feed positions are held out for accuracy checks: every 5th (the last one when there are 2 to
    4; with one feed, it serves both purposes)."""
    if feeds < 2:
        return lambda i: True
    return (lambda i: i % 5 == 4) if feeds > 4 else (lambda i: i == feeds - 1)


@dataclass
class CalibrationData:
    """Validated samples for one build plus the settings; precision passes read it from PassContext.

    ``samples`` is any re-iterable of feeds (a list, or ReaderSamples reading them from disk on every pass).
    """

    samples: Iterable[Feeds]
    settings: CalibrationSettings
    description: str
    # What the reader did beyond reading (an image folder's preprocessing, defaults included): in the record.
    details: dict[str, Any] = field(default_factory=dict)
    # Scratch space shared by the precision passes of one build (ranges, the pre-quantization model).
    state: dict[str, Any] = field(default_factory=dict)
    _summary: Summary | None = field(default=None, repr=False)

    @property
    def summary(self) -> Summary:
        if self._summary is None:
            self._summary = summarize_samples(self.samples)
        return self._summary

    @property
    def count(self) -> int:
        return sum(self.summary.rows)

    def split(self) -> tuple[Iterable[Feeds], Iterable[Feeds]]:
        """(calibration, held-out) feeds, re-iterable; see held_out_rule (one feed is used for both)."""
        feeds = len(self.summary.rows)
        held_out = held_out_rule(feeds)
        if feeds < 2:
            return self.samples, self.samples
        return subset(self.samples, lambda i: not held_out(i), feeds), subset(self.samples, held_out, feeds)

    def digest(self) -> str:
        """sha256 over the sample bytes (names, dtypes, shapes, values): the data half of the cache key."""
        digest = self.summary.digest
        if digest is None:  # summarized without it (no --calib-cache when the data was loaded): one more pass
            self._summary = summarize_samples(self.samples)
            digest = self._summary.digest or ""
        return digest

    def counts(self) -> tuple[int, int]:
        """Samples (rows) that calibrate, and those held out (with one feed, the same feed is both)."""
        rule = held_out_rule(len(self.summary.rows))
        held_out = sum(rows for i, rows in enumerate(self.summary.rows) if rule(i))
        return (self.count if len(self.summary.rows) < 2 else self.count - held_out), held_out

    def record(self) -> dict[str, Any]:
        held_out = self.counts()[1]
        return {"method": self.settings.method, "samples": self.count, "held_out": held_out, "source": self.description,
                **self.details,
                **({"percentile": self.settings.percentile} if self.settings.method == "percentile" else {})}


def sample_count(sample: Feeds) -> int:
    """Samples in one feed: its batch size (leading dim of the first input), at least 1."""
    first = next(iter(sample.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim > 0 else 1


def load_calibration(settings: CalibrationSettings, inputs: list[TensorSpec],
                     synthetic: Callable[[int], Feeds] | None = None) -> CalibrationData:
    """Validate up to ``max_samples`` samples in one pass (counted and hashed, not kept: the passes read
    them again as they need them); warn loudly when they are few or synthetic (``synthetic``: how to draw
    those, seed -> sample)."""
    reader = open_reader(str(settings.source), inputs, preprocess=settings.preprocess,
                         synthetic_count=settings.max_samples, synthetic=synthetic)
    samples = ReaderSamples(reader, inputs, settings.max_samples)
    # Hashing every sample costs ~0.1 s per 150 MB of samples: only a --calib-cache build needs it.
    summary = summarize_samples(samples, digest=settings.cache is not None)
    if not summary.rows:
        raise UserInputError(f"--calib {settings.source}: no samples ({reader.description})",
                             hint="give at least one sample; a few hundred cover a distribution well")
    if settings.source == "synthetic":
        warnings.warn("calibrating on SYNTHETIC random data: INT8 ranges will not fit real inputs; "
                      "use this for smoke tests only and give real samples with --calib PATH",
                      CalibrationWarning, stacklevel=2)
    elif sum(summary.rows) < FEW_SAMPLES:
        warnings.warn(f"only {sum(summary.rows)} calibration samples: INT8 ranges may not cover the data "
                      f"(use {FEW_SAMPLES}+; a few hundred is typical)", CalibrationWarning, stacklevel=2)
    details = reader.details if isinstance(reader, ImageFolderReader) else {}
    return CalibrationData(samples, settings, reader.description, details=details, _summary=summary)

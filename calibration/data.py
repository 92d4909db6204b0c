"""Calibration settings (what the user asked for) and data (the samples read for one build)."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.calibration.calibrators import METHODS
from infer_compile.calibration.readers import CalibrationWarning, ImagePreprocess, open_reader, validated
from infer_compile.errors import UserInputError
from infer_compile.ir import TensorSpec
from infer_compile.numerics import Feeds

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


@dataclass
class CalibrationData:
    """Validated samples for one build plus the settings; precision passes read it from PassContext."""

    samples: list[Feeds]
    settings: CalibrationSettings
    description: str
    # Scratch space shared by the precision passes of one build (ranges, the pre-quantization model).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(sample_count(s) for s in self.samples)

    def split(self) -> tuple[list[Feeds], list[Feeds]]:
        """(calibration, held-out): every 5th sample is held out for accuracy checks (all used if < 2)."""
        if len(self.samples) < 2:
            return self.samples, self.samples
        held = self.samples[4::5] or self.samples[-1:]
        calib = [s for i, s in enumerate(self.samples) if i % 5 != 4] if len(self.samples) > 4 else self.samples[:-1]
        return calib, held

    def digest(self) -> str:
        """sha256 over the sample bytes (names, dtypes, shapes, values): the data half of the cache key."""
        h = hashlib.sha256()
        for sample in self.samples:
            for name in sorted(sample):
                array = np.ascontiguousarray(sample[name])
                h.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
                h.update(array.tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        held_out = sum(sample_count(s) for s in self.split()[1])
        return {"method": self.settings.method, "samples": self.count, "held_out": held_out, "source": self.description,
                **({"percentile": self.settings.percentile} if self.settings.method == "percentile" else {})}


def sample_count(sample: Feeds) -> int:
    """Samples in one feed: its batch size (leading dim of the first input), at least 1."""
    first = next(iter(sample.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim > 0 else 1


def load_calibration(settings: CalibrationSettings, inputs: list[TensorSpec]) -> CalibrationData:
    """Read up to ``max_samples`` validated samples; warn loudly when they are few or synthetic."""
    reader = open_reader(str(settings.source), inputs, preprocess=settings.preprocess,
                         synthetic_count=settings.max_samples)
    samples: list[Feeds] = []
    total = 0
    for sample in islice(validated(reader, inputs, reader.description), settings.max_samples):
        samples.append(sample)
        total += sample_count(sample)
        if total >= settings.max_samples:
            break
    if not samples:
        raise UserInputError(f"--calib {settings.source}: no samples ({reader.description})",
                             hint="give at least one sample; a few hundred cover a distribution well")
    if total < FEW_SAMPLES and settings.source != "synthetic":
        warnings.warn(f"only {total} calibration samples: INT8 ranges may not cover the data "
                      f"(use {FEW_SAMPLES}+; a few hundred is typical)", CalibrationWarning, stacklevel=2)
    return CalibrationData(samples, settings, reader.description)

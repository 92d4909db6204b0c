"""The range a dynamic dimension may take: one type from the command line to the manifest and the targets.

``--shape-range batch=1:8:32`` on the command line, ``shape_ranges = { batch = [1, 8, 32] }`` in a config
file, ``"shape_ranges": {"batch": [1, 8, 32]}`` in a manifest and ``shape_ranges={"batch": (1, 8, 32)}`` in
the Python API all become ``{"batch": ShapeRange(1, 8, 32)}``; targets that build optimization profiles
(TensorRT) derive their per-input shapes from it, and test runs use the ``opt`` size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from infer_compile.core.errors import UserInputError

EXAMPLE = "batch=1:8:32"


class ShapeRange(NamedTuple):
    """MIN:OPT:MAX of one dimension (a tuple, so code and users may still unpack it as one)."""

    min: int
    opt: int
    max: int

    def problem(self, floor: int = 1) -> str | None:
        """Why this is not a usable range; None when it is. ``floor`` is 1 for dynamic dimensions, 0 for a
        static zero-sized axis of an optimization profile."""
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in self):
            return "needs three integers MIN:OPT:MAX"
        if not floor <= self.min <= self.opt <= self.max:
            return f"needs {floor} <= MIN <= OPT <= MAX, got {self.min}:{self.opt}:{self.max}"
        return None

    @classmethod
    def from_json(cls, bounds: Any, floor: int = 1) -> ShapeRange:
        """A range from three bounds (a JSON list, a tuple, a ShapeRange); ValueError saying what is wrong."""
        if isinstance(bounds, str | bytes) or not isinstance(bounds, Sequence) or len(bounds) != 3:
            raise ValueError("needs three integers MIN:OPT:MAX")
        shape_range = cls(*bounds)
        if problem := shape_range.problem(floor):
            raise ValueError(problem)
        return shape_range

    def to_json(self) -> list[int]:
        return list(self)

    @classmethod
    def parse(cls, text: str) -> tuple[str, ShapeRange]:
        """``batch=1:8:32`` (the --shape-range syntax) -> ("batch", ShapeRange(1, 8, 32))."""
        dim, found, bounds = text.partition("=")
        if not found or not dim or not bounds:
            raise UserInputError(f"--shape-range '{text}' is not in the expected form", hint=f"write it like {EXAMPLE}")
        try:
            parsed = [int(b) for b in bounds.split(":")]
        except ValueError:
            parsed = []  # not integers: refused below as such
        try:
            return dim, cls.from_json(parsed)
        except ValueError as exc:
            raise UserInputError(f"--shape-range '{text}' {exc}", hint=f"write it like {EXAMPLE}") from None


def shape_ranges_from(ranges: Mapping[str, Any]) -> dict[str, ShapeRange]:
    """Ranges by dimension name in any of their forms (tuples, lists, ShapeRanges) as ShapeRanges; a
    UserInputError names the first unusable one."""
    checked = {}
    for dim, bounds in ranges.items():
        try:
            checked[dim] = ShapeRange.from_json(bounds)
        except ValueError as exc:
            raise UserInputError(f"shape range for '{dim}' {exc}", hint=f"give it like {EXAMPLE}") from None
    return checked


def shape_ranges_json(ranges: Mapping[str, ShapeRange]) -> dict[str, list[int]]:
    return {dim: shape_range.to_json() for dim, shape_range in ranges.items()}


def opt_sizes(ranges: Mapping[str, ShapeRange]) -> dict[str, int]:
    """Each dimension at its OPT size: what example inputs and static conversions use."""
    return {dim: shape_range.opt for dim, shape_range in ranges.items()}

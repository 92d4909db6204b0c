"""Accuracy budgets: `cosine>=0.999`, `top1-agreement>=0.99,max-abs<=0.05`.

One syntax for `verify --budget` and `compile --accuracy-budget`. A budget is a comma-separated
list of `metric OP value` terms; it is checked against the worst-case figures that
``numerics.summarize`` returns.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from infer_compile.core.errors import UserInputError

# Budget metric name (as users write it) -> key in numerics.summarize's dict.
METRICS = {"cosine": "cosine", "top1-agreement": "top1_agreement", "max-abs": "max_abs", "max-rel": "max_rel"}
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_TERM = re.compile(r"^\s*([a-z0-9_-]+)\s*(>=|<=|>|<)\s*([^\s]+)\s*$")
_HINT = "write it like 'cosine>=0.999' or 'top1-agreement>=0.99,max-abs<=0.05'; metrics: " + ", ".join(METRICS)


@dataclass(frozen=True)
class Bound:
    """One term: ``metric op value``."""

    metric: str  # as written by the user, e.g. "top1-agreement"
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def check(self, figures: Mapping[str, float | None]) -> str | None:
        """None when met, else a one-line failure naming the measured figure."""
        measured = figures.get(METRICS[self.metric])
        if measured is None:
            return (f"{self} cannot be checked: the outputs have no {self.metric} (no class-score output, e.g. "
                    f"detection boxes or hidden states); judge them by cosine or max-abs")
        if isinstance(measured, float) and math.isnan(measured):
            return f"{self} failed: {self.metric} is NaN"
        if _OPERATORS[self.op](measured, self.value):
            return None
        return f"{self} failed: {self.metric} = {measured:.6g}"


@dataclass(frozen=True)
class Budget:
    """All terms must hold."""

    bounds: tuple[Bound, ...]

    def __str__(self) -> str:
        return ",".join(str(b) for b in self.bounds)

    def check(self, figures: Mapping[str, float | None]) -> list[str]:
        """The failed terms, one line each (empty when the budget is met)."""
        return [msg for b in self.bounds if (msg := b.check(figures)) is not None]


def parse_budget(text: str) -> Budget:
    """Parse ``text``; raises UserInputError naming the bad term."""
    terms = [t for t in text.split(",") if t.strip()]
    if not terms:
        raise UserInputError("empty accuracy budget", hint=_HINT)
    return Budget(tuple(_parse_term(term, text) for term in terms))


def _parse_term(term: str, text: str) -> Bound:
    match = _TERM.match(term.lower())
    if not match:
        raise UserInputError(f"accuracy budget '{text}': cannot read '{term.strip()}'", hint=_HINT)
    metric, op, raw = match.groups()
    metric = metric.replace("_", "-")  # accept the report spelling too (top1_agreement)
    if metric not in METRICS:
        raise UserInputError(f"accuracy budget '{text}': unknown metric '{metric}'", hint=_HINT)
    try:
        value = float(raw)
    except ValueError:
        raise UserInputError(f"accuracy budget '{text}': '{raw}' is not a number", hint=_HINT) from None
    if math.isnan(value):
        raise UserInputError(f"accuracy budget '{text}': '{raw}' is not a number", hint=_HINT)
    return Bound(metric, op, value)

"""Accuracy budgets (`metric>=value`, comma-separated) checked against numerics.summarize figures."""

from __future__ import annotations

import pytest

from infer_compile.core.budget import parse_budget
from infer_compile.core.errors import UserInputError

FIGURES = {"max_abs": 0.02, "max_rel": 0.5, "cosine": 0.9995, "top1_agreement": 0.98}


@pytest.mark.parametrize("text,failures", [
    ("cosine>=0.999", []),
    ("cosine>=0.9999", ["cosine>=0.9999 failed: cosine = 0.9995"]),
    ("top1-agreement>=0.99, max-abs<=0.05", ["top1-agreement>=0.99 failed: top1-agreement = 0.98"]),
    ("TOP1_AGREEMENT>0.9,max-rel<1", []),
    ("max-abs<0.01,cosine>=1", ["max-abs<0.01 failed: max-abs = 0.02", "cosine>=1 failed: cosine = 0.9995"]),
])
def test_budget_checks_every_term(text: str, failures: list[str]) -> None:
    assert parse_budget(text).check(FIGURES) == failures


def test_missing_metric_fails_with_a_reason() -> None:
    (failure,) = parse_budget("top1-agreement>=0.9").check({**FIGURES, "top1_agreement": None})
    assert "cannot be checked" in failure


@pytest.mark.parametrize("text", ["", " , ", "cosine", "cosine>=", "cosine>=nan", "accuracy>=0.9", "cosine==1"])
def test_unreadable_budgets_are_user_errors(text: str) -> None:
    with pytest.raises(UserInputError) as err:
        parse_budget(text)
    assert err.value.hint and "cosine>=0.999" in err.value.hint

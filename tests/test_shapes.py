"""ShapeRange: one form of a dynamic dimension's range from the command line, config and API to the targets."""

from __future__ import annotations

import pytest

from infer_compile.core.errors import UserInputError
from infer_compile.core.shapes import ShapeRange, opt_sizes, shape_ranges_from
from infer_compile.targets.tensorrt_settings import InputProfile


def test_every_form_becomes_one_range() -> None:
    from_cli = dict([ShapeRange.parse("batch=1:8:32")])
    from_api = shape_ranges_from({"batch": (1, 8, 32)})
    from_json = {"batch": ShapeRange.from_json([1, 8, 32])}
    assert from_cli == from_api == from_json == {"batch": ShapeRange(1, 8, 32)}
    assert all(type(r) is ShapeRange for r in (*from_cli.values(), *from_api.values()))
    assert from_cli["batch"].to_json() == [1, 8, 32] and opt_sizes(from_cli) == {"batch": 8}


@pytest.mark.parametrize(("bounds", "problem"), [
    ([1, 2], "needs three integers MIN:OPT:MAX"),
    ("1:2:3", "needs three integers MIN:OPT:MAX"),
    ([1, 2.0, 3], "needs three integers MIN:OPT:MAX"),
    ([True, 2, 3], "needs three integers MIN:OPT:MAX"),
    ([0, 1, 2], "needs 1 <= MIN <= OPT <= MAX, got 0:1:2"),
    ([4, 2, 8], "needs 1 <= MIN <= OPT <= MAX, got 4:2:8"),
])
def test_unusable_bounds_say_why(bounds, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ShapeRange.from_json(bounds)
    with pytest.raises(UserInputError, match=f"shape range for 'batch' {problem}"):
        shape_ranges_from({"batch": bounds})


def test_static_profile_axes_may_be_zero() -> None:
    assert ShapeRange(0, 0, 0).problem(floor=0) is None and ShapeRange(0, 0, 0).problem() is not None


@pytest.mark.parametrize("text", ["batch", "=1:2:3", "batch=", "batch=a:b:c", "batch=1:2:3:4"])
def test_malformed_command_line_ranges_keep_their_messages(text: str) -> None:
    with pytest.raises(UserInputError, match=f"--shape-range '{text}'") as caught:
        ShapeRange.parse(text)
    assert caught.value.hint == "write it like batch=1:8:32"


def test_a_tensorrt_profile_is_built_from_ranges_per_axis() -> None:
    axes = [ShapeRange(1, 4, 8), ShapeRange(3, 3, 3)]
    profile = InputProfile.of_axes("image", axes)
    assert profile == InputProfile("image", (1, 3), (4, 3), (8, 3)) and profile.axes() == axes

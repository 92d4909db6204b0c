"""Parsing the frontend options (--input-dtype, --dynamic, --shape-range, entry points); no framework needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infer_compile.core.errors import UserInputError
from infer_compile.frontends.specs import (
    entry_point_file,
    load_entry_point,
    model_source,
    parse_dynamic_dims,
    parse_input_dtypes,
    parse_input_shapes,
    parse_shape_ranges,
    shapes_by_name,
)


def test_good_specs_parse() -> None:
    assert parse_input_dtypes(["ids:int64", "x:float16"]) == {"ids": "int64", "x": "float16"}
    assert parse_dynamic_dims(["x:0=batch", "x:2=height", "m:1=tokens"]) == {
        "x": {0: "batch", 2: "height"}, "m": {1: "tokens"}}
    assert parse_shape_ranges(["batch=1:8:32"]) == {"batch": (1, 8, 32)}


def test_shapes_without_names_go_to_the_inputs_in_order() -> None:
    positional = parse_input_shapes(["1x3x224x224", "1x16"])
    assert shapes_by_name(positional, ["image", "ids", "mask"]) == {"image": (1, 3, 224, 224), "ids": (1, 16)}
    assert shapes_by_name(parse_input_shapes(["ids:2x8"]), ["image", "ids"]) == {"ids": (2, 8)}


@pytest.mark.parametrize(("values", "fragment"), [
    (["1x3", "ids:1x2"], "both with and without input names"),
    (["1x3", "1x4", "1x5"], "3 --input-shape given, the model takes 2 input(s)"),
])
def test_shapes_without_names_that_cannot_be_placed(values: list[str], fragment: str) -> None:
    with pytest.raises(UserInputError, match=re.escape(fragment)) as info:
        shapes_by_name(parse_input_shapes(values), ["image", "ids"])
    assert info.value.hint


@pytest.mark.parametrize(("parse", "value", "fragment"), [
    (parse_input_dtypes, "ids", "--input-dtype 'ids'"),
    (parse_input_dtypes, "ids:int65", "unknown dtype 'int65'"),
    (parse_dynamic_dims, "x:batch", "--dynamic 'x:batch'"),
    (parse_dynamic_dims, "x:-1=batch", "non-negative axis"),
    (parse_dynamic_dims, "x:0=2d", "NAME:AXIS=DIM"),
    (parse_shape_ranges, "batch=8:1:32", "1 <= MIN <= OPT <= MAX"),
    (parse_shape_ranges, "batch=1:8", "MIN:OPT:MAX"),
    (parse_input_shapes, ":1x3", "NAME:DIMS or DIMS"),
    (parse_input_shapes, "x:1x0", "NAME:DIMS or DIMS"),
])
def test_bad_specs_are_user_errors(parse, value: str, fragment: str) -> None:
    with pytest.raises(UserInputError) as info:
        parse([value])
    assert fragment in str(info.value) and info.value.hint


def test_entry_points_resolve_by_module_or_file(tmp_path: Path) -> None:
    module = tmp_path / "build_it.py"
    module.write_text("def build():\n    return 42\n")
    assert entry_point_file(f"{module}:build") == module
    assert load_entry_point(f"{module}:build", "--from-python")() == 42
    assert entry_point_file("tests.builders:tiny_cnn").name == "builders.py"
    assert model_source(None, f"{module}:build") == module


@pytest.mark.parametrize(("model", "entry", "fragment"), [
    (None, None, "no model given"),
    (Path("m.pt"), "tests.builders:tiny_cnn", "exclude each other"),
    (None, "tests.no_such_module:build", "cannot find module"),
    (None, "tests/nowhere.py:build", "no such file"),
    (None, "tests.builders", "--from-python 'tests.builders'"),
])
def test_model_source_errors(model: Path | None, entry: str | None, fragment: str) -> None:
    with pytest.raises(UserInputError) as info:
        model_source(model, entry)
    assert fragment in str(info.value)

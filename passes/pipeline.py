"""The default pass pipeline: an ordered list per stage. Adding a pass = one module + one line here."""

from __future__ import annotations

from collections.abc import Iterable

from infer_compile.errors import UserInputError
from infer_compile.passes.base import Pass
from infer_compile.passes.constant_folding import ConstantFolding
from infer_compile.passes.dead_code import DeadNodeElimination
from infer_compile.passes.identity_elimination import IdentityElimination
from infer_compile.passes.shape_inference import ShapeInference

CLEANUP: list[type[Pass]] = [ShapeInference, ConstantFolding, IdentityElimination, DeadNodeElimination]
FUSION: list[type[Pass]] = []
# Passes that change numeric precision, by requested precision.
PRECISION: dict[str, list[type[Pass]]] = {"fp32": [], "fp16": [], "int8": []}
# Passes that run last, on the final graph.
FINAL: list[type[Pass]] = []


def all_passes() -> dict[str, type[Pass]]:
    """Every known pass by CLI name, in pipeline order."""
    ordered = [*CLEANUP, *FUSION, *(p for ps in PRECISION.values() for p in ps), *FINAL]
    return {p.name: p for p in ordered}


def build_pipeline(precision: str = "fp32", skip: Iterable[str] = ()) -> list[Pass]:
    """The passes for a build at ``precision``, minus the ones the user skipped."""
    skip = set(skip)
    unknown = skip - set(all_passes())
    if unknown:
        raise UserInputError(f"unknown pass name(s) for --skip-pass: {', '.join(sorted(unknown))}",
                             hint="'infer-compile passes' lists the pass names")
    if precision not in PRECISION:
        raise UserInputError(f"unknown precision '{precision}'", hint="use fp32, fp16 or int8")
    stages = [*CLEANUP, *FUSION, *PRECISION[precision], *FINAL]
    return [cls() for cls in stages if cls.name not in skip]

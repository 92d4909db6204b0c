"""The pass pipeline as named stages. Adding a pass = one module + one line here.

A target may choose other stages for a precision (``Target.passes``): one that lowers precision with its own
converter takes the fp32 stages at every precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from infer_compile.core.errors import UserInputError
from infer_compile.core.options import Option, closest
from infer_compile.passes.accuracy_fallback import AccuracyFallback
from infer_compile.passes.activation_fusion import ActivationFusion
from infer_compile.passes.activation_normalization import ActivationNormalization
from infer_compile.passes.attention_fusion import AttentionFusion
from infer_compile.passes.autotune import Autotune
from infer_compile.passes.base import Pass
from infer_compile.passes.batchnorm_folding import BatchNormFolding
from infer_compile.passes.bias_correction import BiasCorrection
from infer_compile.passes.bias_scale_folding import BiasScaleFolding
from infer_compile.passes.constant_folding import ConstantFolding
from infer_compile.passes.cse import CommonSubexpressionElimination
from infer_compile.passes.dead_code import DeadNodeElimination
from infer_compile.passes.fp16 import Fp16Conversion
from infer_compile.passes.gelu_fusion import GeluFusion
from infer_compile.passes.identity_elimination import IdentityElimination
from infer_compile.passes.initializer_dedup import InitializerDedup
from infer_compile.passes.integer_matmul import IntegerMatMulFusion
from infer_compile.passes.layernorm_fusion import LayerNormFusion
from infer_compile.passes.matmul_add_to_gemm import MatMulAddToGemm
from infer_compile.passes.noop_elimination import NoopElimination
from infer_compile.passes.pad_folding import PadFolding
from infer_compile.passes.quantize_int8 import QuantizeInt8
from infer_compile.passes.shape_inference import ShapeInference
from infer_compile.passes.shape_simplification import ShapeSimplification
from infer_compile.passes.skip_layernorm_fusion import SkipLayerNormFusion
from infer_compile.passes.smooth_quant import SmoothQuant

CLEANUP: list[type[Pass]] = [ShapeInference, ConstantFolding, IdentityElimination, DeadNodeElimination,
                             NoopElimination, InitializerDedup, CommonSubexpressionElimination]
FUSION: list[type[Pass]] = [ShapeSimplification, PadFolding, BatchNormFolding, BiasScaleFolding, MatMulAddToGemm,
                            ActivationNormalization, LayerNormFusion]
# Fusions into target-specific ops (ORT contrib FusedConv, SkipLayerNormalization, Gelu) run in fp32 builds
# only: those kernels are fp32-only on CPU and the fp16/int8 passes know the plain ONNX ops, not them.
FP32_FUSION: list[type[Pass]] = [GeluFusion, AttentionFusion, SkipLayerNormFusion, ActivationFusion]
# Passes that change numeric precision, by requested precision.
# bf16 keeps the fp32 graph: the runtime computes it in bf16 (OpenVINO's inference precision on CPUs with bf16).
PRECISION: dict[str, list[type[Pass]]] = {"fp32": FP32_FUSION, "bf16": FP32_FUSION,
                                          "fp16": [Fp16Conversion, AccuracyFallback],
                                          "int8": [SmoothQuant, QuantizeInt8, BiasCorrection, AccuracyFallback,
                                                   IntegerMatMulFusion]}
# Passes that run last, on the final graph.
FINAL: list[type[Pass]] = [Autotune]


def all_passes() -> dict[str, type[Pass]]:
    """Every known pass by CLI name, in pipeline order."""
    ordered = [*CLEANUP, *FUSION, *(p for ps in PRECISION.values() for p in ps), *FINAL]
    return {p.name: p for p in ordered}


def pass_options() -> dict[str, Option[Any]]:
    """Every option a pass declares, by key (keys are unique: tests/test_options.py)."""
    return {option.key: option for cls in all_passes().values() for option in cls.options}


def default_passes(precision: str = "fp32") -> list[type[Pass]]:
    """The stages for a build at ``precision``: cleanup, fusion, the precision stage, final."""
    if precision not in PRECISION:
        raise UserInputError(f"unknown precision '{precision}'", hint="use fp32, bf16, fp16 or int8")
    return [*CLEANUP, *FUSION, *PRECISION[precision], *FINAL]


def build_pipeline(precision: str = "fp32", skip: Iterable[str] = (),
                   stages: Sequence[type[Pass]] | None = None) -> list[Pass]:
    """The passes of ``stages`` (default: ``default_passes(precision)``) minus the ones the user skipped."""
    skip = set(skip)
    for name in sorted(skip - set(all_passes())):
        raise UserInputError(f"unknown pass name '{name}' for --skip-pass{closest(name, all_passes())}",
                             hint="'infer-compile passes' lists the pass names")
    return [cls() for cls in (stages or default_passes(precision)) if cls.name not in skip]

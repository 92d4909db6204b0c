"""The one capability vocabulary passes and targets share.

A pass ``requires`` capabilities; a target declares the ones it has (``Target.capabilities``) and the build
context adds what this build provides (calibration data, static shapes, a tuner). Both sides import these
members, so a misspelt capability is an AttributeError at import, never a fusion silently skipped;
tests/test_capabilities.py checks that every capability a pass requires is provided by something and
that every one a target declares is used by some pass.
"""

from __future__ import annotations

from enum import StrEnum


class Capability(StrEnum):
    # --- what a build provides (PassContext) ---
    CALIBRATION = "calibration"  # representative input data is available
    STATIC_SHAPES = "static-shapes"  # every graph input has a concrete shape
    TUNER = "tuner"  # the target can time runtime configurations here (targets.base.Tuner)

    # --- fused or contrib ops a target runs (the fusion passes may produce them) ---
    FUSED_CONV = "op:com.microsoft::FusedConv"
    FUSED_GEMM = "op:com.microsoft::FusedGemm"
    GELU = "op:com.microsoft::Gelu"
    FAST_GELU = "op:com.microsoft::FastGelu"
    MULTI_HEAD_ATTENTION = "op:com.microsoft::MultiHeadAttention"
    SKIP_LAYER_NORMALIZATION = "op:com.microsoft::SkipLayerNormalization"
    MATMUL_INTEGER_TO_FLOAT = "op:com.microsoft::MatMulIntegerToFloat"

    # --- where a target's INT8 kernels want Q/DQ beyond TensorRT's rules (passes.quantize_int8) ---
    # OpenVINO's low-precision transformations keep residual Adds and pooling in int8 only when all their
    # inputs are quantized, and run post-ReLU activations as u8.
    QDQ_PLACEMENT_LPT = "qdq-placement:lpt"
    # ONNX Runtime runs QLinearConv/QLinearAdd only when the op's output is quantized too.
    QDQ_PLACEMENT_QLINEAR = "qdq-placement:qlinear-outputs"
    # Signed activations get an asymmetric uint8 quantizer (zero-point, scale = (max - min) / 255) instead of a
    # symmetric int8 one: ONNX Runtime takes any zero-point, and its x86 int8 kernels read uint8 activations
    # (a QLinearConv fuses only when its input and output share one type); TensorRT needs zero-point 0.
    QDQ_ASYMMETRIC_ACTIVATIONS = "qdq-activations:asymmetric"


# Provided by the build, not declared by targets.
BUILD_PROVIDED = frozenset({Capability.CALIBRATION, Capability.STATIC_SHAPES, Capability.TUNER})


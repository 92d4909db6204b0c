"""The options of the passes, declared once: each pass lists the ones it reads in its ``options`` and reads them
with ``ctx.option(...)``.

They live here, not in the pass modules, because the command line's flags, the config keys and the API keywords are
made from them on every start (``infer_compile.app.settings``), a cache hit included: this module imports nothing
heavy, the passes import numpy, onnx and graphsurgeon. In pipeline order (the order of `--help`);
tests/test_options.py checks every pass's options are here.
"""

from __future__ import annotations

from infer_compile.core.budget import parse_budget
from infer_compile.core.options import Option, name_list

_FP16 = frozenset({"fp16"})
_INT8 = frozenset({"int8"})

# constant-folding
# Folded tensors larger than this stay as computations: folding e.g. a Tile or Expand of a
# small constant can blow a model up by gigabytes.
FOLD_SIZE_LIMIT = Option("fold_size_limit", int, 64, "Largest tensor constant folding may create, in MiB.",
                         minimum=0)

# fp16
KEEP_IO_TYPES = Option("keep_io_types", bool, False, "FP16: keep graph inputs and outputs float32.", precisions=_FP16)
FP16_BLOCK: Option[list[str]] = Option(
    "fp16_block", list, [], "FP16: keep these op types or node names in fp32 (repeatable, comma lists).",
    parse=name_list, precisions=_FP16)

# accuracy-fallback
ACCURACY_BUDGET: Option[str | None] = Option(
    "accuracy_budget", str, None, "Return the most sensitive layers to fp32 until e.g. 'cosine>=0.999' or "
    "'top1-agreement>=0.99' holds vs fp32 on held-out samples (exit 3 if it cannot).",
    parse=lambda text: str(parse_budget(text)), precisions=_FP16 | _INT8, needs="calib")
FALLBACK_LIMIT = Option("fallback_limit", float, 0.5, "The largest share of the layers that may go back to fp32 "
                        "to meet --accuracy-budget or the precision's tolerance before the build gives up (0-1; 0: "
                        "none).", minimum=0.0, precisions=_FP16 | _INT8, needs="calib")

# smoothquant
# 0.5 measured best for MiniLM on ONNX Runtime (worst held-out cosine 0.947 at 0, 0.956 at 0.5, 0.930 at
# 0.75, 0.833 at 0.95): higher alphas flatten calibration ranges that unseen sentences then exceed.
SMOOTHQUANT = Option(
    "smoothquant", float, 0.5, "INT8: SmoothQuant migration strength alpha for MatMul/Gemm inputs, 0-1 "
    "(0 = off; higher moves more of the activation range into the weights).", minimum=0.0, precisions=_INT8)

# quantize-int8
EXCLUDE_NODES: Option[list[str]] = Option(
    "exclude_nodes", list, [], "INT8: keep these ONNX node names in float (repeatable, comma lists).",
    parse=name_list, precisions=_INT8)
EXCLUDE_OP_TYPES: Option[list[str]] = Option(
    "exclude_op_types", list, [], "INT8: keep these op types in float, e.g. MatMul (repeatable).", parse=name_list,
    precisions=_INT8)
# Default: what the target's placement capability says (ONNX Runtime: yes).
QUANTIZE_OUTPUTS: Option[bool | None] = Option(
    "quantize_outputs", bool, None, "INT8: also quantize Conv/Gemm and residual Add outputs (QLinearConv/QLinearAdd) "
    "[default: as the target prefers].", precisions=_INT8)

# bias-correction
# By default convolutions only, by measurement. Convolutions: a mean over every position of every sample,
# and MobileNetV2's worst held-out cosine rises from 0.99956 to 0.99995 on OpenVINO (NNCF, which corrects by
# default: 0.99977) and 0.99952 -> 0.99996 on ONNX Runtime. Linear layers (MatMul/Gemm): on MiniLM (ONNX Runtime)
# it lifts the worst unseen cosine of a plain INT8 build from 0.956 to 0.970, but raises the worst single error
# (max abs 0.42 -> 0.63 with 15-24 layers in fp32), so the 'cosine>=0.99' budget build that passes without it
# fails its int8 tolerance with it: they are corrected only when asked (True).
BIAS_CORRECTION: Option[bool | None] = Option(
    "bias_correction", bool, None, "INT8: add back each layer's mean output shift from rounding to its bias "
    "(measured on the calibration samples) [default: convolutions only; --no-bias-correction: none].",
    precisions=_INT8)

PASS_OPTIONS = (FOLD_SIZE_LIMIT, KEEP_IO_TYPES, FP16_BLOCK, ACCURACY_BUDGET, FALLBACK_LIMIT, SMOOTHQUANT, EXCLUDE_NODES,
                EXCLUDE_OP_TYPES, QUANTIZE_OUTPUTS, BIAS_CORRECTION)

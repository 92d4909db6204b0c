"""Graph passes over the IR and the manager that runs them."""

from infer_compile.passes.base import CALIBRATION, STATIC_SHAPES, Pass, PassContext, PassResult, target_op
from infer_compile.passes.manager import PassManager, PassRecord
from infer_compile.passes.pipeline import all_passes, build_pipeline

__all__ = [
    "CALIBRATION",
    "STATIC_SHAPES",
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassResult",
    "all_passes",
    "build_pipeline",
    "target_op",
]

"""Graph passes over the IR and the manager that runs them."""

from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.manager import PassManager, PassRecord, PipelineResult
from infer_compile.passes.pipeline import all_passes, build_pipeline, default_passes, pass_options

__all__ = [
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassResult",
    "PipelineResult",
    "all_passes",
    "build_pipeline",
    "default_passes",
    "pass_options",
]

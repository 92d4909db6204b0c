"""Graph passes over the IR and the manager that runs them.

The names below are imported on first use (PEP 562): the passes' options (``options``) and a build's records
(``base.PassRecord``) are read on every start, a cache hit included, which must not load the passes (numpy, onnx,
graphsurgeon).
"""

from typing import TYPE_CHECKING

from infer_compile.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from infer_compile.passes.base import Pass, PassContext, PassRecord, PassResult
    from infer_compile.passes.manager import PassManager, PipelineResult
    from infer_compile.passes.pipeline import all_passes, build_pipeline, default_passes, pass_options

_HOMES = {"Pass": "base", "PassContext": "base", "PassRecord": "base", "PassResult": "base",
          "PassManager": "manager", "PipelineResult": "manager", "all_passes": "pipeline", "build_pipeline": "pipeline",
          "default_passes": "pipeline", "pass_options": "pipeline"}
__getattr__ = lazy_attributes(__name__, _HOMES)
__all__ = ["Pass", "PassContext", "PassManager", "PassRecord", "PassResult", "PipelineResult", "all_passes",
           "build_pipeline", "default_passes", "pass_options"]

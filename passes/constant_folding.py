"""Constant folding: evaluate subgraphs whose inputs are all constants, once, at build time."""

from __future__ import annotations

from infer_compile.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult

# Folded tensors larger than this stay as computations: folding e.g. a Tile or Expand of a
# small constant can blow a model up by gigabytes.
DEFAULT_FOLD_SIZE_LIMIT = 64 << 20


class ConstantFolding(Pass):
    name = "constant-folding"
    description = "Fold constant subgraphs and static shape computations (size limit: fold_size_limit)."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        before = model.node_count
        model.graph.fold_constants(
            fold_shapes=True,
            size_threshold=ctx.option("fold_size_limit", DEFAULT_FOLD_SIZE_LIMIT),
            error_ok=True,
        ).cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult({"nodes_folded": before - model.node_count})

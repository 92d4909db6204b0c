"""Dead-node elimination: drop nodes and initializers no graph output depends on."""

from __future__ import annotations

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult


class DeadNodeElimination(Pass):
    name = "dead-node-elimination"
    description = "Remove nodes and initializers that no graph output depends on."

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        nodes, consts = model.node_count, sum(1 for _ in model.constants())
        model.graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult({"dead_nodes": nodes - model.node_count,
                           "dead_initializers": consts - sum(1 for _ in model.constants())})

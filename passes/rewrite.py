"""The shape most fusion passes share: try named rules at every node, count what fired, clean up."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import subgraph_scope

# A rule looks at one anchor node and either rewrites the graph around it (returning True) or
# leaves the graph exactly as it was (returning False): every precondition is checked first.
Rule = Callable[[gs.Graph, gs.Node, PassContext], bool]


class RewritePass(Pass):
    """A pass made of rules keyed by the op type of their anchor node.

    ``rules`` are ``(rule name, anchor ops, rule)``; the name is the PassResult count key. Nodes are
    visited once in topological order; a node a previous rule consumed is skipped. Only the top-level graph
    is rewritten: If/Loop/Scan bodies are left as they are, and a pattern never crosses into one.
    """

    rules: ClassVar[tuple[tuple[str, tuple[str, ...], Rule], ...]]

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        result = PassResult()
        graph = model.graph
        graph.toposort()
        with subgraph_scope(graph):
            for node in list(graph.nodes):
                if not node.outputs or node.domain not in (None, "", "ai.onnx"):
                    continue
                for rule_name, ops, rule in self.rules:
                    if node.op in ops and rule(graph, node, ctx):
                        result.add(rule_name)
                        break
        if result.modified:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return result

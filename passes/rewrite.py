"""The shape most fusion passes share: try named rules at every node, count what fired, say why the rest did not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import onnx_graphsurgeon as gs

from infer_compile.core.ir import Model
from infer_compile.passes.base import Pass, PassContext, PassResult
from infer_compile.passes.graph_utils import bypass_node, producer, subgraph_node_ids, subgraph_scope


@dataclass(frozen=True)
class Miss:
    """A rule that did not fire, and why, in a few words (--explain counts nodes per reason).

    Falsy, so ``if rule(...)`` reads as before. Reasons name ops and facts, never node names, so that
    nodes missed for the same reason count together.
    """

    reason: str

    def __bool__(self) -> bool:
        return False


# A rule looks at one anchor node and either rewrites the graph around it (returning True) or
# leaves the graph exactly as it was (returning a Miss): every precondition is checked first.
Outcome = Literal[True] | Miss
Rule = Callable[[gs.Graph, gs.Node, PassContext], Outcome]


def consumer_miss(graph: gs.Graph, tensor: gs.Tensor, op: str | tuple[str, ...] | None = None) -> Miss:
    """Why ``sole_consumer(graph, tensor, op)`` found no node, naming the tensor by its producer."""
    writer = producer(tensor)
    what = "the input" if writer is None else f"the {writer.op} output"
    if any(t is tensor for t in graph.outputs):
        return Miss(f"{what} is a graph output")
    if any(t is tensor for t in graph.inputs):
        return Miss(f"{what} is a graph input")
    if len(tensor.outputs) != 1:
        return Miss(f"{what} has {len(tensor.outputs)} consumers")
    reader = tensor.outputs[0]
    if id(reader) in subgraph_node_ids(graph):
        return Miss(f"{what} is read inside a subgraph")
    wanted = op if isinstance(op, str) else "/".join(op or ())
    return Miss(f"{what} is read by {reader.op}, not {wanted}")


def bypass(graph: gs.Graph, node: gs.Node, src: gs.Tensor | None = None) -> Outcome:
    """``bypass_node`` as a rule outcome."""
    if bypass_node(graph, node, src):
        return True
    return Miss("removing it would copy a graph input or constant straight to a graph output")


class RewritePass(Pass):
    """A pass made of rules keyed by the op type of their anchor node.

    ``rules`` are ``(rule name, anchor ops, rule)``; the name is the PassResult count key. Nodes are
    visited once in topological order; a node a previous rule consumed is skipped. Only the top-level graph
    is rewritten: If/Loop/Scan bodies are left as they are, and a pattern never crosses into one.
    An anchor node no rule fired at, and no later rule swallowed, is a near-miss: each rule's reason is
    recorded in ``PassResult.misses``.
    """

    rules: ClassVar[tuple[tuple[str, tuple[str, ...], Rule], ...]]

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        result = PassResult()
        graph = model.graph
        graph.toposort()
        missed: list[tuple[gs.Node, str, Miss]] = []
        with subgraph_scope(graph):
            for node in list(graph.nodes):
                if not node.outputs or node.domain not in (None, "", "ai.onnx"):
                    continue
                tried: list[tuple[gs.Node, str, Miss]] = []
                for rule_name, ops, rule in self.rules:
                    if node.op not in ops:
                        continue
                    outcome = rule(graph, node, ctx)
                    if outcome is True:
                        result.add(rule_name)
                        break
                    tried.append((node, rule_name, outcome))
                else:
                    missed.extend(tried)
        if result.modified:
            graph.cleanup(remove_unused_graph_inputs=False).toposort()
        kept = {id(n) for n in graph.nodes}
        for node, rule_name, miss in missed:
            if id(node) in kept:  # not swallowed by a rule anchored at a later node
                result.add_miss(rule_name, miss.reason, node.name)
        return result

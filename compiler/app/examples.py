"""Example inputs that mean something, for --verify-passes, autotuning and the final check.

In order of preference: the user's own arrays (``--inputs FILE.npz``), held-out calibration samples,
else seeded random data shaped by what the graph does with each input: an integer the graph compares
with constants (``Equal(sr, 16000)``, a sample rate choosing a branch) takes one of those constants,
one that indexes a Gather stays within the indexed axis, and shape, axes, divisor and count operands
get values valid for any data (ones, distinct axes, ``[1, ..., -1]`` for Reshape) instead of random
garbage. When the source model still cannot run on them, the user hears so in one line and is told to
pass real inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from infer_compile.core.errors import UnsupportedError, UserInputError, one_line
from infer_compile.core.feeds import conform, load_array_file
from infer_compile.core.ir import Model, TensorSpec, is_sequence, numpy_dtype
from infer_compile.core.numerics import Feeds, ort_session, random_inputs, resolve_shape
from infer_compile.passes.graph_utils import constant, known_shape, other_input, producer

# Held-out calibration samples used as examples (each one costs a reference and an artifact run).
MAX_CALIBRATION_EXAMPLES = 4
INPUTS_HINT = "pass real inputs with --inputs FILE.npz (arrays keyed by input name)"
# Ops that pass an integer input's values through unchanged on the way to the node that uses them.
_VALUE_PRESERVING = frozenset({"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten"})
_INDEX_OPS = frozenset({"Gather", "GatherElements"})
# Integer operands whose valid values do not depend on the data, by (op, input index): what to feed.
_ZEROS, _ONES, _AXES, _ANY_SHAPE = "zeros", "ones", "axes", "any-shape"
_OPERANDS = {
    ("Resize", 2): _ONES, ("Resize", 3): _ONES, ("Upsample", 1): _ONES,  # scales / sizes: positive
    ("NonMaxSuppression", 2): _ONES, ("NonMaxSuppression", 3): _ZEROS, ("NonMaxSuppression", 4): _ZEROS,
    ("CumSum", 1): _ZEROS, ("CumProd", 1): _ZEROS,  # an axis valid for any rank
    ("Dropout", 1): _ZEROS, ("Dropout", 2): _ZEROS,  # ratio 0, inference mode (training mode is random)
    ("Expand", 1): _ONES, ("Tile", 1): _ONES, ("ConstantOfShape", 0): _ONES,  # shapes / repeats: 1 always fits
    ("Div", 1): _ONES, ("Mod", 1): _ONES, ("Range", 2): _ONES, ("TopK", 1): _ONES, ("OneHot", 1): _ONES,
    ("Slice", 4): _ONES,  # divisors, steps, counts: never 0
    ("Unsqueeze", 1): _AXES, ("Slice", 3): _AXES, ("ReduceSum", 1): _AXES, ("ReduceMean", 1): _AXES,
    ("ReduceMax", 1): _AXES, ("ReduceMin", 1): _AXES, ("ReduceProd", 1): _AXES,  # distinct valid axes
    ("Reshape", 1): _ANY_SHAPE,  # [1, ..., 1, -1] reshapes anything
}


@dataclass
class Examples:
    """The inputs a build checks the model on, and where they came from (for the report)."""

    feeds: list[Feeds]
    origin: str
    generated: bool  # random data: a reference failing on it is the data's fault, not the model's

    def to_json(self) -> dict:
        return {"samples": len(self.feeds), "origin": self.origin}


def example_inputs(model: Model, *, given: Path | Feeds | None = None, held_out: Iterable[Feeds] | None = None,
                   dims: Mapping[str, int] | None = None, seed: int = 0) -> Examples:
    """The examples for ``model``: ``given`` (an .npz keyed by input name, or in process the values themselves,
    sequences as lists), else ``held_out``, else random."""
    if isinstance(given, Path):
        return Examples([read_inputs(given, model.inputs)], f"--inputs {given.name}", generated=False)
    if given is not None:
        return Examples([checked_inputs(given, model.inputs, "the given inputs")], "the given inputs",
                        generated=False)
    if held := list(islice(held_out or (), MAX_CALIBRATION_EXAMPLES)):  # read from disk: only these few
        return Examples(held, "held-out calibration samples", generated=False)
    return Examples([graph_inputs(model, seed=seed, dims=dims)], f"random, seed {seed}", generated=True)


def read_inputs(path: Path, specs: list[TensorSpec]) -> Feeds:
    """``--inputs FILE.npz``: one array per model input, checked against the model (never unpickled)."""
    arrays = load_array_file(path)
    if not isinstance(arrays, dict):
        raise UserInputError(f"--inputs {path}: a .npy holds one array; the model takes {len(specs)} input(s)",
                             hint="save them with numpy.savez(path, **{input_name: array})")
    return checked_inputs(arrays, specs, f"--inputs {path}")


def checked_inputs(values: Mapping[str, Any], specs: list[TensorSpec], origin: str) -> Feeds:
    """``values`` keyed by exactly the model's inputs; arrays checked against their spec (sequences as given)."""
    names = [s.name for s in specs]
    if unknown := sorted(set(values) - set(names)):
        raise UserInputError(f"{origin}: the model has no input(s) {', '.join(unknown)}",
                             hint=f"model inputs: {', '.join(names)}")
    if missing := [n for n in names if n not in values]:
        raise UserInputError(f"{origin}: no array for input(s) {', '.join(missing)}",
                             hint=f"model inputs: {', '.join(names)}")
    return {spec.name: values[spec.name] if isinstance(values[spec.name], list) else conform(spec, values[spec.name])
            for spec in specs}


def graph_inputs(model: Model, *, seed: int = 0, dims: Mapping[str, int] | None = None) -> Feeds:
    """Seeded random inputs that respect what the graph does with integer inputs (see the module doc)."""
    sequences = {t.name: t for t in model.graph.inputs if is_sequence(t)}
    feeds = random_inputs([s for s in model.inputs if s.name not in sequences], seed=seed, dims=dims)
    feeds |= {name: random_sequence(t, seed=seed, dims=dims) for name, t in sequences.items()}
    rng = np.random.default_rng(seed + 1)
    for tensor in model.graph.inputs:
        spec = next(s for s in model.inputs if s.name == tensor.name)
        if tensor.name in sequences:
            continue
        if spec.dtype.kind not in "iufb":
            continue
        shape = resolve_shape(spec, dims)
        integer = spec.dtype.kind in "iu"
        if integer and (choices := _compared_with(tensor)):
            feeds[spec.name] = rng.choice(np.array(choices), size=shape).astype(spec.dtype)
        elif integer and (bound := _index_bound(tensor)) is not None:
            feeds[spec.name] = rng.integers(0, bound, size=shape).astype(spec.dtype)
        elif role := next((_OPERANDS[key] for node, read in _uses(tensor)
                           if (key := (node.op, _position(node, read))) in _OPERANDS), None):
            feeds[spec.name] = _operand(role, shape).astype(spec.dtype)
    return feeds


def random_sequence(tensor: gs.Variable, *, seed: int = 0, dims: Mapping[str, int] | None = None
                    ) -> list[np.ndarray]:
    """Seeded random tensors for a sequence input whose elements have a known rank: two of one shape (what
    ConcatFromSequence needs; two so that positions 0, 1 and -1 index it)."""
    if tensor.shape is None:
        raise UserInputError(f"input '{tensor.name}' is a sequence of tensors of unknown rank, so no example "
                             f"inputs can be generated for it", hint=INPUTS_HINT)
    element = TensorSpec(tensor.name, tuple(tensor.shape), numpy_dtype(tensor.dtype))
    return [random_inputs([element], seed=seed + i, dims=dims)[tensor.name] for i in range(2)]


def _position(node: gs.Node, tensor: gs.Tensor) -> int:
    return next((i for i, t in enumerate(node.inputs) if t is tensor), -1)


def _operand(role: str, shape: tuple[int, ...]) -> np.ndarray:
    if role == _AXES:
        return np.arange(int(np.prod(shape))).reshape(shape)
    if role == _ZEROS:
        return np.zeros(shape, np.int64)
    values = np.ones(shape, np.int64)
    if role == _ANY_SHAPE and values.size:
        values.reshape(-1)[-1] = -1
    return values


def _uses(tensor: gs.Tensor) -> list[tuple[gs.Node, gs.Tensor]]:
    """(node, the tensor it reads) for every node reading ``tensor``'s values, through value-preserving ops."""
    uses, todo, seen = [], [tensor], set()
    while todo:
        current = todo.pop()
        for node in current.outputs:
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op in _VALUE_PRESERVING and node.inputs and node.inputs[0] is current:
                todo.extend(node.outputs[:1])
            else:
                uses.append((node, current))
    return uses


def _compared_with(tensor: gs.Tensor) -> list[int]:
    """Constants the graph tests the input for equality with (a mode switch such as a sample rate)."""
    values: set[int] = set()
    for node, read in _uses(tensor):
        if node.op == "Equal":
            other = _constant_value(other_input(node, read))
            if other is not None and other.size == 1 and float(other.ravel()[0]).is_integer():
                values.add(int(other.ravel()[0]))
    return sorted(values)


def _constant_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """An initializer's values, or a Constant node's (the source graph is not constant-folded yet)."""
    node = producer(tensor) if tensor is not None else None
    if node is not None and node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
        return np.asarray(node.attrs["value"].values)
    return constant(tensor)


def _index_bound(tensor: gs.Tensor) -> int | None:
    """The smallest axis length the input indexes (Gather/GatherElements indices), when the data's shape is known."""
    bounds = []
    for node, read in _uses(tensor):
        if node.op in _INDEX_OPS and len(node.inputs) > 1 and node.inputs[1] is read:
            shape = known_shape(node.inputs[0])
            axis = int(node.attrs.get("axis", 0))
            if shape and -len(shape) <= axis < len(shape) and shape[axis] > 0:
                bounds.append(shape[axis])
    return min(bounds) if bounds else None


def reference_outputs(model: Model, examples: Examples) -> list[Feeds]:
    """The source model's outputs on ``examples`` (onnxruntime, optimizations off): what the artifact must match.

    A source onnxruntime cannot load, or cannot run on the examples, is a one-line error, not a crash;
    on generated inputs the hint asks for real ones.
    """
    try:
        session = ort_session(model)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UnsupportedError(f"onnxruntime cannot load the source model, so there is no reference to check "
                               f"the artifact against ({one_line(exc)})",
                               hint="build without the check with --no-final-check") from exc
    names = [o.name for o in session.get_outputs()]
    outputs = []
    for feeds in examples.feeds:
        try:
            outputs.append(dict(zip(names, session.run(names, feeds), strict=True)))
        except Exception as exc:
            if examples.generated:
                dynamic = ", ".join(spec.name for spec in model.inputs if not spec.is_static)
                pin = f", or pin the dynamic dims of {dynamic} with --input-shape NAME:DIMS" if dynamic else ""
                raise UserInputError(f"the source model does not run in onnxruntime on generated example "
                                     f"inputs ({one_line(exc)})", hint=INPUTS_HINT + pin) from exc
            raise UserInputError(f"the source model does not run in onnxruntime on {examples.origin} "
                                 f"({one_line(exc)})", hint="check those inputs against the model") from exc
    return outputs

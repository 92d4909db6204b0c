"""ONNX's own backend test cases, on disk the way onnx's ``cmd_tools generate-data`` writes them.

Node cases are generated from ``onnx.backend.test.case.node.collect_testcases()`` (nothing is committed);
the ``simple``, ``pytorch-converted``, ``pytorch-operator`` and ``light`` suites ship in the onnx wheel.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

WHEEL_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
WHEEL_SUITES = ("simple", "pytorch-converted", "pytorch-operator")
SUITES = ("node", *WHEEL_SUITES, "light")
# Written last: a folder holding it is complete (an interrupted generation is redone).
DONE_MARKER = ".complete"


@dataclass(frozen=True)
class Case:
    """One conformance case: a model file and where its inputs / expected outputs come from."""

    suite: str
    name: str
    model: Path

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.name}"


def data_dir(cache_root: Path) -> Path:
    """Where the generated node cases live, per onnx version (the cases change with it)."""
    return cache_root / f"onnx-{onnx.__version__}"


def node_cases(root: Path) -> Path:
    """Write ONNX's node cases under ``root/node`` once (about 20 s) and return that folder."""
    folder = data_dir(root) / "node"
    if (folder / DONE_MARKER).exists():
        return folder
    from onnx.backend.test.case import node

    shutil.rmtree(folder, ignore_errors=True)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # the case definitions overflow on purpose
        warnings.simplefilter("ignore")
        for case in node.collect_testcases():
            _write_case(folder / case.name, case.model, case.data_sets)
    (folder / DONE_MARKER).touch()
    return folder


def _write_case(folder: Path, model: onnx.ModelProto, data_sets: list[tuple[list[Any], list[Any]]]) -> None:
    (folder / "test_data_set_0").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    inputs, outputs = data_sets[0]  # every node case has exactly one data set
    for kind, values, infos in (("input", inputs, model.graph.input), ("output", outputs, model.graph.output)):
        for index, (value, info) in enumerate(zip(values, infos, strict=False)):
            proto = _to_proto(value, info)
            (folder / "test_data_set_0" / f"{kind}_{index}.pb").write_bytes(proto.SerializeToString())


def _to_proto(value: Any, info: onnx.ValueInfoProto) -> Any:
    """A value as ONNX's generate-data writes it: by the graph's declared type."""
    if isinstance(value, onnx.TensorProto):
        return value
    kind = info.type.WhichOneof("value")
    if kind == "sequence_type":
        return numpy_helper.from_list(value, info.name)
    if kind == "optional_type":
        return numpy_helper.from_optional(value, info.name)
    if kind == "map_type":
        return numpy_helper.from_dict(value, info.name)
    return numpy_helper.from_array(value, info.name)


def collect(root: Path, suites: tuple[str, ...] = SUITES) -> list[Case]:
    """Every case of ``suites``, node cases generated under ``root`` when missing."""
    cases: list[Case] = []
    for suite in suites:
        if suite == "light":
            cases += [Case("light", p.stem, p) for p in sorted((WHEEL_DATA / "light").glob("*.onnx"))]
            continue
        folder = node_cases(root) if suite == "node" else WHEEL_DATA / suite
        cases += [Case(suite, d.name, d / "model.onnx") for d in sorted(folder.iterdir())
                  if (d / "model.onnx").exists()]
    return cases


def load_data(case: Case, model: onnx.ModelProto) -> tuple[dict[str, Any], list[Any]]:
    """The case's feeds (by input name; initializers are not fed) and its expected outputs, in order."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if case.suite == "light":
        return _light_data(case, inputs, model)
    folder = case.model.parent / "test_data_set_0"
    feeds = {info.name: _read_value(folder / f"input_{i}.pb", info) for i, info in enumerate(inputs)
             if (folder / f"input_{i}.pb").exists()}
    expected = [_read_value(folder / f"output_{i}.pb", info) for i, info in enumerate(model.graph.output)]
    return feeds, expected


def _light_data(case: Case, inputs: list[onnx.ValueInfoProto], model: onnx.ModelProto) -> tuple[dict, list]:
    """ONNX's runner feeds light models arange(n)/n in the input's shape (unknown dims = 1) and ships the
    expected outputs beside the model."""
    feeds = {}
    for info in inputs:
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in info.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[info.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    prefix = case.model.with_suffix("")
    expected = [_read_value(Path(f"{prefix}_output_{i}.pb"), info) for i, info in enumerate(model.graph.output)]
    return feeds, expected


def _read_value(path: Path, info: onnx.ValueInfoProto) -> Any:
    kind = info.type.WhichOneof("value")
    if kind == "sequence_type":
        proto: Any = onnx.SequenceProto()
        proto.ParseFromString(path.read_bytes())
        return numpy_helper.to_list(proto)
    if kind == "optional_type":
        proto = onnx.OptionalProto()
        proto.ParseFromString(path.read_bytes())
        return numpy_helper.to_optional(proto)
    if kind == "map_type":
        proto = onnx.MapProto()
        proto.ParseFromString(path.read_bytes())
        return numpy_helper.to_dict(proto)
    return numpy_helper.to_array(onnx.load_tensor(str(path)))

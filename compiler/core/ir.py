"""The one IR: an onnx-graphsurgeon graph plus the model-level metadata ONNX keeps beside it.

Passes edit ``Model.graph`` in place; anything that needs a protobuf (onnxruntime, the checker,
shape inference, targets) calls ``Model.to_proto()``.
"""

from __future__ import annotations

import collections
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from infer_compile.core.errors import UserInputError

# Below this many bytes, a model is saved as one self-contained file.
EXTERNAL_DATA_THRESHOLD = 1 << 30
# Constants from this many bytes are weights: ``to_proto(weights=False)`` leaves their data out.
WEIGHT_BYTES = 1024
# The external-data location of a weight exported without its data.
LEFT_OUT = "left-out-of-this-export"

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, shape (ints, symbolic names or None) and numpy dtype."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: np.dtype
    sequence: bool = False  # a sequence of tensors of ``dtype`` (a list of arrays), not one tensor

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) and d >= 0 for d in self.shape)

    def describe(self) -> str:
        if self.sequence:
            return f"{self.name}: sequence({self.dtype.name})"
        dims = "?" if self.shape is None else "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """Whether an array of ``shape`` fits: the same rank and size on every fixed dim (named or unknown dims
        take any size); anything fits an unknown rank."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            not isinstance(d, int) or d < 0 or d == size for d, size in zip(self.shape, shape, strict=True))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape),
                "dtype": self.dtype.name, **({"sequence": True} if self.sequence else {})}


def numpy_dtype(dtype: npt.DTypeLike | int | onnx.TypeProto) -> np.dtype:
    """A graphsurgeon tensor's dtype as numpy's. graphsurgeon keeps the ONNX enum (an int) for element types
    numpy lacks (bfloat16, float8, int4, ...): those map to ml_dtypes' types, as onnx's numpy_helper does;
    sequence and optional types (a TypeProto) have no element dtype and map to object."""
    if dtype is None:
        return np.dtype("float32")
    if isinstance(dtype, int):
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype))
    if isinstance(dtype, onnx.TypeProto):
        return np.dtype(object)
    return np.dtype(dtype)


def _spec(tensor: gs.Variable) -> TensorSpec:
    """A sequence's spec has its element dtype and no shape (its graphsurgeon shape is the element's)."""
    shape = None if tensor.shape is None or is_sequence(tensor) else tuple(tensor.shape)
    return TensorSpec(tensor.name, shape, numpy_dtype(tensor.dtype), sequence=is_sequence(tensor))


def is_sequence(tensor: gs.Tensor) -> bool:
    return getattr(tensor, "type", None) == "sequence_type"


def _keep_element_shapes(graph: gs.Graph, proto: onnx.GraphProto) -> None:
    """Sequence inputs/outputs keep their element shape: graphsurgeon imports none but exports ``shape`` as
    the element's, so it survives a round trip and example inputs can be generated for it."""
    types = {v.name: v.type for v in (*proto.input, *proto.output)}
    for tensor in (*graph.inputs, *graph.outputs):
        element = types[tensor.name].sequence_type.elem_type if is_sequence(tensor) else None
        if element is not None and element.tensor_type.HasField("shape"):
            tensor.shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                            for d in element.tensor_type.shape.dim]


class Model:
    """An ONNX model held as an onnx-graphsurgeon graph."""

    def __init__(self, graph: gs.Graph, *, ir_version: int, metadata: dict[str, str] | None = None,
                 node_metadata: dict[str, dict[str, str]] | None = None) -> None:
        self.graph = graph
        self.ir_version = ir_version
        self.metadata: dict[str, str] = dict(metadata or {})
        # Each source node's metadata_props by node name and by output tensor name (graphsurgeon drops them): the
        # exporter's record of the source module (pkg.torch.onnx.name_scopes), which the report names layers by.
        self.node_metadata: dict[str, dict[str, str]] = dict(node_metadata or {})

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto) -> Model:
        metadata = {p.key: p.value for p in proto.metadata_props}
        node_metadata = {}
        for node in proto.graph.node:
            if node.metadata_props:
                props = {p.key: p.value for p in node.metadata_props}
                # By name, and by output tensor: a pass that fuses nodes keeps the tensor, not the node.
                node_metadata.update({key: props for key in (node.name, *node.output) if key})
        graph = gs.import_onnx(proto)
        _keep_element_shapes(graph, proto.graph)
        return cls(graph, ir_version=proto.ir_version, metadata=metadata, node_metadata=node_metadata)

    def to_proto(self, weights: bool = True) -> onnx.ModelProto:
        """The model as a protobuf. ``weights=False`` exports the ``weight_constants`` as data-less
        initializers (shape and dtype only): for consumers that need the graph, not the weight bytes
        (shape inference, onnxruntime given the arrays separately), without copying a large model."""
        if not weights:
            with _data_left_out(self.weight_constants()):
                return self.to_proto()
        proto: onnx.ModelProto = gs.export_onnx(self.graph, ir_version=self.ir_version)
        onnx.helper.set_model_props(proto, self.metadata)
        return proto

    def weight_constants(self) -> list[gs.Constant]:
        """Constants of WEIGHT_BYTES or more with a plain numeric dtype (bool, int, float)."""
        return [c for c in self.constants() if c.export_dtype == c.dtype and numpy_dtype(c.dtype).kind in "biuf"
                and int(np.prod(c.shape)) * numpy_dtype(c.dtype).itemsize >= WEIGHT_BYTES]

    def copy(self) -> Model:
        return Model.from_proto(self.to_proto())

    def copy_sharing_weights(self) -> Model:
        """A copy with its own nodes and tensors whose constants share their arrays with this model:
        no weight bytes copied. For callers that replace constants rather than write into their arrays."""
        return Model(self.graph.copy(), ir_version=self.ir_version, metadata=self.metadata)

    def replace_graph(self, proto: onnx.ModelProto) -> None:
        """Adopt the graph of ``proto`` (for passes that work on protobufs); the weights it holds without
        data (``to_proto(weights=False)``) keep this model's arrays."""
        left_out = {t.name for t in proto.graph.initializer if _is_left_out(t)}
        previous = {c.name: c for c in self.constants() if c.name in left_out}
        self.graph = gs.import_onnx(proto)
        for constant in self.constants():
            if constant.name in previous:
                constant.values = previous[constant.name].values
                constant.data_location = previous[constant.name].data_location  # not the placeholder's

    @property
    def opset(self) -> int:
        return int(self.graph.opset)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(t) for t in self.graph.inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(t) for t in self.graph.outputs]

    @property
    def node_count(self) -> int:
        return len(self.graph.nodes)

    def op_histogram(self) -> collections.Counter[str]:
        return collections.Counter(node.op for node in self.graph.nodes)

    def constants(self) -> Iterator[gs.Constant]:
        return (t for t in self.graph.tensors().values() if isinstance(t, gs.Constant))

    @property
    def weight_bytes(self) -> int:
        return sum(c.values.nbytes for c in self.constants())

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(c.shape)) for c in self.constants())


@contextmanager
def _data_left_out(constants: list[gs.Constant]) -> Iterator[None]:
    """While the block runs, ``constants`` export as data-less initializers. In place: a copy of the
    graph would copy the very arrays this avoids copying."""
    arrays = [c.values for c in constants]
    for constant, array in zip(constants, arrays, strict=True):
        constant.values = gs.ir.tensor.LazyValues(onnx.TensorProto(
            name=constant.name, data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape,
            data_location=onnx.TensorProto.EXTERNAL,
            external_data=[onnx.StringStringEntryProto(key="location", value=LEFT_OUT)]))
    try:
        yield
    finally:
        for constant, array in zip(constants, arrays, strict=True):
            constant.values = array


def _is_left_out(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == LEFT_OUT for e in tensor.external_data)


def load_onnx(path: str | os.PathLike[str]) -> Model:
    """Load an ONNX file into the IR, or say clearly why not. External weights become read-only
    views of their memory-mapped data files: loading copies no weight bytes, so a model of any size
    costs page cache, not memory."""
    return import_proto(*read_onnx(path), path)


def read_onnx(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The ONNX file's own protobuf and its external weights as arrays over their mapped data files (by
    initializer name; see ``_map_external_data``), or a clear error saying why the file is unusable."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file", hint="check the model path")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise UserInputError(
            f"{path}: not a valid ONNX model ({type(exc).__name__})",
            hint="the file may be truncated or not an ONNX file; re-export it",
        ) from exc
    if not proto.graph.node and not proto.graph.output:
        raise UserInputError(f"{path}: not a valid ONNX model (empty graph)",
                             hint="the file may be truncated or not an ONNX file; re-export it")
    try:
        return proto, _map_external_data(proto, path.parent)
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise UserInputError(
            f"{path}: cannot read its external weight data ({exc})",
            hint="keep the .onnx file and its .data file(s) together in one folder",
        ) from exc


def import_proto(proto: onnx.ModelProto, mapped: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Model:
    """``proto`` (read from ``path``) as the IR with the ``mapped`` weights, or a clear error when
    graphsurgeon cannot import it."""
    try:
        model = Model.from_proto(proto)
    except Exception as exc:
        raise UserInputError(f"{path}: cannot import the ONNX graph ({exc})",
                             hint="run onnx.checker.check_model on it to see what is wrong") from exc
    for constant in model.constants():
        if constant.name in mapped:
            constant.values = mapped[constant.name]
            constant.data_location = None  # held in memory now (as far as exporting is concerned)
    return model


def _map_external_data(proto: onnx.ModelProto, folder: Path) -> dict[str, np.ndarray]:
    """Initializers with external data as arrays over their mapped data file (by name); the few tensors
    that cannot be views (dtypes numpy lacks, misaligned offsets, tensors inside nodes or subgraphs)
    are read into the proto as onnx does it."""
    files: dict[Path, mmap.mmap | bytes] = {}
    mapped: dict[str, np.ndarray] = {}
    for tensor in proto.graph.initializer:
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        info = onnx.external_data_helper.ExternalDataInfo(tensor)
        data_path = _external_path(folder, info.location, tensor.name)
        dtype, offset = _plain_dtype(tensor.data_type), info.offset or 0
        if dtype is None or offset % dtype.itemsize:
            continue
        if data_path not in files:
            files[data_path] = _mapped_file(data_path)
        count = int(np.prod(tensor.dims, dtype=np.int64))
        length, size = count * dtype.itemsize, len(files[data_path])
        if offset + length > size or (info.length is not None and info.length != length):
            raise ValueError(f"tensor '{tensor.name}' needs {length} bytes at offset {offset} of "
                             f"{info.location} ({size} bytes; recorded length {info.length})")
        mapped[tensor.name] = np.frombuffer(files[data_path], dtype, count, offset).reshape(tuple(tensor.dims))
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if onnx.external_data_helper.uses_external_data(tensor) and tensor.name not in mapped:
            _external_path(folder, onnx.external_data_helper.ExternalDataInfo(tensor).location, tensor.name)
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(folder))
    return mapped


def _mapped_file(path: Path) -> mmap.mmap | bytes:
    """The whole file mapped with private copy-on-write pages: a pass writing into an array never
    reaches the user's file. (An empty file cannot be mapped; it holds only empty tensors.)"""
    with path.open("rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) if os.fstat(fh.fileno()).st_size else b""


def _external_path(folder: Path, location: str, tensor: str) -> Path:
    """The data file ``location`` names, refused when it leaves the model's folder (a hostile model
    could otherwise read any file)."""
    path = folder / location
    if not location or Path(location).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"tensor '{tensor}' points outside the model's folder ({location!r})")
    if not path.is_file():
        raise ValueError(f"tensor '{tensor}': data file {location} is missing")
    return path


def _plain_dtype(data_type: int) -> np.dtype | None:
    """numpy's dtype for an ONNX tensor type stored as-is (bool, int, uint, float), else None."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    except (KeyError, TypeError, ValueError):
        return None
    native = {onnx.TensorProto.BFLOAT16, onnx.TensorProto.STRING, onnx.TensorProto.INT4, onnx.TensorProto.UINT4}
    return None if data_type in native or dtype.kind not in "biufc" else dtype


def save_onnx(model: Model | onnx.ModelProto, path: str | os.PathLike[str],
              external_data: bool | None = None) -> list[Path]:
    """Write ``model`` to ``path``; weights go to ``<name>.data`` when large (or when asked), streamed
    one tensor at a time from the graph's arrays (no protobuf copy of the weights).

    Returns the files written. Callers that need atomicity write into a staging folder
    (see ``infer_compile.core.artifacts``).
    """
    path = Path(path)
    model = model if isinstance(model, Model) else Model.from_proto(model)
    if external_data is None:
        external_data = model.weight_bytes > EXTERNAL_DATA_THRESHOLD
    if not external_data:
        _write_single_file(model, path)
        return [path]
    data_path = path.with_name(path.name + ".data")
    proto = model.to_proto(weights=False)
    arrays = {c.name: c.values for c in model.weight_constants()}
    with data_path.open("wb") as fh:
        for tensor in proto.graph.initializer:
            if _is_left_out(tensor):
                _write_external(fh, tensor, arrays[tensor.name], data_path.name)
    onnx.save_model(proto, str(path))
    return [path, data_path]


# Large tensors start at multiples of this in the data file, so runtimes can memory-map them.
DATA_ALIGNMENT = 64 * 1024


def _write_external(fh: BinaryIO, tensor: onnx.TensorProto, array: np.ndarray, location: str) -> None:
    """Append ``array`` to the data file ``fh`` and point ``tensor`` (a data-less placeholder) at it."""
    data = _raw_bytes(array)
    alignment = DATA_ALIGNMENT if data.nbytes >= 1 << 20 else 64
    offset = -fh.tell() % alignment + fh.tell()
    fh.seek(offset)
    fh.write(data)
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(data.nbytes))):
        tensor.external_data.add(key=key, value=value)


def _raw_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes as ONNX stores them (little-endian, C order), without a copy when they already are."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.reshape(-1).data.cast("B")


def _write_single_file(model: Model, path: Path) -> None:
    """``model`` as one .onnx file with its weights streamed into the serialized bytes one at a time,
    instead of building (and serializing) a protobuf that holds copies of them all.

    Protobuf parsers accept a message's fields in any order, so the file is the weightless model with the
    graph field last, the graph's weight initializers appended to it: each one a TensorProto header (name,
    dims, type) followed by its raw_data field.
    """
    proto = model.to_proto(weights=False)
    arrays = {c.name: c.values for c in model.weight_constants()}
    graph = onnx.GraphProto()
    graph.CopyFrom(proto.graph)
    del graph.initializer[:]
    graph.initializer.extend(t for t in proto.graph.initializer if not _is_left_out(t))
    weights = [(onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims).SerializeToString(),
                _raw_bytes(arrays[t.name])) for t in proto.graph.initializer if _is_left_out(t)]
    proto.ClearField("graph")
    sizes = [len(header) + 1 + len(_varint(data.nbytes)) + data.nbytes for header, data in weights]
    graph_bytes = graph.SerializeToString()
    graph_size = len(graph_bytes) + sum(1 + len(_varint(size)) + size for size in sizes)
    with path.open("wb") as fh:
        fh.write(proto.SerializeToString())
        fh.write(_field(7, graph_size) + graph_bytes)  # ModelProto.graph
        for (header, data), size in zip(weights, sizes, strict=True):
            fh.write(_field(5, size) + header)  # GraphProto.initializer
            fh.write(_field(9, data.nbytes))  # TensorProto.raw_data
            fh.write(data)


def _field(number: int, length: int) -> bytes:
    """A length-delimited protobuf field's key and length."""
    return _varint(number << 3 | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def serialized(model: Model | onnx.ModelProto) -> bytes:
    """The model as bytes for in-memory consumers (onnxruntime sessions); < 2 GB only."""
    proto = model.to_proto() if isinstance(model, Model) else model
    return proto.SerializeToString()

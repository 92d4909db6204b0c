"""Running TensorRT engines on numpy inputs (GPU machines only).

Device memory comes from cuda-python (the ``[tensorrt]`` extra) or, when cuda-python is missing or cannot
use this driver, from a CUDA build of torch; both sit behind ``DeviceMemory`` so the runner does not care.
Buffers are kept per tensor and reused across runs (``bench`` calls ``run`` in a loop). Outputs are
allocated by TensorRT's output-allocator callback, so outputs whose shape depends on the data work too.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from infer_compile.core.errors import InferCompileError, TargetUnavailableError, UserInputError
from infer_compile.core.ir import TensorSpec
from infer_compile.core.manifest import Manifest, target_field
from infer_compile.core.numerics import Feeds
from infer_compile.targets.base import Runner
from infer_compile.targets.tensorrt import INSTALL_HINT, this_platform, trt_logger
from infer_compile.targets.tensorrt_settings import (
    BuilderSettings,
    BuildPlatform,
    check_engine_platform,
    check_feed_shapes,
)

if TYPE_CHECKING:  # annotations only: tensorrt is imported when an engine is loaded
    import tensorrt as trt

try:  # cuda-python >= 12.6 (the module moved to cuda.bindings there; 13.x removed the old cuda.cudart)
    from cuda.bindings import runtime as cudart

    HAVE_CUDA_PYTHON = True
except ImportError:  # optional: torch's CUDA allocator is the other way
    HAVE_CUDA_PYTHON = False

# cuda-python 13 needs a CUDA 13 driver (>= 580); on a CUDA 12 driver its first call fails with
# cudaErrorInsufficientDriver, so the runner probes it (cudaGetDeviceCount) before choosing it.
CUDA_PYTHON_HINT = ("with a CUDA 12 driver (nvidia-smi shows 'CUDA Version: 12.x') install "
                    "pip install 'cuda-python>=12.6,<13'; or install a CUDA build of torch")


class DeviceMemory(ABC):
    """Device allocations and copies on one CUDA stream."""

    stream: int  # the cudaStream_t handle TensorRT enqueues on

    @abstractmethod
    def alloc(self, nbytes: int) -> int:
        """A device pointer to ``nbytes`` bytes."""

    @abstractmethod
    def free(self, ptr: int) -> None: ...

    @abstractmethod
    def to_device(self, ptr: int, host: np.ndarray) -> None:
        """Queue a copy of the contiguous ``host`` array to ``ptr``."""

    @abstractmethod
    def to_host(self, host: np.ndarray, ptr: int) -> None:
        """Queue a copy from ``ptr`` into the contiguous ``host`` array."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until everything queued on the stream is done."""

    @abstractmethod
    def close(self) -> None:
        """Destroy the stream (buffers are freed by their owner first)."""


def _check(result: tuple[Any, ...]) -> Any:
    """The value of a cuda-python call (``(error, value...)``); raises on an error code."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise InferCompileError(f"CUDA call failed: {getattr(err, 'name', err)}", hint="check the GPU with nvidia-smi")
    return values[0] if values else None


class CudaPythonMemory(DeviceMemory):
    def __init__(self) -> None:
        self._stream = _check(cudart.cudaStreamCreate())
        self.stream = int(self._stream)

    def alloc(self, nbytes: int) -> int:
        return int(_check(cudart.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        _check(cudart.cudaFree(ptr))

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        _check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))

    def synchronize(self) -> None:
        _check(cudart.cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        _check(cudart.cudaStreamDestroy(self._stream))


class TorchCudaMemory(DeviceMemory):
    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._stream = torch.cuda.Stream()
        self.stream = int(self._stream.cuda_stream)
        self._blocks: dict[int, Any] = {}  # pointer -> the uint8 tensor owning it

    def alloc(self, nbytes: int) -> int:
        block = self._torch.empty(nbytes, dtype=self._torch.uint8, device="cuda")
        self._blocks[block.data_ptr()] = block
        return int(block.data_ptr())

    def free(self, ptr: int) -> None:
        self._blocks.pop(ptr, None)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        with self._torch.cuda.stream(self._stream):
            self._blocks[ptr][:host.nbytes].copy_(self._torch.from_numpy(_bytes_view(host)), non_blocking=True)

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        with self._torch.cuda.stream(self._stream):
            _bytes_view(host)[:] = self._blocks[ptr][:host.nbytes].cpu().numpy()  # .cpu() waits for the stream

    def synchronize(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self._blocks.clear()  # torch owns the stream's lifetime


def _bytes_view(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8)


def device_memory() -> DeviceMemory:
    """cuda-python's runtime when it can use this driver and sees a GPU, else torch CUDA; else says why not."""
    reasons = []
    if not HAVE_CUDA_PYTHON:
        reasons.append("cuda-python is not installed")
    else:
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess:
            reasons.append(f"cuda-python cannot use this driver ({getattr(err, 'name', err)})")
        elif not count:
            reasons.append("cuda-python sees no GPU")
        else:
            return CudaPythonMemory()
    try:
        import torch
    except ImportError:
        reasons.append("torch is not installed")
    else:
        if torch.cuda.is_available():
            return TorchCudaMemory(torch)
        reasons.append("torch has no CUDA")
    raise TargetUnavailableError(f"no CUDA runtime for Python can run TensorRT engines here: {'; '.join(reasons)}",
                                 hint=f"{INSTALL_HINT}; {CUDA_PYTHON_HINT}")


class DeviceBuffers:
    """One device buffer per tensor name, reused across runs and grown when a larger size arrives."""

    def __init__(self, memory: DeviceMemory) -> None:
        self.memory = memory
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def get(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < max(nbytes, 1):
            if ptr:
                self.memory.free(ptr)
            size = max(nbytes, 1)
            ptr = self.memory.alloc(size)
            self._buffers[name] = (ptr, size)
        return ptr

    def pointer(self, name: str) -> int:
        return self._buffers[name][0]

    def free_all(self) -> None:
        while self._buffers:
            self.memory.free(self._buffers.popitem()[1][0])


def output_allocator(buffers: DeviceBuffers, shapes: dict[str, tuple[int, ...]]) -> trt.IOutputAllocator:
    """A ``trt.IOutputAllocator`` placing outputs in ``buffers`` and recording their shapes in ``shapes``.

    TensorRT asks it for memory once it knows an output's size, which for data-dependent shapes
    (NonZero, NMS) is only during execution; the engine's static shape would say -1 there.
    """
    import tensorrt as trt

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)  # pybind11 needs the base initialised explicitly

        def reallocate_output(self, tensor_name: str, memory: int, size: int, alignment: int) -> int:
            return buffers.get(tensor_name, size)  # cudaMalloc/torch blocks are 256-byte aligned

        def notify_shape(self, tensor_name: str, shape: trt.Dims) -> None:
            shapes[tensor_name] = dims_tuple(shape)

    return OutputAllocator()


def dims_tuple(dims: trt.Dims) -> tuple[int, ...]:
    """A ``trt.Dims`` as a tuple (Dims has __len__ and __getitem__, no __iter__ in its declared API)."""
    return tuple(int(dims[i]) for i in range(len(dims)))


class TrtRunner(Runner):
    def __init__(self, engine_path: Path, manifest: Manifest | None) -> None:
        import tensorrt as trt

        recorded = target_field(manifest, "builder_settings")
        settings = None if recorded is None else BuilderSettings.from_json(recorded)
        built = target_field(manifest, "tensorrt")
        if built and settings:
            check_engine_platform(BuildPlatform(built["version"], built["gpu"], built["compute_capability"]),
                                  this_platform(), settings)
        self._profiles = settings.profiles if settings else ()
        self.memory = device_memory()
        self._buffers = DeviceBuffers(self.memory)
        self._closed = False
        runtime = trt.Runtime(trt_logger())
        if settings and settings.version_compat:
            # A version-compatible plan carries the lean runtime it runs on: TensorRT loads that code only if told to.
            runtime.engine_host_code_allowed = True
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise UserInputError(f"{engine_path}: TensorRT could not load this engine",
                                 hint="it was built by another TensorRT version or for another GPU, or is damaged; "
                                      "rebuild it here")
        self.context = self.engine.create_execution_context()
        specs = [self._spec(self.engine.get_tensor_name(i)) for i in range(self.engine.num_io_tensors)]
        modes = {s.name: self.engine.get_tensor_mode(s.name) == trt.TensorIOMode.INPUT for s in specs}
        self.inputs = [s for s in specs if modes[s.name]]
        self.outputs = [s for s in specs if not modes[s.name]]
        self._output_shapes: dict[str, tuple[int, ...]] = {}
        self._allocator = output_allocator(self._buffers, self._output_shapes)
        for spec in self.outputs:
            if not self.context.set_output_allocator(spec.name, self._allocator):
                raise InferCompileError(f"TensorRT refused an output allocator for '{spec.name}'")

    def _spec(self, name: str) -> TensorSpec:
        import tensorrt as trt

        shape = tuple(d if d >= 0 else None for d in dims_tuple(self.engine.get_tensor_shape(name)))
        return TensorSpec(name, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))

    def run(self, feeds: Feeds) -> Feeds:
        check_feed_shapes(self._profiles, feeds)
        for spec in self.inputs:
            if spec.name not in feeds:
                raise UserInputError(f"input '{spec.name}' is missing",
                                     hint=f"the engine takes: {', '.join(s.describe() for s in self.inputs)}")
            host = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            if not self.context.set_input_shape(spec.name, host.shape):
                raise UserInputError(f"input '{spec.name}' has shape {host.shape}, which the engine does not take",
                                     hint=f"it takes {spec.describe()}")
            ptr = self._buffers.get(spec.name, host.nbytes)
            self.memory.to_device(ptr, host)
            self.context.set_tensor_address(spec.name, ptr)
        if not self.context.execute_async_v3(self.memory.stream):
            raise InferCompileError("TensorRT failed to run the engine (its log above says why)")
        self.memory.synchronize()  # data-dependent output shapes are final only once the work is done
        results = {}
        for spec in self.outputs:
            shape = self._output_shapes.get(spec.name)
            if shape is None:  # no allocator call: an empty output
                shape = dims_tuple(self.context.get_tensor_shape(spec.name))
            results[spec.name] = host = np.empty(shape, dtype=spec.dtype)
            if host.nbytes:
                self.memory.to_host(host, self._buffers.pointer(spec.name))
        self.memory.synchronize()
        return results

    def close(self) -> None:
        """Free the device buffers and destroy the CUDA stream (also done when the runner is collected)."""
        if getattr(self, "_closed", True):  # closed, or __init__ stopped before the memory existed
            return
        self._closed = True
        self._buffers.free_all()
        self.memory.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit CUDA may already be torn down
            self.close()

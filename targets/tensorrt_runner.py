"""Running TensorRT engines on numpy inputs (GPU machines only).

Device memory comes from cuda-python (the ``[tensorrt]`` extra) or, when only a CUDA build of torch
is installed, from torch's allocator; both sit behind ``DeviceMemory`` so the runner does not care.
Buffers are kept per tensor and reused across runs (``bench`` calls ``run`` in a loop).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.errors import InferCompileError, TargetUnavailableError, UserInputError
from infer_compile.ir import TensorSpec
from infer_compile.numerics import Feeds
from infer_compile.targets.base import Runner
from infer_compile.targets.tensorrt import INSTALL_HINT, this_platform
from infer_compile.targets.tensorrt_settings import (
    BuilderSettings,
    BuildPlatform,
    check_engine_platform,
    check_feed_shapes,
)


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


class CudaPythonMemory(DeviceMemory):
    def __init__(self, cudart: Any) -> None:
        self._rt = cudart
        self._stream = self._call(cudart.cudaStreamCreate())
        self.stream = int(self._stream)

    def _call(self, result: tuple) -> Any:
        err, *values = result
        if err != self._rt.cudaError_t.cudaSuccess:
            raise InferCompileError(f"CUDA call failed: {err}", hint="check the GPU with nvidia-smi")
        return values[0] if values else None

    def alloc(self, nbytes: int) -> int:
        return int(self._call(self._rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call(self._rt.cudaFree(ptr))

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        self._call(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream))

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        self._call(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                            self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream))

    def synchronize(self) -> None:
        self._call(self._rt.cudaStreamSynchronize(self._stream))


class TorchCudaMemory(DeviceMemory):
    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._stream = torch.cuda.Stream()
        self.stream = int(self._stream.cuda_stream)
        self._blocks: dict[int, Any] = {}  # pointer -> the uint8 tensor owning it

    def alloc(self, nbytes: int) -> int:
        block = self._torch.empty(nbytes, dtype=self._torch.uint8, device="cuda")
        self._blocks[block.data_ptr()] = block
        return block.data_ptr()

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


def _bytes_view(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1).view(np.uint8)


def device_memory() -> DeviceMemory:
    """cuda-python's runtime API when installed (its module moved to cuda.bindings in 12.6), else torch CUDA."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            cudart = None
    if cudart is not None:
        return CudaPythonMemory(cudart)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        return TorchCudaMemory(torch)
    raise TargetUnavailableError("no CUDA runtime for Python to run TensorRT engines with",
                                 hint=f"{INSTALL_HINT} (cuda-python), or install a CUDA build of torch")


class TrtRunner(Runner):
    def __init__(self, engine_path: Path, manifest: dict[str, Any]) -> None:
        import tensorrt as trt

        settings = BuilderSettings.from_json(manifest["builder_settings"]) if "builder_settings" in manifest else None
        built = manifest.get("tensorrt")
        if built and settings:
            check_engine_platform(BuildPlatform(built["version"], built["gpu"], built["compute_capability"]),
                                  this_platform(), settings)
        self._profiles = settings.profiles if settings else ()
        self.memory = device_memory()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if settings and settings.version_compat:
            # A version-compatible plan carries the lean runtime it runs on: TensorRT loads that code only if told to.
            runtime.engine_host_code_allowed = True
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise UserInputError(f"{engine_path}: TensorRT could not load this engine",
                                 hint="it was built by another TensorRT version or for another GPU, or is damaged; "
                                      "rebuild it here")
        self.context = self.engine.create_execution_context()
        specs = [self._spec(trt, self.engine.get_tensor_name(i)) for i in range(self.engine.num_io_tensors)]
        modes = {s.name: self.engine.get_tensor_mode(s.name) == trt.TensorIOMode.INPUT for s in specs}
        self.inputs = [s for s in specs if modes[s.name]]
        self.outputs = [s for s in specs if not modes[s.name]]
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)

    def _spec(self, trt: Any, name: str) -> TensorSpec:
        shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
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
            ptr = self._device_buffer(spec.name, host.nbytes)
            self.memory.to_device(ptr, host)
            self.context.set_tensor_address(spec.name, ptr)
        results = {}
        for spec in self.outputs:
            results[spec.name] = np.empty(tuple(self.context.get_tensor_shape(spec.name)), dtype=spec.dtype)
            self.context.set_tensor_address(spec.name, self._device_buffer(spec.name, results[spec.name].nbytes))
        if not self.context.execute_async_v3(self.memory.stream):
            raise InferCompileError("TensorRT failed to run the engine (its log above says why)")
        for name, host in results.items():
            self.memory.to_host(host, self._buffers[name][0])
        self.memory.synchronize()
        return results

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """The tensor's device buffer, reused across runs and grown when a larger shape arrives."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < max(nbytes, 1):
            if ptr:
                self.memory.free(ptr)
            size = max(nbytes, 1)
            ptr = self.memory.alloc(size)
            self._buffers[name] = (ptr, size)
        return ptr

    def __del__(self) -> None:
        # Runners have no close(): device buffers go with the runner (best effort at interpreter exit).
        for ptr, _ in getattr(self, "_buffers", {}).values():
            try:
                self.memory.free(ptr)
            except Exception:
                break

"""PyTorch frontend: TorchScript, torch.export, torch.save files and Python entry points -> ONNX.

Lowering uses torch.onnx.export: the dynamo exporter by default, the TorchScript-based (legacy)
exporter with ``--exporter legacy`` and for TorchScript archives (which torch.export cannot
trace). The exported ONNX is run against PyTorch on the example inputs and the difference is
reported; a difference beyond the fp32 tolerance is an error.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from infer_compile.core.errors import AccuracyError, InferCompileError, UnsupportedError, UserInputError
from infer_compile.core.ir import Model, TensorSpec, load_onnx
from infer_compile.core.numerics import TOLERANCES, Feeds, compare_outputs, random_inputs, run_onnx, summarize, within
from infer_compile.core.progress import append_log
from infer_compile.frontends.base import Frontend, LoweredModel, SourceOptions, check_converted, first_line
from infer_compile.frontends.specs import load_entry_point, shapes_by_name
from infer_compile.frontends.torch_files import (
    CORRUPT_ARCHIVE,
    TORCH_EXPORT,
    TORCHSCRIPT,
    import_output_types,
    load_pickled,
    module_from_checkpoint,
    sniff_torch_file,
)

EXPORTERS = ("dynamo", "legacy")
PYTHON_ENTRY = "python entry point"
OWN_EXAMPLE_KINDS = (TORCH_EXPORT, PYTHON_ENTRY)  # sources that come with their own example inputs
OPSET = 18  # the dynamo exporter's native opset; the legacy exporter is asked for the same


class ScriptConversionError(Exception):
    """torch's TorchScript-to-torch.export converter failed (not the ONNX exporter)."""


@dataclass
class ExportJob:
    """What to hand torch.onnx.export: the program, its example inputs and their names."""

    program: Any  # nn.Module, ScriptModule or ExportedProgram
    args: tuple  # example input tensors, positional
    names: list[str]
    kind: str  # how the source was read, for the report
    default_exporter: str = "dynamo"


class TorchFrontend(Frontend):
    name = "torch"
    description = ("PyTorch files: TorchScript (torch.jit.save), torch.export (.pt2), torch.save modules or "
                   "checkpoints (--trust-pickle), state_dicts (--arch), --from-python entry points")

    def accepts(self, path: Path) -> bool:
        return sniff_torch_file(path) is not None

    def load(self, path: Path, options: SourceOptions) -> LoweredModel:
        _require_torch()
        kind = sniff_torch_file(path)
        if kind == CORRUPT_ARCHIVE:
            raise UserInputError(f"{path}: is a truncated or corrupt zip archive",
                                 hint="copy or download the model file again")
        if kind == TORCHSCRIPT:
            job = _torchscript_job(path, options)
        elif kind == TORCH_EXPORT:
            job = _torch_export_job(path, options)
        else:
            module, found = module_from_checkpoint(load_pickled(path, options.trust_pickle), path, options.arch)
            job = _module_job(module, options, f"torch.save ({found})")
        return lower(job, options, str(path))

    def load_python_entry(self, options: SourceOptions) -> LoweredModel:
        """`--from-python pkg.mod:build`: build() returns (module, example_inputs)."""
        _require_torch()
        import torch

        spec = options.python_entry or ""
        try:
            built = load_entry_point(spec, "--from-python")()
        except UserInputError:
            raise
        except Exception as exc:  # user code
            raise UserInputError(f"--from-python {spec}: calling it failed: {first_line(exc)}",
                                 hint="rerun with --debug for the traceback") from exc
        if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], torch.nn.Module)):
            raise UserInputError(f"--from-python {spec}: must return (module, example_inputs)",
                                 hint="return the nn.Module and a tuple of example input tensors")
        module, example = built
        args = (example,) if isinstance(example, torch.Tensor) else tuple(example)
        names = forward_input_names(module)[: len(args)]
        names += [f"input_{i}" for i in range(len(names), len(args))]  # forward(*args) has no names to give
        return lower(ExportJob(module.eval(), args, names, PYTHON_ENTRY), options, spec)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise UnsupportedError("PyTorch is not installed", hint='pip install "infer-compile[torch]"') from exc


def forward_input_names(module: Any) -> list[str]:
    """Positional parameter names of ``module.forward`` (TorchScript or eager)."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return [arg.name for arg in module.forward.schema.arguments[1:]]
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _torchscript_job(path: Path, options: SourceOptions) -> ExportJob:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise UserInputError(f"{path}: cannot load the TorchScript archive ({first_line(exc)})",
                             hint="the file may be truncated or saved by a newer PyTorch") from exc
    # The legacy exporter lowers TorchScript as it is; the dynamo route converts it to a torch.export program
    # first, which also takes dict outputs (Hugging Face models traced with strict=False).
    returns_dict = any("Dict" in str(ret.type) for ret in module.forward.schema.returns)
    return _module_job(module, options, TORCHSCRIPT, default_exporter="dynamo" if returns_dict else "legacy",
                       dtypes=dict.fromkeys(_index_inputs(module), "int64"))


# Ops that pass an input's values on unchanged in kind: followed when looking for what consumes an input.
_PASS_THROUGH_OPS = frozenset({"aten::view", "aten::reshape", "aten::flatten", "aten::squeeze", "aten::unsqueeze",
                               "aten::contiguous", "aten::slice", "aten::select", "aten::expand", "aten::repeat"})


def _index_inputs(module: Any) -> list[str]:
    """Inputs of a TorchScript module that are embedding indices (token ids): their example inputs are int64
    without --input-dtype, as they would be in the traced program."""
    import torch

    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    found = []
    for value in list(graph.inputs())[1:]:
        pending, seen = [value], set()
        while pending:
            uses = pending.pop().uses()
            if any(use.user.kind() == "aten::embedding" and use.offset == 1 for use in uses):
                found.append(value.debugName().split(".")[0])
                break
            for use in uses:
                if use.user.kind() in _PASS_THROUGH_OPS and use.offset == 0 and use.user not in seen:
                    seen.add(use.user)
                    pending.extend(use.user.outputs())
    return found


def _torch_export_job(path: Path, options: SourceOptions) -> ExportJob:
    import torch

    import_output_types(path, options.trust_pickle)
    try:
        with captured_output(io.StringIO()):  # a failed load logs a traceback per missing class
            program = torch.export.load(str(path))
    except Exception as exc:
        raise UserInputError(f"{path}: cannot load the torch.export program ({first_line(exc)})",
                             hint="the file may be truncated or saved by a different PyTorch version") from exc
    args, kwargs = program.example_inputs or ((), {})
    if kwargs:
        raise UnsupportedError(f"{path}: example inputs passed by keyword are not supported",
                               hint="export the program with positional example inputs")
    names = [spec.arg.name for spec in program.graph_signature.input_specs
             if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    contiguous_as_copies(program.graph_module)
    return ExportJob(program, tuple(args), names, TORCH_EXPORT)


def contiguous_as_copies(graph_module: Any) -> None:
    """Each `aten.contiguous` of a loaded or converted program as an explicit copy (`aten.clone` to that memory
    format). The dynamo exporter's decomposition (torch 2.13) turns contiguous into nothing in such programs, and a
    following view of the still-transposed tensor fails (T5's attention: "Cannot view a tensor with shape ...")."""
    import torch

    for node in graph_module.graph.nodes:
        if node.target is torch.ops.aten.contiguous.default:
            node.target = torch.ops.aten.clone.default
            node.kwargs = {"memory_format": node.kwargs.get("memory_format", torch.contiguous_format)}
    graph_module.recompile()


def _module_job(module: Any, options: SourceOptions, kind: str, default_exporter: str = "dynamo",
                dtypes: dict[str, str] | None = None) -> ExportJob:
    import torch

    names = forward_input_names(module)
    specs = _input_specs(names, with_recorded_inputs(options, names), dtypes or {})
    feeds = random_inputs(specs, seed=0)
    args = tuple(torch.from_numpy(feeds[s.name]) for s in specs)
    # .eval() on the whole tree, not just the wrapper: the legacy exporter copies the top module's
    # training flag to every submodule when it restores modes, so a half-eval model would flip.
    return ExportJob(module.eval(), args, [s.name for s in specs], kind, default_exporter)


def with_recorded_inputs(options: SourceOptions, names: list[str]) -> SourceOptions:
    """``options`` with the recorded inputs' shapes (a dynamic dim at its range's opt size, else 1) and integer
    dtypes when no --input-shape is given: verify lowers the source as the artifact's build did."""
    recorded = [spec for spec in options.recorded_inputs if spec.name in names and spec.shape is not None]
    if options.input_shapes or not recorded:
        return options
    ranges = options.shape_ranges

    def size(dim: Any) -> int:
        return dim if isinstance(dim, int) and dim > 0 else ranges[dim].opt if dim in ranges else 1

    shapes = {spec.name: tuple(size(d) for d in spec.shape or ()) for spec in recorded}
    dtypes = {spec.name: spec.dtype.name for spec in recorded if spec.dtype.kind in "iub"}  # floats: fp16 IO builds
    return replace(options, input_shapes=shapes, input_dtypes={**dtypes, **options.input_dtypes})


def _input_specs(names: list[str], options: SourceOptions, dtypes: dict[str, str]) -> list[TensorSpec]:
    """Example input specs in forward order from --input-shape/--input-dtype (dynamic dims at their opt size;
    ``dtypes``: the frontend's guess for inputs without --input-dtype, else float32)."""
    shapes = shapes_by_name(options.input_shapes, names)
    given = set(shapes)
    unknown = (given | set(options.input_dtypes)) - set(names)
    if unknown:
        raise UserInputError(f"unknown input name(s): {', '.join(sorted(unknown))}",
                             hint=f"forward() takes: {', '.join(names) or 'no inputs'}")
    if not given and names:
        raise UserInputError("a PyTorch module needs example input shapes to be exported",
                             hint=f"give --input-shape for each of: {', '.join(names)} (e.g. {names[0]}:1x3x224x224)")
    used = names[: max(names.index(n) for n in given) + 1] if given else []
    missing = [n for n in used if n not in given]
    if missing:
        raise UserInputError(f"no --input-shape for input(s) {', '.join(missing)}",
                             hint="inputs are passed in forward() order: give a shape for every one before the last")
    specs = []
    for name in used:
        shape = list(shapes[name])
        for axis, dim in options.dynamic_dims.get(name, {}).items():
            if axis >= len(shape):
                raise UserInputError(f"--dynamic {name}:{axis}={dim}: {name} has only {len(shape)} axes",
                                     hint="axes count from 0")
            if dim in options.shape_ranges:
                shape[axis] = options.shape_ranges[dim].opt
        dtype = options.input_dtypes.get(name, dtypes.get(name, "float32"))
        specs.append(TensorSpec(name, tuple(shape), np.dtype(dtype)))
    return specs


def lower(job: ExportJob, options: SourceOptions, source: str) -> LoweredModel:
    """Export ``job`` to ONNX, check it against PyTorch on the example inputs, report how it went. Without
    --exporter the job's default exporter runs first and the other one when it fails."""
    import torch

    exporters = _exporters(job, options, source)
    _check_input_options(job, options)
    # A .pt2 program runs as its unlifted module: made once, run here, then handed to targets that take modules.
    runnable = job.program.module() if job.kind == TORCH_EXPORT else job.program
    reference, output_names = _run_torch(job, runnable, source)
    failures: list[tuple[str, InferCompileError]] = []
    log = io.StringIO()
    for exporter in exporters:
        try:
            model, check = _export_checked(job, exporter, output_names, reference, options, source, log)
        except InferCompileError as exc:
            failures.append((exporter, exc))
            continue
        if options.log_path is not None:
            append_log(options.log_path, log.getvalue().encode())
        details = {"kind": job.kind, "exporter": exporter, "torch": torch.__version__, "opset": model.opset, **check}
        if failures:  # the default exporter failed first: say why, in the manifest
            details["exporter_failures"] = {name: exc.message for name, exc in failures}
        module = None if job.kind == TORCHSCRIPT else flat_outputs(runnable)
        return LoweredModel(model, "pytorch", details, module=module)
    raise _export_failure(failures, job, options, source, log.getvalue())


def _exporters(job: ExportJob, options: SourceOptions, source: str) -> list[str]:
    if options.exporter is not None and options.exporter not in EXPORTERS:
        raise UserInputError(f"--exporter '{options.exporter}' is not known", hint="choose dynamo or legacy")
    if job.kind == TORCH_EXPORT:
        if options.exporter == "legacy":
            raise UserInputError(f"{source}: torch.export programs are lowered by the dynamo exporter only",
                                 hint="drop --exporter legacy")
        return ["dynamo"]
    if options.exporter is not None:
        return [options.exporter]
    return sorted(EXPORTERS, key=lambda e: e != job.default_exporter)


def _export_checked(job: ExportJob, exporter: str, output_names: list[str], reference: list[np.ndarray],
                    options: SourceOptions, source: str, log: io.StringIO) -> tuple[Model, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="infer-compile-torch-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        try:
            with _exporter_output_to(log, exporter, options.verbose):
                _export(job, exporter, onnx_path, output_names, options)
        except ScriptConversionError as exc:
            raise UnsupportedError(f"torch's TorchScript converter (for the dynamo exporter) cannot convert this "
                                   f"model: {exc}") from exc
        except Exception as exc:  # the exporters raise many types; each is "cannot lower this model"
            raise UnsupportedError(f"the {exporter} exporter cannot lower this model: {_root_cause(exc)}") from exc
        model = load_onnx(onnx_path)
    check_converted(model, source, f"the {exporter} exporter")
    return model, _check_export(model, job, reference, source)


def _export_failure(failures: list[tuple[str, InferCompileError]], job: ExportJob, options: SourceOptions,
                    source: str, log: str) -> InferCompileError:
    """One error for every exporter that failed, with one hint that works (never "try the other exporter" when
    that one failed too), the exporters' own output written to a log file."""
    what = "; ".join(f"{exc.message.removeprefix(f'{source}: ')}" for _, exc in failures)
    both_tried = {exporter for exporter, _ in failures} == set(EXPORTERS)
    if both_tried and any(isinstance(exc.__cause__, ScriptConversionError) for _, exc in failures):
        hint = ("re-save it from Python as a torch.export program: torch.export.save(torch.export.export(model, "
                "example_inputs), 'model.pt2'); a Hugging Face model can also be traced after loading it with "
                "torchscript=True")
    elif both_tried:
        hint = ("neither exporter has an ONNX translation for an op named above: replace it in the model, or "
                "compute that part outside the model")
    elif job.kind != TORCH_EXPORT:  # the user chose the one that failed
        hint = "drop --exporter: infer-compile then tries the dynamo and the legacy exporter"
    else:
        hint = "rerun with --debug for the exporter's full message"
    if log.strip():
        hint += f"; the exporters' output is in {_write_log(log, options.log_path)}"
    error_type = AccuracyError if all(isinstance(exc, AccuracyError) for _, exc in failures) else UnsupportedError
    return error_type(f"{source}: {what}", hint=hint)


def _write_log(text: str, path: Path | None) -> Path:
    """The exporters' output appended to the build's log (``path``), else written to a fresh temporary file."""
    if path is None:
        fd, name = tempfile.mkstemp(prefix="infer-compile-export-", suffix=".log")
        os.close(fd)
        path = Path(name)
    append_log(path, text.encode())
    return path


def _check_input_options(job: ExportJob, options: SourceOptions) -> None:
    """Options that would be silently ignored are errors: programs and entry points bring their own inputs."""
    if job.kind in OWN_EXAMPLE_KINDS and (options.input_shapes or options.input_dtypes):
        raise UserInputError(f"--input-shape/--input-dtype do not apply to a {job.kind}: it brings its example inputs",
                             hint="drop them (change the example inputs where the model is built)")
    if job.kind == TORCH_EXPORT and options.dynamic_dims:
        raise UserInputError("--dynamic does not apply to a torch.export program: its dynamic dims are fixed at export",
                             hint="pass dynamic_shapes to torch.export.export, or drop --dynamic")
    unknown = set(options.dynamic_dims) - set(job.names)
    if unknown:
        raise UserInputError(f"--dynamic names unknown input(s): {', '.join(sorted(unknown))}",
                             hint=f"the model's inputs are: {', '.join(job.names)}")


def _run_torch(job: ExportJob, runnable: Any, source: str) -> tuple[list[np.ndarray], list[str]]:
    """PyTorch's outputs of ``runnable`` (the job's program, as a module) on the job's example inputs, flattened as
    the exporters flatten them, and their names."""
    import torch

    try:
        with torch.no_grad():
            out = runnable(*job.args)
    except Exception as exc:  # the user's forward
        shapes = ", ".join(f"{n}:{'x'.join(map(str, a.shape))} {a.dtype}" for n, a in zip(job.names, job.args,
                                                                                          strict=False))
        raise UserInputError(f"{source}: forward() fails on the example inputs ({shapes}): {first_line(exc)}",
                             hint="check --input-shape / --input-dtype against what the model expects") from exc
    leaves = list(_tensor_leaves(out, ()))
    if not leaves:
        raise UnsupportedError(f"{source}: forward() returns no tensors", hint="return the output tensors")
    return [t.detach().cpu().numpy() for _, t in leaves], output_names([path for path, _ in leaves], job.names)


def flat_outputs(module: Any) -> Any:
    """``module`` returning the tensors of its result as a flat tuple, in the order of the ONNX graph's outputs
    (``_tensor_leaves``): a converter that names outputs itself (litert-torch keeps a dict's keys) then agrees with
    the graph by position. In eval mode, as the module it wraps (a .pt2 program's module refuses eval())."""
    import torch

    class FlatOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.source = module
            self.training = False

        def forward(self, *args: Any) -> tuple[Any, ...]:
            return tuple(tensor for _, tensor in _tensor_leaves(self.source(*args), ()))

    return FlatOutputs()


def _tensor_leaves(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """The tensors in a forward() result with their paths (dict keys, tuple positions), in pytree order: dicts
    and Hugging Face ModelOutputs (dicts too) by key, in insertion order; tuples and lists by position."""
    import torch
    from torch.utils._pytree import tree_leaves

    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensor_leaves(item, (*path, str(key)))
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            yield from _tensor_leaves(item, (*path, index))
    else:  # another registered container (a cache object): its tensors by position
        for index, item in enumerate(t for t in tree_leaves(value) if isinstance(t, torch.Tensor)):
            yield (*path, index), item


def output_names(paths: list[tuple[str | int, ...]], input_names: list[str]) -> list[str]:
    """ONNX output names: the source's own where it names its outputs (a dict's keys, e.g. Hugging Face
    `logits`, `last_hidden_state`; nested ones joined by dots), else `output_N` by position."""
    if not any(isinstance(part, str) for path in paths for part in path):
        return [f"output_{i}" for i in range(len(paths))]
    names = [".".join(map(str, path)) or f"output_{i}" for i, path in enumerate(paths)]
    return [f"{name}_output" if name in input_names else name for name in names]


def _export(job: ExportJob, exporter: str, path: Path, output_names: list[str], options: SourceOptions) -> None:
    import torch

    common = {"input_names": job.names, "output_names": output_names, "opset_version": OPSET, "verbose": False}
    if exporter == "dynamo":
        program, dims = job.program, _dynamo_shapes(job, options)
        dynamic: dict | tuple | None = dims
        if job.kind == TORCHSCRIPT:
            try:
                program = _script_as_module(job)
            except Exception as exc:  # the converter's own limits (ops, control flow it cannot follow)
                raise ScriptConversionError(first_line(exc)) from exc
            dynamic = None if dims is None else tuple(dims.values())  # the converted module takes *args
        torch.onnx.export(program, job.args, str(path), dynamo=True, dynamic_shapes=dynamic, **common)
    else:
        torch.onnx.export(job.program, job.args, str(path), dynamo=False, training=torch.onnx.TrainingMode.EVAL,
                          dynamic_axes=dict(options.dynamic_dims) or None, **common)


def _script_as_module(job: ExportJob) -> Any:
    """A TorchScript module as a plain torch.fx module that torch.export can trace (it cannot trace TorchScript):
    torch's TorchScript converter. The dynamo exporter then exports it with the --dynamic dims (the converter's
    own program has every dim symbolic). This route takes what the legacy exporter cannot: dict outputs
    (prim::DictConstruct) and ops it has no symbolic for (aten::diff)."""
    from torch._export.converter import TS2EPConverter

    module = TS2EPConverter(job.program, job.args).convert().module()
    contiguous_as_copies(module)
    return module


@contextlib.contextmanager
def _exporter_output_to(log: io.StringIO, exporter: str, verbose: bool) -> Iterator[None]:
    """The exporters print progress, log notes on optional ops, warn about deprecations, and (C++) dump whole
    graphs to the process's stderr on failure: all of it goes to ``log`` (the CLI prints only our lines), or to the
    terminal as it happens with --verbose."""
    log.write(f"===== {exporter} exporter =====\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if verbose:
            yield
        else:
            with captured_output(log):
                yield


@contextlib.contextmanager
def captured_output(log: io.StringIO) -> Iterator[None]:
    """Everything written to stdout/stderr (Python's and the C++ libraries' file descriptors 1 and 2) and logged
    by torch while the block runs, appended to ``log``."""
    handler = logging.StreamHandler(log)
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript")]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        fds = [(fd, os.dup(fd)) for fd in (1, 2)]
        try:
            for fd, _ in fds:
                os.dup2(sink.fileno(), fd)
            for logger in loggers:
                logger.handlers, logger.propagate = [handler], False
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
                logger.handlers, logger.propagate = handlers, propagate
            for fd, copy in fds:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            log.write(sink.read().decode("utf-8", "replace"))


def _dynamo_shapes(job: ExportJob, options: SourceOptions) -> dict | None:
    """--dynamic/--shape-range as torch.export dims (an ExportedProgram already carries its own)."""
    import torch

    if not options.dynamic_dims or job.kind == TORCH_EXPORT:
        return None
    dims: dict[str, Any] = {}
    for axes in options.dynamic_dims.values():
        for dim in axes.values():
            low, _, high = options.shape_ranges.get(dim, (None, None, None))
            dims.setdefault(dim, torch.export.Dim(dim, min=low, max=high))
    return {name: {axis: dims[d] for axis, d in options.dynamic_dims[name].items()} if name in options.dynamic_dims
            else None for name in job.names}


def _check_export(model: Model, job: ExportJob, reference: list[np.ndarray], source: str) -> dict[str, Any]:
    """Run the ONNX model on the example inputs; fail when it disagrees with PyTorch beyond tolerance."""
    onnx_inputs = [s.name for s in model.inputs]
    if len(onnx_inputs) != len(job.args):
        raise UnsupportedError(f"{source}: the exported model takes {len(onnx_inputs)} inputs, "
                               f"PyTorch took {len(job.args)}", hint="pass only tensors as example inputs")
    feeds: Feeds = {name: arg.detach().cpu().numpy() for name, arg in zip(onnx_inputs, job.args, strict=True)}
    got = list(run_onnx(model, feeds).values())
    if len(got) != len(reference):
        raise UnsupportedError(f"{source}: the exported model has {len(got)} outputs, PyTorch returned "
                               f"{len(reference)}", hint="return a flat tuple of tensors from forward()")
    names = [s.name for s in model.outputs]
    ref = dict(zip(names, reference, strict=True))
    comparisons = compare_outputs(ref, dict(zip(names, got, strict=True)))
    precision = "fp16" if any(a.dtype == np.float16 for a in reference) else "fp32"
    summary = summarize(comparisons)
    if not within(comparisons, TOLERANCES[precision]):
        raise AccuracyError(f"{source}: the exported ONNX differs from PyTorch (max abs {summary['max_abs']:.3g}, "
                            f"cosine {summary['cosine']:.6f})")
    return {"export_max_abs": summary["max_abs"], "export_cosine": summary["cosine"]}


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's first line: the dynamo exporter wraps the failing op's error in generic advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return re.sub(r"\x1b\[[0-9;]*m", "", first_line(exc))  # drop the exporter's terminal colour codes

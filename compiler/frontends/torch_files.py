"""What a PyTorch file on disk holds, and getting an `nn.Module` out of it safely.

Kinds are told apart by content: all three savers write a zip archive with one top folder, and
the entries under it differ (TorchScript has `code/`, torch.export has `archive_format`,
torch.save has `data.pkl` only). Pre-1.6 torch.save files are a bare pickle with a magic number.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from infer_compile.core.errors import UnsupportedError, UserInputError
from infer_compile.frontends.base import first_line
from infer_compile.frontends.specs import load_entry_point

TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch.export"
TORCH_SAVE = "torch.save"
CORRUPT_ARCHIVE = "corrupt archive"

TORCH_SUFFIXES = frozenset({".pt", ".pth", ".pt2", ".ckpt", ".bin", ".jit", ".ptl"})
ZIP_MAGIC = b"PK\x03\x04"
# torch.save(..., _use_new_zipfile_serialization=False): pickle protocol 2, then a long int magic number.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
# Checkpoint keys that commonly hold the module itself, best first (EMA weights are the ones to ship).
MODULE_KEYS = ("ema", "model", "module", "net")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


def sniff_torch_file(path: Path) -> str | None:
    """The kind of PyTorch file at ``path``, or None when it is not one."""
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        head = fh.read(len(LEGACY_TORCH_MAGIC))
    if head.startswith(LEGACY_TORCH_MAGIC):
        return TORCH_SAVE
    if not head.startswith(ZIP_MAGIC):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        # A torch-named zip that does not open is most likely a truncated download.
        return CORRUPT_ARCHIVE if path.suffix in TORCH_SUFFIXES else None
    entries = {name.partition("/")[2] for name in names}
    if "archive_format" in entries or "models/model.json" in entries:
        return TORCH_EXPORT
    if "constants.pkl" in entries or any(e.startswith("code/") for e in entries):
        return TORCHSCRIPT
    if "data.pkl" in entries:
        return TORCH_SAVE
    return None


def load_pickled(path: Path, trust_pickle: bool) -> Any:
    """torch.load with weights_only=True; full unpickling (arbitrary code) only when trusted."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise UserInputError(
                f"{path}: holds pickled Python objects (e.g. a whole nn.Module); loading it runs code from the file",
                hint="pass --trust-pickle if you trust its source, or save a state_dict and use --arch",
            ) from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling user classes can raise anything
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: BaseException) -> UserInputError:
    return UserInputError(f"{path}: cannot be read as a PyTorch file ({first_line(exc)})",
                          hint="the file may be truncated or corrupt, or need classes that are not importable here")


def module_from_checkpoint(obj: Any, path: Path, arch: str | None) -> tuple[Any, str]:
    """The nn.Module in a loaded torch.save object, and how it was found (for the report)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj, "pickled module"
    if isinstance(obj, dict):
        for key in MODULE_KEYS:
            if isinstance(obj.get(key), torch.nn.Module):
                return obj[key], f"checkpoint['{key}'] module"
        state_dict, where = _find_state_dict(obj)
        if state_dict is not None:
            if arch is None:
                raise UserInputError(f"{path}: holds only weights ({where}), not the model's architecture",
                                     hint="pass --arch package.module:factory naming a function that builds the module")
            return build_from_state_dict(state_dict, arch, path), f"{where} + --arch {arch}"
    raise UnsupportedError(f"{path}: holds a {type(obj).__name__}, not an nn.Module or a state_dict",
                           hint="save the model with torch.save(model) or torch.jit.save, or pass --from-python")


def _find_state_dict(obj: dict) -> tuple[dict | None, str]:
    import torch

    def is_state_dict(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if is_state_dict(obj):
        return obj, "a state_dict"
    for key in STATE_DICT_KEYS:
        if is_state_dict(obj.get(key)):
            return obj[key], f"checkpoint['{key}'] state_dict"
    return None, ""


def build_from_state_dict(state_dict: dict, arch: str, path: Path) -> Any:
    """Call the --arch factory and load ``state_dict`` into what it returns (strictly)."""
    import torch

    module = load_entry_point(arch, "--arch")()
    if not isinstance(module, torch.nn.Module):
        raise UserInputError(f"--arch {arch} returned a {type(module).__name__}, not an nn.Module",
                             hint="the factory must build and return the model")
    prefix = "module."  # weights saved from a DataParallel/DDP wrapper
    if all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise UserInputError(f"{path}: weights do not fit the module built by --arch {arch}: {first_line(exc, 2)}",
                             hint="check that --arch builds the same architecture (and config) the weights came from") \
            from exc
    return module


# Packages whose output classes torch.export programs commonly carry (Hugging Face ModelOutputs and the like):
# importing them (installed code, not code from the file) registers those classes as pytree nodes.
OUTPUT_TYPE_PACKAGES = frozenset({"transformers", "diffusers", "sentence_transformers", "timm", "peft"})
_BUILTIN_TYPE_MODULES = ("builtins", "collections", "torch")


def import_output_types(path: Path, trust_pickle: bool) -> None:
    """Import the modules defining the container types a torch.export program's inputs and outputs are made
    of, so torch can read its tree specs: those of OUTPUT_TYPE_PACKAGES always, any other only with
    --trust-pickle (importing a module runs its code); otherwise the error names the module to import."""
    import importlib

    for module in sorted(output_type_modules(path)):
        top = module.partition(".")[0]
        if top not in OUTPUT_TYPE_PACKAGES and not trust_pickle:
            raise UserInputError(f"{path}: the program's inputs/outputs are classes of module '{module}', which "
                                 f"infer-compile imports only when trusted",
                                 hint="pass --trust-pickle to import it (runs that module's code), or export the "
                                      "model with outputs that are tensors, tuples or dicts")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserInputError(f"{path}: the program's inputs/outputs are classes of module '{module}', which "
                                 f"cannot be imported here ({first_line(exc)})",
                                 hint=f"install the package providing '{module}' (e.g. pip install {top})") from exc


def output_type_modules(path: Path) -> set[str]:
    """Modules named by the container types in a torch.export archive's serialized tree specs."""
    import json

    modules: set[str] = set()
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith("models/model.json"):
                _collect_spec_types(json.loads(archive.read(name)), modules)
    return modules


def _collect_spec_types(node: Any, modules: set[str]) -> None:
    """Walk the program's JSON; tree specs are JSON strings themselves (``in_spec``/``out_spec``)."""
    import json

    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("in_spec", "out_spec") and isinstance(value, str):
                _collect_spec_types(json.loads(value), modules)
            elif key == "type" and isinstance(value, str) and "." in value:
                module = value.rpartition(".")[0]
                if module.partition(".")[0] not in _BUILTIN_TYPE_MODULES:
                    modules.add(module)
            else:
                _collect_spec_types(value, modules)
    elif isinstance(node, list):
        for item in node:
            _collect_spec_types(item, modules)

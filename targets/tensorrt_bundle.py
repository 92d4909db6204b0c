"""Deferred TensorRT builds: a portable bundle written where there is no GPU, built where there is one.

``infer-compile MODEL --target trt --defer`` runs the whole pipeline (calibration included) and
writes ``<name>.trtbundle/`` instead of an engine:

    model.onnx[.data]  the final optimized graph, Q/DQ nodes and casts included
    settings.json      the BuilderSettings (profile, workspace, level, compatibility)
    timing.cache       the --timing-cache file, when it existed
    manifest.json      bundle format, engine name, ONNX digest, the build's manifest, the trtexec command

``infer-compile finalize X.trtbundle`` on a GPU machine builds exactly those settings into
``X.engine`` with no source model or calibration data. A folder rather than an archive: CI systems
upload folders as artifacts, and trtexec users run the recorded command inside it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from infer_compile.artifacts import StagedOutput
from infer_compile.errors import TargetUnavailableError, UserInputError
from infer_compile.ir import Model, file_digest, load_onnx, save_onnx
from infer_compile.targets.base import Availability, TargetRequest
from infer_compile.targets.tensorrt import INSTALL_HINT, PRESET_SETTINGS, TensorRtTarget
from infer_compile.targets.tensorrt_settings import BuilderSettings, trtexec_command

BUNDLE_SUFFIX = ".trtbundle"
BUNDLE_FORMAT = "infer-compile/trtbundle"
BUNDLE_VERSION = 1
ONNX_FILE, SETTINGS_FILE, MANIFEST_FILE, CACHE_FILE = "model.onnx", "settings.json", "manifest.json", "timing.cache"
WRITE_HINT = "bundles are written by 'infer-compile MODEL --target trt --defer'"
# request.options key under which compile() hands the build's manifest to emit(), which stores it in the bundle.
_BUILD_MANIFEST = "_build_manifest"


class TensorRtBundleTarget(TensorRtTarget):
    """What ``--target trt --defer`` builds: the same requests as TensorRtTarget, written as a bundle."""

    suffix = BUNDLE_SUFFIX
    description = "Deferred TensorRT build bundle; 'infer-compile finalize' builds the engine on a GPU machine."

    def availability(self) -> Availability:
        return Availability(True, "writes a bundle here; 'infer-compile finalize' builds it on a GPU machine")

    def tool_versions(self) -> dict[str, str]:
        return {}

    def hardware_identity(self) -> dict[str, str]:
        return {}

    def compile(self, model: Model, output: Path, request: TargetRequest,
                manifest: dict[str, Any]) -> list[Path]:
        request = replace(request, options={**request.options, _BUILD_MANIFEST: manifest})
        return super().compile(model, output, request, manifest)

    def emit(self, model: Model, stage: StagedOutput, request: TargetRequest) -> dict[str, Any]:
        settings = self.settings(model, request)
        bundle = stage.artifact
        bundle.mkdir()
        onnx_files = save_onnx(model, bundle / ONNX_FILE)
        cache = Path(settings.timing_cache) if settings.timing_cache else None
        if cache and cache.is_file():
            shutil.copyfile(cache, bundle / CACHE_FILE)
        settings = replace(settings, timing_cache=CACHE_FILE if (bundle / CACHE_FILE).is_file() else None)
        engine = stage.final.with_suffix(".engine").name
        command = trtexec_command(settings, ONNX_FILE, engine)
        _write_json(bundle / SETTINGS_FILE, settings.to_json())
        _write_json(bundle / MANIFEST_FILE, {
            "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "engine": engine,
            "onnx_sha256": file_digest(onnx_files), "trtexec": command, "build": request.options[_BUILD_MANIFEST]})
        return {"format": "trtbundle", "builder_settings": settings.to_json(), "trtexec": command}


@dataclass(frozen=True)
class Bundle:
    """A bundle read back and checked."""

    path: Path
    settings: BuilderSettings
    manifest: dict[str, Any]

    @property
    def onnx(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def engine_name(self) -> str:
        return str(self.manifest["engine"])


def read_bundle(path: Path) -> Bundle:
    """Read and verify a bundle; UserInputError says what is wrong with a damaged or foreign one."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such bundle", hint=WRITE_HINT)
    if not (path / MANIFEST_FILE).is_file():
        raise UserInputError(f"{path}: not a TensorRT build bundle (no {MANIFEST_FILE} inside)", hint=WRITE_HINT)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        settings = BuilderSettings.from_json(json.loads((path / SETTINGS_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{path}: damaged bundle ({type(exc).__name__}: {exc})", hint=WRITE_HINT) from exc
    missing = [key for key in ("onnx_sha256", "engine", "build") if key not in manifest]
    if missing:
        raise UserInputError(f"{path}: damaged bundle ({MANIFEST_FILE} lacks {', '.join(missing)})", hint=WRITE_HINT)
    if manifest.get("format") != BUNDLE_FORMAT or int(manifest.get("version", 0)) > BUNDLE_VERSION:
        raise UserInputError(f"{path}: bundle format {manifest.get('format')} v{manifest.get('version')} "
                             f"is not one this infer-compile reads",
                             hint="finalize it with the infer-compile version that wrote it")
    onnx_files = [path / ONNX_FILE, *[p for p in [path / (ONNX_FILE + ".data")] if p.is_file()]]
    if not onnx_files[0].is_file() or file_digest(onnx_files) != manifest["onnx_sha256"]:
        raise UserInputError(f"{path}: {ONNX_FILE} does not match the bundle manifest (changed or truncated)",
                             hint="write the bundle again with --defer")
    return Bundle(path, settings, manifest)


def finalize_bundle(bundle: Path, output: Path | None = None, timing_cache: Path | None = None) -> list[Path]:
    """Build the engine a bundle describes (on a GPU machine); returns the files written, engine first.

    ``timing_cache`` replaces the bundle's own cache file (which is otherwise read and updated in place).
    """
    found = read_bundle(bundle)
    target = TensorRtTarget()
    status = target.availability()
    if not status.available:
        raise TargetUnavailableError(f"cannot build the engine here: {status.detail}",
                                     hint=f"run finalize on a machine with an NVIDIA GPU ({INSTALL_HINT} there)")
    cache = timing_cache or (found.path / found.settings.timing_cache if found.settings.timing_cache else None)
    settings = replace(found.settings, timing_cache=None if cache is None else str(cache))
    output = Path(output) if output else found.path.with_name(found.engine_name)
    request = TargetRequest(settings.precision, options={PRESET_SETTINGS: settings.to_json()})
    return target.compile(load_onnx(found.onnx), output, request, found.manifest["build"])


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")

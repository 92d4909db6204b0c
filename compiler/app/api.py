"""The Python API, mirroring the CLI: ``infer_compile.compile(...)`` and ``infer_compile.load(...)``.

    import infer_compile
    artifact = infer_compile.compile("model.onnx", target="onnxruntime", output="out/model.onnx")
    runner = infer_compile.load(artifact.path)
    outputs = runner.run({"image": x})
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer_compile.app.build import BuildOptions, BuildResult, compile_model
from infer_compile.app.cache import default_cache_dir
from infer_compile.app.outputs import check_report_path
from infer_compile.app.settings import declared, sort_options
from infer_compile.calibration.options import calibration_settings
from infer_compile.core.options import refuse_unknown
from infer_compile.frontends.specs import source_options
from infer_compile.targets import Runner, load_artifact

PathLike = str | os.PathLike[str]


@dataclass
class Artifact:
    """A built artifact: where it is, what its manifest says, and how the build went."""

    path: Path
    files: list[Path]
    target: str
    manifest: dict[str, Any]  # as written beside it (JSON)
    result: BuildResult

    @property
    def cached(self) -> bool:
        return self.result.cache == "hit"

    def load(self) -> Runner:
        return load(self.path)

    def report(self) -> dict[str, Any]:
        """The versioned build report (the document `--report` writes)."""
        from infer_compile.app.report import build_report

        return build_report(self.result)


def compile(model: PathLike, target: str = "auto", precision: str = "fp32", output: PathLike | None = None,
            *, cache: bool = True, cache_dir: PathLike | None = None, report: PathLike | None = None,
            **options: Any) -> Artifact:
    """Compile ``model`` like `infer-compile MODEL --target ... -o ...`.

    ``options`` are any option a component declares, by its key (``input_shapes={"image": [1, 3, 224, 224]}``,
    ``calib="data/"``, ``fold_size_limit=32``, ``opt_level=5``: `infer-compile compile --help` lists them with
    dashes), or another ``BuildOptions`` field (verify_passes, skip_passes, shape_ranges, tune_time, ...).
    A misspelt keyword is refused naming the closest one. The build cache is on by default, as on the
    command line.
    """
    fields = {f.name for f in dataclasses.fields(BuildOptions)} - {
        "target", "precision", "output", "source", "cache_dir", "calibration"}
    build_fields = {key: value for key, value in options.items() if key in fields}
    refuse_unknown(options, fields | set(declared()), "option")
    given = sort_options({key: value for key, value in options.items() if key not in fields})
    build_options = BuildOptions(
        target=target, precision=precision, output=os.fspath(output) if output else None,  # keeps "dir/"
        source=source_options(given.source), calibration=calibration_settings(given.calibration),
        cache_dir=(Path(cache_dir) if cache_dir else default_cache_dir()) if cache else None,
        **{**build_fields, "pass_options": {**given.passes, **build_fields.get("pass_options", {})},
           "target_options": {**given.target, **build_fields.get("target_options", {})}})
    if report:
        from infer_compile.app.report import REPORT_SCHEMA, write_report

        check_report_path(Path(report), REPORT_SCHEMA)
    result = compile_model(Path(model), build_options)
    if report:
        write_report(result, Path(report))
    return Artifact(result.artifact, result.files, result.target, result.manifest.to_json(), result)


def load(path: PathLike) -> Runner:
    """A runner for an artifact any target wrote: ``runner.run({name: array}) -> {name: array}``."""
    return load_artifact(Path(path))

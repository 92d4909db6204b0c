"""The Python API, mirroring the CLI: ``infer_compile.compile(...)`` and ``infer_compile.load(...)``.

    import infer_compile
    artifact = infer_compile.compile("model.onnx", target="onnxruntime", output="out/model.onnx")
    runner = infer_compile.load(artifact.path)
    outputs = runner.run({"image": x})
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer_compile.app.build import BuildResult, check_deliveries, compile_model, deliver, options_from
from infer_compile.app.build_options import PRECISION, TARGET
from infer_compile.frontends.specs import model_source
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





def compile(model: PathLike | None, target: str = TARGET.default, precision: str = PRECISION.default,
            output: PathLike | None = None, **options: Any) -> Artifact:
    """Compile ``model`` like `infer-compile MODEL --target ... -o ...`.

    ``options`` are any declared option by its key, the same names and defaults as the command line's flags and
    the config file's keys (`infer-compile compile --help` lists them with dashes): the build's own
    (``tune_time="60s"``, ``final_check=False``, ``cache=False``, ``cache_dir=...``, ``report="build.json"``,
    ``triton_repo=...``, ``shape_ranges={"batch": [1, 8, 32]}``, ``skip_passes=[...]``) and the components'
    (``input_shapes={"image": [1, 3, 224, 224]}``, ``calib="data/"``, ``fold_size_limit=32``). ``model`` is None
    with ``python_entry="pkg.mod:build"`` (`--from-python`). A misspelt keyword is refused naming the closest
    one. ``pass_options``/``target_options`` tables (by option key) are also taken.
    """
    tables = {table: options.pop(table, None) or {} for table in ("pass_options", "target_options")}
    build_options, build = options_from({**options, "target": target, "precision": precision,
                                         "output": os.fspath(output) if output is not None else None})  # "dir/"
    # The tables go to the build as given: compile_model checks them against the pass and target declarations.
    build_options.pass_options.update(tables["pass_options"])
    build_options.target_options.update(tables["target_options"])
    check_deliveries(build_options, build)
    result = compile_model(model_source(Path(model) if model is not None else None,
                                        build_options.source.python_entry), build_options)
    deliver(result, build)
    return Artifact(result.artifact, result.files, result.target, result.manifest.to_json(), result)


def load(path: PathLike) -> Runner:
    """A runner for an artifact any target wrote: ``runner.run({name: array}) -> {name: array}``."""
    return load_artifact(Path(path))

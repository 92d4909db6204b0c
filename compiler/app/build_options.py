"""The build's own options (target, output, checks, cache, autotuning, report, Triton), declared once like the
components' options: the compile command's flags, the config file's keys and the API's keywords come from
these declarations through ``infer_compile.app.settings``.

Kept free of heavy imports (numpy, onnx): `infer-compile --help` reads these declarations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infer_compile.core.errors import UserInputError
from infer_compile.core.options import Option, name_list
from infer_compile.core.shapes import ShapeRange, shape_ranges_from

# The pipeline's precision stages (passes.pipeline.PRECISION, not imported: --help stays light) and "auto".
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")
TUNE_ENV = "INFER_COMPILE_TUNE_TIME"


def parse_duration(value: Any, option: str = "--tune-time") -> float:
    """`60s`, `2m`, `500ms`, plain seconds (text or a number) -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number, factor = str(value), 1.0
    elif isinstance(value, str):
        number, factor = value.strip().lower(), 1.0
        for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
            if number.endswith(unit):
                number, factor = number[: -len(unit)], scale
                break
    else:
        raise TypeError(f"expected a duration such as 60s, 2m or a number of seconds, got {value!r}")
    try:
        seconds = float(number) * factor
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise UserInputError(f"{option} '{value}' is not a duration", hint="write it like 60s, 2m or 500ms")
    return seconds


def parse_shape_ranges(value: Any) -> dict[str, ShapeRange]:
    """`batch=1:8:32` flags (a list) or a table by dim name (``{"batch": [1, 8, 32]}``) -> ShapeRanges."""
    if isinstance(value, dict):
        return shape_ranges_from(value)
    return dict(ShapeRange.parse(text) for text in name_list(value))


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise TypeError(f"expected a path, got {type(value).__name__} {value!r}")
    return Path(value)


def _optional_path(value: Any) -> Path | None:
    return None if value is None else _path(value)


TARGET = Option("target", str, "auto", "auto, onnxruntime, openvino, trt or tflite.", short="-t", config=False)
PRECISION = Option("precision", str, "fp32", "Precision to build (--fp16, --bf16 and --int8 are short for it); "
                   "auto builds each the target runs and keeps the fastest here that meets --accuracy-budget.",
                   choices=PRECISIONS, config=False)
# A str: "build/" (into that folder) must keep its slash, which a Path drops.
OUTPUT: Option[str | Path | None] = Option(
    "output", str, None, "Artifact path, or a folder to write into (an existing one, or DIR/).", short="-o",
    config=False, parse=lambda value: value if isinstance(value, str) else _optional_path(value))
SHAPE_RANGES: Option[dict[str, ShapeRange]] = Option(
    "shape_ranges", list, {}, "A dynamic dim's MIN:OPT:MAX, e.g. batch=1:8:32 (repeatable).", flag="--shape-range",
    parse=parse_shape_ranges)
VERIFY_PASSES = Option("verify_passes", bool, False,
                       "Check numerics after every pass; stop at the first that breaks them.")
FINAL_CHECK = Option("final_check", bool, True, "The final check: the written artifact run in its runtime against "
                     "the source model before it is committed (--no-final-check skips it).")
INPUTS: Option[Path | None] = Option(
    "inputs", Path, None, "Example inputs (.npz keyed by input name) for the final check, --verify-passes and "
    "autotuning \\[default: held-out --calib samples, else random data fit to the graph].", path=True,
    parse=_optional_path)
SKIP_PASSES: Option[list[str]] = Option(
    "skip_passes", list, [], "Leave a pass out of the pipeline (repeatable; see `infer-compile passes`).",
    flag="--skip-pass", parse=name_list)
CACHE = Option("cache", bool, True, "Read and write the build cache (--no-cache builds without it).")
def _cache_location(value: Any) -> Path | str | None:
    """A folder, or an object store URL (kept as text: a Path would fold its '//')."""
    return value if isinstance(value, str) and "://" in value else _optional_path(value)


CACHE_DIR: Option[Path | str | None] = Option(
    "cache_dir", str, None, "Build cache: a folder (may be shared), or an object store URL through fsspec "
    "(s3://bucket/cache) \\[default: $INFER_COMPILE_CACHE_DIR or ~/.cache/infer-compile].", path=True,
    parse=_cache_location)
TUNE_TIME = Option("tune_time", str, 5.0, "Time budget for autotuning runtime settings on this machine (e.g. 5s, "
                   "60s, 2m; 0 = off; --no-tune is short for 0).", env=TUNE_ENV, parse=parse_duration)
DEFER = Option("defer", bool, False, "TensorRT without a GPU here: write a .trtbundle that `infer-compile finalize` "
               "builds on a GPU machine.")
REPORT: Option[Path | None] = Option(
    "report", Path, None, "Write the build report here (.json; .html: a self-contained page).", config=False,
    parse=_optional_path)
TRITON_REPO: Option[Path | None] = Option(
    "triton_repo", Path, None, "Also put the artifact into this Triton model repository (see `infer-compile "
    "triton`).", path=True, parse=_optional_path)
TRITON_NAME: Option[str | None] = Option(
    "triton_name", str, None, "Its model name there \\[default: the artifact's file name; config builds: "
    "<name>_<target>_<precision>].", needs="triton_repo", config=False)
TRITON_VERSION: Option[int | None] = Option(
    "triton_version", int, None, "Its version there \\[default: the highest there + 1].", needs="triton_repo",
    minimum=1, config=False)

VERBOSE = Option("verbose", bool, False, "Show what third-party libraries print (TensorFlow, converters, "
                 "exporters) as it happens, instead of writing it to ARTIFACT.log beside the artifact.")

BUILD_OPTIONS = (TARGET, PRECISION, OUTPUT, SHAPE_RANGES, VERIFY_PASSES, FINAL_CHECK, INPUTS, SKIP_PASSES, CACHE,
                 CACHE_DIR, TUNE_TIME, DEFER, REPORT, TRITON_REPO, TRITON_NAME, TRITON_VERSION, VERBOSE)

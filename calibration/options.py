"""Command-line precision options -> CalibrationSettings + pass options, and the summary line of a build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infer_compile.calibration.data import CalibrationSettings
from infer_compile.calibration.readers import ImagePreprocess
from infer_compile.core.budget import parse_budget
from infer_compile.core.errors import UserInputError


def _names(values: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def precision_options(precision: str, *, calib: str | None, method: str | None = None,
                      percentile: float | None = None, samples: int | None = None, cache: Path | None = None,
                      preprocess: list[str] | None = None,
                      keep_io_types: bool = False, fp16_block: list[str] | None = None,
                      exclude_nodes: list[str] | None = None, exclude_op_types: list[str] | None = None,
                      accuracy_budget: str | None = None) -> tuple[CalibrationSettings | None, dict[str, Any]]:
    """Check the precision options fit together; return (calibration settings, pass options)."""
    calib_only = {"--calib-method": method, "--percentile": percentile, "--calib-samples": samples,
                  "--calib-cache": cache, "--calib-preprocess": preprocess}
    given = [flag for flag, value in calib_only.items() if value is not None and value != []]
    if given and not calib:
        raise UserInputError(f"{', '.join(given)} need(s) --calib", hint="give calibration data with --calib PATH")
    reduced = {"--calib": calib, "--exclude-nodes": exclude_nodes, "--exclude-op-types": exclude_op_types,
               "--accuracy-budget": accuracy_budget, "--keep-io-types": keep_io_types, "--fp16-block": fp16_block}
    if precision == "fp32" and (stray := [flag for flag, value in reduced.items() if value]):
        raise UserInputError(f"{', '.join(stray)} only apply to --int8 or --fp16 builds", hint="add --int8 or --fp16")
    if accuracy_budget:
        parse_budget(accuracy_budget)  # fail on a typo before any work
        if not calib:
            raise UserInputError("--accuracy-budget needs --calib: accuracy is measured on held-out samples",
                                 hint="give representative inputs with --calib PATH")
    settings = None
    if calib:
        path = Path(calib)
        settings = CalibrationSettings(
            source=path if path.is_dir() else calib, method=method or "minmax",
            percentile=99.99 if percentile is None else percentile, max_samples=128 if samples is None else samples,
            cache=cache, preprocess=ImagePreprocess.parse(preprocess or []))
    pass_options: dict[str, Any] = {
        "keep_io_types": keep_io_types, "fp16_block": _names(fp16_block), "exclude_nodes": _names(exclude_nodes),
        "exclude_op_types": _names(exclude_op_types), "accuracy_budget": accuracy_budget}
    return settings, {k: v for k, v in pass_options.items() if v}


def describe_precision(record: dict[str, Any] | None, final_check: dict[str, Any] | None = None) -> str | None:
    """One summary line: nodes per precision, calibration, accuracy vs fp32, layers kept in fp32.

    Accuracy is the final check's, measured on the artifact as written (after autotuning's per-layer
    choices), when it ran; else what the accuracy pass measured on the graph before autotuning.
    """
    if not record:
        return None
    nodes = record.get("nodes", {})
    parts = [" / ".join(f"{nodes.get(p, 0)} {p.upper()}" for p in ("int8", "fp16", "fp32")) + " nodes"]
    if "method" in record:
        cached = " (ranges from cache)" if record.get("ranges_from_cache") else ""
        parts.append(f"{record['method']} calibration on {record['samples']} samples "
                     f"({record['held_out']} held out){cached}")
    acc = final_check["figures"] if final_check else record.get("accuracy")
    if acc:
        top1 = f", top-1 {acc['top1_agreement']:.4f}" if acc.get("top1_agreement") is not None else ""
        measured = "the artifact" if final_check else "the graph before autotuning"
        parts.append(f"{measured} vs fp32: cosine {acc['cosine']:.6f}, max abs {acc['max_abs']:.3g}{top1}")
    if fallback := record.get("fallback"):
        kept = fallback["kept_fp32"]
        parts.append(f"budget {fallback['budget']}: {len(kept)} layer(s) kept fp32"
                     + (f" ({', '.join(kept[:5])}{', ...' if len(kept) > 5 else ''})" if kept else ""))
    return "; ".join(parts)

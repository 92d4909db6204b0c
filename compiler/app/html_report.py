"""The build report as one self-contained HTML page (`--report build.html`, `infer-compile report build.json
--html`): summary, accuracy vs fp32, per-pass node counts and times, per-layer precision by source module, INT8
vs fp32 latency per layer and the autotune candidates, with inline SVG charts (no script, no server, no CDN).
Beside it, a Model Explorer node-data overlay (precision per node) for `model-explorer ARTIFACT
--node_data_paths=...`.

Rendered from the JSON report document alone, so an old build.json renders too.
"""

from __future__ import annotations

import ast
import json
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any

from infer_compile.core.artifacts import atomic_write_text
from infer_compile.core.errors import UserInputError

GENERATOR = "infer-compile.build-report-html/1"
# Where the exporter recorded the source module (torch.onnx dynamo exporter: a list of nested scopes).
SCOPE_KEYS = ("pkg.torch.onnx.name_scopes", "namespace")
PRECISION_COLORS = {"int8": "#4e79a7", "fp16": "#f28e2b", "bf16": "#edc948", "fp32": "#bab0ac"}
PRECISION_VALUES = {"int8": 8, "fp16": 16, "bf16": 16, "fp32": 32}
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.kv td:first-child{font-weight:600;white-space:nowrap}.ok{color:#1a7f37}.bad{color:#cf222e}
svg text{font:11px system-ui,sans-serif}.chip{display:inline-block;width:10px;height:10px;margin-right:4px}
"""


def module_path(node: str, metadata: dict[str, str] | None = None) -> str:
    """The source module a node came from: the exporter's recorded scope (``pkg.torch.onnx.name_scopes``), else
    the path in a node name like ``/encoder/layer.0/attention/MatMul`` (torch legacy exporter, tf2onnx), else ''."""
    for key in SCOPE_KEYS:
        if metadata and metadata.get(key):
            return _scope(metadata[key])
    # Exporters' scoped names: "/encoder/layer.0/MatMul" (torch legacy), "model/conv2d/Conv2D" (tf2onnx); not
    # our passes' "x_dequantized/clip".
    if node.startswith("/") or node.count("/") >= 2:
        return ".".join(part for part in node.strip("/").split("/")[:-1] if part)
    return ""


def _scope(value: str) -> str:
    try:
        scopes = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    if isinstance(scopes, list | tuple):  # ['', 'encoder', 'encoder.0', 'encoder.0.fc', 'linear']: the last is the op
        named = [str(s) for s in scopes[:-1] if s]
        return named[-1] if named else ""
    return str(scopes)


def _bars(rows: list[tuple[str, float]], unit: str, color: str = "#4e79a7", width: int = 640) -> str:
    """A horizontal bar chart (inline SVG) of labelled values."""
    if not rows:
        return ""
    top = max(value for _, value in rows) or 1.0
    label_w, bar_w, row_h = 230, width - 330, 18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{row_h * len(rows) + 6}">']
    for i, (label, value) in enumerate(rows):
        y = i * row_h + 3
        w = max(value / top * bar_w, 1.0)
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{escape(label[:40])}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 4}" fill="{color}">'
                     f'<title>{escape(label)}: {value:.4g} {unit}</title></rect>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{value:.4g} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _stacked(rows: list[tuple[str, Counter[str]]], width: int = 640) -> str:
    """One horizontal bar per row, split by precision (node counts)."""
    if not rows:
        return ""
    top = max(sum(c.values()) for _, c in rows) or 1
    label_w, bar_w, row_h = 230, width - 300, 18
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{row_h * len(rows) + 6}">']
    for i, (label, counts) in enumerate(rows):
        y, x = i * row_h + 3, float(label_w)
        name = escape(label[-40:] or "(graph)")
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{name}</text>')
        for precision in PRECISION_COLORS:
            if counts.get(precision):
                w = counts[precision] / top * bar_w
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 4}" '
                             f'fill="{PRECISION_COLORS[precision]}"><title>{escape(label)}: {counts[precision]} '
                             f'{precision}</title></rect>')
                x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 12}">{sum(counts.values())}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{escape(_text(v))}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _legend() -> str:
    return "".join(f'<span class="chip" style="background:{color}"></span>{name} ' for name, color in
                   PRECISION_COLORS.items())


def _summary(report: dict[str, Any]) -> str:
    check = report.get("final_check")
    rows = [("artifact", report["artifact"]["path"]), ("target", f"{report['target']['name']} "
                                                               f"({report['target']['reason']})"),
            ("source", f"{report['source'].get('path')} ({report['source'].get('format')})"),
            ("precision", report["precision"]["requested"]),
            ("nodes", f"{report['nodes']['before']} -> {report['nodes']['after']}"),
            ("build time", f"{report['seconds']:.2f} s"), ("cache", report["cache"])]
    if check:
        figures = check["figures"]
        status = "ok" if check["status"] == "passed" else "bad"
        rows.append(("final check", f"<span class={status}>{escape(check['status'])}</span>: cosine "
                                    f"{figures['cosine']:.6f}, max abs {figures['max_abs']:.3g} on "
                                    f"{check['samples']} sample(s) ({escape(check['origin'])})"))
    return '<table class="kv">' + "".join(
        f"<tr><td>{escape(k)}</td><td>{v if k == 'final check' else escape(str(v))}</td></tr>" for k, v in rows
    ) + "</table>"


def _accuracy(report: dict[str, Any]) -> str:
    accuracy = (report.get("accuracy") or {}).get("accuracy")
    check = report.get("final_check")
    rows = []
    if check:
        rows.append(["the artifact (final check)", *(check["figures"].get(k) for k in
                                                     ("cosine", "max_abs", "max_rel", "top1_agreement"))])
    if accuracy:
        rows.append(["the graph before autotuning (held-out samples)",
                     *(accuracy.get(k) for k in ("cosine", "max_abs", "max_rel", "top1_agreement"))])
    if not rows:
        return "<p>No accuracy figures recorded (fp32 build without the final check).</p>"
    html = _table(["measured on", "cosine", "max abs", "max rel", "top-1 agreement"], rows, {1, 2, 3, 4})
    if fallback := (report.get("accuracy") or {}).get("fallback"):
        kept = ", ".join(fallback["kept_fp32"]) or "none"
        html += f"<p>To meet {escape(fallback['budget'])}: kept in fp32: {escape(kept)}</p>"
    return html


def _passes(report: dict[str, Any]) -> str:
    applied = [p for p in report["passes"] if p["status"] == "applied"]
    rows = [[p["name"], p["status"], p.get("nodes_before"), p.get("nodes_after"), p["seconds"] * 1000,
             ", ".join(f"{k}={v}" for k, v in (p.get("counts") or {}).items() if v) or p.get("reason") or ""]
            for p in report["passes"]]
    return (_bars([(p["name"], p["seconds"] * 1000) for p in applied], "ms")
            + _bars([(p["name"], float(p["nodes_after"])) for p in applied], "nodes", "#59a14f")
            + _table(["pass", "status", "nodes before", "nodes after", "time (ms)", "changes"], rows, {2, 3, 4}))


def _layers(report: dict[str, Any]) -> str:
    precision = report["precision"]
    layers: dict[str, str] = precision.get("layers") or {}
    details: dict[str, dict[str, Any]] = precision.get("details") or {}
    timing = {row["node"]: row for row in (report.get("autotune") or {}).get("layers", [])}
    sensitivity = ((report.get("accuracy") or {}).get("fallback") or {}).get("sensitivity", {})
    if not layers:
        nodes = precision.get("nodes") or {}
        return ("<p>Per-layer precision is not recorded for this build (a cache hit); nodes per precision: "
                f"{escape(', '.join(f'{k} {v}' for k, v in nodes.items()) or '-')}.</p>")
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for node, p in layers.items():
        by_module[details.get(node, {}).get("module") or module_path(node)][p] += 1
    modules = sorted(by_module.items(), key=lambda item: item[0])
    html = f"<p>{_legend()}</p>" + _stacked(modules[:60])
    if len(modules) > 60:
        html += f"<p>({len(modules) - 60} more modules in the table below)</p>"
    rows = [[node, details.get(node, {}).get("op"), details.get(node, {}).get("module") or module_path(node), p,
             timing.get(node, {}).get("int8_ms"), timing.get(node, {}).get("fp32_ms"), sensitivity.get(node)]
            for node, p in layers.items()]
    if timing:
        speedups = [(row["node"], row["fp32_ms"] / row["int8_ms"]) for row in timing.values()
                    if row.get("int8_ms") and row.get("fp32_ms")]
        html += "<h3>INT8 vs fp32 latency per layer (autotune: fp32 time / INT8 time; above 1: INT8 faster)</h3>"
        html += _bars(sorted(speedups, key=lambda r: r[1]), "x", "#76b7b2")
    return html + _table(["node", "op", "source module", "precision", "INT8 ms", "fp32 ms", "error added (fallback)"],
                         rows, {4, 5, 6})


def _autotune(report: dict[str, Any]) -> str:
    record = report.get("autotune")
    if not record:
        return "<p>No autotuning in this build.</p>"
    timed = [(c["label"] + (" (chosen)" if c["chosen"] else ""), c["median_ms"]) for c in record["candidates"]
             if c["median_ms"] is not None]
    return (f"<p>{record['seconds']:.1f} s of {record['budget_s']:g} s; chosen: {escape(record['chosen'])}</p>"
            + _bars(timed, "ms median", "#e15759"))


def render_html(report: dict[str, Any]) -> str:
    """The page for one build report document (``infer-compile.build/2``)."""
    title = f"infer-compile build: {report['source'].get('path')} -> {report['target']['name']} " \
            f"{report['precision']['requested']}"
    calibration = report.get("calibration")
    sections = [("Summary", _summary(report)), ("Accuracy vs fp32", _accuracy(report)),
                ("Passes: node counts and times", _passes(report)),
                ("Per-layer precision by source module", _layers(report)), ("Autotune", _autotune(report))]
    if calibration:
        sections.insert(2, ("Calibration", _table(["setting", "value"], [[k, json.dumps(v) if isinstance(
            v, dict | list) else v] for k, v in calibration.items()])))
    body = "".join(f"<section><h2>{escape(name)}</h2>{html}</section>" for name, html in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="generator" '
            f'content="{GENERATOR}"><title>{escape(title)}</title><style>{_CSS}</style></head>'
            f"<body><h1>{escape(title)}</h1>{body}</body></html>\n")


def model_explorer_overlay(report: dict[str, Any]) -> dict[str, Any] | None:
    """Precision per node as Model Explorer node data (GraphNodeData: results keyed by a node's output tensor
    names, which its ONNX adapter matches), colored like the report; None without per-layer data."""
    layers = report["precision"].get("layers") or {}
    details = report["precision"].get("details") or {}
    results = {}
    for node, precision in layers.items():
        for tensor in details.get(node, {}).get("outputs", [node]):
            results[tensor] = {"value": PRECISION_VALUES.get(precision, 32),
                               "bgColor": PRECISION_COLORS.get(precision, "#bab0ac")}
    if not results:
        return None
    return {"results": results, "thresholds": [{"value": v, "bgColor": PRECISION_COLORS[p]} for p, v in
                                               (("int8", 8), ("fp16", 16), ("fp32", 32))]}


def overlay_path(html: Path) -> Path:
    return html.with_name(html.stem + ".modelexplorer.json")


def check_html_path(path: Path) -> None:
    """An HTML report replaces only a page infer-compile wrote (its generator tag)."""
    from infer_compile.app.outputs import probe_writable

    probe_writable(path, "the report")
    if path.exists() and GENERATOR not in path.read_text(errors="replace")[:2000]:
        raise UserInputError(f"--report {path}: exists and is not a report infer-compile wrote; not replacing it",
                             hint="give a new file name")


def write_html(report: dict[str, Any], path: Path) -> Path | None:
    """Write the page and, when there is per-layer data, the Model Explorer overlay beside it (returned)."""
    atomic_write_text(path, render_html(report))
    overlay = model_explorer_overlay(report)
    if overlay is None:
        return None
    atomic_write_text(overlay_path(path), json.dumps(overlay) + "\n")
    return overlay_path(path)

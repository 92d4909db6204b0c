"""The HTML build report (`--report build.html`, `infer-compile report build.json --html`) and its Model Explorer
overlay, checked with an HTML parser (the page rendered in Chromium: `make report-check`)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import onnx
import pytest

from infer_compile.app.html_report import GENERATOR, module_path
from tests.artifact_helpers import assert_user_error, invoke, write_tiny_cnn


class Page(HTMLParser):
    """What a browser would show: headings, tables (rows), SVG charts (bars), and anything that loads code or
    fetches from elsewhere (the page must be self-contained)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tags: list[str] = []
        self.meta: dict[str, str] = {}
        self.external: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        if tag == "meta" and values.get("name"):
            self.meta[values["name"] or ""] = values.get("content") or ""
        self.external += [v for k, v in attrs if k in ("src", "href") and v]
        if tag in ("h2", "td"):
            self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in == "h2":
            self.headings.append(data)
        elif self._in == "td":
            self.cells.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None


def _int8_build(tmp_path: Path, report: str):
    source = write_tiny_cnn(tmp_path / "m.onnx")
    return invoke(source, "-t", "onnxruntime", "-o", tmp_path / "out" / "m.onnx", "--int8", "--calib", "synthetic",
                  "--calib-samples", "20", "--no-cache", "--tune-time", "1s", "--report", tmp_path / report)


def _check_page(page: Page, artifact: Path) -> None:
    assert page.meta["generator"] == GENERATOR
    assert page.headings == ["Summary", "Accuracy vs fp32", "Calibration", "Passes: node counts and times",
                             "Per-layer precision by source module", "Autotune"]
    assert "script" not in page.tags and page.external == []  # no code, nothing fetched: opens anywhere
    assert page.tags.count("svg") >= 4 and page.tags.count("rect") >= 10  # pass times and nodes, layers, autotune
    nodes = onnx.load(str(artifact)).graph.node
    assert all(node.name in page.cells for node in nodes)  # one row per layer of the built graph
    assert "int8" in page.cells and "fp32" in page.cells


def test_compile_writes_a_self_contained_html_report_and_a_model_explorer_overlay(tmp_path: Path) -> None:
    result = _int8_build(tmp_path, "build.html")
    assert result.exit_code == 0, result.output
    artifact = tmp_path / "out" / "m.onnx"
    _check_page(Page((tmp_path / "build.html").read_text()), artifact)
    overlay = json.loads((tmp_path / "build.modelexplorer.json").read_text())
    outputs = {name for node in onnx.load(str(artifact)).graph.node for name in node.output}
    assert overlay["results"] and set(overlay["results"]) <= outputs  # keyed by tensors Model Explorer matches
    assert {result["value"] for result in overlay["results"].values()} <= {8, 16, 32}
    assert f"model-explorer {artifact} --node_data_paths={tmp_path / 'build.modelexplorer.json'}" in result.stdout


def test_report_command_renders_a_json_report_and_refuses_a_page_it_did_not_write(tmp_path: Path) -> None:
    assert _int8_build(tmp_path, "build.json").exit_code == 0
    rendered = invoke("report", tmp_path / "build.json", "--html")
    assert rendered.exit_code == 0, rendered.output
    _check_page(Page((tmp_path / "build.html").read_text()), tmp_path / "out" / "m.onnx")
    (tmp_path / "mine.html").write_text("<html>my notes</html>")
    assert_user_error(invoke("report", tmp_path / "build.json", "--html", "-o", tmp_path / "mine.html"),
                      "exists and is not a report infer-compile wrote")
    assert (tmp_path / "mine.html").read_text() == "<html>my notes</html>"


@pytest.mark.parametrize(("node", "metadata", "module"), [
    ("/encoder/layer.0/attention/self/query/MatMul", None, "encoder.layer.0.attention.self.query"),  # legacy exporter
    ("node_linear", {"pkg.torch.onnx.name_scopes": "['', 'encoder', 'encoder.0', 'encoder.0.fc', 'linear']"},
     "encoder.0.fc"),  # dynamo exporter: the scopes it records, the op last
    ("model/conv2d/Conv2D", None, "model.conv2d"),  # tf2onnx
    ("conv1", None, ""), ("image_dequantized/clip", None, ""),  # a pass's name is no module
])
def test_layers_are_named_by_their_source_module(node: str, metadata: dict | None, module: str) -> None:
    assert module_path(node, metadata) == module


def test_a_pytorch_model_s_layers_carry_their_module_path(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(
        "import torch\n\nclass Block(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.fc = torch.nn.Linear(8, 8)\n\n    def forward(self, x):\n        return self.fc(x).tanh()\n\n"
        "def build():\n    torch.manual_seed(0)\n    model = torch.nn.Sequential()\n"
        "    model.add_module('encoder', torch.nn.Sequential(Block(), Block()))\n"
        "    model.add_module('head', torch.nn.Linear(8, 3))\n    return model.eval(), (torch.randn(2, 8),)\n")
    result = invoke("--from-python", f"{tmp_path / 'net.py'}:build", "-t", "onnxruntime", "-o",
                    tmp_path / "t.onnx", "--no-cache", "--no-tune", "--report", tmp_path / "t.json")
    assert result.exit_code == 0, result.output
    modules = {detail["module"] for detail in
               json.loads((tmp_path / "t.json").read_text())["precision"]["details"].values()}
    # Each block's Linear and tanh are fused into one FusedGemm: named by the module that computes its output.
    assert modules == {"encoder.0", "encoder.1", "head"}, modules

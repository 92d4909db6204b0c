"""The breadth matrix of issue 16: real architectures (tests/hf_models.py: tiny transformers configs and CNN/RNN
models built in code, no downloads) x the ways PyTorch users save them x targets, each built with
`infer-compile compile` and checked with `infer-compile verify` (the CLI, in process).

Sources: TorchScript as users trace it (`torch.jit.trace(model, example, strict=False)`: dict outputs), a
torch.export program (`.pt2`), a state_dict with `--arch`, and `--from-python`. Targets: onnxruntime, openvino
fp32 and openvino int8 (`--calib synthetic`); tflite fp32 on request. A cell is `ok` (built and verified) or
the one-line error.

    .venv/bin/python bench/breadth.py [--models vit,bert] [--sources ts,pt2] [--targets ort,ov,ov-int8,tflite]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.hf_models

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from infer_compile.app.cli import app  # noqa: E402
from infer_compile.frontends.torch import forward_input_names  # noqa: E402
from tests.hf_models import MODELS, Architecture  # noqa: E402

TARGETS = {"ort": (["--target", "onnxruntime"], ".onnx"), "ov": (["--target", "openvino"], ".xml"),
           "ov-int8": (["--target", "openvino", "--int8", "--calib", "synthetic"], ".xml"),
           "tflite": (["--target", "tflite"], ".tflite")}  # not by default: ~1-2 min per cell (onnx2tf)
DEFAULT_TARGETS = ("ort", "ov", "ov-int8")
SOURCES = ("ts", "pt2", "arch", "python")
runner = CliRunner()


def save_sources(arch: Architecture, folder: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Per source kind: (compile's source arguments, verify's source arguments)."""
    model, example = arch.build()
    shapes = ["--input-shape", *("x".join(map(str, s)) for s in arch.shapes)]  # positional, in forward order
    dtypes = [f"{forward_input_names(model)[0]}:int64"] if arch.integer else []
    sources: dict[str, tuple[list[str], list[str]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts, pt2, weights = folder / f"{arch.name}.pt", folder / f"{arch.name}.pt2", folder / f"{arch.name}_sd.pt"
        try:
            torch.jit.save(torch.jit.trace(model, example, strict=False), ts)
            sources["ts"] = ([str(ts), *shapes], [str(ts)])
        except Exception as exc:
            sources["ts"] = ([], [f"torch.jit.trace fails: {type(exc).__name__}"])
        try:
            torch.export.save(torch.export.export(model, example), pt2)
            sources["pt2"] = ([str(pt2)], [str(pt2)])
        except Exception as exc:
            sources["pt2"] = ([], [f"torch.export fails: {type(exc).__name__}"])
    torch.save(model.state_dict(), weights)
    arch_flag = ["--arch", f"tests.hf_models:{arch.name}"]
    typed = [flag for dtype in dtypes for flag in ("--input-dtype", dtype)]
    sources["arch"] = ([str(weights), *arch_flag, *shapes, *typed], [str(weights), *arch_flag])
    entry = ["--from-python", f"tests.hf_models:build_{arch.name}"]
    sources["python"] = (entry, entry)
    return sources


def cell(compile_args: list[str], verify_args: list[str], target: list[str], output: Path) -> str:
    if not compile_args:
        return verify_args[0]
    built = runner.invoke(app, ["compile", *compile_args, *target, "-o", str(output), "--no-tune", "--no-cache"])
    if built.exit_code != 0:
        return f"compile exit {built.exit_code}: {error_line(built.output)}"
    source = [] if verify_args[0].startswith("--") else [verify_args[0]]
    checked = runner.invoke(app, ["verify", *source, str(output), *verify_args[len(source):], "-n", "2"])
    if checked.exit_code != 0:
        return f"verify exit {checked.exit_code}: {error_line(checked.output)}"
    return "ok"


def error_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    found = [line for line in lines if line.startswith(("error:", "internal error:"))]
    return (found[0] if found else lines[-1] if lines else "no output")[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help=f"of {', '.join(TARGETS)}")
    args = parser.parse_args()
    targets = args.targets.split(",")
    print(f"{'model':<16} {'source':<7} " + " ".join(f"{t:<8}" for t in targets) + "  (errors below)")
    failures: list[str] = []
    total, passed, start = 0, 0, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="breadth-") as tmp:
        folder = Path(tmp)
        for name in args.models.split(","):
            try:
                sources = save_sources(MODELS[name], folder)
            except Exception as exc:  # the model itself cannot be built or saved: one line for its row
                sources = dict.fromkeys(SOURCES, ([], [f"building the model fails: {type(exc).__name__}: {exc}"]))
            for kind in args.sources.split(","):
                row = []
                for target in targets:
                    flags, suffix = TARGETS[target]
                    result = cell(*sources[kind], flags, folder / f"{name}-{kind}-{target}{suffix}")
                    total += 1
                    passed += result == "ok"
                    row.append("ok" if result == "ok" else f"E{len(failures) + 1}")
                    if result != "ok":
                        failures.append(f"E{len(failures) + 1} {name}/{kind}/{target}: {result}")
                print(f"{name:<16} {kind:<7} " + " ".join(f"{c:<8}" for c in row), flush=True)
    print(f"\n{passed}/{total} cells ok in {time.perf_counter() - start:.0f} s")
    for line in failures:
        print(line)


if __name__ == "__main__":
    main()

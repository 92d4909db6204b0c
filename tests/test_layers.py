"""The layers the layout shows are the layers the imports keep (every import, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Folder -> the infer_compile packages its modules may import (besides their own package).
ALLOWED = {
    "compiler/core": {"infer_compile.core"},
    "compiler/frontends": {"infer_compile.core", "infer_compile.frontends"},
    "calibration": {"infer_compile.core", "infer_compile.frontends", "infer_compile.calibration"},
    "passes": {"infer_compile.core", "infer_compile.calibration", "infer_compile.passes"},
    "targets": {"infer_compile.core", "infer_compile.frontends", "infer_compile.calibration", "infer_compile.passes",
                "infer_compile.targets"},
}


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.startswith("infer_compile")]


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(folder: str) -> None:
    wrong = [f"{path.relative_to(ROOT)}: {name}" for path in sorted((ROOT / folder).glob("*.py"))
             for name in imports(path) if not any(name == p or name.startswith(p + ".") for p in ALLOWED[folder])]
    assert wrong == []


# The deferred TensorRT bundle's final check runs its ONNX in onnxruntime, the runtime every machine has
# (no GPU where the bundle is written): the one sanctioned reach, listed here so no other creeps in.
SANCTIONED = {("tensorrt_bundle.py", "infer_compile.targets.onnxruntime")}


def test_targets_never_reach_into_each_other() -> None:
    """A target module imports the target contract (base) and its own family's modules (tensorrt_*), no other."""
    wrong = []
    for path in sorted((ROOT / "targets").glob("*.py")):
        if path.name == "__init__.py":  # the registry lists every target
            continue
        family = path.stem.split("_")[0]
        for name in imports(path):
            module = name.removeprefix("infer_compile.targets").lstrip(".")
            if name.startswith("infer_compile.targets.") and module != "base" and module.split("_")[0] != family \
                    and (path.name, name) not in SANCTIONED:
                wrong.append(f"{path.name}: {name}")
    assert wrong == []

"""The symlink view static tools read (tests/stubs/typeview.py) maps every module where the installed package does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import infer_compile
from tests.stubs.typeview import ROOT, package_dirs, write_view


def _installed_modules() -> dict[str, Path]:
    """Dotted module name -> its source file, as the editable install's import hook resolves it."""
    modules: dict[str, Path] = {}
    for package, folder in package_dirs(ROOT).items():
        for source in folder.rglob("*.py"):
            parts = source.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1]) + (() if parts[-1] == "__init__" else parts[-1:]))
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.origin is not None:
                modules[name] = Path(spec.origin).resolve()
    return modules


def test_view_resolves_every_module_to_the_file_the_install_imports(tmp_path: Path) -> None:
    write_view(ROOT, tmp_path)
    installed = _installed_modules()
    assert {"infer_compile.core.ir", "infer_compile.passes.base", "infer_compile.targets.base",
            "infer_compile.calibration.data", "infer_compile.app.cli"} <= installed.keys()
    for name, origin in installed.items():
        in_view = tmp_path.joinpath(*name.split("."))
        found = in_view / "__init__.py" if in_view.is_dir() else in_view.with_suffix(".py")
        assert found.resolve() == origin, name


def test_a_module_added_to_a_mapped_folder_appears_without_a_step(tmp_path: Path) -> None:
    root, view = tmp_path / "repo", tmp_path / "view"
    for path in ("src/__init__.py", "src/top.py", "src/inner/__init__.py", "src/notes.txt", "other/__init__.py"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")
    (root / "pyproject.toml").write_text('[tool.setuptools]\npackage-dir = { "pkg" = "src", "pkg.sub" = "other" }\n')
    write_view(root, view)
    (root / "other" / "new.py").write_text("")
    (root / "src" / "inner" / "new.py").write_text("")
    assert sorted(str(p.relative_to(view)) for p in (view / "pkg").iterdir()) == [
        "pkg/__init__.py", "pkg/inner", "pkg/sub", "pkg/top.py"]
    assert (view / "pkg" / "sub" / "new.py").resolve() == (root / "other" / "new.py").resolve()
    assert (view / "pkg" / "inner" / "new.py").resolve() == (root / "src" / "inner" / "new.py").resolve()


def test_the_view_is_not_on_the_import_path() -> None:
    # The view is for static tools: the running package stays the editable install's.
    assert not any("typeview" in entry for entry in sys.path)
    assert Path(infer_compile.__file__).resolve() == ROOT / "compiler" / "__init__.py"

"""The ``infer_compile`` package as static tools see it: a folder of symlinks into the repository folders.

pyproject's ``[tool.setuptools] package-dir`` maps the folders into one import namespace (compiler/ =
infer_compile, passes/ = infer_compile.passes, ...); the editable install serves that mapping through an
import hook that mypy, pyright and import-graph tools cannot follow. This script writes the same mapping
as symlinks (``VIEW/infer_compile/core -> compiler/core``, ``VIEW/infer_compile/passes -> passes``, one
link per file of a mapped folder's top level), read from package-dir itself so nothing restates it.
Folders are linked whole, so a new module needs no step; a new top-level file of compiler/ appears on
the next run (``make typecheck`` runs this every time).

Usage:
  python tests/stubs/typeview.py VIEW            write the view (``make install``)
  python tests/stubs/typeview.py VIEW --mypy ARGS...
                                                 write it, run mypy, and print the repository paths
                                                 (compiler/core/ir.py) instead of the view's
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def package_dirs(root: Path) -> dict[str, Path]:
    """Dotted package name -> its folder, from pyproject's package-dir."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / folder for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def view_links(root: Path) -> dict[Path, Path]:
    """Relative path inside the view -> the repository file or folder it links to.

    A package mapped onto a folder of its own becomes one directory link; its parent package gets file
    links for its top-level files and directory links for its sub-packages that package-dir does not map.
    """
    mapped = package_dirs(root)
    links: dict[Path, Path] = {}
    for name, folder in mapped.items():
        here = Path(*name.split("."))
        parent = name.rpartition(".")[0]
        if parent in mapped:  # the parent's view is a real folder: link this one whole
            links[here] = folder
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name == "__pycache__" or (entry.is_file() and entry.suffix not in (".py", ".pyi", ".typed")):
                continue
            if entry.is_dir() and not (entry / "__init__.py").exists():
                continue
            if f"{name}.{entry.name}" not in mapped:
                links[here / entry.name] = entry
    return links


def write_view(root: Path, view: Path) -> dict[Path, Path]:
    """Rewrite the view from scratch (a removed module must disappear from it too)."""
    links = view_links(root)
    if view.exists():
        shutil.rmtree(view)
    for rel, target in links.items():
        (view / rel).parent.mkdir(parents=True, exist_ok=True)
        (view / rel).symlink_to(target, target_is_directory=target.is_dir())
    return links


def run_mypy(root: Path, view: Path, links: dict[Path, Path], args: list[str]) -> int:
    """mypy over the view, its messages naming the repository files (readable, clickable)."""
    prefixes = sorted(((str(_relative(view / rel, root)), str(_relative(target, root)))
                       for rel, target in links.items()), key=lambda pair: -len(pair[0]))
    result = subprocess.run([sys.executable, "-m", "mypy", *args], cwd=root, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        for shown, real in prefixes:
            if line.startswith(shown):
                line = real + line[len(shown):]
                break
        print(line)
    sys.stderr.write(result.stderr)
    return result.returncode


def _relative(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    view = Path(argv[0]).absolute()
    links = write_view(ROOT, view)
    if argv[1:2] == ["--mypy"]:
        return run_mypy(ROOT, view, links, argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

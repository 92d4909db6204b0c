"""Render an HTML build report in a real headless browser and check it (`make report-check`).

    python tests/render_report.py [OUT_DIR]

Builds examples/tiny_cnn.onnx as INT8 (synthetic calibration, 2 s of autotuning) with --report build.html,
opens the page in headless Chromium (Debian: apt install chromium), and checks that the browser's DOM has every
section and chart, that the console shows no error, and that the screenshot is not blank. Without Chromium it
says so and exits 0 (a skip, not a pass: the CI test checks the page with a parser instead).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("Summary", "Accuracy vs fp32", "Calibration", "Passes: node counts and times",
            "Per-layer precision by source module", "Autotune")


def browser() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--v=0", "--window-size=1200,2400"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/report").resolve()
    binary = browser()
    if binary is None:
        print("report-check skipped: no Chromium here (Debian/Ubuntu: apt install chromium)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    page, shot = out / "build.html", out / "build.png"
    subprocess.run([sys.executable, "-m", "infer_compile.app.cli", str(ROOT / "examples" / "tiny_cnn.onnx"), "-t",
                    "onnxruntime", "--int8", "--calib", "synthetic", "--tune-time", "2s", "--no-cache", "-o",
                    str(out / "tiny_cnn.onnx"), "--report", str(page)], check=True)
    dom = chromium(binary, "--dump-dom", page.as_uri())
    problems = [f"section '{name}' missing from the rendered DOM" for name in SECTIONS if f"<h2>{name}</h2>" not in
                dom.stdout]
    if dom.stdout.count("<svg") < 4:
        problems.append("fewer than 4 charts rendered")
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    problems += [f"browser console: {line}" for line in console_errors]
    chromium(binary, f"--screenshot={shot}", page.as_uri())
    problems += screenshot_problems(shot)
    for problem in problems:
        print(f"report-check: {problem}", file=sys.stderr)
    if not problems:
        print(f"report-check: {page} renders in {Path(binary).name}: {len(SECTIONS)} sections, "
              f"{dom.stdout.count('<svg')} charts, no console errors; screenshot {shot}")
    return 1 if problems else 0


def screenshot_problems(shot: Path) -> list[str]:
    if not shot.is_file() or shot.stat().st_size == 0:
        return ["no screenshot written"]
    from PIL import Image

    with Image.open(shot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    return [] if len(colors) > 20 else [f"the screenshot is blank ({len(colors)} colours)"]


if __name__ == "__main__":
    sys.exit(main())

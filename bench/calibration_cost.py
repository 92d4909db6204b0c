"""INT8 build cost against the fp32 build on a real OCR text detector: seconds and peak RSS ratios.

    .venv/bin/python bench/calibration_cost.py [--counts 8 16 32] [--no-final-check]

The model is PP-OCRv4's text detector (dynamic N, H, W; 4.7 MB conv net) from the rapidocr-onnxruntime package
(`pip install --no-deps rapidocr-onnxruntime`); the samples are scikit-image's photos (text, page, astronaut,
coffee, ...) resized to 640x640 and normalised as PP-OCR does, cycled with flips up to the largest count. Every
build runs with --input-shape x:1x3x640x640 --no-cache --no-tune in a child process (bench/measure.py); the fp32
build checks itself on one sample, the INT8 builds calibrate on ``count`` samples (every 5th held out for the
final check). Issue 15 asks for INT8 <= 3x the fp32 build's seconds and < 2x its peak RSS at 32 samples, and
for costs that grow linearly and modestly with the samples. A build that fails its final check (exit 3) is
reported with its exit code: it is how much a failing build costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
from measure import VENV_BIN, Build, run_measured

SIZE = 640
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # PP-OCR det's NormalizeImage
STD = np.array([0.229, 0.224, 0.225], np.float32)
PHOTOS = ("text", "page", "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "horse",
          "immunohistochemistry", "hubble_deep_field", "retina", "logo", "motorcycle_left", "clock")


def detector_path() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # its __init__ needs cv2: locate it without importing
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*det*.onnx"))
    return found[0] if found else None


def photos() -> list[np.ndarray] | None:
    """scikit-image's photos as HxWx3 uint8 (grey ones repeated), or None without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return None
    images = []
    for name in PHOTOS:
        loader = getattr(data, name, None)
        try:
            image = np.asarray(loader()) if loader else None
        except Exception:  # a photo scikit-image must download (not shipped in its wheel)
            image = None
        if image is not None and image.dtype == np.uint8:
            image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
            images.append(image)
    return images


def sample(image: np.ndarray) -> np.ndarray:
    """1x3x640x640 float32: nearest-neighbour resize, then (x / 255 - mean) / std as PP-OCR does."""
    rows = np.arange(SIZE) * image.shape[0] // SIZE
    cols = np.arange(SIZE) * image.shape[1] // SIZE
    resized = image[rows][:, cols].astype(np.float32) / 255.0
    return ((resized - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def write_samples(folder: Path, images: list[np.ndarray], count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        image = images[i % len(images)]
        variant = (i // len(images)) % 4  # flips make the repeats differ
        image = image[:, ::-1] if variant & 1 else image
        image = image[::-1] if variant & 2 else image
        np.savez(folder / f"{i:03d}.npz", x=sample(np.ascontiguousarray(image)))


def build(model: Path, out: Path, extra: list[str]) -> Build:
    return run_measured([str(VENV_BIN / "infer-compile"), str(model), "--target", "onnxruntime", "--no-cache",
                           "--no-tune", "--input-shape", f"x:1x3x{SIZE}x{SIZE}", "-o", str(out), *extra],
                        check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--no-final-check", action="store_true", help="build without the final check")
    args = parser.parse_args()
    model = detector_path()
    if model is None:
        raise SystemExit("skipped: the PP-OCRv4 detector comes from rapidocr-onnxruntime; "
                         "install it with: pip install --no-deps rapidocr-onnxruntime")
    images = photos()
    if not images:
        raise SystemExit("skipped: the calibration photos come from scikit-image; install it with: "
                         "pip install scikit-image")
    check = ["--no-final-check"] if args.no_final_check else []
    with tempfile.TemporaryDirectory(prefix="calibration-cost-bench-") as tmp:
        root = Path(tmp)
        folders = {}
        for count in args.counts:
            folders[count] = root / f"calib-{count}"
            write_samples(folders[count], images, count)
        fp32 = build(model, root / "fp32.onnx", ["--inputs", str(folders[args.counts[0]] / "000.npz"),
                                                            *check])
        rows = [("fp32", "-", fp32)]
        for count in args.counts:
            rows.append(("int8", str(count), build(model, root / f"int8-{count}.onnx",
                                                   ["--int8", "--calib", str(folders[count]), *check])))
    print(f"model: {model.name}, input 1x3x{SIZE}x{SIZE}, final check {'off' if check else 'on'}")
    print(f"{'build':6} {'samples':>7} {'seconds':>8} {'x fp32':>7} {'peak MiB':>9} {'x fp32':>7} {'exit':>5}")
    for name, count, result in rows:
        print(f"{name:6} {count:>7} {result.seconds:8.1f} {result.seconds / fp32.seconds:7.2f} "
              f"{result.peak_rss_mib:9.0f} {result.peak_rss_mib / fp32.peak_rss_mib:7.2f} {result.exit_code:>5}")


if __name__ == "__main__":
    main()

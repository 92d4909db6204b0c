"""INT8 build cost against the fp32 build of the same model: seconds and peak RSS ratios (issue 15's goal).

    .venv/bin/python bench/calibration_cost.py [--counts 32] [--baseline-venv DIR] [--repeats 1]

Two models, both with dynamic N, H, W, built at 1x3x640x640:
- ``detector-sized``: tests.builders.text_detector, a DB-style conv net of PP-OCRv4's detector's size (4.8 MB),
  calibrated on seeded random images; always available.
- ``PP-OCRv4 det``: the real detector from the rapidocr-onnxruntime package (`pip install --no-deps
  rapidocr-onnxruntime`), calibrated on scikit-image's photos (`pip install scikit-image`) with lines of text
  rendered onto them (PIL's bundled font at 14-56 px, dark or light, some on label boxes: photos without text
  give probability maps of ~1e-6 everywhere, on which no accuracy figure means anything), resized to 640x640 and
  normalised as PP-OCR does, cycled with flips up to the sample count. Its INT8 accuracy is measured on held-out
  photos the calibration never saw (crops at other scales, other text): the worst cosine of the probability map vs
  fp32, the worst IoU of its text pixels at PP-OCR's binarization threshold 0.3 (what the DB postprocess turns into
  boxes) and the largest probability error. A refused build has no artifact: the figures are then those of the
  same build with every layer kept INT8 and no checks (``--fallback-limit 0 --no-final-check``), marked refused.

Every build runs with --target onnxruntime --no-cache --no-tune in a child process (bench/measure.py); the fp32
build checks itself on one sample (--inputs), the INT8 builds calibrate on ``count`` samples (every 5th held out
for the final check). Issue 15's goal at 32 samples: INT8 <= 3x the fp32 build's seconds, peak RSS < 2x. Builds
of ``--baseline-venv`` (another install, e.g. an older checkout's .venv) run interleaved with ours, so both face
the same machine load; ``cpu s`` (user + system) is less sensitive to other processes than wall seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.builders
from measure import VENV_BIN, Build, run_measured

from tests.builders import text_detector

SIZE = 640
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # PP-OCR det's NormalizeImage
STD = np.array([0.229, 0.224, 0.225], np.float32)
PHOTOS = ("text", "page", "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "horse",
          "immunohistochemistry", "hubble_deep_field", "retina", "logo", "motorcycle_left", "clock")
HELD_OUT_CROPS = ((0.0, 0.0, 0.6), (0.4, 0.4, 0.6), (0.2, 0.0, 0.7))  # (top, left, side) as fractions
BINARIZE = 0.3  # PP-OCR's DBPostProcess thresh: text pixels are those above it
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "invoice", "total", "2026", "OPEN", "EXIT",
         "street", "No. 42", "price", "$19.99", "hello", "world", "receipt", "station", "platform 7", "coffee", "SALE",
         "tel. 555-0199", "www.example.com")
HELD_OUT_SEED = 1000  # text of the held-out photos: other words and places than any calibration sample's


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


def with_text(image: np.ndarray, seed: int) -> np.ndarray:
    """``image`` resized to 640x640 with 4-8 seeded lines of text drawn on it (PIL's bundled font, 14-56 px; dark or
    light, 40% on a light label box), as HxWx3 uint8."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    canvas = Image.fromarray(image).resize((SIZE, SIZE))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(4, 9)):
        size = int(rng.choice([14, 20, 28, 40, 56]))
        font = ImageFont.load_default(size=size)
        text = " ".join(rng.choice(WORDS, rng.integers(1, 5)))
        x, y = int(rng.integers(0, SIZE // 2)), int(rng.integers(0, SIZE - size))
        if rng.random() < 0.4:
            left, top, right, bottom = draw.textbbox((x, y), text, font=font)
            draw.rectangle([left - 4, top - 4, right + 4, bottom + 4], fill=_colour(rng, 180, 256))
            colour = _colour(rng, 0, 80)
        else:
            colour = _colour(rng, 0, 60) if rng.random() < 0.5 else _colour(rng, 200, 256)
        draw.text((x, y), text, font=font, fill=colour)
    return np.asarray(canvas)


def _colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, ...]:
    return tuple(int(v) for v in rng.integers(low, high, 3))


def sample(image: np.ndarray) -> np.ndarray:
    """1x3x640x640 float32: nearest-neighbour resize, then (x / 255 - mean) / std as PP-OCR does."""
    rows = np.arange(SIZE) * image.shape[0] // SIZE
    cols = np.arange(SIZE) * image.shape[1] // SIZE
    resized = image[rows][:, cols].astype(np.float32) / 255.0
    return ((resized - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


def photo_samples(images: list[np.ndarray], count: int) -> list[np.ndarray]:
    out = []
    for i in range(count):
        image = images[i % len(images)]
        variant = (i // len(images)) % 4  # flips make the repeats differ
        image = image[:, ::-1] if variant & 1 else image
        image = image[::-1] if variant & 2 else image
        out.append(sample(with_text(np.ascontiguousarray(image), seed=i)))
    return out


def held_out_photos(images: list[np.ndarray]) -> list[np.ndarray]:
    """Crops of each photo at another scale and place, with other text: inputs the calibration never saw."""
    out = []
    for index, image in enumerate(images):
        top, left, side = HELD_OUT_CROPS[index % len(HELD_OUT_CROPS)]
        h, w = image.shape[:2]
        crop = image[int(top * h):int(top * h) + int(side * h), int(left * w):int(left * w) + int(side * w)]
        out.append(sample(with_text(np.ascontiguousarray(crop), seed=HELD_OUT_SEED + index)))
    return out


def random_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random images (8x8 blocks of noise, upsampled), normalised like photos."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((count, 3, SIZE // 8, SIZE // 8)).astype(np.float32)
    return [np.repeat(np.repeat(c, 8, axis=1), 8, axis=2)[None] for c in coarse]


def write_samples(folder: Path, samples: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for i, x in enumerate(samples):
        np.savez(folder / f"{i:03d}.npz", x=x)


@dataclass
class Case:
    name: str
    model: Path
    samples: list[np.ndarray]  # as many as the largest count
    held_out: list[np.ndarray]  # for the INT8 artifact's accuracy; empty: not measured


def cases(root: Path, largest: int) -> list[Case]:
    synthetic = root / "detector_sized.onnx"
    onnx.save(text_detector(), str(synthetic))
    found = [Case("detector-sized", synthetic, random_images(largest), [])]
    model, images = detector_path(), photos()
    if model is None or not images:
        print("PP-OCRv4 det skipped: it needs `pip install --no-deps rapidocr-onnxruntime` and "
              "`pip install scikit-image`")
    else:
        found.append(Case("PP-OCRv4 det", model, photo_samples(images, largest), held_out_photos(images)))
    return found


def build(venv_bin: Path, model: Path, out: Path, extra: list[str]) -> Build:
    return run_measured([str(venv_bin / "infer-compile"), str(model), "--target", "onnxruntime", "--no-cache",
                         "--no-tune", "--input-shape", f"x:1x3x{SIZE}x{SIZE}", "-o", str(out), *extra], check=False)


def map_figures(source: Path, artifact: Path, inputs: list[np.ndarray]) -> str:
    """The artifact's probability map vs the source's (onnxruntime, unoptimized fp32) over ``inputs``: the worst
    cosine, the worst IoU of the text pixels (> BINARIZE; 1 when neither has any) and the largest abs error."""
    import onnxruntime as ort

    def session(path: Path, optimize: bool) -> ort.InferenceSession:
        options = ort.SessionOptions()
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    reference, quantized = session(source, False), session(artifact, True)
    cosine, iou, error = 1.0, 1.0, 0.0
    for x in inputs:
        a = reference.run(None, {"x": x})[0].ravel().astype(np.float64)
        b = quantized.run(None, {"x": x})[0].ravel().astype(np.float64)
        cosine = min(cosine, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
        text_a, text_b = a > BINARIZE, b > BINARIZE
        iou = min(iou, float((text_a & text_b).sum() / max((text_a | text_b).sum(), 1)))
        error = max(error, float(np.abs(a - b).max()))
    return f"{cosine:.4f} | {iou:.4f} | {error:.3f}"


def accuracy(case: Case, result: Build, artifact: Path, unchecked: Path | None) -> str:
    """The INT8 artifact's map figures on the held-out photos; for a refused build those of ``unchecked`` (the
    all-INT8 graph the build would have written without checks), marked refused."""
    if not case.held_out:
        return "- | - | -"
    if result.exit_code == 0:
        return map_figures(case.model, artifact, case.held_out)
    if result.exit_code == 3 and unchecked is not None:
        return "refused: " + map_figures(case.model, unchecked, case.held_out)
    return "- | - | -"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[32], help="calibration samples per INT8 build")
    parser.add_argument("--baseline-venv", type=Path, help="another install's venv to compare against")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every build (the median is shown)")
    args = parser.parse_args()
    installs = {"ours": VENV_BIN, **({"baseline": args.baseline_venv / "bin"} if args.baseline_venv else {})}
    rows = []
    with tempfile.TemporaryDirectory(prefix="calibration-cost-bench-") as tmp:
        root = Path(tmp)
        for case in cases(root, max(args.counts)):
            folders = {}
            for count in args.counts:
                folders[count] = root / f"{case.name}-{count}"
                write_samples(folders[count], case.samples[:count])
            results: dict[tuple[str, str], list[tuple[Build, str]]] = {}
            for _ in range(args.repeats):  # interleaved: every install's builds in each round
                for install, venv_bin in installs.items():
                    fp32 = build(venv_bin, case.model, root / "fp32.onnx",
                                 ["--inputs", str(folders[args.counts[0]] / "000.npz")])
                    results.setdefault((install, "fp32"), []).append((fp32, "- | - | -"))
                    for count in args.counts:
                        artifact = root / f"int8-{install}-{count}.onnx"
                        calib = ["--int8", "--calib", str(folders[count])]
                        int8 = build(venv_bin, case.model, artifact, calib)
                        unchecked = None
                        if int8.exit_code == 3 and case.held_out:  # refused: what it refused, written unchecked
                            unchecked = root / f"int8-{install}-{count}-unchecked.onnx"
                            build(venv_bin, case.model, unchecked, [*calib, "--fallback-limit", "0",
                                                                     "--no-final-check"])
                        results.setdefault((install, str(count)), []).append(
                            (int8, accuracy(case, int8, artifact, unchecked)))
            for install in installs:
                fp32 = median(results[(install, "fp32")])[0]
                for count in ["fp32", *map(str, args.counts)]:
                    rows.append((case.name, install, count, *median(results[(install, count)]), fp32))
    print(f"\nonnxruntime builds at 1x3x{SIZE}x{SIZE}, --no-tune; goal at 32 samples: INT8 <= 3x fp32 seconds, "
          "< 2x peak RSS\n")
    print(f"INT8 vs fp32 probability maps on held-out photos with text: worst cosine, worst IoU of text pixels "
          f"(> {BINARIZE}), largest probability error\n")
    print("| model | install | samples | wall s | x fp32 | cpu s | peak MiB | x fp32 | exit | cosine | IoU | max abs |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for name, install, count, result, figures, fp32 in rows:
        print(f"| {name} | {install} | {count} | {result.seconds:.1f} | {result.seconds / fp32.seconds:.2f} | "
              f"{result.cpu_seconds:.1f} | {result.peak_rss_mib:.0f} | {result.peak_rss_mib / fp32.peak_rss_mib:.2f} | "
              f"{result.exit_code} | {figures} |")


def median(results: list[tuple[Build, str]]) -> tuple[Build, str]:
    """The build of median wall seconds (with its accuracy figures)."""
    return sorted(results, key=lambda r: r[0].seconds)[len(results) // 2]


if __name__ == "__main__":
    main()

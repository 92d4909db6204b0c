"""Reliability probe: infer-compile used as a careless or hostile user would (issue #13).

    python bench/reliability.py [--only SUBSTRING] [--keep] [--large]

Every case runs the real CLI (or the Python API) in subprocesses inside its own temporary folder and
is judged from the outside: exit code, stderr, files left behind, files the user owned. Prints one row
per case and the totals:

- ok:             the mistake is refused with a one-line error and a documented exit code (or, where the
                  case is a legitimate request, it succeeds with a correct result)
- unclear error:  refused, but the message does not say what is wrong, or the mistake is silently accepted
- internal error: exit 70 / "internal error" for a user mistake
- traceback:      a Python traceback without --debug
- leftovers:      staging or temporary folders left behind
- data loss:      a file the user owned changed or vanished, something outside the output was written, or a
                  broken artifact was delivered with exit 0

Cases that need root (read-only and full file systems as small tmpfs mounts) are skipped otherwise.
``--large`` adds the cases that write > 1 GiB models (several GB of memory; not run by default).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The checkout whose code the CLI next to this interpreter runs (an editable install): what a wheel is built from.
CODE = Path(importlib.util.find_spec("infer_compile").origin).resolve().parent.parent

from tests.builders import make_model, tensor, tiny_cnn  # noqa: E402

VERDICTS = ("ok", "unclear error", "internal error", "traceback", "leftovers", "data loss")
CLI = Path(sys.executable).with_name("infer-compile")


@dataclass
class Proc:
    code: int
    out: str
    err: str


@dataclass
class Outcome:
    code: int | str
    verdict: str
    note: str = ""


def cli(args: list[str], cwd: Path, timeout: float = 600, **env: str) -> Proc:
    done = subprocess.run([str(CLI), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env(cwd, env))
    return Proc(done.returncode, done.stdout, done.stderr)


def python(code: str, cwd: Path) -> Proc:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=_env(cwd, {}))
    return Proc(done.returncode, done.stdout, done.stderr)


def _env(cwd: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "INFER_COMPILE_CACHE_DIR": str(cwd / ".cache"), "INFER_COMPILE_TUNE_TIME": "0",
            "COLUMNS": "200", **extra}


def first_error(proc: Proc) -> str:
    lines = [line.strip() for line in (proc.err + proc.out).splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "traceback" in line.lower():
            return line[:150]
    return (lines[-1] if lines else "")[:150]


def judge_error(proc: Proc, *mentions: str) -> Outcome:
    """A user mistake: must be refused with one clear line (exit 1-4) that mentions one of ``mentions``."""
    text = (proc.err + proc.out).lower()
    if "traceback (most recent call last)" in text:
        return Outcome(proc.code, "traceback", first_error(proc))
    if proc.code == 70 or "internal error" in text:
        return Outcome(proc.code, "internal error", first_error(proc))
    if proc.code == 0:
        return Outcome(0, "unclear error", "accepted silently")
    if proc.code not in (1, 2, 3, 4) or (mentions and not any(m.lower() in text for m in mentions)):
        return Outcome(proc.code, "unclear error", first_error(proc))
    return Outcome(proc.code, "ok", first_error(proc))


def leftovers(*folders: Path) -> list[str]:
    """Staging folders of artifacts and temporary folders of the build cache."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [str(p.relative_to(folder)) for p in folder.rglob("*") if ".partial-" in p.name]
            tmp = folder / ".cache" / "tmp"
            if tmp.is_dir():
                found += [str(p.relative_to(folder)) for p in tmp.iterdir()]
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def checked(outcome: Outcome, root: Path, owned: dict[Path, str] | None = None) -> Outcome:
    """Worse verdicts first: data loss (user files changed), then leftovers."""
    for path, sha in (owned or {}).items():
        if not path.is_file() or digest(path) != sha:
            return Outcome(outcome.code, "data loss", f"{path.name} {'changed' if path.exists() else 'deleted'}")
    if found := leftovers(root):
        return Outcome(outcome.code, "leftovers", ", ".join(found[:3]))
    return outcome


# --- models and data -------------------------------------------------------------------------------------


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def cnn(root: Path, name: str = "model.onnx") -> Path:
    return save(tiny_cnn(), root / name)


def big_matmul(root: Path, size: int = 1024) -> Path:
    """One MatMul with a size x size fp32 weight (4 MiB at 1024): large enough to fill a small disk."""
    weight = np.random.default_rng(0).normal(0, 0.02, (size, size)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return save(make_model(nodes, [tensor("x", [1, size])], [tensor("y", [1, size])], {"w": weight}),
                root / "big.onnx")


def calib_folder(root: Path, count: int = 8, name: str = "calib") -> Path:
    folder = root / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(folder / f"{i:03d}.npy", rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32))
    return folder


class Pwn:
    """Unpickling this creates a file named PWNED: proof that a file was unpickled."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def pwned(root: Path) -> bool:
    return any(root.rglob("PWNED"))


# --- cases -------------------------------------------------------------------------------------------------

CASES: list[tuple[str, str, Callable[[Path], Outcome], bool]] = []  # owner, name, case, large


def case(owner: str, name: str, large: bool = False):
    def register(fn: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
        CASES.append((owner, name, fn, large))
        return fn
    return register


# Output paths and the user's files (safety)


@case("safety", "-o build/ where build/ holds the user's files")
def _(root: Path) -> Outcome:
    model = cnn(root)
    keep = root / "build" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    owned = {keep: digest(keep)}
    return into_folder(root, model, "build/", owned)


def into_folder(root: Path, model: Path, output: str, owned: dict[Path, str]) -> Outcome:
    """`-o FOLDER` means "into that folder", as with cp: an artifact (with its manifest) appears in it."""
    proc = cli([str(model), "-o", output, "--no-cache"], root)
    written = sorted(p.name[: -len(".manifest.json")] for p in (root / output).glob("*.manifest.json"))
    if proc.code == 0 and not written:
        return checked(Outcome(0, "unclear error", f"exit 0 but no artifact in {output}"), root, owned)
    outcome = judge_ok(proc)
    outcome.note = f"wrote {output.rstrip('/')}/{', '.join(written)}" if written else outcome.note
    return checked(outcome, root, owned)


@case("safety", "-o EXISTING_FOLDER (no slash)")
def _(root: Path) -> Outcome:
    model = cnn(root)
    keep = root / "out" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    return into_folder(root, model, "out", {keep: digest(keep)})


@case("safety", "openvino -o path without .xml")
def _(root: Path) -> Outcome:
    model = cnn(root)
    proc = cli([str(model), "--target", "openvino", "-o", "out/model", "--no-cache"], root)
    if proc.code == 0:
        return checked(Outcome(0, "ok", "built"), root)
    return checked(judge_error(proc, "xml", "suffix"), root)


@case("safety", "-o equal to the source model")
def _(root: Path) -> Outcome:
    model = cnn(root)
    owned = {model: digest(model)}
    return checked(judge_error(cli([str(model), "-o", str(model), "--no-cache"], root), "source"), root, owned)


@case("safety", "build -c: output_dir '.' lands on the source")
def _(root: Path) -> Outcome:
    model = cnn(root, "m.onnxruntime.fp32.onnx")
    owned = {model: digest(model)}
    (root / "infer.toml").write_text('output_dir = "."\ntargets = ["onnxruntime"]\n\n[[models]]\n'
                                     f'path = "{model.name}"\nname = "m"\n')
    return checked(judge_error(cli(["build", "-c", "infer.toml", "--no-cache"], root), "source"), root, owned)


def judge_ok(proc: Proc) -> Outcome:
    """A legitimate request: must succeed without a traceback."""
    if "traceback (most recent call last)" in (proc.err + proc.out).lower():
        return Outcome(proc.code, "traceback", first_error(proc))
    if proc.code == 70:
        return Outcome(proc.code, "internal error", first_error(proc))
    if proc.code != 0:
        return Outcome(proc.code, "unclear error", first_error(proc))
    return Outcome(0, "ok")


def mounted(root: Path, options: str) -> Path | None:
    """A tmpfs mounted with ``options`` (root only); None where that is not possible."""
    folder = root / "mnt"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return folder if done.returncode == 0 else None


def unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


@case("safety", "read-only output folder")
def _(root: Path) -> Outcome:
    model = cnn(root)
    folder = mounted(root, "ro,size=1m")
    if folder is None:
        return Outcome("-", "ok", "skipped: needs root to mount a read-only tmpfs")
    try:
        start = time.perf_counter()
        proc = cli([str(model), "-o", str(folder / "model.onnx"), "--no-cache", "--tune-time", "3s"], root)
        outcome = judge_error(proc, "read-only", "not writable", "cannot write", "permission")
        outcome.note += f" ({time.perf_counter() - start:.1f} s)"
        return checked(outcome, root)
    finally:
        unmount(folder)


@case("safety", "full disk (1 MiB tmpfs, 4 MiB model)")
def _(root: Path) -> Outcome:
    model = big_matmul(root)
    folder = mounted(root, "size=1m")
    if folder is None:
        return Outcome("-", "ok", "skipped: needs root to mount a small tmpfs")
    try:
        proc = cli([str(model), "-o", str(folder / "big.onnx"), "--no-cache"], root)
        outcome = judge_error(proc, str(folder), "space", "full")
        if found := [p.name for p in folder.iterdir()]:
            return Outcome(proc.code, "leftovers", ", ".join(found[:3]))
        return checked(outcome, root)
    finally:
        unmount(folder)


@case("safety", "--report to an unwritable path")
def _(root: Path) -> Outcome:
    model = cnn(root)
    (root / "report.json").mkdir()  # a folder where the report file should go
    proc = cli([str(model), "-o", "out/model.onnx", "--no-cache", "--report", "report.json"], root)
    outcome = judge_error(proc, "report")
    if proc.code != 0 and (root / "out" / "model.onnx").exists():
        outcome.note += " (artifact written anyway)"
    return checked(outcome, root)


def cached_build(root: Path, model: Path) -> tuple[Proc, Path]:
    out = root / "out" / "model.onnx"
    return cli([str(model), "-o", str(out)], root), out


def entry_folder(root: Path) -> Path:
    (entry,) = (root / ".cache" / "entries").iterdir()
    return entry


def runs_correctly(root: Path, artifact: Path) -> bool:
    return cli(["verify", str(root / "model.onnx"), str(artifact), "--samples", "2"], root).code == 0


@case("safety", "cache: truncated entry file")
def _(root: Path) -> Outcome:
    model = cnn(root)
    cached_build(root, model)
    stored = entry_folder(root) / "model.onnx"
    stored.write_bytes(stored.read_bytes()[:200])
    proc, out = cached_build(root, model)
    if proc.code == 0 and not runs_correctly(root, out):
        return Outcome(0, "data loss", "truncated artifact delivered from the cache with exit 0")
    return checked(judge_ok(proc), root)


@case("safety", "cache: edited cached manifest")
def _(root: Path) -> Outcome:
    model = cnn(root)
    cached_build(root, model)
    manifest = entry_folder(root) / "model.onnx.manifest.json"
    body = json.loads(manifest.read_text())
    body["precision"] = "int8"
    manifest.write_text(json.dumps(body))
    proc, out = cached_build(root, model)
    served = json.loads(Path(str(out) + ".manifest.json").read_text()).get("precision") == "int8"
    if proc.code == 0 and served:
        return Outcome(0, "data loss", "edited manifest served from the cache with exit 0")
    return checked(judge_ok(proc), root)


@case("safety", "cache: poisoned entry.json names ../ files")
def _(root: Path) -> Outcome:
    model = cnn(root)
    secret = root / "secret.txt"
    secret.write_text("outside the cache")
    owned = {secret: digest(secret)}
    cached_build(root, model)
    meta_path = entry_folder(root) / "entry.json"
    meta = json.loads(meta_path.read_text())
    meta["files"] = [*meta["files"], "../../../secret.txt"]
    meta_path.write_text(json.dumps(meta))
    outside = root.parent / "secret.txt"  # where ../../../ from the output's staging folder lands
    outside.unlink(missing_ok=True)
    proc, _ = cached_build(root, model)
    if outside.exists():
        outside.unlink()
        return Outcome(proc.code, "data loss", f"copied a file from outside the entry to {outside}")
    return checked(judge_ok(proc), root, owned)


@case("safety", "cache key covers the installed package's code")
def _(root: Path) -> Outcome:
    target = root / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(CODE)], capture_output=True, text=True)
    if done.returncode != 0:
        return Outcome("-", "unclear error", f"could not install a wheel: {done.stderr.strip()[-100:]}")
    probe = ("import infer_compile.app.cache as c; print(c.code_digest())")
    env = {"PYTHONPATH": str(target)}
    before = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root,
                            env={**os.environ, **env})
    passes = target / "infer_compile" / "passes" / "dead_code.py"
    passes.write_text(passes.read_text() + "\n# changed\n")
    after = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root,
                           env={**os.environ, **env})
    if before.returncode or after.returncode:
        return Outcome(after.returncode, "traceback", (before.stderr or after.stderr).strip()[-120:])
    if before.stdout == after.stdout:
        return Outcome(0, "data loss", "changing installed code keeps the same key (stale artifacts served)")
    return Outcome(0, "ok", "key changes with the installed code")


@case("safety", "SIGTERM while the artifact is staged")
def _(root: Path) -> Outcome:
    return signalled(root, signal.SIGTERM, lambda: any(".partial-" in p.name for p in (root / "out").glob(".*")))


@case("safety", "SIGTERM while the cache entry is written")
def _(root: Path) -> Outcome:
    return signalled(root, signal.SIGTERM, lambda: any((root / ".cache" / "tmp").glob("*")))


@case("safety", "SIGINT while the cache entry is written: message true")
def _(root: Path) -> Outcome:
    return signalled(root, signal.SIGINT, lambda: any((root / ".cache" / "tmp").glob("*")))


def signalled(root: Path, sig: signal.Signals, ready: Callable[[], bool]) -> Outcome:
    """Build a 64 MiB model and send ``sig`` once ``ready()``; judge exit code, message and leftovers."""
    model = big_matmul(root, 4096)
    (root / "out").mkdir()
    # SIGINT is ignored in processes started in the background; Python turns it into Ctrl-C only if it is not.
    proc = subprocess.Popen([str(CLI), str(model), "-o", "out/big.onnx", "--skip-pass", "autotune"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(root, {}),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        return Outcome(proc.returncode, "ok", "skipped: the build finished before the signal could be sent")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    result = Proc(proc.returncode, out, err)
    expected = {signal.SIGTERM: (143, -signal.SIGTERM), signal.SIGINT: (130,)}[sig]
    if "traceback (most recent call last)" in err.lower():
        return Outcome(result.code, "traceback", first_error(result))
    if found := leftovers(root):
        return Outcome(result.code, "leftovers", ", ".join(found[:3]))
    if result.code not in expected or result.code < 0:
        return Outcome(result.code, "unclear error", f"killed without a message (exit {result.code})")
    if "nothing was written" in err and (root / "out" / "big.onnx").is_file():
        return Outcome(result.code, "unclear error", "says 'nothing was written' but the artifact is in place")
    return Outcome(result.code, "ok", first_error(result))


@case("safety", "stale staging folder of a killed build is swept")
def _(root: Path) -> Outcome:
    model = big_matmul(root, 4096)
    (root / "out").mkdir()
    proc = subprocess.Popen([str(CLI), str(model), "-o", "out/big.onnx", "--skip-pass", "autotune", "--no-cache"],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(root, {}))
    deadline = time.monotonic() + 300
    while proc.poll() is None and not leftovers(root) and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    if not leftovers(root):
        return Outcome("-", "ok", "skipped: SIGKILL left nothing to sweep")
    again = cli([str(model), "-o", "out/big.onnx", "--skip-pass", "autotune", "--no-cache"], root)
    return checked(judge_ok(again), root)


@case("safety", "--calib-cache names an unrelated JSON file")
def _(root: Path) -> Outcome:
    model = cnn(root)
    config = root / "config.json"
    config.write_text(json.dumps({"learning_rate": 0.1}))
    owned = {config: digest(config)}
    calib = calib_folder(root)
    proc = cli([str(model), "--int8", "--calib", str(calib), "--calib-cache", str(config), "-o", "out/m.onnx",
                "--no-cache"], root)
    outcome = judge_error(proc, "calib-cache") if proc.code else Outcome(0, "ok", "built; file kept")
    return checked(outcome, root, owned)


@case("calib-mem", "> 1 GiB model with external data, built from its own folder", large=True)
def _(root: Path) -> Outcome:
    models = root / "models"
    rng = np.random.default_rng(0)
    weights = {f"w{i}": rng.standard_normal((12288, 12288), np.float32) for i in range(2)}  # 2 x 576 MiB
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"]), helper.make_node("MatMul", ["h", "w1"], ["y"])]
    model = make_model(nodes, [tensor("x", [1, 12288])], [tensor("y", [1, 12288])], weights)
    del weights
    models.mkdir()
    onnx.save_model(model, str(models / "big.onnx"), save_as_external_data=True, location="big.onnx.data")
    del model
    owned = {models / "big.onnx.data": digest(models / "big.onnx.data")}
    proc = cli(["big.onnx", "-o", "out/big.onnx", "--no-cache", "--skip-pass", "autotune"], models)
    return checked(judge_ok(proc), root, owned)


# Calibration data (calib-mem, user-errors)


@case("calib-mem", "NaN in a calibration sample")
def _(root: Path) -> Outcome:
    model = cnn(root)
    calib = calib_folder(root)
    bad = np.load(calib / "003.npy")
    bad[0, 0, 0, :4] = np.nan
    np.save(calib / "003.npy", bad)
    proc = cli([str(model), "--int8", "--calib", str(calib), "-o", "out/m.onnx", "--no-cache"], root)
    text = (proc.err + proc.out).lower()
    if proc.code == 0:
        ok = "nan" in text and "003.npy" in text
        return checked(Outcome(0, "ok" if ok else "unclear error", "built with a warning" if ok else
                               "NaN sample accepted silently"), root)
    return checked(judge_error(proc, "003.npy"), root)


@case("user-errors", "--calib folder: .npz with object arrays")
def _(root: Path) -> Outcome:
    model = cnn(root)
    calib = root / "calib"
    calib.mkdir()
    np.savez(calib / "s.npz", image=np.array([Pwn()], dtype=object))
    proc = cli([str(model), "--int8", "--calib", str(calib), "-o", "out/m.onnx", "--no-cache"], root)
    if pwned(root):
        return Outcome(proc.code, "data loss", "the pickle was unpickled")
    return checked(judge_error(proc, "s.npz"), root)


@case("user-errors", "--calib folder: text file named .npy")
def _(root: Path) -> Outcome:
    model = cnn(root)
    calib = root / "calib"
    calib.mkdir()
    (calib / "s.npy").write_text("1,2,3\n4,5,6\n")
    proc = cli([str(model), "--int8", "--calib", str(calib), "-o", "out/m.onnx", "--no-cache"], root)
    outcome = judge_error(proc, "s.npy")
    if outcome.verdict == "ok" and "pickle" in proc.err.lower():
        return Outcome(proc.code, "unclear error", "a text file is called 'pickled'")
    return checked(outcome, root)


@case("user-errors", "--calib-samples 0")
def _(root: Path) -> Outcome:
    model = cnn(root)
    calib = calib_folder(root)
    proc = cli([str(model), "--int8", "--calib", str(calib), "--calib-samples", "0", "-o", "out/m.onnx",
                "--no-cache"], root)
    return checked(judge_error(proc, "calib-samples"), root)


@case("user-errors", "--calib-cache holds binary garbage")
def _(root: Path) -> Outcome:
    model = cnn(root)
    calib = calib_folder(root)
    cache = root / "ranges.json"
    cache.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    proc = cli([str(model), "--int8", "--calib", str(calib), "--calib-cache", str(cache), "-o", "out/m.onnx",
                "--no-cache"], root)
    outcome = judge_error(proc, "calib-cache")
    if outcome.verdict == "ok" and "pass '" in proc.err:
        return Outcome(proc.code, "unclear error", "blamed on a pass: " + first_error(proc))
    return checked(outcome, root)


@case("user-errors", "--calib-cache is a folder")
def _(root: Path) -> Outcome:
    model = cnn(root)
    calib = calib_folder(root)
    (root / "ranges").mkdir()
    proc = cli([str(model), "--int8", "--calib", str(calib), "--calib-cache", "ranges", "-o", "out/m.onnx",
                "--no-cache"], root)
    outcome = judge_error(proc, "calib-cache")
    if outcome.verdict == "ok" and "pass '" in proc.err:
        return Outcome(proc.code, "unclear error", "blamed on a pass: " + first_error(proc))
    return checked(outcome, root)


# Shapes (user-errors)


@case("user-errors", "--shape-range for a dimension that does not exist")
def _(root: Path) -> Outcome:
    model = cnn(root)
    return checked(judge_error(cli([str(model), "--shape-range", "nosuchdim=1:2:4", "-o", "out/m.onnx",
                                    "--no-cache"], root), "nosuchdim"), root)


@case("user-errors", "--input-shape on an ONNX model fixes the dims")
def _(root: Path) -> Outcome:
    model = cnn(root)
    proc = cli([str(model), "--input-shape", "image:4x3x32x32", "-o", "out/m.onnx", "--no-cache"], root)
    if proc.code != 0:
        return checked(judge_ok(proc), root)
    manifest = json.loads((root / "out" / "m.onnx.manifest.json").read_text())
    shape = manifest["inputs"][0]["shape"]
    if shape != [4, 3, 32, 32]:
        return checked(Outcome(0, "unclear error", f"ignored silently: artifact input is {shape}"), root)
    return checked(Outcome(0, "ok", "artifact input is 4x3x32x32"), root)


@case("user-errors", "--input-shape conflicting with a static dim")
def _(root: Path) -> Outcome:
    model = cnn(root)
    return checked(judge_error(cli([str(model), "--input-shape", "image:1x3x64x64", "-o", "out/m.onnx",
                                    "--no-cache"], root), "image"), root)


@case("user-errors", "config shape_ranges with min > max")
def _(root: Path) -> Outcome:
    cnn(root)
    (root / "infer.toml").write_text('targets = ["onnxruntime"]\n\n[[models]]\npath = "model.onnx"\n'
                                     'shape_ranges = { batch = [8, 4, 1] }\n')
    return checked(judge_error(cli(["build", "-c", "infer.toml", "--no-cache"], root), "shape_ranges"), root)


@case("user-errors", "config shape_ranges with 0 and negatives")
def _(root: Path) -> Outcome:
    cnn(root)
    (root / "infer.toml").write_text('targets = ["onnxruntime"]\n\n[[models]]\npath = "model.onnx"\n'
                                     'shape_ranges = { batch = [-1, 0, 4] }\n')
    return checked(judge_error(cli(["build", "-c", "infer.toml", "--no-cache"], root), "shape_ranges"), root)


@case("user-errors", "model declares a dimension of -5")
def _(root: Path) -> Outcome:
    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -5
    path = save(model, root / "neg.onnx")
    return checked(judge_error(cli([str(path), "-o", "out/m.onnx", "--no-cache"], root), "-5"), root)


# Models (conformance, safety)


@case("conformance", "opset 99")
def _(root: Path) -> Outcome:
    model = tiny_cnn()
    model.opset_import[0].version = 99
    path = save(model, root / "op99.onnx")
    return checked(judge_error(cli([str(path), "-o", "out/m.onnx", "--no-cache"], root), "opset"), root)


@case("conformance", "custom-domain op")
def _(root: Path) -> Outcome:
    nodes = [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [tensor("x", [1, 4])], [tensor("y", [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                              ir_version=8)
    path = save(model, root / "custom.onnx")
    return checked(judge_error(cli([str(path), "-o", "out/m.onnx", "--no-cache"], root), "frobnicate",
                               "com.example"), root)


@case("safety", "truncated ONNX model")
def _(root: Path) -> Outcome:
    model = cnn(root)
    model.write_bytes(model.read_bytes()[:300])
    return checked(judge_error(cli([str(model), "-o", "out/m.onnx", "--no-cache"], root), "model.onnx"), root)


@case("safety", "random bytes named .onnx")
def _(root: Path) -> Outcome:
    path = root / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return checked(judge_error(cli([str(path), "-o", "out/m.onnx", "--no-cache"], root), "noise.onnx"), root)


@case("safety", "malicious pickle as a model (.pt)")
def _(root: Path) -> Outcome:
    path = root / "model.pt"
    path.write_bytes(pickle.dumps(Pwn()))
    proc = cli([str(path), "-o", "out/m.onnx", "--no-cache"], root)
    if pwned(root):
        return Outcome(proc.code, "data loss", "the pickle was unpickled")
    return checked(judge_error(proc, "pickle", "model.pt"), root)


# Artifacts (user-errors, tensorrt)


def built(root: Path, target: str = "onnxruntime") -> Path:
    model = cnn(root)
    suffix = {"onnxruntime": ".onnx", "openvino": ".xml"}[target]
    out = root / "out" / f"m{suffix}"
    proc = cli([str(model), "--target", target, "-o", str(out), "--no-cache"], root)
    assert proc.code == 0, proc.err
    return out


@case("user-errors", "run -i: .npz with object arrays")
def _(root: Path) -> Outcome:
    artifact = built(root)
    np.savez(root / "x.npz", image=np.array([Pwn()], dtype=object))
    proc = cli(["run", str(artifact), "-i", "x.npz"], root)
    if pwned(root):
        return Outcome(proc.code, "data loss", "the pickle was unpickled")
    outcome = judge_error(proc, "x.npz")
    if outcome.verdict == "ok" and "pickle" not in proc.err.lower() and "object" not in proc.err.lower():
        outcome = Outcome(proc.code, "unclear error", first_error(proc))
    return checked(outcome, root)


@case("user-errors", "run -i: .npy with a pickled object")
def _(root: Path) -> Outcome:
    artifact = built(root)
    np.save(root / "x.npy", np.array([Pwn()], dtype=object), allow_pickle=True)
    proc = cli(["run", str(artifact), "-i", "x.npy"], root)
    if pwned(root):
        return Outcome(proc.code, "data loss", "the pickle was unpickled")
    return checked(judge_error(proc, "x.npy"), root)


@case("user-errors", "run -i: text file named .npy")
def _(root: Path) -> Outcome:
    artifact = built(root)
    (root / "x.npy").write_text("0.1 0.2 0.3\n")
    proc = cli(["run", str(artifact), "-i", "x.npy"], root)
    outcome = judge_error(proc, "x.npy")
    if outcome.verdict == "ok" and "pickle" in proc.err.lower():
        return Outcome(proc.code, "unclear error", "a text file is called 'pickled'")
    return checked(outcome, root)


@case("user-errors", "verify of two unrelated models")
def _(root: Path) -> Outcome:
    artifact = built(root)
    other = big_matmul(root, 16)
    proc = cli(["verify", str(other), str(artifact), "--samples", "2"], root)
    outcome = judge_error(proc, "input", "output")
    if outcome.verdict == "ok" and "match" not in proc.err.lower() and "differ" not in proc.err.lower():
        return Outcome(proc.code, "unclear error", first_error(proc))
    return checked(outcome, root)


@case("user-errors", "inspect: manifest is not JSON")
def _(root: Path) -> Outcome:
    artifact = built(root)
    Path(str(artifact) + ".manifest.json").write_text("{not json")
    return checked(judge_error(cli(["inspect", str(artifact)], root), "manifest"), root)


@case("user-errors", "inspect: manifest is a JSON list")
def _(root: Path) -> Outcome:
    artifact = built(root)
    Path(str(artifact) + ".manifest.json").write_text("[1, 2]")
    return checked(judge_error(cli(["inspect", str(artifact)], root), "manifest"), root)


@case("user-errors", "run: manifest with inputs edited to garbage")
def _(root: Path) -> Outcome:
    artifact = built(root, "openvino")
    path = Path(str(artifact) + ".manifest.json")
    body = json.loads(path.read_text())
    body["inputs"] = "garbage"
    path.write_text(json.dumps(body))
    return checked(judge_error(cli(["run", str(artifact)], root), "manifest"), root)


def bundle(root: Path) -> Path:
    model = cnn(root)
    proc = cli([str(model), "--target", "trt", "--defer", "-o", "out/m.engine", "--no-cache"], root)
    assert proc.code == 0, proc.err
    return root / "out" / "m.trtbundle"


def tampered(root: Path, edit: Callable[[dict], None], file: str = "settings.json", *mentions: str) -> Outcome:
    folder = bundle(root)
    path = folder / file
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    proc = cli(["finalize", str(folder)], root)
    if proc.code == 4:
        return checked(Outcome(4, "unclear error", "tampering not reported (TensorRT missing reported first)"),
                       root)
    return checked(judge_error(proc, *mentions), root)


@case("tensorrt", "bundle: timing_cache is an absolute path")
def _(root: Path) -> Outcome:
    return tampered(root, lambda s: s.update(timing_cache="/etc/passwd"), "settings.json", "timing", "settings")


@case("tensorrt", "bundle: timing_cache is ../ path")
def _(root: Path) -> Outcome:
    return tampered(root, lambda s: s.update(timing_cache="../../x.cache"), "settings.json", "timing", "settings")


@case("tensorrt", "bundle: opt_level 99")
def _(root: Path) -> Outcome:
    return tampered(root, lambda s: s.update(opt_level=99), "settings.json", "opt", "settings")


@case("tensorrt", "bundle: workspace_mib 1e15")
def _(root: Path) -> Outcome:
    return tampered(root, lambda s: s.update(workspace_mib=1e15), "settings.json", "workspace", "settings")


@case("tensorrt", "bundle: precision int3")
def _(root: Path) -> Outcome:
    return tampered(root, lambda s: s.update(precision="int3"), "settings.json", "precision", "settings")


@case("tensorrt", "bundle: version 'abc'")
def _(root: Path) -> Outcome:
    return tampered(root, lambda m: m.update(version="abc"), "manifest.json", "version", "bundle")


# The Python API's runners (user-errors)


def api_call(root: Path, target: str, call: str) -> Outcome:
    artifact = built(root, target)
    code = ("import numpy as np, infer_compile\n"
            "from infer_compile.core.errors import InferCompileError\n"
            f"r = infer_compile.load({str(artifact)!r})\n"
            "x = np.zeros((1, 3, 32, 32), np.float32)\n"
            "try:\n"
            f"    {call}\n"
            "    print('ACCEPTED')\n"
            "except InferCompileError as e:\n"
            "    print('USER ERROR:', e)\n")
    proc = python(code, root)
    if "USER ERROR" in proc.out:
        return Outcome(0, "ok", proc.out.strip()[:150])
    if "ACCEPTED" in proc.out:
        return Outcome(0, "unclear error", "accepted silently")
    lines = proc.err.strip().splitlines()
    return Outcome(proc.code, "unclear error", (lines[-1] if lines else "")[:150])


for _target in ("onnxruntime", "openvino"):
    case("user-errors", f"API {_target}: misspelt input name")(
        lambda root, t=_target: api_call(root, t, "r.run({'imgae': x})"))
    case("user-errors", f"API {_target}: float64 input")(
        lambda root, t=_target: api_call(root, t, "r.run({'image': x.astype(np.float64)})"))
    case("user-errors", f"API {_target}: wrong static dim")(
        lambda root, t=_target: api_call(root, t, "r.run({'image': np.zeros((1, 3, 31, 32), np.float32)})"))


# --- driver ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--large", action="store_true", help="also the cases with > 1 GiB models")
    args = parser.parse_args()
    rows = []
    for owner, name, fn, large in CASES:
        if (args.only and args.only not in name) or (large and not args.large):
            continue
        root = Path(tempfile.mkdtemp(prefix="reliability-"))
        start = time.perf_counter()
        try:
            outcome = fn(root)
        except Exception as exc:  # a broken case setup is reported, not fatal
            outcome = Outcome("-", "unclear error", f"probe setup failed: {type(exc).__name__}: {exc}"[:150])
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        rows.append((owner, name, outcome))
        print(f"{name:<58} {outcome.code!s:>5} {outcome.verdict:<15} {time.perf_counter() - start:5.1f}s "
              f"{outcome.note}", flush=True)
    print()
    print(f"| {'case':<58} | owner       | exit | verdict        | note")
    print(f"|{'-' * 60}|-------------|------|----------------|------")
    for owner, name, outcome in rows:
        print(f"| {name:<58} | {owner:<11} | {outcome.code!s:>4} | {outcome.verdict:<14} | {outcome.note}")
    totals = {verdict: sum(o.verdict == verdict for _, _, o in rows) for verdict in VERDICTS}
    print()
    print("cases " + str(len(rows)) + ", " + ", ".join(f"{v} {n}" for v, n in totals.items()))


if __name__ == "__main__":
    main()

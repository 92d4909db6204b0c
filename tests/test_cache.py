"""The content-addressed build cache: hits, misses on any input change, damaged entries, concurrent writers."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import multiprocessing
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from infer_compile.app.build import BuildOptions, compile_model, resolve_target, tool_versions
from infer_compile.app.cache import BuildCache, code_files, default_cache_dir, external_locations, source_files
from infer_compile.calibration import CalibrationSettings
from infer_compile.core.errors import BuildWarning
from infer_compile.core.manifest import read_manifest
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, within
from infer_compile.frontends import SourceOptions
from infer_compile.targets import load_artifact
from tests.artifact_helpers import invoke, write_tiny_cnn
from tests.builders import tiny_cnn
from tests.hidden_imports import cli_imports, top_level


def build(model: Path, output: Path, cache: Path | str, **options):
    return compile_model(model, BuildOptions(target="onnxruntime", output=output, cache_dir=cache, **options))


def entries(cache: Path) -> list[Path]:
    return sorted((cache / "entries").iterdir()) if (cache / "entries").exists() else []


def test_second_build_is_a_hit_with_identical_files(tmp_path: Path) -> None:
    source, cache = write_tiny_cnn(tmp_path / "m.onnx"), tmp_path / "cache"
    first = build(source, tmp_path / "a" / "m.onnx", cache)
    assert first.cache == "miss (stored)" and len(entries(cache)) == 1
    second = build(source, tmp_path / "b" / "m.onnx", cache)
    assert second.cache == "hit" and second.source is None
    assert second.artifact.read_bytes() == first.artifact.read_bytes()
    assert second.manifest == first.manifest
    assert [r.name for r in second.records] == [r.name for r in first.records]
    assert any(r.misses for r in first.records)  # tiny_cnn's Convs follow no Pad: pad-folding says so
    assert [r.misses for r in second.records] == [r.misses for r in first.records]
    assert (second.nodes_before, second.nodes_after) == (first.nodes_before, first.nodes_after)
    # the cached artifact runs and computes what the fresh one does
    feeds = random_inputs(load_artifact(first.artifact).inputs, seed=1)
    fresh, cached = load_artifact(first.artifact).run(feeds), load_artifact(second.artifact).run(feeds)
    assert within(compare_outputs(fresh, cached), TOLERANCES["fp32"])


@pytest.mark.parametrize("change", ["model bytes", "precision", "skip_passes", "target_options", "input_shapes",
                                    "artifact name", "external data"])
def test_any_input_change_is_a_miss(tmp_path: Path, change: str) -> None:
    source, cache = tmp_path / "m.onnx", tmp_path / "cache"
    onnx.save_model(tiny_cnn(), str(source), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    output = tmp_path / "out" / "m.onnx"
    build(source, output, cache)
    options: dict = {}
    if change == "model bytes":
        onnx.save_model(tiny_cnn(seed=1), str(source))
    elif change == "external data":
        data = bytearray((tmp_path / "m.onnx.data").read_bytes())
        data[4] ^= 0xFF
        (tmp_path / "m.onnx.data").write_bytes(bytes(data))
    elif change == "artifact name":
        output = output.with_name("renamed.onnx")
    else:
        options = {"precision": {"precision": "fp16"}, "skip_passes": {"skip_passes": ["constant-folding"]},
                   "target_options": {"target_options": {"session_options": {"intra_op_num_threads": 1}}},
                   "input_shapes": {"source": SourceOptions(input_shapes={"image": (1, 3, 32, 32)})},
                   }[change]
    again = build(source, output, cache, **options)
    assert again.cache.startswith("miss"), change
    assert len(entries(cache)) == 2


def test_key_covers_calibration_data_tool_versions_and_hardware(tmp_path: Path) -> None:
    source = write_tiny_cnn(tmp_path / "m.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "0.npy", np.zeros((1, 3, 32, 32), np.float32))
    cache, (target, _) = BuildCache(tmp_path / "cache"), resolve_target("onnxruntime")
    options = BuildOptions(target="onnxruntime", precision="int8", calibration=CalibrationSettings(source=calib))

    def key(tools: dict | None = None) -> str:
        return cache.key(source, options, target, Path("m.onnx"), tools or tool_versions())

    before = key()
    assert key() == before  # deterministic
    np.save(calib / "0.npy", np.ones((1, 3, 32, 32), np.float32))
    after_data = key()
    assert after_data != before
    assert key({**tool_versions(), "onnxruntime": "0.0.0"}) != after_data

    class OtherGpu(type(target)):
        def hardware_identity(self) -> dict[str, str]:
            return {"gpu": "some other GPU"}

    assert cache.key(source, options, OtherGpu(), Path("m.onnx"), tool_versions()) != after_data


def test_key_covers_the_cpu_for_tuned_and_openvino_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache shared by runners of different CPUs: an autotuned artifact (timings) or an OpenVINO one (its precision
    follows the CPU's bf16/fp16 support) is keyed by the CPU; an untuned ONNX Runtime one is the same anywhere."""
    from infer_compile.app import cache as cache_module
    from infer_compile.targets import base, openvino

    source, cache = write_tiny_cnn(tmp_path / "m.onnx"), BuildCache(tmp_path / "cache")
    assert base.cpu_identity()["cpus"] == str(base.usable_cpus()) and base.cpu_identity()["cpu"]

    def keys(target_name: str, tune_time: float) -> set[str]:
        target, options = resolve_target(target_name)[0], BuildOptions(target=target_name, tune_time=tune_time)
        found = set()
        for cpu in ({"cpu": "a", "cpus": "2", "cpu_features": "avx2"},
                    {"cpu": "b", "cpus": "2", "cpu_features": "avx2,avx512_bf16,amx_bf16"}):
            for module in (base, openvino, cache_module):  # where it is imported
                monkeypatch.setattr(module, "cpu_identity", lambda cpu=cpu: cpu)
            found.add(cache.key(source, options, target, Path("m.onnx"), tool_versions()))
        return found

    assert len(keys("onnxruntime", 0)) == 1
    assert len(keys("onnxruntime", 5)) == 2
    assert len(keys("openvino", 0)) == 2


def test_damaged_entry_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    source, cache = write_tiny_cnn(tmp_path / "m.onnx"), tmp_path / "cache"
    build(source, tmp_path / "a" / "m.onnx", cache)
    (entry,) = entries(cache)
    (entry / "m.onnx").unlink()  # e.g. a partial manual clean-up
    with pytest.warns(BuildWarning, match="discarded, rebuilding"):
        again = build(source, tmp_path / "b" / "m.onnx", cache)
    assert again.cache.startswith("miss") and again.source is not None
    assert not list((tmp_path / "b").glob(".*partial*"))


def test_unwritable_cache_does_not_fail_the_build(tmp_path: Path) -> None:
    source = write_tiny_cnn(tmp_path / "m.onnx")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    result = build(source, tmp_path / "out" / "m.onnx", blocker)
    assert result.cache.startswith("miss (not stored:") and result.artifact.is_file()


def _build_in_process(source: str, output: str, cache: str, barrier) -> str:
    barrier.wait()  # both processes start building the same key at the same moment
    return build(Path(source), Path(output), Path(cache)).cache


def test_two_concurrent_builds_of_one_key_leave_one_complete_entry(tmp_path: Path) -> None:
    source, cache = write_tiny_cnn(tmp_path / "m.onnx"), tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")  # fork after onnxruntime ran in this process can deadlock
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            jobs = [pool.apply_async(_build_in_process, (str(source), str(tmp_path / d / "m.onnx"), str(cache),
                                                          barrier)) for d in ("a", "b")]
            statuses = sorted(job.get(timeout=60) for job in jobs)
    assert all(s.startswith("miss") or s == "hit" for s in statuses), statuses
    (entry,) = entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "m.onnx", "m.onnx.manifest.json"]
    assert not list((cache / "tmp").iterdir())  # the loser's copy was dropped
    a, b = (tmp_path / d / "m.onnx" for d in ("a", "b"))
    assert a.read_bytes() == b.read_bytes() == (entry / "m.onnx").read_bytes()
    assert build(source, tmp_path / "c" / "m.onnx", cache).cache == "hit"


def test_cli_cache_options_and_default_location(tmp_path: Path, build_cache: Path) -> None:
    source = write_tiny_cnn(tmp_path / "m.onnx")
    assert default_cache_dir() == build_cache  # tests never touch ~/.cache
    out = tmp_path / "out" / "m.onnx"
    first = invoke(source, "-t", "onnxruntime", "--no-tune", "-o", out)
    assert first.exit_code == 0, first.output
    assert "miss (stored)" in first.stdout and len(entries(build_cache)) == 1
    hit = invoke(source, "-t", "onnxruntime", "--no-tune", "-o", out)
    assert "hit" in hit.stdout
    off = invoke(source, "-t", "onnxruntime", "--no-tune", "-o", out, "--no-cache")
    assert off.exit_code == 0 and "cache       off" in off.stdout
    elsewhere = tmp_path / "shared-cache"
    invoke(source, "-t", "onnxruntime", "--no-tune", "-o", out, "--cache-dir", elsewhere)
    assert len(entries(elsewhere)) == 1


@pytest.mark.parametrize("target", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed"))])
def test_a_cache_hit_imports_no_runtime_framework_or_build_machinery(tmp_path: Path, target: str) -> None:
    """A hit copies the stored artifact: loading a runtime, a framework, numpy, onnx, graphsurgeon or the passes
    would only slow it down (start-up, bench/startup.py); the target's availability check (importing its runtime)
    runs on a miss."""
    suffix = ".xml" if target == "openvino" else ".onnx"
    source, out = write_tiny_cnn(tmp_path / "m.onnx"), tmp_path / "out" / f"m{suffix}"
    args = [source, "-t", target, "--no-tune", "-o", out]
    assert invoke(*args).exit_code == 0
    done, imported = cli_imports(args)
    assert done.returncode == 0 and "cache       hit" in done.stdout, done.stderr
    heavy = {"onnxruntime", "torch", "tensorflow", "openvino", "transformers", "tf2onnx", "onnx2tf", "nncf", "numpy",
             "onnx", "onnx_graphsurgeon"}
    assert not top_level(imported) & heavy, sorted(top_level(imported) & heavy)
    machinery = {"infer_compile.app.build_steps", "infer_compile.passes.pipeline", "infer_compile.frontends.onnx"}
    assert not imported & machinery, sorted(imported & machinery)


def test_external_weight_files_are_read_from_the_onnx_file_as_onnx_reads_them(tmp_path: Path) -> None:
    """The key hashes the weight files an ONNX model points at, found in its protobuf without importing onnx."""
    source = tmp_path / "m.onnx"
    onnx.save_model(tiny_cnn(), str(source), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)
    proto = onnx.load_model(str(source), load_external_data=False)
    expected = {entry.value for tensor in proto.graph.initializer for entry in tensor.external_data
                if entry.key == "location"}
    assert len(expected) > 1 and external_locations(source) == expected
    assert source_files(source) == [source, *(tmp_path / name for name in sorted(expected))]
    for name, content in (("garbage.onnx", b"\xff" * 11), ("empty.onnx", b""), ("text.onnx", b"not a model")):
        (tmp_path / name).write_bytes(content)
        assert source_files(tmp_path / name) == [tmp_path / name]  # the frontend says what is wrong


def _first_entry(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A model, its cache with one stored entry, and that entry."""
    source, cache = write_tiny_cnn(tmp_path / "m.onnx"), tmp_path / "cache"
    assert build(source, tmp_path / "a" / "m.onnx", cache).cache == "miss (stored)"
    (entry,) = entries(cache)
    return source, cache, entry


@pytest.mark.parametrize("damage", ["truncated artifact", "edited manifest"])
def test_tampered_entry_is_discarded_with_a_warning_and_rebuilt(tmp_path: Path, damage: str) -> None:
    source, cache, entry = _first_entry(tmp_path)
    fresh = (tmp_path / "a" / "m.onnx").read_bytes()
    if damage == "truncated artifact":
        (entry / "m.onnx").write_bytes(fresh[: len(fresh) // 2])
    else:
        manifest = entry / "m.onnx.manifest.json"
        manifest.write_text(manifest.read_text().replace('"onnxruntime"', '"openvino"'))
    with pytest.warns(BuildWarning, match="does not match its recorded sha256"):
        again = build(source, tmp_path / "b" / "m.onnx", cache)
    assert again.cache == "miss (stored)" and again.source is not None  # rebuilt, and stored afresh
    assert (tmp_path / "b" / "m.onnx").read_bytes() == fresh
    assert read_manifest(tmp_path / "b" / "m.onnx").target == "onnxruntime"
    assert build(source, tmp_path / "c" / "m.onnx", cache).cache == "hit"
    assert not list((cache / "tmp").iterdir())


@pytest.mark.parametrize("name", ["../../outside.onnx", "/etc/hostname", "sub/m.onnx", "..", "entry.json"])
def test_entry_naming_files_outside_itself_is_never_followed(tmp_path: Path, name: str) -> None:
    source, cache, entry = _first_entry(tmp_path)
    outside = tmp_path / "outside.onnx"  # what ../../outside.onnx from entries/<key>/ reaches
    outside.write_bytes(b"a file outside the cache")
    meta = json.loads((entry / "entry.json").read_text())
    meta["files"].append(name)
    meta["sha256"][name] = hashlib.sha256(b"a file outside the cache").hexdigest()
    (entry / "entry.json").write_text(json.dumps(meta))
    with pytest.warns(BuildWarning, match="names a file outside the entry"):
        again = build(source, tmp_path / "b" / "out" / "m.onnx", cache)
    assert again.source is not None
    assert sorted(p.name for p in (tmp_path / "b" / "out").iterdir()) == ["m.onnx", "m.onnx.manifest.json"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["out"]  # nothing written beside the output
    assert outside.read_bytes() == b"a file outside the cache"


def test_entry_with_a_symlinked_file_is_discarded(tmp_path: Path) -> None:
    source, cache, entry = _first_entry(tmp_path)
    secret = tmp_path / "secret.onnx"
    secret.write_bytes((entry / "m.onnx").read_bytes())  # even with the right digest
    (entry / "m.onnx").unlink()
    (entry / "m.onnx").symlink_to(secret)
    with pytest.warns(BuildWarning, match="symbolic link"):
        assert build(source, tmp_path / "b" / "m.onnx", cache).source is not None


def test_code_digest_covers_the_checkout(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    expected = {p.resolve() for folder in ("compiler", "passes", "targets", "calibration")
                for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts}
    assert set(code_files()) == expected and len(expected) > 50


@pytest.mark.slow
def test_code_digest_covers_a_wheel_install(tmp_path: Path) -> None:
    """In a wheel the folders are renamed to the package layout; the digest must still see every file."""
    root, source = Path(__file__).resolve().parent.parent, tmp_path / "source"  # a copy: setuptools builds in place
    for folder in ("compiler", "passes", "targets", "calibration"):
        shutil.copytree(root / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("infer_compile-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(n for n in archive.namelist() if n.endswith(".py"))
    probe = ("import sys, json; sys.path.insert(0, sys.argv[1]); import infer_compile.app.cache as c; "
             "print(json.dumps([c.__file__, [str(p) for p in c.code_files()], c.code_digest()]))")

    def digest_in_wheel() -> tuple[str, list[str], str]:
        out = subprocess.run([sys.executable, "-c", probe, str(site)], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    module, files, digest = digest_in_wheel()
    assert Path(module).is_relative_to(site)  # the wheel's copy, not this checkout
    assert sorted(Path(f).relative_to(site).as_posix() for f in files) == shipped and len(shipped) > 50
    with (site / "infer_compile" / "passes" / "constant_folding.py").open("a") as fh:
        fh.write("\n# an upgrade changed this pass\n")
    assert digest_in_wheel()[2] != digest


def test_an_object_store_cache_hits_checks_what_it_delivers_and_rebuilds_a_damaged_entry(tmp_path: Path) -> None:
    """The object store layout through fsspec (its file:// store): files by sha256, the entry written last."""
    source, store = write_tiny_cnn(tmp_path / "m.onnx"), (tmp_path / "store").as_uri()
    first = build(source, tmp_path / "a" / "m.onnx", store)
    assert first.cache == "miss (stored)"
    assert build(source, tmp_path / "b" / "m.onnx", store).cache == "hit"
    assert (tmp_path / "a" / "m.onnx").read_bytes() == (tmp_path / "b" / "m.onnx").read_bytes()
    (entry,) = (tmp_path / "store" / "entries").iterdir()
    digest = json.loads(entry.read_text())["sha256"]["m.onnx"]
    (tmp_path / "store" / "objects" / digest).write_bytes(b"truncated")
    with pytest.warns(BuildWarning, match="does not match its recorded sha256"):
        rebuilt = build(source, tmp_path / "c" / "m.onnx", store)
    assert rebuilt.cache.startswith("miss") and (tmp_path / "c" / "m.onnx").read_bytes() == first.artifact.read_bytes()

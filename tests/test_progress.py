"""Progress of long steps (calibration samples, target stages) and third-party output kept out of the terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infer_compile.core.progress import LOG_HEADER, counted, reporting, stage, terminal, third_party_output
from tests.artifact_helpers import invoke, write_tiny_cnn


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def stage(self, text: str) -> None:
        self.events.append(("stage", text))

    def advance(self, label: str, done: int, total: int | None) -> None:
        self.events.append((label, done, total))


def test_counted_work_reports_every_unit_and_nothing_without_a_listener() -> None:
    batches = [[1, 2], [3], [4, 5, 6]]
    assert list(counted(batches, "samples", 6, len)) == batches  # no reporter: the items, untouched
    recorder = Recorder()
    with reporting(recorder):
        assert list(counted(batches, "samples", 6, len)) == batches
        stage("tflite: onnx2tf conversion")
    assert recorder.events == [("samples", 0, 6), ("samples", 2, 6), ("samples", 3, 6), ("samples", 6, 6),
                               ("stage", "tflite: onnx2tf conversion")]


def test_third_party_output_goes_to_the_log_not_the_terminal(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "m.onnx.log"
    library = logging.getLogger("a_library")
    library.setLevel(logging.WARNING)  # not the root's level: a library run by an earlier test may have raised it
    disabled = logging.root.manager.disable  # or silenced logging
    logging.disable(logging.NOTSET)
    with third_party_output(log):
        os.write(2, b"I0000 tensorflow/core: a C++ log line\n")  # as native libraries write: to the descriptor
        os.write(1, b"onnx2tf: a converter's print\n")
        # A library imported during the build makes its logging handler then (torch, transformers, absl do).
        library.addHandler(logging.StreamHandler())
        library.warning("a library's logging record")
        print("our own progress", file=terminal())  # the CLI's error console writes here
    out, err = capfd.readouterr()
    assert "our own progress" in err
    assert not any(noise in out + err for noise in ("C++ log line", "converter's print", "logging record"))
    text = log.read_text()
    assert text.startswith(LOG_HEADER)
    assert all(noise in text for noise in ("a C++ log line", "a converter's print", "a library's logging record")), text
    library.warning("after the build")  # the handler made during it still works: it writes to stderr now
    assert "after the build" in capfd.readouterr().err and "after the build" not in log.read_text()
    library.handlers.clear()
    logging.disable(disabled)
    with third_party_output(tmp_path / "quiet.log"):
        pass
    assert not (tmp_path / "quiet.log").exists()  # nothing printed: no log


def test_a_log_path_holding_a_file_we_did_not_write_is_left_alone(tmp_path: Path) -> None:
    theirs = tmp_path / "m.onnx.log"
    theirs.write_text("the user's notes\n")
    with third_party_output(theirs):
        os.write(2, b"noise\n")
    assert theirs.read_text() == "the user's notes\n"


def test_a_build_in_a_log_names_its_slow_stages_and_counts_calibration_samples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (CI): no progress bars; a plain line per stage or counted work that took long enough
    (here: any), when it ends; a quick build prints none."""
    from infer_compile.app.cli import PlainProgress

    source = write_tiny_cnn(tmp_path / "m.onnx")
    args = [source, "-t", "onnxruntime", "--int8", "--calib", "synthetic", "--calib-samples", "20", "--no-cache",
            "--no-tune"]
    quick = invoke(*args, "-o", tmp_path / "quick.onnx")
    assert quick.exit_code == 0, quick.output
    assert [line for line in quick.stderr.splitlines() if not line.startswith("warning:")] == []
    monkeypatch.setattr(PlainProgress, "min_seconds", 0.0)
    result = invoke(*args, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    lines = [line.rpartition(" (")[0] for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert lines == ["calibration (minmax): 16 sample(s)", "onnxruntime: writing the artifact",
                     "onnxruntime: final check (the artifact in its runtime vs the source)"], result.stderr


def test_a_long_calibration_in_a_log_prints_its_count_and_the_time_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal: counted work that keeps going prints "N/T sample(s) in S s, about L s left" lines."""
    from infer_compile.app.cli import PlainProgress

    monkeypatch.setattr(PlainProgress, "every_seconds", 0.0)
    source = write_tiny_cnn(tmp_path / "m.onnx")
    result = invoke(source, "-t", "onnxruntime", "--int8", "--calib", "synthetic", "--calib-samples", "10",
                    "--no-cache", "--no-tune", "-o", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("calibration (minmax): ")]
    assert [line.partition(" sample(s)")[0] for line in lines] == [f"calibration (minmax): {n}/8" for n in range(1, 8)]
    assert all(line.endswith(" s left") for line in lines), lines


def test_verbose_shows_third_party_output_live(tmp_path: Path) -> None:
    """A native library's output during the source's loading (here: a --from-python module writing to the
    descriptor) lands in ARTIFACT.log, or on the terminal with --verbose."""
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(
        "import logging, os, warnings\nimport torch\n\ndef build():\n    os.write(2, b'NATIVE-NOISE\\n')\n"
        "    logging.getLogger('some.library').warning('LOGGED-NOISE')\n"
        "    warnings.warn('WARNED-NOISE', UserWarning, stacklevel=1)\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), (torch.randn(2, 4),)\n")
    args = ["-m", "infer_compile.app.cli", "--from-python", "net.py:build", "-t", "onnxruntime", "--no-cache",
            "--no-tune"]
    quiet = subprocess.run([sys.executable, *args, "-o", "quiet.onnx"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    log = (tmp_path / "quiet.onnx.log").read_text()
    for noise in ("NATIVE-NOISE", "LOGGED-NOISE", "WARNED-NOISE"):
        assert noise not in quiet.stderr and noise in log, quiet.stderr
    loud = subprocess.run([sys.executable, *args, "-o", "loud.onnx", "--verbose"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert all(noise in loud.stderr for noise in ("NATIVE-NOISE", "LOGGED-NOISE", "WARNED-NOISE"))
    assert not (tmp_path / "loud.onnx.log").exists()

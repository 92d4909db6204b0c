"""Options are declared once by their owners; every way in (CLI, config file, API) is made from or checked
against those declarations, and a misspelt option fails at once naming the closest valid one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import infer_compile
from infer_compile.app.build import BuildOptions, compile_model, options_from
from infer_compile.app.settings import declared, groups
from infer_compile.core.errors import ExitCode, UserInputError
from infer_compile.core.manifest import read_manifest
from infer_compile.core.options import Option, name_list
from infer_compile.passes import pass_options
from infer_compile.passes.options import PASS_OPTIONS
from tests.artifact_helpers import assert_user_error, invoke
from tests.builders import make_model, tensor


def test_keys_are_unique_across_every_owner() -> None:
    keys = [option.key for group in groups() for option in group.options]
    assert len(keys) == len(set(keys)) == len(declared())


def test_every_pass_option_is_declared_in_the_light_options_module() -> None:
    """The CLI collects the passes' options from passes/options.py without importing the passes: a pass must
    declare its options there (in pipeline order, as `--help` lists them)."""
    assert tuple(pass_options().values()) == PASS_OPTIONS


def test_every_declared_command_line_option_is_a_compile_flag() -> None:
    result = invoke("compile", "--help")
    assert result.exit_code == 0
    for option, group in declared().values():
        assert (option.cli_flag in result.stdout) == option.cli, option.key
        assert group.title in result.stdout or not option.cli


@pytest.mark.parametrize(("call", "message"), [
    ({"pass_options": {"fold_size_limt": 1}}, "unknown pass option 'fold_size_limt'; did you mean 'fold_size_limit'?"),
    ({"fold_size_limt": 1}, "unknown option 'fold_size_limt'; did you mean 'fold_size_limit'?"),
    ({"target_options": {"sesion_options": {}}},
     "unknown 'onnxruntime' target setting 'sesion_options'; did you mean 'session_options'?"),
    ({"opt_level": 3}, "--trt-opt-level is a setting of target 'trt', not of 'onnxruntime'"),
    ({"fold_size_limit": "big"}, "fold_size_limit: expected int, got str 'big'"),
    ({"fold_size_limit": -1}, "fold_size_limit: -1 is below the minimum 0"),
    ({"calib_method": "entropy"}, "calib_method needs calib"),
    ({"keep_io_types": True}, "--keep-io-types only applies to --fp16 builds"),
    ({"pass_options": {"accuracy_budget": "cosine>=0.99"}}, "--accuracy-budget needs --calib"),
])
def test_api_refuses_a_misspelt_or_misplaced_option(tiny_cnn_onnx: Path, tmp_path: Path, call: dict,
                                                   message: str) -> None:
    with pytest.raises(UserInputError) as info:
        infer_compile.compile(tiny_cnn_onnx, "onnxruntime", output=tmp_path / "m.onnx", cache=False, **call)
    assert message in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_an_option_of_a_skipped_pass_does_not_apply(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    options = BuildOptions(target="onnxruntime", output=tmp_path / "m.onnx", pass_options={"fold_size_limit": 8},
                           skip_passes=["constant-folding"])
    with pytest.raises(UserInputError, match=r"--fold-size-limit does not apply: .* does not run constant-folding"):
        compile_model(tiny_cnn_onnx, options)


def _foldable(path: Path) -> Path:
    """A model whose one fold (Expand of a constant, 256 KiB) only a limit of 0 MiB prevents."""
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])]
    onnx.save(make_model(nodes, [tensor("x", [256, 256])], [tensor("y", [256, 256])],
                         {"one": np.array([1.0], np.float32), "shape": np.array([256, 256], np.int64)}), path)
    return path


def test_a_declared_option_reaches_its_pass_from_every_entry(tmp_path: Path) -> None:
    model = _foldable(tmp_path / "expand.onnx")
    default = infer_compile.compile(model, "onnxruntime", output=tmp_path / "default.onnx", cache=False, tune_time=0.0)
    assert "constant-folding" in default.manifest["passes"]
    api = infer_compile.compile(model, "onnxruntime", output=tmp_path / "api.onnx", cache=False, tune_time=0.0,
                                fold_size_limit=0)
    cli = invoke(model, "-t", "onnxruntime", "-o", tmp_path / "cli.onnx", "--no-cache", "--no-tune",
                 "--fold-size-limit", "0")
    assert cli.exit_code == 0, cli.stderr
    (tmp_path / "infer.toml").write_text('targets = ["onnxruntime"]\nfold_size_limit = 0\n[[models]]\n'
                                         'path = "expand.onnx"\nname = "cfg"\n')
    built = invoke("build", "-c", tmp_path / "infer.toml", "--no-cache", "-j", "1")
    assert built.exit_code == 0, built.stderr
    for artifact in (api.path, tmp_path / "cli.onnx", tmp_path / "build" / "cfg.onnxruntime.fp32.onnx"):
        manifest = read_manifest(artifact)
        assert manifest is not None and "constant-folding" not in manifest.build.passes, artifact


def test_config_file_misspelling_names_the_line_and_the_closest_key(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "infer.toml").write_text(f'[[models]]\npath = "{tiny_cnn_onnx}"\nfold_size_limt = 1\n')
    result = invoke("build", "-c", tmp_path / "infer.toml", "--no-cache")
    assert_user_error(result, "infer.toml:3: models[0].fold_size_limt: unknown key; did you mean 'fold_size_limit'?")


def test_cli_misspelt_flag_names_the_closest(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    result = invoke(tiny_cnn_onnx, "-o", tmp_path / "m.onnx", "--fold-size-limt", "1")
    assert result.exit_code == ExitCode.USAGE and "--fold-size-limit" in result.output


@pytest.mark.parametrize(("raw", "expected"), [("a,b", ["a", "b"]), (["a, b", "c"], ["a", "b", "c"]), ([], [])])
def test_name_lists_take_repeated_flags_and_comma_lists(raw: object, expected: list[str]) -> None:
    assert Option("names", list, [], "names", parse=name_list).value(raw, "names") == expected


def test_values_are_checked_by_kind_choice_and_minimum() -> None:
    mode = Option("mode", str, "a", "a or b", choices=("a", "b"))
    assert mode.value("b", "mode") == "b"
    with pytest.raises(UserInputError, match="mode: 'c' is not one of a, b"):
        mode.value("c", "mode")
    with pytest.raises(UserInputError, match="expected bool, got int 1"):
        Option("flag", bool, False, "a flag").value(1, "flag")
    assert Option("ratio", float, 0.5, "a ratio").value(1, "ratio") == 1.0


def test_every_option_has_one_name_and_default_on_every_surface() -> None:
    """CLI flag, config key and API keyword come from each declaration: same key, same default."""
    import inspect

    from infer_compile.app.build_config import config_keys
    from infer_compile.app.cli import declared_click_command

    cli_params = {param.name: param for param in declared_click_command("compile").params}
    api = inspect.signature(infer_compile.compile).parameters
    for key, (option, _) in declared().items():
        if option.cli:
            assert option.cli_flag in cli_params[key].opts, key
            assert cli_params[key].default is None, key  # not given: the declaration's default (options_from)
        else:
            assert key not in cli_params, key
        assert (key in config_keys()) == option.config, key
        if key in api:  # target, precision, output: positional in the API, default from the declaration
            assert api[key].default == option.default, key
    # Not given anywhere, every surface builds what BuildOptions' own defaults say (the declarations').
    assert options_from({})[0] == BuildOptions(cache_dir=options_from({})[0].cache_dir)


def _npy_folder(folder: Path, shape: tuple[int, ...], count: int = 10) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(folder / f"{i}.npy", rng.normal(size=shape).astype(np.float32))
    return folder


def test_cli_config_and_api_build_the_same_artifact_with_their_defaults(
        tiny_cnn_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No options given: all three autotune (the declared default, here shortened by $INFER_COMPILE_TUNE_TIME),
    run the final check and the same passes."""
    monkeypatch.setenv("INFER_COMPILE_TUNE_TIME", "0.3s")
    api = infer_compile.compile(tiny_cnn_onnx, "onnxruntime", output=tmp_path / "api.onnx", cache=False)
    cli = invoke(tiny_cnn_onnx, "-t", "onnxruntime", "-o", tmp_path / "cli.onnx", "--no-cache")
    assert cli.exit_code == 0, cli.stderr
    (tmp_path / "infer.toml").write_text(f'targets = ["onnxruntime"]\n[[models]]\npath = "{tiny_cnn_onnx}"\n'
                                         'name = "cfg"\n')
    built = invoke("build", "-c", tmp_path / "infer.toml", "--no-cache", "-j", "1")
    assert built.exit_code == 0, built.stderr
    manifests = [read_manifest(path) for path in (api.path, tmp_path / "cli.onnx",
                                                  tmp_path / "build" / "cfg.onnxruntime.fp32.onnx")]
    for manifest in manifests:
        assert manifest is not None and manifest.autotune is not None and manifest.final_check is not None
        assert manifest.autotune["tune_time_s"] == 0.3 >= manifest.autotune["budget_s"]
    assert len({tuple(m.build.passes) for m in manifests if m is not None}) == 1


def test_config_builds_int8_with_a_calib_key_and_tune_time(tiny_cnn_onnx: Path, tmp_path: Path) -> None:
    _npy_folder(tmp_path / "calib", (1, 3, 32, 32), count=16)
    (tmp_path / "infer.toml").write_text(
        f'targets = ["onnxruntime"]\nprecisions = ["int8"]\ncalib = "calib"\ntune_time = "0"\n'
        f'[[models]]\npath = "{tiny_cnn_onnx}"\nname = "q"\ninput_shapes = {{ image = [1, 3, 32, 32] }}\n')
    built = invoke("build", "-c", tmp_path / "infer.toml", "--no-cache", "-j", "1")
    assert built.exit_code == 0, built.stderr
    manifest = read_manifest(tmp_path / "build" / "q.onnxruntime.int8.onnx")
    assert manifest is not None and manifest.autotune is None
    assert manifest.quantization is not None and manifest.quantization["samples"] == 16


def test_config_builds_from_python(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "net.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval(), (torch.randn(2, 4),)\n")
    (tmp_path / "infer.toml").write_text('targets = ["onnxruntime"]\ntune_time = 0\n[[models]]\n'
                                         'python_entry = "net.py:build"\n')
    built = invoke("build", "-c", tmp_path / "infer.toml", "--no-cache", "-j", "1")
    assert built.exit_code == 0, built.stderr
    assert read_manifest(tmp_path / "build" / "net.onnxruntime.fp32.onnx") is not None

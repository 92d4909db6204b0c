"""Tiny Hugging Face architectures built from transformers configs (random weights, no downloads), as
`--from-python` entry points returning (module, example_inputs), with calibration samples from the same
distribution as the examples (`--calib tests.hf_tiny:calib_NAME`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

IMAGE = (1, 3, 32, 32)
SEQ, VOCAB = 16, 128


class Image(nn.Module):
    """An image model called as transformers models are (keyword arguments), returning its logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class Tokens(Image):
    """An encoder over token ids and their mask, returning the token embeddings."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Decoder(Image):
    """A causal language model without cache, returning the next-token logits at every position."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model(input_ids=input_ids).logits


class SentenceEmbedding(nn.Module):
    """A MiniLM-class sentence encoder: BERT, mean pooling over the mask, L2-normalized (exports ReduceL2)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def _image(seed: int) -> tuple[torch.Tensor]:
    return (torch.randn(IMAGE, generator=torch.Generator().manual_seed(seed)),)


def _tokens(seed: int, mask: bool = True) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(seed))
    return (ids, torch.ones_like(ids)) if mask else (ids,)


def vit() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=10)
    return Image(ViTForImageClassification(config)), _image(0)


def convnext() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(0)
    config = ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, image_size=32,
                            num_labels=10)
    return Image(ConvNextForImageClassification(config)), _image(0)


def _bert():  # -> BertModel
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))


def bert() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return Tokens(_bert()), _tokens(0)


def minilm() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    return SentenceEmbedding(_bert()), _tokens(0)


def gpt2() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=1, n_head=2, use_cache=False)
    return Decoder(GPT2LMHeadModel(config)), _tokens(0, mask=False)


# Input names and a maker of example inputs from a seed, per kind of model input.
INPUTS = {"image": (("pixel_values",), _image), "tokens": (("input_ids", "attention_mask"), _tokens),
          "ids": (("input_ids",), lambda seed: _tokens(seed, mask=False))}
# Architecture -> the kind of inputs it takes.
ARCHITECTURES = {"vit": "image", "convnext": "image", "bert": "tokens", "minilm": "tokens", "gpt2": "ids"}


def samples(kind: str, count: int = 24, seed: int = 100) -> list[dict[str, np.ndarray]]:
    """``count`` feeds drawn like the example inputs (images N(0, 1), token ids uniform over the vocabulary)."""
    names, make = INPUTS[kind]
    return [{name: t.numpy() for name, t in zip(names, make(seed + i), strict=True)} for i in range(count)]


def calib_image() -> list[dict[str, np.ndarray]]:
    return samples("image")


def calib_tokens() -> list[dict[str, np.ndarray]]:
    return samples("tokens")


def calib_ids() -> list[dict[str, np.ndarray]]:
    return samples("ids")

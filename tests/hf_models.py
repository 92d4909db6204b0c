"""Real architectures at tiny sizes, built in code (transformers configs, random weights, no downloads).

As users hold them: the model itself, returning what it returns (Hugging Face ModelOutputs, nested tuples).
Each name has a factory (``--arch tests.hf_models:vit``) and an entry point returning (model, example inputs)
(``--from-python tests.hf_models:build_vit``); ``MODELS`` lists them for bench/breadth.py and the tests.

As one-tensor models (``TINY``: one layer, called with keyword arguments, returning logits or embeddings), for
the TFLite tests and bench/tflite_target.py: entry points ``tiny_vit`` ..., with calibration samples drawn like
their example inputs (``--calib tests.hf_models:calib_image``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

IMAGE = (1, 3, 32, 32)
TOKENS = (1, 16)
VOCAB = 128


def small(layers: int) -> dict[str, int]:
    return {"hidden_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2, "intermediate_size": 64}


def vit(layers: int = 2) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(**small(layers), image_size=32, patch_size=8, num_labels=10))


def convnext() -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    return ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                                         image_size=32, num_labels=10))


def bert(layers: int = 2) -> nn.Module:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(**small(layers), vocab_size=VOCAB, max_position_embeddings=64))


def distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertModel

    return DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                            max_position_embeddings=64))


def gpt2(layers: int = 2) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=layers, n_head=2,
                                      use_cache=False))


def t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2))


def whisper_encoder() -> nn.Module:
    from transformers import WhisperConfig, WhisperModel

    config = WhisperConfig(num_mel_bins=8, max_source_positions=16, d_model=32, encoder_layers=1,
                           encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                           decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=VOCAB, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return WhisperModel(config).get_encoder()


class YoloLike(nn.Module):
    """A YOLO-style detector head on a small CNN: [batch, 4 box + 4 class values, anchors] (not class scores)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.SiLU())
        self.head = nn.Conv2d(16, 4 + classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.head(self.backbone(images))
        boxes, scores = out.flatten(2).split([4, out.shape[1] - 4], dim=1)
        return torch.cat([boxes, scores.sigmoid()], dim=1)


class Recurrent(nn.Module):
    """An LSTM or GRU sequence model returning (outputs, final state): nested tuples for the LSTM."""

    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(input_size=8, hidden_size=16, num_layers=1, batch_first=True)

    def forward(self, sequence: torch.Tensor) -> tuple:
        return self.rnn(sequence)


def lstm() -> nn.Module:
    return Recurrent(nn.LSTM)


def gru() -> nn.Module:
    return Recurrent(nn.GRU)


def yolo_like() -> nn.Module:
    return YoloLike()


@dataclass(frozen=True)
class Architecture:
    name: str
    factory: Callable[[], nn.Module]
    shapes: tuple[tuple[int, ...], ...]  # example input shapes, in forward() order
    integer: bool = False  # token ids (int64) rather than floats

    def build(self) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        torch.manual_seed(0)
        model = self.factory().eval()
        generator = torch.Generator().manual_seed(0)
        example = tuple(torch.randint(0, VOCAB, shape, generator=generator) if self.integer
                        else torch.randn(shape, generator=generator) for shape in self.shapes)
        return model, example


MODELS = {a.name: a for a in (
    Architecture("vit", vit, (IMAGE,)), Architecture("convnext", convnext, (IMAGE,)),
    Architecture("bert", bert, (TOKENS,), integer=True), Architecture("distilbert", distilbert, (TOKENS,), True),
    Architecture("gpt2", gpt2, (TOKENS,), True), Architecture("t5_encoder", t5_encoder, (TOKENS,), True),
    Architecture("whisper_encoder", whisper_encoder, ((1, 8, 32),)),
    Architecture("yolo_like", yolo_like, ((1, 3, 64, 64),)),
    Architecture("lstm", lstm, ((1, 10, 8),)), Architecture("gru", gru, ((1, 10, 8),)))}


def _entry(name: str) -> Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    return MODELS[name].build


build_vit, build_convnext, build_bert, build_distilbert, build_gpt2 = map(
    _entry, ("vit", "convnext", "bert", "distilbert", "gpt2"))
build_t5_encoder, build_whisper_encoder, build_yolo_like, build_lstm, build_gru = map(
    _entry, ("t5_encoder", "whisper_encoder", "yolo_like", "lstm", "gru"))


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
    ids = torch.randint(0, VOCAB, TOKENS, generator=torch.Generator().manual_seed(seed))
    return (ids, torch.ones_like(ids)) if mask else (ids,)


# Input names and a maker of example inputs from a seed, per kind of model input.
INPUTS = {"image": (("pixel_values",), _image), "tokens": (("input_ids", "attention_mask"), _tokens),
          "ids": (("input_ids",), lambda seed: _tokens(seed, mask=False))}
# The one-tensor models: name -> (the kind of inputs it takes, its maker).
TINY: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "vit": ("image", lambda: Image(vit(layers=1))), "convnext": ("image", lambda: Image(convnext())),
    "bert": ("tokens", lambda: Tokens(bert(layers=1))),
    "minilm": ("tokens", lambda: SentenceEmbedding(bert(layers=1))),
    "gpt2": ("ids", lambda: Decoder(gpt2(layers=1)))}


def tiny(name: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The one-tensor model ``name`` and its example inputs (what a --from-python entry point returns)."""
    kind, make = TINY[name]
    torch.manual_seed(0)
    return make(), INPUTS[kind][1](0)


def _tiny_entry(name: str) -> Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    return lambda: tiny(name)


tiny_vit, tiny_convnext, tiny_bert, tiny_minilm, tiny_gpt2 = map(_tiny_entry, TINY)


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

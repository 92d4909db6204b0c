"""Tiny ONNX models built in code for tests (and the shipped example).

Run `python tests/builders.py` to regenerate `examples/tiny_cnn.onnx`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def make_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
               initializers: dict[str, np.ndarray] | None = None, opset: int = OPSET,
               name: str = "test") -> onnx.ModelProto:
    """A checked model from nodes, I/O value infos and numpy initializers."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION,
                              producer_name="infer-compile-tests")
    onnx.checker.check_model(model)
    return model


def tensor(name: str, shape: list[int | str | None], dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _bn_params(rng: np.random.Generator, prefix: str, channels: int) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_scale": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        f"{prefix}_bias": rng.normal(0, 0.1, channels).astype(np.float32),
        f"{prefix}_mean": rng.normal(0, 0.1, channels).astype(np.float32),
        f"{prefix}_var": rng.uniform(0.5, 1.5, channels).astype(np.float32),
    }


def tiny_cnn(seed: int = 0, batch: int | str = "batch", size: int = 32, classes: int = 10) -> onnx.ModelProto:
    """Conv-BN-Relu x2, global pool, classifier; with the clutter exporters leave behind
    (Identity, Dropout, a constant subexpression) so cleanup passes have work to do."""
    rng = np.random.default_rng(seed)
    init: dict[str, np.ndarray] = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32),
        "fc_w": rng.normal(0, 0.2, (classes, 16)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, classes).astype(np.float32),
        "half": np.array(0.5, np.float32),
        "two": np.array(2.0, np.float32),
        **_bn_params(rng, "bn1", 8),
        **_bn_params(rng, "bn2", 16),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1_scale", "bn1_bias", "bn1_mean", "bn1_var"], ["n1"],
                         name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Identity", ["r1"], ["r1_id"], name="identity"),
        helper.make_node("Conv", ["r1_id", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c2", "bn2_scale", "bn2_bias", "bn2_mean", "bn2_var"], ["n2"],
                         name="bn2"),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Dropout", ["flat"], ["drop"], name="dropout"),
        helper.make_node("Gemm", ["drop", "fc_w", "fc_b"], ["fc"], name="fc", transB=1),
        # A constant subexpression (0.5 * 2.0) that constant folding removes.
        helper.make_node("Mul", ["half", "two"], ["one"], name="const_mul"),
        helper.make_node("Mul", ["fc", "one"], ["logits"], name="scale"),
    ]
    return make_model(nodes, [tensor("image", [batch, 3, size, size])], [tensor("logits", [batch, classes])],
                      init, name="tiny_cnn")


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "examples" / "tiny_cnn.onnx"
    onnx.save_model(tiny_cnn(), str(out))
    print(f"wrote {out}")

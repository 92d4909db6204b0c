"""Small models and calibration data for the precision pass tests (FP16, INT8, accuracy fallback)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from infer_compile.calibration import CalibrationData, CalibrationSettings
from infer_compile.core.ir import Model
from infer_compile.core.numerics import Feeds, random_inputs
from infer_compile.passes import PassContext, PassManager
from infer_compile.passes.pipeline import CLEANUP
from tests.builders import make_model, tensor

HIDDEN = 16
SEQ = 8


def small_transformer(seed: int = 0) -> onnx.ModelProto:
    """One encoder block: single-head attention + residual + LayerNorm + ReLU FFN + residual + LayerNorm."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    init = {"wq": w(HIDDEN, HIDDEN), "wk": w(HIDDEN, HIDDEN), "wv": w(HIDDEN, HIDDEN), "wo": w(HIDDEN, HIDDEN),
            "w1": w(HIDDEN, 4 * HIDDEN), "b1": np.zeros(4 * HIDDEN, np.float32), "w2": w(4 * HIDDEN, HIDDEN),
            "gamma": np.ones(HIDDEN, np.float32), "beta": np.zeros(HIDDEN, np.float32),
            "inv_sqrt_d": np.array(1 / np.sqrt(HIDDEN), np.float32)}
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q"], name="q_proj"), n("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        n("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        n("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["scores_raw"], name="qk"), n("Mul", ["scores_raw", "inv_sqrt_d"], ["scores"]),
        n("Softmax", ["scores"], ["attn"], name="softmax", axis=-1),
        n("MatMul", ["attn", "v"], ["ctx"], name="attn_v"), n("MatMul", ["ctx", "wo"], ["proj"], name="o_proj"),
        n("Add", ["x", "proj"], ["res1"], name="res1"),
        n("LayerNormalization", ["res1", "gamma", "beta"], ["ln1"], name="ln1", axis=-1),
        n("MatMul", ["ln1", "w1"], ["h_raw"], name="ffn1"), n("Add", ["h_raw", "b1"], ["h_bias"], name="ffn1_bias"),
        n("Relu", ["h_bias"], ["h"], name="ffn_relu"), n("MatMul", ["h", "w2"], ["f"], name="ffn2"),
        n("Add", ["ln1", "f"], ["res2"], name="res2"),
        n("LayerNormalization", ["res2", "gamma", "beta"], ["y"], name="ln2", axis=-1),
    ]
    return make_model(nodes, [tensor("x", ["batch", SEQ, HIDDEN])], [tensor("y", ["batch", SEQ, HIDDEN])], init,
                      name="small_transformer")


def outlier_mlp(seed: int = 0, scale: float = 1000.0) -> onnx.ModelProto:
    """fc1 -> relu -> fc2 -> relu -> fc3 (10 classes); fc2 is deliberately sensitive to INT8.

    fc1's first output channel is ``scale`` times larger and fc2's matching weight row ``scale``
    times smaller: fp32 computes the same function, but fc2's per-tensor int8 input range is
    ruled by that one channel, so every other channel rounds to almost nothing.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((32, 64)) / np.sqrt(32)).astype(np.float32)
    w2 = (rng.standard_normal((64, 64)) / np.sqrt(64)).astype(np.float32)
    w1[:, 0] *= scale
    w2[0, :] /= scale
    init = {"w1": w1, "w2": w2, "w3": (rng.standard_normal((64, 10)) / 8).astype(np.float32)}
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["a1"], name="fc1"), n("Relu", ["a1"], ["r1"], name="relu1"),
             n("MatMul", ["r1", "w2"], ["a2"], name="fc2"), n("Relu", ["a2"], ["r2"], name="relu2"),
             n("MatMul", ["r2", "w3"], ["logits"], name="fc3")]
    return make_model(nodes, [tensor("x", ["batch", 32])], [tensor("logits", ["batch", 10])], init, name="outlier_mlp")


def calibration(proto: onnx.ModelProto, count: int = 20, batch: int = 4, method: str = "minmax",
                seed: int = 1000) -> CalibrationData:
    """``count`` seeded feeds of ``batch`` samples for ``proto``'s inputs, as the build would hand them over."""
    specs = Model.from_proto(proto).inputs
    samples = [random_inputs(specs, seed=seed + i, dims={"batch": batch}) for i in range(count)]
    return CalibrationData(samples, CalibrationSettings("synthetic", method=method), f"{count} test samples")


def held_out(proto: onnx.ModelProto, batch: int = 32, seed: int = 7) -> Feeds:
    return random_inputs(Model.from_proto(proto).inputs, seed=seed, dims={"batch": batch})


def cleaned(proto: onnx.ModelProto) -> Model:
    """The model after the cleanup stage, as precision passes see it in a build."""
    model = Model.from_proto(proto)
    PassManager([cls() for cls in CLEANUP]).run(model, PassContext())
    return model


def mixed_types(seed: int = 0) -> onnx.ModelProto:
    """A float32 MatMul/ReLU path whose result also passes through bfloat16 and float8 (types numpy lacks),
    beside a float64 path and an int64 ArgMax: precision passes must touch only the float32 tensors."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["m"], name="fc"), n("Relu", ["m"], ["r"], name="relu"),
             n("Cast", ["r"], ["r_bf16"], to=onnx.TensorProto.BFLOAT16),
             n("Cast", ["r_bf16"], ["r_from_bf16"], to=onnx.TensorProto.FLOAT),
             n("Cast", ["r"], ["r_f8"], to=onnx.TensorProto.FLOAT8E4M3FN),
             n("Cast", ["r_f8"], ["r_from_f8"], to=onnx.TensorProto.FLOAT),
             n("Add", ["r_from_bf16", "r_from_f8"], ["y"], name="sum"),
             n("Mul", ["xd", "d"], ["yd"], name="double_scale"), n("ArgMax", ["r"], ["index"], axis=-1)]
    inputs = [tensor("x", ["batch", HIDDEN]), tensor("xd", ["batch", HIDDEN], onnx.TensorProto.DOUBLE)]
    outputs = [tensor("y", ["batch", HIDDEN]), tensor("yd", ["batch", HIDDEN], onnx.TensorProto.DOUBLE),
               tensor("index", ["batch", 1], onnx.TensorProto.INT64)]
    init = {"w": (rng.standard_normal((HIDDEN, HIDDEN)) / 4).astype(np.float32), "d": np.float64(3.0)}
    return make_model(nodes, inputs, outputs, init, opset=19, name="mixed_types")

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


def residual_batchnorms(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu, then Conv-BN whose Conv output the residual Add reads too: bn1 folds into conv1, bn2
    cannot fold into conv2 (the Conv output has 2 consumers)."""
    rng = np.random.default_rng(seed)
    init = {"w1": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
            "w2": rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32),
            **_bn_params(rng, "bn1", 4), **_bn_params(rng, "bn2", 4)}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1_scale", "bn1_bias", "bn1_mean", "bn1_var"], ["n1"],
                         name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "bn2_scale", "bn2_bias", "bn2_mean", "bn2_var"], ["n2"],
                         name="bn2"),
        helper.make_node("Add", ["n2", "c2"], ["y"], name="residual"),
    ]
    return make_model(nodes, [tensor("x", [1, 3, 8, 8])], [tensor("y", [1, 4, 8, 8])], init, name="residual_bn")


def text_detector(seed: int = 0, widths: tuple[int, ...] = (16, 32, 64, 128, 256), neck: int = 64) -> onnx.ModelProto:
    """A DB-style text detector shaped like PP-OCRv4's (dynamic N, H, W; H and W multiples of 32): a stride-2
    conv backbone (Conv-HardSwish), an FPN neck (1x1 convs, nearest Resize, Add), and a head (Conv-Relu, two
    ConvTranspose x2, Sigmoid) writing a probability map at the input's size. The default widths hold 1.2 M
    parameters (4.8 MB, the real detector's 4.7 MB); small widths make a test-sized one."""
    rng = np.random.default_rng(seed)
    init: dict[str, np.ndarray] = {"up": np.array([1, 1, 2, 2], np.float32)}
    nodes: list[onnx.NodeProto] = []

    def conv(name: str, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, act: str | None = "HardSwish",
             op: str = "Conv") -> str:
        shape = (cin, cout, k, k) if op == "ConvTranspose" else (cout, cin, k, k)
        init[f"{name}_w"] = rng.normal(0, np.sqrt(2 / (cin * k * k)), shape).astype(np.float32)
        init[f"{name}_b"] = rng.normal(0, 0.1, cout).astype(np.float32)
        attrs = {"strides": [stride, stride]} if op == "ConvTranspose" else \
            {"strides": [stride, stride], "pads": [k // 2] * 4}
        nodes.append(helper.make_node(op, [x, f"{name}_w", f"{name}_b"], [name], name=name, **attrs))
        if act is None:
            return name
        nodes.append(helper.make_node(act, [name], [f"{name}_act"], name=f"{name}_act"))
        return f"{name}_act"

    x, cin, stages = "x", 3, []
    for i, width in enumerate(widths):
        x = conv(f"down{i}", x, cin, width, stride=2)
        x = conv(f"block{i}", x, width, width)
        cin = width
        stages.append((x, width))
    top = None
    for i, (feature, width) in reversed(list(enumerate(stages[1:], 1))):  # FPN: top-down, nearest x2 + add
        lateral = conv(f"lateral{i}", feature, width, neck, k=1, act=None)
        if top is not None:
            nodes.append(helper.make_node("Resize", [top, "", "up"], [f"up{i}"], name=f"up{i}", mode="nearest"))
            nodes.append(helper.make_node("Add", [lateral, f"up{i}"], [f"fpn{i}"], name=f"fpn{i}"))
            lateral = f"fpn{i}"
        top = lateral
    head = conv("head", top, neck, neck // 4, act="Relu")
    head = conv("deconv1", head, neck // 4, neck // 4, k=2, stride=2, act="Relu", op="ConvTranspose")
    logits = conv("deconv2", head, neck // 4, 1, k=2, stride=2, act=None, op="ConvTranspose")
    nodes.append(helper.make_node("Sigmoid", [logits], ["maps"], name="sigmoid"))
    return make_model(nodes, [tensor("x", ["batch", 3, "height", "width"])],
                      [tensor("maps", ["batch", 1, "height", "width"])], init, opset=OPSET, name="text_detector")


def inverted_residual(seed: int = 0, channels: int = 8, expand: int = 3, classes: int = 10) -> onnx.ModelProto:
    """MobileNetV2's block: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, linear 1x1 projection (signed output)
    added to the block input, then a 1x1 conv + ReLU6, global pool and a classifier Gemm (the logits)."""
    rng = np.random.default_rng(seed)
    hidden = channels * expand

    def conv_w(cout: int, cin: int, k: int) -> np.ndarray:
        return rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32)

    init = {"w_expand": conv_w(hidden, channels, 1), "b_expand": rng.normal(0, 0.1, hidden).astype(np.float32),
            "w_dw": conv_w(hidden, 1, 3), "b_dw": rng.normal(0, 0.1, hidden).astype(np.float32),
            "w_project": conv_w(channels, hidden, 1), "b_project": rng.normal(0, 0.1, channels).astype(np.float32),
            "w_head": conv_w(2 * channels, channels, 1), "b_head": rng.normal(0, 0.1, 2 * channels).astype(np.float32),
            "fc_w": rng.normal(0, 0.3, (classes, 2 * channels)).astype(np.float32),
            "fc_b": rng.normal(0, 0.1, classes).astype(np.float32),
            "zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)}
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w_expand", "b_expand"], ["e"], name="expand"), n("Clip", ["e", "zero", "six"], ["e6"]),
        n("Conv", ["e6", "w_dw", "b_dw"], ["d"], name="depthwise", group=hidden, pads=[1, 1, 1, 1]),
        n("Clip", ["d", "zero", "six"], ["d6"]),
        n("Conv", ["d6", "w_project", "b_project"], ["p"], name="project"),
        n("Add", ["x", "p"], ["block"], name="residual"),
        n("Conv", ["block", "w_head", "b_head"], ["h"], name="head"), n("Clip", ["h", "zero", "six"], ["h6"]),
        n("GlobalAveragePool", ["h6"], ["pool"], name="pool"), n("Flatten", ["pool"], ["flat"], name="flatten"),
        n("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    return make_model(nodes, [tensor("x", ["batch", channels, 8, 8])], [tensor("logits", ["batch", classes])], init,
                      name="inverted_residual")


CHAIN_WIDTH = 8192  # one 8192x8192 fp32 weight is 256 MiB


def write_chain_model(folder: Path, layers: int, seed: int = 0) -> Path:
    """``folder/big.onnx`` + ``big.onnx.data``: x[batch, CHAIN_WIDTH] through ``layers`` MatMuls (256 MiB of
    weights each), written one weight at a time so a model of any size fits in memory while it is made."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "big.onnx"
    data = path.with_name(path.name + ".data")
    rng = np.random.default_rng(seed)
    initializers, nodes = [], []
    with data.open("wb") as fh:
        for i in range(layers):
            weight = rng.standard_normal((CHAIN_WIDTH, CHAIN_WIDTH), dtype=np.float32)
            weight *= np.float32(CHAIN_WIDTH ** -0.5)  # keeps activations O(1) through the chain
            offset = fh.tell()
            fh.write(weight.data)
            initializer = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=weight.shape,
                                      data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data.name), ("offset", offset), ("length", weight.nbytes)):
                initializer.external_data.add(key=key, value=str(value))
            initializers.append(initializer)
            nodes.append(helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"],
                                          ["y" if i == layers - 1 else f"h{i + 1}"], name=f"matmul{i}"))
    io = [tensor(name, ["batch", CHAIN_WIDTH]) for name in ("x", "y")]
    graph = helper.make_graph(nodes, "chain", io[:1], io[1:], initializers)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION),
                    str(path))
    return path


def chain_weights(path: Path) -> list[np.ndarray]:
    """The weights ``write_chain_model`` wrote, memory-mapped from its data file."""
    data = np.memmap(path.with_name(path.name + ".data"), np.float32, mode="r")
    return list(data.reshape(-1, CHAIN_WIDTH, CHAIN_WIDTH))


NESTED_IF_WIDTH = 4


def nested_if(outer: list[onnx.NodeProto] | None = None, inner: list[onnx.NodeProto] | None = None,
              initializers: dict[str, np.ndarray] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    """x[2,4] and two bool conditions c1, c2 -> y[2,4] through an If nested in another If's then-branch.

    ``outer`` (top level) computes ``pre`` from ``x``; ``inner`` (the inner then-branch) computes ``body``
    from the captured ``pre``: a pattern split between them crosses the subgraph boundary. Around them, the
    hazards subgraphs pose to whole-graph rewrites: ``a_dup`` (a duplicate of ``a``), ``idn`` (an Identity)
    and ``s`` are computed outside but read only inside the bodies, by name; the inner If's output is used
    in the enclosing branch; ``k_dup`` (equal to ``k``) is read only inside.
    """
    n = helper.make_node
    outer = outer if outer is not None else [n("Tanh", ["x"], ["pre"])]
    inner = inner if inner is not None else [n("Neg", ["pre"], ["body"])]
    shape = [2, NESTED_IF_WIDTH]

    def branch(name: str, nodes: list[onnx.NodeProto], out: str) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [tensor(out, shape)])

    inner_then = branch("inner_then", [*inner, n("Add", ["body", "a_dup"], ["it"])], "it")
    inner_else = branch("inner_else", [n("Mul", ["idn", "k_dup"], ["ie"])], "ie")
    outer_then = branch("outer_then", [
        n("If", ["c2"], ["inner_out"], then_branch=inner_then, else_branch=inner_else),
        n("MatMul", ["inner_out", "w"], ["mm"]), n("Add", ["mm", "s"], ["ot"])], "ot")
    outer_else = branch("outer_else", [n("Sub", ["s", "idn"], ["oe"])], "oe")
    nodes = [
        *outer,
        n("Relu", ["x"], ["a"]), n("Relu", ["x"], ["a_dup"]), n("Identity", ["a"], ["idn"]),
        n("Sigmoid", ["x"], ["s"]),
        n("If", ["c1"], ["branch"], then_branch=outer_then, else_branch=outer_else),
        n("Mul", ["a", "k"], ["ak"]), n("Add", ["branch", "ak"], ["y"]),
    ]
    rng = np.random.default_rng(0)
    init = {"k": np.full(NESTED_IF_WIDTH, 3.0, np.float32), "k_dup": np.full(NESTED_IF_WIDTH, 3.0, np.float32),
            "w": rng.normal(0, 0.5, (NESTED_IF_WIDTH, NESTED_IF_WIDTH)).astype(np.float32), **(initializers or {})}
    inputs = [tensor("x", shape), tensor("c1", [], TensorProto.BOOL), tensor("c2", [], TensorProto.BOOL)]
    return make_model(nodes, inputs, [tensor("y", shape)], init, opset=opset, name="nested_if")


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "examples" / "tiny_cnn.onnx"
    onnx.save_model(tiny_cnn(), str(out))
    print(f"wrote {out}")



def nested_if_static_condition(shape: tuple[int, ...] = (2, 3)) -> onnx.ModelProto:
    """Nested If nodes as exporters write them around an LSTM (silero-vad): the outer If's condition is static
    once shapes are known (Shape -> Gather -> Equal), it has two outputs, and its branch reads the outputs of
    an inner If on the ``flag`` input; the branches capture ``x`` and constants of the main graph.

    y = (a + b) + bias with (a, b) = (inner + 1, inner * 2) if rows == 2 else (x - 1, x * 3),
    inner = x * 2 if flag else -x.
    """
    dims = list(shape)

    def branch(name: str, nodes: list[onnx.NodeProto], outs: list[str]) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [tensor(out, dims) for out in outs])

    inner = helper.make_node("If", ["flag"], ["inner"],
                             then_branch=branch("inner_then", [helper.make_node("Mul", ["x", "two_f"], ["t"])], ["t"]),
                             else_branch=branch("inner_else", [helper.make_node("Neg", ["x"], ["e"])], ["e"]))
    then_branch = branch("outer_then", [inner, helper.make_node("Add", ["inner", "one"], ["a1"]),
                                        helper.make_node("Mul", ["inner", "two_f"], ["b1"])], ["a1", "b1"])
    else_branch = branch("outer_else", [helper.make_node("Sub", ["x", "one"], ["a2"]),
                                        helper.make_node("Mul", ["x", "three"], ["b2"])], ["a2", "b2"])
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Gather", ["x_shape", "zero"], ["rows"], axis=0),
        helper.make_node("Equal", ["rows", "two"], ["rows_are_2"]),
        helper.make_node("If", ["rows_are_2"], ["a", "b"], then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "bias"], ["y"]),
    ]
    constants = {"one": np.array(1.0, np.float32), "two_f": np.array(2.0, np.float32),
                 "three": np.array(3.0, np.float32), "bias": np.full(shape, 0.5, np.float32),
                 "zero": np.array(0, np.int64), "two": np.array(2, np.int64)}
    return make_model(nodes, [tensor("x", dims), tensor("flag", [], TensorProto.BOOL)], [tensor("y", dims)],
                      constants)

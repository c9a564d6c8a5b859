"""Small ONNX models built with onnx.helper for the tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
IR_VERSION = 8


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)
    )


def _model(graph: onnx.GraphProto, **metadata: str) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION)
    model.producer_name = "waveopt-tests"
    helper.set_model_props(model, metadata)
    return model


def ar_loop_model(
    hidden: int = 8,
    features: int = 3,
    classes: int = 16,
    seed: int = 0,
    redundant: bool = True,
    logit_delta: float = 0.0,
    debug_cdf: bool = False,
) -> onnx.ModelProto:
    """A tiny autoregressive sampler: one Loop step per sample, samples fed back.

    Inputs ``x`` [T, B, F] and ``noise`` [T, B, 2]; outputs ``samples`` [T, B] and
    ``h_last`` [B, H]. Per step: h = tanh(concat(h, x_t, s) @ W + b),
    logits = h @ V + c, s = inverse-CDF sample of softmax(logits) with noise[t, :, 0],
    scaled to [-1, 1]. With ``redundant`` the body also holds a duplicate Tanh, a
    dead Relu and a constant subgraph (the scale 2 / (C - 1)) for simplify to remove.
    ``logit_delta`` is added to the logit bias of the upper half of the classes.
    """
    rng = np.random.default_rng(seed)
    width = hidden + features + 1
    W = (rng.standard_normal((width, hidden)) * 0.7).astype(np.float32)
    b = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    V = (rng.standard_normal((hidden, classes)) * 1.5).astype(np.float32)
    c = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    c[classes // 2 :] += np.float32(logit_delta)
    inits = [
        numpy_helper.from_array(W, "W"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(V, "V"),
        numpy_helper.from_array(c, "c"),
    ]

    body_nodes = [
        helper.make_node("Gather", ["x", "i"], ["x_t"], axis=0),
        helper.make_node("Concat", ["h", "x_t", "s"], ["inp"], axis=1),
        helper.make_node("MatMul", ["inp", "W"], ["pre0"]),
        helper.make_node("Add", ["pre0", "b"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["h_new"]),
    ]
    if redundant:
        body_nodes += [
            helper.make_node("Tanh", ["pre"], ["h_dup"]),  # duplicate of h_new
            helper.make_node("Relu", ["pre"], ["dead"]),  # unused
            _const("two", np.float32(2.0)),
            _const("n_classes", np.float32(classes)),
            _const("one", np.float32(1.0)),
            helper.make_node("Sub", ["n_classes", "one"], ["c_minus_1"]),
            helper.make_node("Div", ["two", "c_minus_1"], ["scale"]),
        ]
        h_for_logits = "h_dup"
    else:
        body_nodes.append(_const("scale", np.float32(2.0 / (classes - 1))))
        h_for_logits = "h_new"
    body_nodes += [
        helper.make_node("MatMul", [h_for_logits, "V"], ["logits0"]),
        helper.make_node("Add", ["logits0", "c"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        _const("axis1", np.int64(1)),
        helper.make_node("CumSum", ["probs", "axis1"], ["cdf"]),
        helper.make_node("Gather", ["noise", "i"], ["noise_t"], axis=0),
        _const("zero_idx", np.array([0], dtype=np.int64)),
        helper.make_node("Gather", ["noise_t", "zero_idx"], ["u"], axis=1),
        helper.make_node("Less", ["cdf", "u"], ["below"]),
        helper.make_node("Cast", ["below"], ["below_f"], to=TensorProto.FLOAT),
        _const("axes1", np.array([1], dtype=np.int64)),
        helper.make_node("ReduceSum", ["below_f", "axes1"], ["idx0"], keepdims=1),
        _const("last", np.float32(classes - 1)),
        helper.make_node("Min", ["idx0", "last"], ["idx"]),
        helper.make_node("Mul", ["idx", "scale"], ["idx_scaled"]),
        _const("minus_one", np.float32(-1.0)),
        helper.make_node("Add", ["idx_scaled", "minus_one"], ["s_new"]),
        helper.make_node("Squeeze", ["s_new", "axes1"], ["s_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body_outputs = [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("h_new", TensorProto.FLOAT, ["B", hidden]),
        helper.make_tensor_value_info("s_new", TensorProto.FLOAT, ["B", 1]),
        helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["B"]),
    ]
    if debug_cdf:
        body_nodes.append(helper.make_node("Identity", ["cdf"], ["cdf_out"]))
        body_outputs.append(
            helper.make_tensor_value_info("cdf_out", TensorProto.FLOAT, ["B", classes])
        )
    body = helper.make_graph(
        body_nodes,
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["B", hidden]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["B", 1]),
        ],
        body_outputs,
    )

    loop_outputs = ["h_last", "s_last", "samples"] + (["cdf"] if debug_cdf else [])
    nodes = [
        helper.make_node("Shape", ["x"], ["T1"], start=0, end=1),
        helper.make_node("Squeeze", ["T1"], ["T"]),
        helper.make_node("Shape", ["x"], ["B1"], start=1, end=2),
        _const("H1", np.array([hidden], dtype=np.int64)),
        _const("one1", np.array([1], dtype=np.int64)),
        helper.make_node("Concat", ["B1", "H1"], ["h_shape"], axis=0),
        helper.make_node("Concat", ["B1", "one1"], ["s_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["h_shape"], ["h0"], value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("ConstantOfShape", ["s_shape"], ["s0"], value=numpy_helper.from_array(np.zeros(1, np.float32))),
        _const("true", np.bool_(True)),
        helper.make_node("Loop", ["T", "true", "h0", "s0"], loop_outputs, body=body),
    ]
    outputs = [
        helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["T", "B"]),
        helper.make_tensor_value_info("h_last", TensorProto.FLOAT, ["B", hidden]),
    ]
    if debug_cdf:
        outputs.append(helper.make_tensor_value_info("cdf", TensorProto.FLOAT, ["T", "B", classes]))
    graph = helper.make_graph(
        nodes,
        "ar_sampler",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", features]),
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["T", "B", 2]),
        ],
        outputs,
        initializer=inits,
    )
    return _model(graph, **{"waveopt.sampled_outputs": "samples", "waveopt.noise_input": "noise"})


def cnn_model(seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> global average pool: nothing for simplify to do."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b1 = rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["img", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c2"], ["out"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 1, 1])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    return _model(graph, note="cnn")


def _loop_model(body_nodes, state, inits, features: int, extra_body_inputs=()) -> onnx.ModelProto:
    """A Loop over x [T, B, F] carrying ``state`` = [(name, width)], x_t = x[i]."""
    body = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["x_t"], axis=0), *body_nodes,
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            *[helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", w]) for n, w in state],
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            *[helper.make_tensor_value_info(f"{n}_next", TensorProto.FLOAT, ["B", w]) for n, w in state],
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["T1"], start=0, end=1),
            helper.make_node("Squeeze", ["T1"], ["T"]),
            _const("true", np.bool_(True)),
            helper.make_node("Loop", ["T", "true", *[f"{n}0" for n, _ in state]],
                             [f"{n}_last" for n, _ in state], body=body),
        ],
        "loop",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "B", features]),
            *[helper.make_tensor_value_info(f"{n}0", TensorProto.FLOAT, ["B", w]) for n, w in state],
        ],
        [helper.make_tensor_value_info(f"{n}_last", TensorProto.FLOAT, ["B", w]) for n, w in state],
        initializer=inits,
    )
    return _model(graph)


def mac_model() -> onnx.ModelProto:
    """WaveRNN-sized step: MatMul(x_t [B,113], W [113,512]) plus a GRU-cell's two
    [512, 1536] products (one Gemm with transB, one MatMul with a Constant weight)."""
    zeros = lambda *shape: numpy_helper.from_array(np.zeros(shape, np.float32))  # noqa: E731
    inits = [numpy_helper.from_array(np.zeros((113, 512), np.float32), "W_in"),
             numpy_helper.from_array(np.zeros((1536, 512), np.float32), "W_ih_t")]
    nodes = [
        helper.make_node("MatMul", ["x_t", "W_in"], ["a"]),
        helper.make_node("Gemm", ["a", "W_ih_t"], ["gi"], transB=1),
        helper.make_node("Constant", [], ["W_hh"], value=zeros(512, 1536)),
        helper.make_node("MatMul", ["h", "W_hh"], ["gh"]),
        helper.make_node("Add", ["gi", "gh"], ["g"]),
        helper.make_node("Slice", ["g", "s0", "s1", "s_ax"], ["h_lin"]),
        helper.make_node("Tanh", ["h_lin"], ["h_next"]),
        _const("s0", np.array([0], np.int64)),
        _const("s1", np.array([512], np.int64)),
        _const("s_ax", np.array([1], np.int64)),
    ]
    # Topological order: constants first.
    nodes = nodes[-3:] + nodes[:-3]
    return _loop_model(nodes, [("h", 512)], inits, features=113)


def gru_model(hidden: int = 16, features: int = 5) -> onnx.ModelProto:
    """A Loop whose step is one ONNX GRU op (seq_len 1) plus an uncountable MatMul."""
    inits = [
        numpy_helper.from_array(np.zeros((1, 3 * hidden, features), np.float32), "gru_W"),
        numpy_helper.from_array(np.zeros((1, 3 * hidden, hidden), np.float32), "gru_R"),
    ]
    nodes = [
        _const("ax0", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["x_t", "ax0"], ["x_seq"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["h_seq"]),
        helper.make_node("GRU", ["x_seq", "gru_W", "gru_R", "", "", "h_seq"], ["", "h_new3"],
                         hidden_size=hidden),
        helper.make_node("Squeeze", ["h_new3", "ax0"], ["h_gru"]),
        # [B, H, 1] x [1, 1, N] with a data-dependent N: no static K * N to count.
        _const("ax2", np.array([2], np.int64)),
        helper.make_node("Unsqueeze", ["h_gru", "ax2"], ["h_col"]),
        helper.make_node("NonZero", ["h_gru"], ["nz"]),
        helper.make_node("Cast", ["nz"], ["nz_f"], to=TensorProto.FLOAT),
        _const("one", np.array([1], np.int64)),
        helper.make_node("Slice", ["nz_f", "ax0", "one"], ["nz_row"]),
        helper.make_node("Unsqueeze", ["nz_row", "ax0"], ["nz_3d"]),
        helper.make_node("MatMul", ["h_col", "nz_3d"], ["mystery"]),
        helper.make_node("ReduceSum", ["mystery"], ["m_sum"], keepdims=0),
        helper.make_node("Add", ["h_gru", "m_sum"], ["h_next"]),
    ]
    return _loop_model(nodes, [("h", hidden)], inits, features=features)


def nested_model() -> onnx.ModelProto:
    """A main-graph If whose then-branch holds a Loop whose body holds an If."""
    def branch(name: str, out: str, src: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Identity", [src], [out])], name, [],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        )

    inner_if = helper.make_node("If", ["cond_in"], ["y_if"],
                                then_branch=branch("in_then", "t_out", "y"),
                                else_branch=branch("in_else", "e_out", "y"))
    body = helper.make_graph(
        [inner_if, helper.make_node("Neg", ["y_if"], ["y_next"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y_next", TensorProto.FLOAT, None)],
    )
    then_g = helper.make_graph(
        [_const("n", np.int64(3)),
         helper.make_node("Loop", ["n", "c", "v"], ["loop_out"], body=body)],
        "then", [], [helper.make_tensor_value_info("loop_out", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["out"], then_branch=then_g,
                          else_branch=branch("else", "else_out", "v"))],
        "nested",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
    )
    return _model(graph)

"""lower_gru: one-step ONNX GRU ops -> Gemm + Split + gate math, against PyTorch and ORT's GRU."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from foreign_graph_gru import gru_op_loop_inputs, gru_op_loop_model, gru_op_loop_reference
from onnx import TensorProto, helper, numpy_helper
from onnx_builders import cnn_model
from reference_check import assert_samples_match

import waveopt
from waveopt.check import compare_models, cpu_session
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise
from waveopt.graph import iter_nodes, to_ir, to_proto
from waveopt.passes import LowerGruPass


def _lower(proto):
    model = to_ir(proto)
    p = LowerGruPass()
    assert p(model).model is model  # in place
    return to_proto(model), p


def _run(proto, inputs):
    session = cpu_session(proto)
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: inputs[n] for n in names})


def _ops(proto, module=None):
    return Counter(n.op_type for n, _ in iter_nodes(to_ir(proto).graph)
                   if module is None or n.metadata_props.get("waveopt.module") == module)


def _case(model, teacher_forced, frames=2, batch=2, seed=0):
    mels = demo_mels(frames, batch=batch, seed=seed)
    steps = frames * model.hop_length
    if teacher_forced:
        drive = {"prev_samples": demo_prev_samples(steps, batch, seed=seed)}
    else:
        drive = {"noise": uniform_noise(steps, batch, seed=seed)}
    return mels, drive, gru_op_loop_inputs(model, mels, **drive), gru_op_loop_reference(model, mels, **drive)


def _assert_matches_reference(model, got, mels, drive, expected):
    if "prev_samples" in drive:
        assert got.shape == expected.shape == (*drive["prev_samples"].shape, model.n_classes)
        assert np.abs(got - expected).max() <= 1e-4
    else:
        assert_samples_match(model, mels, drive["noise"], expected, got)


# --- the GRU-op builder itself --------------------------------------------------------------
@pytest.mark.parametrize("teacher_forced", [False, True], ids=["free", "teacher_forced"])
@pytest.mark.parametrize("name", ["raw", "mol"])
def test_gru_op_loop_model_matches_pytorch(name, teacher_forced, models):
    model = models(name)
    proto = gru_op_loop_model(model, teacher_forced=teacher_forced)
    assert _ops(proto)["GRU"] == 2
    mels, drive, inputs, expected = _case(model, teacher_forced)
    (got,) = _run(proto, inputs)
    _assert_matches_reference(model, got, mels, drive, expected)


# --- lowering the GRU-op loop ---------------------------------------------------------------
@pytest.mark.parametrize("name,teacher_forced,dense", [
    ("raw", False, "matmul"), ("mol", True, "gemm"), ("odd", True, "matmul"), ("odd_mol", False, "gemm"),
])
def test_lowered_loop_matches_pytorch(name, teacher_forced, dense, models):
    model = models(name)
    proto = gru_op_loop_model(model, teacher_forced=teacher_forced, dense=dense)
    lowered, p = _lower(proto)
    onnx.checker.check_model(lowered, full_check=True)
    assert p.modified and p.summary == "lowered 2 GRU op(s) to Gemm + Split + gate math"
    ops = _ops(lowered)
    assert "GRU" not in ops and "Squeeze" not in _ops(lowered, "rnn1")
    mels, drive, inputs, expected = _case(model, teacher_forced, seed=1)
    (got,) = _run(lowered, inputs)
    _assert_matches_reference(model, got, mels, drive, expected)
    assert compare_models(proto, lowered, inputs).ok


def test_lowered_cells_have_the_exporters_form(models, exports):
    """The GRU math of the lowered loop is op for op what our exporter writes (Splits aside)."""
    lowered, _ = _lower(gru_op_loop_model(models("raw"), teacher_forced=True, dense="gemm"))
    exported = exports("raw", teacher_forced=True)
    for cell in ("rnn1", "rnn2"):
        mine = _ops(lowered, cell)
        assert mine.pop("Split") == 2
        assert mine == _ops(exported, cell)
    # The weights read by the Gemms are PyTorch's (r, z, n), transposed by transB.
    model = models("raw")
    ir_model = to_ir(lowered)
    gemms = [n for n, _ in iter_nodes(ir_model.graph) if n.op_type == "Gemm"
             and n.metadata_props.get("waveopt.module") == "rnn2"]
    weights = sorted((n.inputs[1].const_value.numpy() for n in gemms), key=lambda w: w.shape[1])
    np.testing.assert_array_equal(weights[0], model.rnn2.weight_hh_l0.detach().numpy())  # [3H, H]
    np.testing.assert_array_equal(weights[1], model.rnn2.weight_ih_l0.detach().numpy())  # [3H, H + aux]


def test_is_idempotent(models):
    lowered, _ = _lower(gru_op_loop_model(models("raw")))
    again, p = _lower(lowered)
    assert not p.modified and p.summary == "not applicable (no GRU op)"
    assert again.SerializeToString() == lowered.SerializeToString()


def test_through_optimize_with_a_model_proto(models):
    proto = gru_op_loop_model(models("mol"), teacher_forced=True)
    result = waveopt.optimize(proto, passes=["lower_gru"])
    assert isinstance(result.model, onnx.ModelProto) and result.modified
    assert "GRU" not in _ops(result.model)
    assert _ops(proto)["GRU"] == 2  # the caller's model is untouched


# --- single GRU ops: every supported variant against ORT's GRU kernel --------------------------
HIDDEN, FEATURES, BATCH = 5, 3, 2


def _gru_model(seq=1, layout=0, lbr=1, bias=True, initial_h=True, squeeze=False, const_weights=True,
               seed=0, **attrs):
    """X -> GRU -> (Y, Y_h) as graph outputs (or Squeeze(Y_h) with ``squeeze``)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    w = rng.standard_normal((dirs, 3 * HIDDEN, FEATURES)).astype(np.float32)
    r = rng.standard_normal((dirs, 3 * HIDDEN, HIDDEN)).astype(np.float32)
    b = rng.standard_normal((dirs, 6 * HIDDEN)).astype(np.float32)
    x_shape = [BATCH, seq, FEATURES] if layout else [seq, BATCH, FEATURES]
    h_shape = [BATCH, dirs, HIDDEN] if layout else [dirs, BATCH, HIDDEN]
    y_shape = [BATCH, seq, dirs, HIDDEN] if layout else [seq, dirs, BATCH, HIDDEN]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if initial_h:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, h_shape))
    weights = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")]
    if bias:
        weights.append(numpy_helper.from_array(b, "B"))
    inits = weights
    if not const_weights:
        inputs += [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in weights]
        inits = []
    gru = helper.make_node("GRU", ["X", "W", "R", "B" if bias else "", "", "h0" if initial_h else ""],
                           ["Y", "Y_h"], hidden_size=HIDDEN, layout=layout, linear_before_reset=lbr,
                           name="the_gru", **attrs)
    helper.set_metadata_props(gru, {"waveopt.module": "rnn1"})
    nodes, outputs = [gru], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
                             helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, h_shape)]
    if squeeze:
        inits.append(numpy_helper.from_array(np.array([1 if layout else 0], np.int64), "dir_axis"))
        nodes.append(helper.make_node("Squeeze", ["Y_h", "dir_axis"], ["h_new"]))
        nodes.append(helper.make_node("Relu", ["h_new"], ["h_relu"]))
        outputs = [outputs[0], helper.make_tensor_value_info("h_relu", TensorProto.FLOAT, [BATCH, HIDDEN])]
    graph = helper.make_graph(nodes, "gru", inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def _inputs(proto, seed=1):
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
            for vi in proto.graph.input}


def _onnx_gru_outputs(variant, inputs):
    """ORT's GRU kernel on the same GRU; ORT has no layout=1 kernel, so the batch-major
    case runs as layout 0 on transposed inputs and its outputs are transposed back."""
    if not variant.get("layout"):
        return _run(_gru_model(**variant), inputs)
    time_major = {**variant, "layout": 0}
    feed = {k: v.transpose(1, 0, 2) if k in ("X", "h0") else v for k, v in inputs.items()}
    y, h = _run(_gru_model(**time_major), feed)
    return [y.transpose(2, 0, 1, 3), h if variant.get("squeeze") else h.transpose(1, 0, 2)]


@pytest.mark.parametrize("variant", [
    dict(), dict(lbr=0), dict(layout=1), dict(layout=1, lbr=0), dict(bias=False), dict(initial_h=False),
    dict(initial_h=False, lbr=0, bias=False), dict(squeeze=True), dict(squeeze=True, layout=1),
    dict(activations=["Sigmoid", "Tanh"], direction="forward"),
], ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "default")
def test_single_gru_variants_match_onnx_gru(variant):
    proto = _gru_model(**variant)
    lowered, p = _lower(proto)
    onnx.checker.check_model(lowered, full_check=True)
    assert p.modified and "GRU" not in _ops(lowered)
    assert {n.metadata_props.get("waveopt.module") for n, _ in iter_nodes(to_ir(lowered).graph)
            if n.op_type != "Relu"} == {"rnn1"}
    assert [o.name for o in lowered.graph.output] == [o.name for o in proto.graph.output]
    inputs = _inputs(proto)
    for want, got in zip(_onnx_gru_outputs(variant, inputs), _run(lowered, inputs)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)
    initializers = {i.name for i in lowered.graph.initializer}
    assert not initializers & {"W", "R", "B"}  # the ONNX-ordered weights are gone


@pytest.mark.parametrize("variant,reason", [
    (dict(seq=3), "sequence length not known to be 1"),
    (dict(direction="bidirectional"), "direction 'bidirectional'"),
    (dict(direction="reverse"), "direction 'reverse'"),
    (dict(clip=5.0), "clip set"),
    (dict(activations=["HardSigmoid", "Tanh"]), "activations ['HardSigmoid', 'Tanh']"),
    (dict(const_weights=False), "weights are not constant"),
], ids=["seq3", "bidirectional", "reverse", "clip", "activations", "weights_as_inputs"])
def test_other_grus_are_left_alone(variant, reason):
    proto = _gru_model(**variant)
    before = to_proto(to_ir(proto)).SerializeToString()
    lowered, p = _lower(proto)
    assert not p.modified
    assert p.summary.startswith(f"not applicable (GRU 'the_gru': {reason}")
    assert lowered.SerializeToString() == before


def test_not_applicable_without_gru():
    proto = cnn_model()
    before = to_proto(to_ir(proto)).SerializeToString()
    lowered, p = _lower(proto)
    assert not p.modified and p.summary == "not applicable (no GRU op)"
    assert lowered.SerializeToString() == before


# --- one step proven by structure (what torch's exporters write for nn.GRU) -------------------
def _structural_model(x_form: str, h_form: str, computed_weights: bool, lbr: int = 1):
    """x [B, F] -> GRU over a one-step X built as ``x_form`` from an initial state built as
    ``h_form``; outputs Gather(Y_h, 0) [B, H] and Y. Shapes are symbolic (batch "B"), so
    only the structure says the sequence length is 1."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3 * HIDDEN, FEATURES)).astype(np.float32)
    r = rng.standard_normal((3 * HIDDEN, HIDDEN)).astype(np.float32)
    b = rng.standard_normal(6 * HIDDEN).astype(np.float32)
    c = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    inits = [c("i0", [0]), c("i1", [1]), c("hidden", [HIDDEN]), c("x_shape", [1, -1, FEATURES]),
             c("ones", [1, 1, 1]), c("zero", 0)]
    nodes = []
    if x_form == "transpose_unsqueeze":  # nn.GRU(batch_first=True)(x.unsqueeze(1))
        nodes += [helper.make_node("Unsqueeze", ["x", "i1"], ["x_b1"]),
                  helper.make_node("Transpose", ["x_b1"], ["X"], perm=[1, 0, 2])]
    elif x_form == "reshape":
        nodes += [helper.make_node("Reshape", ["x", "x_shape"], ["X"])]
    else:  # expand
        nodes += [helper.make_node("Unsqueeze", ["x", "i0"], ["x_1b"]),
                  helper.make_node("Expand", ["x_1b", "ones"], ["X"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", FEATURES])]
    if h_form == "slice":  # the dynamo exporter: h[0:1]
        inputs.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, ["D", "B", HIDDEN]))
        nodes.append(helper.make_node("Slice", ["h", "i0", "i1", "i0"], ["h0"]))
    else:  # zeros [1, B, H] from a computed shape
        nodes += [helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
                  helper.make_node("Concat", ["i1", "batch", "hidden"], ["h_shape"], axis=0),
                  helper.make_node("ConstantOfShape", ["h_shape"], ["h0"])]
    if computed_weights:  # PyTorch's (r, z, n) blocks re-sliced into ONNX's (z, r, n)
        def onnx_order(name, array, rows):
            torch_order = np.concatenate([array[rows:2 * rows], array[:rows], array[2 * rows:]])
            inits.append(numpy_helper.from_array(torch_order, f"{name}_torch"))
            for k in range(3):
                inits.extend([c(f"{name}_s{k}", [k * rows]), c(f"{name}_e{k}", [(k + 1) * rows])])
                nodes.append(helper.make_node("Slice", [f"{name}_torch", f"{name}_s{k}", f"{name}_e{k}", "i0"],
                                              [f"{name}_{k}"]))
            nodes.append(helper.make_node("Concat", [f"{name}_1", f"{name}_0", f"{name}_2"], [f"{name}_cat"], axis=0))
            nodes.append(helper.make_node("Unsqueeze", [f"{name}_cat", "i0"], [name]))
        onnx_order("W", w, HIDDEN)
        onnx_order("R", r, HIDDEN)
        inits.append(numpy_helper.from_array(b[None], "B"))
    else:
        inits += [numpy_helper.from_array(w[None], "W"), numpy_helper.from_array(r[None], "R"),
                  numpy_helper.from_array(b[None], "B")]
    nodes += [helper.make_node("GRU", ["X", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=HIDDEN,
                               linear_before_reset=lbr, name="the_gru"),
              helper.make_node("Gather", ["Y_h", "zero"], ["h_new"], axis=0)]
    outputs = [helper.make_tensor_value_info("h_new", TensorProto.FLOAT, ["B", HIDDEN]),
               helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
    # Expand's rule needs its input's rank: declared for that value only, X stays unknown.
    known = [helper.make_tensor_value_info("x_1b", TensorProto.FLOAT, [1, "B", FEATURES])] if x_form == "expand" else []
    graph = helper.make_graph(nodes, "gru", inputs, outputs, initializer=inits, value_info=known)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("x_form", ["transpose_unsqueeze", "reshape", "expand"])
@pytest.mark.parametrize("h_form, computed_weights, lbr", [("slice", True, 1), ("zeros", False, 0)],
                         ids=["slice_h-computed_weights-lbr1", "zeros_h-lbr0"])
def test_one_step_proven_by_structure(x_form, h_form, computed_weights, lbr):
    proto = _structural_model(x_form, h_form, computed_weights, lbr)
    lowered, p = _lower(proto)
    assert p.modified, p.summary
    ops = _ops(lowered)
    assert "GRU" not in ops
    assert ops["Slice"] == (1 if h_form == "slice" else 0)  # the weights' re-slicing is folded away
    rng = np.random.default_rng(4)
    feed = {"x": rng.standard_normal((3, FEATURES)).astype(np.float32)}
    if h_form == "slice":
        feed["h"] = rng.standard_normal((2, 3, HIDDEN)).astype(np.float32)  # only h[0:1] is the state
    want, got = _run(proto, feed), _run(lowered, feed)
    for w_, g_ in zip(want, got):
        assert g_.shape == w_.shape
        np.testing.assert_allclose(g_, w_, atol=1e-6, rtol=1e-5)

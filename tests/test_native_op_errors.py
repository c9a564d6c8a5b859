"""Misused native ops say what is wrong (issue 15, "misleading op errors").

- int8/int16 weights holding NaN or Inf: an error naming the matrix and "NaN or Inf", at
  session creation (constant weights) or at the run (weights as inputs), never "out of memory";
- FusedDense with N = 0 (W [K, 0]): "no output columns (N = 0)", constant or not;
- FusedDense rows holding a NaN give NaN rows, like numpy (x @ W + b, then the activation),
  for every activation and precision and any thread count;
- WaveRNNLoop noise outside the open interval (0, 1) (0, 1, negative, 2, NaN, inf) is refused
  with an error naming the element; teacher-forced loops read no noise.
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from waveopt import ops  # noqa: E402

H, F, N, T, B = 24, 20, 16, 12, 2
ACTS = {"none": lambda v: v, "relu": lambda v: np.maximum(v, 0), "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v))}


@pytest.fixture(scope="module")
def library():
    ops.build()
    return str(ops.library_path())


def session(proto, library, threads=1):
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.add_session_config_entry("waveopt.threads", str(threads))
    so.register_custom_ops_library(library)
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def model(node, inputs, initializers):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ops.DOMAIN, 1)],
                             ir_version=9)


def loop_weights(rng):
    def r(*s):
        return (rng.standard_normal(s) * 0.2).astype(np.float32)
    return {"u1": r(3 * H), "u2": r(3 * H), "u3": r(F), "W_hh1": r(3 * H, H), "b_hh1": r(3 * H), "W_x2": r(3 * H, H),
            "W_hh2": r(3 * H, H), "b_hh2": r(3 * H), "W_fc1": r(F, H), "W_fc2": r(F, F), "W_fc3": r(N, F),
            "b_fc3": r(N)}


def loop_model(weights, constant=True, teacher_forced=False, **attrs):
    drv = "prev_samples" if teacher_forced else "noise"
    node = helper.make_node("WaveRNNLoop", ["gi1", "gi2", "f1", "f2"] + list(weights) + [drv], ["y"],
                            domain=ops.DOMAIN, mode="raw", teacher_forced=int(teacher_forced), **attrs)
    inputs = ["gi1", "gi2", "f1", "f2", drv] + ([] if constant else list(weights))
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()] if constant else []
    return model(node, inputs, inits)


def loop_feeds(rng):
    return {"gi1": rng.standard_normal((T, B, 3 * H)).astype(np.float32),
            "gi2": rng.standard_normal((T, B, 3 * H)).astype(np.float32),
            "f1": rng.standard_normal((T, B, F)).astype(np.float32),
            "f2": rng.standard_normal((T, B, F)).astype(np.float32),
            "noise": rng.uniform(0.01, 0.99, (T, B, 2)).astype(np.float32)}


# --- non-finite weights under quantization -----------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("quant", ["int8", "int16"])
@pytest.mark.parametrize("constant", [True, False])
def test_loop_quantized_nonfinite_weights_say_so(library, bad, quant, constant):
    rng = np.random.default_rng(0)
    weights = loop_weights(rng)
    weights["W_fc2"][3, 5] = bad
    proto = loop_model(weights, constant=constant, quant=quant, act_ranges=[2.0, 2.0])
    feeds = loop_feeds(rng) if constant else {**loop_feeds(rng), **weights}
    with pytest.raises(Exception) as info:
        session(proto, library).run(None, feeds)
    message = str(info.value)
    assert "W_fc2" in message and "NaN or Inf" in message and f"element {3 * F + 5}" in message, message
    assert "out of memory" not in message


@pytest.mark.parametrize("quant", ["int8", "int16"])
@pytest.mark.parametrize("constant", [True, False])
def test_dense_quantized_nonfinite_weights_say_so(library, quant, constant):
    w = np.ones((10, 6), np.float32)
    w[7, 2] = np.inf
    node = helper.make_node("FusedDense", ["x", "W", "b"], ["y"], domain=ops.DOMAIN, quant=quant)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(6, np.float32), "b")]
    proto = model(node, ["x"], inits) if constant else model(node, ["x", "W", "b"], [])
    feeds = {"x": np.ones((3, 10), np.float32)}
    if not constant:
        feeds.update(W=w, b=np.zeros(6, np.float32))
    with pytest.raises(Exception, match="NaN or Inf") as info:
        session(proto, library).run(None, feeds)
    assert "out of memory" not in str(info.value)


@pytest.mark.parametrize("constant", [True, False])
def test_dense_without_outputs_says_so(library, constant):
    w, b = np.zeros((10, 0), np.float32), np.zeros(0, np.float32)
    node = helper.make_node("FusedDense", ["x", "W", "b"], ["y"], domain=ops.DOMAIN)
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    proto = model(node, ["x"], inits) if constant else model(node, ["x", "W", "b"], [])
    feeds = {"x": np.ones((3, 10), np.float32)}
    if not constant:
        feeds.update(W=w, b=b)
    with pytest.raises(Exception, match=r"no output columns \(N = 0\)"):
        session(proto, library).run(None, feeds)


# --- NaN inputs of FusedDense propagate like numpy ---------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("quant", ["none", "int8", "int16"])
@pytest.mark.parametrize("act", list(ACTS))
def test_dense_nan_rows_propagate_like_numpy(library, act, quant, threads):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((40, 35)) * 0.3).astype(np.float32)
    b = rng.standard_normal(35).astype(np.float32)
    extra = {} if quant == "none" else {"quant": quant}
    node = helper.make_node("FusedDense", ["x0", "x1", "W", "b"], ["y"], domain=ops.DOMAIN, activation=act, **extra)
    proto = model(node, ["x0", "x1"], [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    for rows in (3, 50):  # columns split and rows split with 2 threads
        x0 = rng.standard_normal((rows, 25)).astype(np.float32)
        x1 = rng.standard_normal((rows, 15)).astype(np.float32)
        x0[1, 4] = np.nan
        x1[rows - 1, 14] = np.nan
        y = session(proto, library, threads).run(None, {"x0": x0, "x1": x1})[0]
        with np.errstate(invalid="ignore", over="ignore"):
            expected = ACTS[act](np.concatenate([x0, x1], 1).astype(np.float64) @ w + b)
        assert np.array_equal(np.isnan(y), np.isnan(expected)), (act, quant, rows)
        assert np.isnan(y[1]).all() and np.isnan(y[rows - 1]).all()


# --- noise outside (0, 1) -------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 2.0, np.nan, np.inf])
def test_loop_noise_outside_open_interval_is_refused(library, bad):
    rng = np.random.default_rng(2)
    sess = session(loop_model(loop_weights(rng)), library)
    feeds = loop_feeds(rng)
    assert np.isfinite(sess.run(None, feeds)[0]).all()
    feeds["noise"][5, 1, 0] = bad
    with pytest.raises(Exception, match=r"noise\[5, 1, 0\] = .* is outside \(0, 1\)"):
        sess.run(None, feeds)


def test_teacher_forced_loop_reads_no_noise(library):
    rng = np.random.default_rng(3)
    feeds = loop_feeds(rng)
    del feeds["noise"]
    feeds["prev_samples"] = rng.uniform(-1, 1, (T, B)).astype(np.float32)
    y = session(loop_model(loop_weights(rng), teacher_forced=True), library).run(None, feeds)[0]
    assert y.shape == (T, B, N) and np.isfinite(y).all()

"""The native ops' worker teams in ONNX Runtime (README "Threads").

- the setting: the session config entry ``waveopt.threads`` (before or after registering the
  library), the WAVEOPT_THREADS fallback, the default of 1, malformed values as clean errors,
  and ``waveopt.session(..., threads=N)`` giving the ops N threads with ORT's pool at 1;
- bit-identical results for 1, 2, 3 (uneven shares) and 4 threads (more than this machine's
  cores): WaveRNNLoop teacher-forced logits and free-running samples, RAW and MOL, default
  and odd dims, B = 1 and 16, float32/int16/int8; FusedDense over rows and over columns.
  (1 thread is checked against the PyTorch reference in test_native_op/test_native_quant, so
  N threads are too.) WAVEOPT_THREADS_ADAPTIVE=0 keeps every member working on this busy
  machine, where the adaptive team would often fall back to one thread;
- no deadlock: a session destroyed while idle, 4 Python threads running one session at once
  (int8 and fp32; results equal the serial ones), a fork after a session ran (os.fork and
  multiprocessing 'fork'), each in a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402
from test_native_op import dense_feeds, dense_model  # noqa: E402

from waveopt import ops, runtime  # noqa: E402
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise  # noqa: E402
from waveopt.models.native_reference import hoisted_inputs, loop_model, loop_weights  # noqa: E402

THREADS = [2, 3, 4]
STEPS = 200  # > 3 jobs of 64 steps: the team's per-job member choice and the h1/h2 parity
QUANT = {"none": {}, "int16": {"quant": "int16", "act_ranges": [3.0, 3.0]},
         "int8": {"quant": "int8", "act_ranges": [3.0, 3.0]}}


@pytest.fixture(autouse=True)
def every_member_works(monkeypatch):
    monkeypatch.setenv("WAVEOPT_THREADS_ADAPTIVE", "0")  # read when a kernel is created
    monkeypatch.delenv("WAVEOPT_THREADS", raising=False)


@pytest.fixture(scope="module")
def library():
    ops.build()
    return str(ops.library_path())


def options(library, threads=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if threads is not None:
        so.add_session_config_entry("waveopt.threads", str(threads))
    so.register_custom_ops_library(library)
    return so


def session(proto, so):
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def info(so) -> dict:
    return json.loads(str(session(ops.info_model(), so).run(None, {})[0][0]))


# --- the setting ------------------------------------------------------------------------------
def test_threads_entry_before_registering(library):
    assert info(options(library, 3))["threads"] == 3


def test_threads_entry_after_registering(library):
    so = ort.SessionOptions()
    so.register_custom_ops_library(library)
    so.add_session_config_entry("waveopt.threads", "4")  # read from the kernel info (ORT >= 1.24)
    assert info(so)["threads"] == 4


def test_threads_default_and_environment(library, monkeypatch):
    assert info(options(library))["threads"] == 1
    monkeypatch.setenv("WAVEOPT_THREADS", "2")
    assert info(options(library))["threads"] == 2
    assert info(options(library, 3))["threads"] == 3  # the session's entry wins


@pytest.mark.parametrize("value", ["0", "-1", "two", "257", ""])
def test_malformed_threads_entry_is_a_clean_error(library, value):
    with pytest.raises(Exception, match="waveopt.threads must be an integer from 1 to 256"):
        info(options(library, value))


def test_malformed_environment_is_a_clean_error(library, monkeypatch):
    monkeypatch.setenv("WAVEOPT_THREADS", "many")
    with pytest.raises(Exception, match="WAVEOPT_THREADS must be an integer"):
        info(options(library))


def test_waveopt_session_gives_the_threads_to_the_ops(library):
    sess = runtime.session(ops.info_model(), threads=3)
    assert json.loads(str(sess.run(None, {})[0][0]))["threads"] == 3
    so = runtime.session_options(3, native=True)
    assert so.intra_op_num_threads == 1  # ORT's own pool stays out of the team's way
    assert runtime.session_options(3).intra_op_num_threads == 3


# --- WaveRNNLoop: bit-identical for any thread count --------------------------------------------
def loop_case(model, batch, seed):
    frames = -(-STEPS // model.hop_length)
    mels = demo_mels(frames, batch=batch, feat_dims=model.hp.feat_dims, seed=seed)
    steps = frames * model.hop_length
    noise = uniform_noise(steps, batch, seed=seed + 1)
    prev = demo_prev_samples(steps, batch, seed=seed + 2)
    inputs = hoisted_inputs(model, mels, noise=noise, prev_samples=prev, weights=False)
    step = {k: inputs[k] for k in ("gi1", "gi2", "f1", "f2")}
    return {**step, "prev_samples": prev}, {**step, "noise": noise}


def with_quant(proto, quant, keys=("quant", "act_ranges")):
    for key, value in QUANT[quant].items():
        if key in keys:
            proto.graph.node[0].attribute.append(helper.make_attribute(key, value))
    return proto


@pytest.mark.parametrize("quant", list(QUANT))
@pytest.mark.parametrize("name", ["raw", "mol", "odd", "odd_mol"])
def test_loop_bit_identical_for_any_thread_count(library, models, name, quant):
    model = models(name)
    weights = loop_weights(model)
    protos = {tf: with_quant(loop_model(weights, model.hp.mode, teacher_forced=tf), quant) for tf in (True, False)}
    for batch in (1, 16):
        tf_feeds, free_feeds = loop_case(model, batch, seed=20 + batch)
        ref = {tf: session(protos[tf], options(library, 1)).run(None, feeds)[0]
               for tf, feeds in ((True, tf_feeds), (False, free_feeds))}
        assert np.isfinite(ref[True]).all() and np.isfinite(ref[False]).all()
        for threads in THREADS:
            for tf, feeds in ((True, tf_feeds), (False, free_feeds)):
                got = session(protos[tf], options(library, threads)).run(None, feeds)[0]
                assert np.array_equal(got, ref[tf]), (name, quant, batch, threads, "teacher-forced" if tf else "free")


# --- FusedDense: bit-identical over rows and over columns ------------------------------------
@pytest.mark.parametrize("quant", list(QUANT))
@pytest.mark.parametrize("rows", [1, 5, 40, 1000])  # < 16 per member: columns split; more: rows
def test_dense_bit_identical_for_any_thread_count(library, quant, rows):
    splits, n = [37, 64, 7], 131  # odd N: 9 panels, the last one ragged
    proto, w, b = dense_model(splits, n, "tanh", lead=["M"])
    with_quant(proto, quant, keys=("quant",))
    feeds = dense_feeds(splits, [rows], seed=rows)
    ref = session(proto, options(library, 1)).run(None, feeds)[0]
    x = np.concatenate([feeds[f"x{i}"] for i in range(len(splits))], axis=-1).astype(np.float64)
    assert np.abs(ref - np.tanh(x @ w + b)).max() < {"none": 1e-4, "int16": 5e-3, "int8": 0.2}[quant]
    for threads in THREADS:
        got = session(proto, options(library, threads)).run(None, feeds)[0]
        assert np.array_equal(got, ref), (quant, rows, threads)


# --- no deadlock ------------------------------------------------------------------------------
# Runs in a subprocess so that a hang fails the test (timeout) instead of stopping the suite.
SCRIPT = r"""
import multiprocessing, os, sys, threading
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
lib, what = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
H, F, N, T, B = 48, 40, 256, 300, 2
def r(*s, scale=0.2): return (rng.standard_normal(s) * scale).astype(np.float32)
W = {"u1": r(3*H), "u2": r(3*H), "u3": r(F), "W_hh1": r(3*H, H), "b_hh1": r(3*H), "W_x2": r(3*H, H),
     "W_hh2": r(3*H, H), "b_hh2": r(3*H), "W_fc1": r(F, H), "W_fc2": r(F, F), "W_fc3": r(N, F), "b_fc3": r(N)}
feeds = {"gi1": r(T, B, 3*H, scale=1), "gi2": r(T, B, 3*H, scale=1), "f1": r(T, B, F), "f2": r(T, B, F),
         "noise": rng.uniform(1e-5, 1-1e-5, (T, B, 2)).astype(np.float32)}
def make(quant, threads=2):
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["gi1", "gi2", "f1", "f2", "noise"]]
    extra = {"quant": quant, "act_ranges": [3.0, 3.0]} if quant != "none" else {}
    node = helper.make_node("WaveRNNLoop", ["gi1", "gi2", "f1", "f2"] + list(W) + ["noise"], ["y"],
                            domain="waveopt.ops", mode="raw", **extra)
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in W.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("waveopt.ops", 1)], ir_version=9)
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.log_severity_level = 3
    so.add_session_config_entry("waveopt.threads", str(threads)); so.register_custom_ops_library(lib)
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
if what == "destroy":  # sessions (each with a 4-member team) destroyed while idle, run or not
    for i in range(20):
        s = make("int8" if i % 2 else "none", threads=4)
        if i % 3: s.run(None, feeds)
        del s
elif what == "concurrent":  # 4 Python threads run one session at once
    for quant in ("int8", "none"):
        s = make(quant)
        serial = s.run(None, feeds)[0]
        out, errors = [None] * 4, []
        def work(i):
            try:
                for _ in range(3): out[i] = s.run(None, feeds)[0]
            except Exception as e: errors.append(e)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert not errors, errors
        assert all(np.array_equal(o, serial) for o in out), quant
elif what in ("fork", "mp_fork"):  # the child uses a session whose team ran in the parent
    s = make("int8")
    serial = s.run(None, feeds)[0]
    def child(q=None):
        ok = np.array_equal(make("int8").run(None, feeds)[0], serial) and np.array_equal(s.run(None, feeds)[0], serial)
        if q is None: os._exit(0 if ok else 3)
        q.put(ok)
    if what == "fork":
        pid = os.fork()
        if pid == 0: child()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    else:
        ctx = multiprocessing.get_context("fork"); q = ctx.Queue()
        p = ctx.Process(target=child, args=(q,)); p.start(); ok = q.get(timeout=120); p.join(60)
        assert ok and p.exitcode == 0, (ok, p.exitcode)
    assert np.array_equal(s.run(None, feeds)[0], serial)  # the parent's team still works
print("ok", what)
"""


@pytest.mark.parametrize("what", ["destroy", "concurrent", "fork", "mp_fork"])
def test_no_deadlock(library, what):
    env = dict(os.environ, WAVEOPT_THREADS_ADAPTIVE="0")
    result = subprocess.run([sys.executable, "-c", SCRIPT, library, what], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"ok {what}" in result.stdout


def test_concurrent_runs_in_process_match_serial(library):
    """The same as the 'concurrent' subprocess case, in this process, through waveopt.session."""
    proto, _, _ = dense_model([64, 64], 96, "relu", lead=["M"])
    sess = session(proto, options(library, 2))
    feeds = dense_feeds([64, 64], [300], seed=3)
    serial = sess.run(None, feeds)[0]
    out = [None] * 4

    def work(i):
        for _ in range(5):
            out[i] = sess.run(None, feeds)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(o, serial) for o in out)

"""The native ops misused in ONNX Runtime sessions: a clean error (or the documented result), never a crash.

``WaveRNNLoop`` and ``FusedDense`` with wrong shapes, dtypes and attributes, empty
dimensions, non-finite weights and inputs, and noise outside (0, 1), each in a session of
its own, on every ISA path this CPU has (WAVEOPT_ISA=scalar, avx2, ...: one fresh process
per ISA runs every case and reports it before and after, so a crash names its case).

Non-finite weights of a quantized op and noise outside (0, 1) must be refused with an error
that names the problem (not "out of memory", not silently accepted).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_native_op import available_isas  # tests/ is on sys.path

from waveopt import ops
from waveopt.models.native_reference import STEP_INPUT_NAMES, WEIGHT_NAMES, loop_model

H, F, T, B = 8, 8, 5, 2
# Runs every case of a folder in a fresh process: a line before ("start") and after each.
RUNNER = r"""
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort

library, folder = sys.argv[1], Path(sys.argv[2])
out = open(folder / sys.argv[3], "w")
for path in sorted(folder.glob("*.onnx")):
    case = path.stem
    print(json.dumps({"case": case, "stage": "start"}), file=out, flush=True)
    feeds = dict(np.load(folder / f"{case}.npz"))
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.register_custom_ops_library(library)
    stage = "session"
    try:
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        stage = "run"
        y = sess.run(None, feeds)[0]
        result = {"outcome": "ok", "shape": list(y.shape), "finite": bool(np.all(np.isfinite(y)))}
    except Exception as e:
        result = {"outcome": "error", "stage": stage, "message": " ".join(str(e).split())[:400]}
    print(json.dumps({"case": case, **result}), file=out, flush=True)
"""


ISAS = available_isas()  # every ISA path this CPU can run (test_native_op decides)


# --- the models -------------------------------------------------------------------------------
def loop_weights(classes: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"u1": [3 * H], "u2": [3 * H], "u3": [F], "W_hh1": [3 * H, H], "b_hh1": [3 * H], "W_x2": [3 * H, H],
              "W_hh2": [3 * H, H], "b_hh2": [3 * H], "W_fc1": [F, H], "W_fc2": [F, F], "W_fc3": [classes, F],
              "b_fc3": [classes]}
    return {n: (rng.standard_normal(shapes[n]) * 0.3).astype(np.float32) for n in WEIGHT_NAMES}


def loop_feeds(t=T, b=B, teacher_forced=False, seed=1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {n: rng.standard_normal((t, b, 3 * H if n.startswith("gi") else F)).astype(np.float32)
             for n in STEP_INPUT_NAMES}
    if teacher_forced:
        feeds["prev_samples"] = rng.uniform(-1, 1, (t, b)).astype(np.float32)
    else:
        feeds["noise"] = rng.uniform(0.01, 0.99, (t, b, 2)).astype(np.float32)
    return feeds


def loop_case(mode="raw", teacher_forced=False, weights=None, attrs=None, feeds=None, edit=None):
    """(model, feeds) of one WaveRNNLoop node; graph input shapes left open so wrong ones reach the op."""
    weights = weights or loop_weights(30 if mode == "mol" else 16)
    proto = loop_model(weights, mode, teacher_forced=teacher_forced)
    for value in proto.graph.input:
        value.type.tensor_type.ClearField("shape")
    proto.graph.node[0].attribute.extend(helper.make_attribute(k, v) for k, v in (attrs or {}).items())
    feeds = feeds or loop_feeds(teacher_forced=teacher_forced)
    if edit:
        edit(proto, feeds)
    return proto, feeds


def dense_case(splits=(6, 4), n=5, rows=3, activation="relu", attrs=None, w=None, b=None, feeds=None):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((sum(splits), n)).astype(np.float32) if w is None else w
    b = rng.standard_normal(n).astype(np.float32) if b is None else b
    xs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, None) for i in range(len(splits))]
    node = helper.make_node("FusedDense", [x.name for x in xs] + ["W", "b"], ["y"], domain=ops.DOMAIN,
                            activation=activation, **(attrs or {}))
    graph = helper.make_graph([node], "dense", xs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ops.DOMAIN, 1)],
                              ir_version=9)
    feeds = feeds or {f"x{i}": rng.standard_normal((rows, k)).astype(np.float32) for i, k in enumerate(splits)}
    return proto, feeds


def _set(name, value):
    def edit(proto, feeds):
        feeds[name] = value(feeds[name]) if callable(value) else value
    return edit


def _weight(name, value):
    def edit(proto, feeds):
        for i, t in enumerate(proto.graph.initializer):
            if t.name == name:
                array = numpy_helper.to_array(t)
                proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(value(array), name))
    return edit


def _nan_at_0(a):
    a = a.copy()
    a.reshape(-1)[0] = np.nan
    return a


QUANT = {"quant": "int8", "act_ranges": [4.0, 4.0]}
QUANT16 = {"quant": "int16", "act_ranges": [4.0, 4.0]}

# name -> (build, expected): expected is "ok", "ok-empty", "ok-nonfinite" or a regex the error must match.
CASES = {
    # WaveRNNLoop: what works
    "loop_raw": (lambda: loop_case(), "ok"),
    "loop_mol": (lambda: loop_case("mol"), "ok"),
    "loop_teacher_forced": (lambda: loop_case(teacher_forced=True), "ok"),
    "loop_int8": (lambda: loop_case(attrs=QUANT), "ok"),
    "loop_int16": (lambda: loop_case(attrs=QUANT16), "ok"),
    # shapes
    "loop_gi1_width": (lambda: loop_case(edit=_set("gi1", lambda a: a[..., :-1])), r"WaveRNNLoop.*gi1"),
    "loop_gi2_steps": (lambda: loop_case(edit=_set("gi2", lambda a: a[:-1])), r"WaveRNNLoop.*gi2"),
    "loop_f1_batch": (lambda: loop_case(edit=_set("f1", lambda a: a[:, :1])), r"WaveRNNLoop.*f1"),
    "loop_f2_rank": (lambda: loop_case(edit=_set("f2", lambda a: a[..., None])), r"WaveRNNLoop.*f2"),
    "loop_noise_width": (lambda: loop_case(edit=_set("noise", lambda a: a[..., :1].copy())), r"WaveRNNLoop.*noise"),
    "loop_noise_rank": (lambda: loop_case(edit=_set("noise", lambda a: a[..., 0].copy())), r"WaveRNNLoop.*noise"),
    "loop_prev_rank": (lambda: loop_case(teacher_forced=True, edit=_set("prev_samples", lambda a: a[..., None])),
                       r"WaveRNNLoop.*prev_samples"),
    "loop_w_fc2_shape": (lambda: loop_case(edit=_weight("W_fc2", lambda a: a[:, :-1].copy())), r"W_fc2"),
    "loop_b_fc3_shape": (lambda: loop_case(edit=_weight("b_fc3", lambda a: a[:-1].copy())), r"b_fc3"),
    "loop_w_hh1_rank": (lambda: loop_case(edit=_weight("W_hh1", lambda a: a.reshape(-1))), r"W_hh1"),
    "loop_mol_classes": (lambda: loop_case("mol", weights=loop_weights(16)), r"mol"),
    # dtypes
    "loop_gi1_double": (lambda: loop_case(edit=_set("gi1", lambda a: a.astype(np.float64))), r"(?i)type"),
    "loop_noise_int": (lambda: loop_case(edit=_set("noise", lambda a: (a * 10).astype(np.int64))), r"(?i)type"),
    "loop_weight_double": (lambda: loop_case(edit=_weight("u1", lambda a: a.astype(np.float64))), r"(?i)u1|type"),
    # attributes
    "loop_mode": (lambda: loop_case(edit=lambda p, f: setattr(p.graph.node[0].attribute[0], "s", b"mu-law")),
                  r"mode"),
    "loop_teacher_forced_2": (lambda: loop_case(attrs={"teacher_forced": 2}), r"teacher_forced"),
    "loop_quant_int4": (lambda: loop_case(attrs={"quant": "int4", "act_ranges": [1.0, 1.0]}), r"quant"),
    "loop_quant_no_ranges": (lambda: loop_case(attrs={"quant": "int8"}), r"act_ranges"),
    "loop_quant_nan_range": (lambda: loop_case(attrs={"quant": "int8", "act_ranges": [1.0, float("nan")]}),
                             r"act_ranges"),
    # empty dimensions
    "loop_no_steps": (lambda: loop_case(feeds={k: v[:0] for k, v in loop_feeds().items()}), "ok-empty"),
    "loop_no_batch": (lambda: loop_case(feeds={k: v[:, :0] for k, v in loop_feeds().items()}), "ok-empty"),
    "loop_no_classes": (lambda: loop_case(edit=lambda p, f: (_weight("W_fc3", lambda a: a[:0].copy())(p, f),
                                                            _weight("b_fc3", lambda a: a[:0].copy())(p, f))),
                        r"WaveRNNLoop.*(W_fc3|classes|N)"),
    # non-finite weights and inputs: float32 propagates them; quantized weights must be refused by name
    "loop_nan_weight_fp32": (lambda: loop_case(edit=_weight("W_fc3", _nan_at_0)), "ok"),
    "loop_nan_weight_int8": (lambda: loop_case(attrs=QUANT, edit=_weight("W_hh1", _nan_at_0)),
                             r"(?i)finite|nan"),
    "loop_inf_weight_int16": (lambda: loop_case(attrs=QUANT16, edit=_weight("W_fc2", lambda a: a * np.inf)),
                              r"(?i)finite|inf"),
    "loop_nan_input": (lambda: loop_case(edit=_set("gi1", _nan_at_0)), "ok"),
    # noise outside (0, 1)
    **{f"loop_noise_{label}": (lambda v=value: loop_case(edit=_set("noise", lambda a: np.full_like(a, v))),
                               r"(?i)noise")
       for label, value in (("nan", np.nan), ("negative", -0.5), ("two", 2.0), ("zero", 0.0), ("one", 1.0))},
    # FusedDense: what works
    "dense_relu": (lambda: dense_case(), "ok"),
    "dense_int8": (lambda: dense_case(attrs={"quant": "int8"}), "ok"),
    "dense_no_rows": (lambda: dense_case(feeds={"x0": np.zeros((0, 6), np.float32),
                                                "x1": np.zeros((0, 4), np.float32)}), "ok-empty"),
    "dense_empty_split": (lambda: dense_case(splits=(6, 0)), "ok"),
    # shapes, dtypes, attributes
    "dense_split_width": (lambda: dense_case(feeds={"x0": np.ones((3, 6), np.float32),
                                                    "x1": np.ones((3, 5), np.float32)}), r"FusedDense"),
    "dense_rows_differ": (lambda: dense_case(feeds={"x0": np.ones((3, 6), np.float32),
                                                    "x1": np.ones((4, 4), np.float32)}), r"FusedDense"),
    "dense_bias_length": (lambda: dense_case(b=np.zeros(4, np.float32)), r"FusedDense"),
    "dense_weight_rank": (lambda: dense_case(w=np.zeros(50, np.float32)), r"FusedDense"),
    "dense_double_input": (lambda: dense_case(feeds={"x0": np.ones((3, 6)), "x1": np.ones((3, 4))}), r"(?i)type"),
    "dense_activation": (lambda: dense_case(activation="gelu"), r"activation"),
    "dense_quant_int4": (lambda: dense_case(attrs={"quant": "int4"}), r"quant"),
    # empty and non-finite weights
    "dense_no_outputs": (lambda: dense_case(n=0), r"no output columns \(N = 0\)"),
    "dense_no_outputs_int8": (lambda: dense_case(n=0, attrs={"quant": "int8"}), r"no output columns \(N = 0\)"),
    "dense_nan_weight_fp32": (lambda: dense_case(w=_nan_at_0(np.ones((10, 5), np.float32))), "ok"),
    "dense_nan_weight_int8": (lambda: dense_case(attrs={"quant": "int8"}, w=_nan_at_0(np.ones((10, 5), np.float32))),
                              r"(?i)finite|nan"),
    "dense_nan_input": (lambda: dense_case(feeds={"x0": _nan_at_0(np.ones((3, 6), np.float32)),
                                                  "x1": np.ones((3, 4), np.float32)}), "ok"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict[str, dict]]:
    """{isa: {case: result}} from one fresh process per ISA."""
    ops.build()
    folder = tmp_path_factory.mktemp("op_misuse")
    for name, (build, _) in CASES.items():
        proto, feeds = build()
        (folder / f"{name}.onnx").write_bytes(proto.SerializeToString())
        np.savez(folder / f"{name}.npz", **feeds)
    found = {}
    for isa in ISAS:
        env = {**os.environ, "WAVEOPT_ISA": isa}
        process = subprocess.run([sys.executable, "-c", RUNNER, str(ops.library_path()), str(folder),
                                  f"results.{isa}.jsonl"], env=env, capture_output=True, text=True, timeout=600)
        lines = [json.loads(line) for line in (folder / f"results.{isa}.jsonl").read_text().splitlines()]
        done = {r["case"]: r for r in lines if r.get("stage") != "start"}
        started = [r["case"] for r in lines if r.get("stage") == "start"]
        for case in started:
            done.setdefault(case, {"outcome": f"crash (exit {process.returncode})", "message": process.stderr[-500:]})
        found[isa] = done
    return found


def _expected(value):
    return value.values[0] if hasattr(value, "values") else value


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case, expected", [pytest.param(n, e, marks=getattr(e, "marks", ()), id=n)
                                            for n, (_, e) in CASES.items()])
def test_misuse_is_a_clean_error_or_documented(results, isa, case, expected):
    expected = _expected(expected)
    result = results[isa].get(case)
    assert result is not None, f"{case} never ran under WAVEOPT_ISA={isa}"
    assert not result["outcome"].startswith("crash"), result
    if expected.startswith("ok"):
        assert result["outcome"] == "ok", result
        if expected == "ok-empty":
            assert 0 in result["shape"], result
        return
    assert result["outcome"] == "error", f"accepted: {result}"
    message = result["message"]
    assert re.search(expected, message), message
    assert "out of memory" not in message.lower(), message

"""The native ops in ONNX Runtime, loaded as a user would, on every ISA path this CPU has.

The kernels are chosen once per process, so each ISA (WAVEOPT_ISA=scalar/avx2/avx512/avx512vnni) runs
in a fresh Python process that loads the library into a new InferenceSession and runs every
case saved by this process; the comparisons happen here:

- WaveRNNLoop vs the PyTorch reference: teacher-forced logits within 1e-4, free-running
  samples identical for >= 2000 steps or up to a first mismatch that is a near-tie
  (tests/reference_check.py), checked for each batch row on its own; RAW and MOL,
  B = 1 and 16, small and odd dims;
- every SIMD path vs the scalar path, and the SIMD paths (AVX2, AVX-512, VNNI) bit for bit;
- FusedDense vs numpy;
- dispatch: the default is the best ISA the CPU has, WAVEOPT_ISA picks the path;
- wrong shapes, dtypes and attributes are ORT errors (Python exceptions), never crashes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from reference_check import assert_samples_match  # noqa: E402

from waveopt import ops  # noqa: E402
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise  # noqa: E402
from waveopt.models.native_reference import hoisted_inputs, loop_model, loop_weights  # noqa: E402

FREE_STEPS = 2000
TF_STEPS = 600  # teacher-forced steps compared (the scalar path is slow at B = 16)
CONFIGS = ["raw", "mol", "odd", "odd_mol"]
BATCHES = [1, 16]

# Loads the library like a user would (onnxruntime + the .so path, no waveopt import) in a
# fresh process whose kernels WAVEOPT_ISA chose. `runner LIB -` prints WaveoptInfo's JSON;
# `runner LIB FOLDER ISA` also runs every <case>.onnx there on <case>.in.npz, writing
# <case>.<ISA>.npz and info.<ISA>.json.
RUNNER = r"""
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

library, folder = sys.argv[1], sys.argv[2]

def options():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.register_custom_ops_library(library)
    return so

def session(model):
    return ort.InferenceSession(model, options(), providers=["CPUExecutionProvider"])

node = helper.make_node("WaveoptInfo", [], ["info"], domain="waveopt.ops")
graph = helper.make_graph([node], "info", [], [helper.make_tensor_value_info("info", TensorProto.STRING, [1])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("waveopt.ops", 1)], ir_version=9)
info = session(model.SerializeToString()).run(None, {})[0][0]
if folder == "-":
    print(info)
    sys.exit(0)
folder, isa = Path(folder), sys.argv[3]
(folder / f"info.{isa}.json").write_text(info)
for path in sorted(folder.glob("*.onnx")):
    case = path.name[: -len(".onnx")]
    feeds = dict(np.load(folder / f"{case}.in.npz"))
    np.savez(folder / f"{case}.{isa}.npz", *session(str(path)).run(None, feeds))
"""


def run_fresh(*args: str, isa: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("WAVEOPT_ISA", None)
    if isa is not None:
        env["WAVEOPT_ISA"] = isa
    return subprocess.run([sys.executable, "-c", RUNNER, str(ops.library_path()), *args], env=env,
                          capture_output=True, text=True)


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def available_isas() -> list[str]:
    flags = cpu_flags()
    isas = ["scalar"]
    if {"avx2", "fma"} <= flags:
        isas.append("avx2")
    if {"avx512f", "avx512bw", "avx512vl", "fma"} <= flags:
        isas.append("avx512")
        if "avx512_vnni" in flags:
            isas.append("avx512vnni")
    return isas


ISAS = available_isas()
ALL_ISAS = ["scalar", "avx2", "avx512", "avx512vnni"]
SIMD_ISAS = [isa for isa in ISAS if isa != "scalar"]


def isa_param(isa):
    return pytest.param(isa, marks=pytest.mark.skipif(isa not in ISAS, reason=f"this CPU cannot run {isa}"))


@pytest.fixture(scope="session")
def native_library():
    ops.build()
    return ops.library_path()


def run_isa(folder: Path, isa: str) -> None:
    result = run_fresh(str(folder), isa, isa=isa)
    assert result.returncode == 0, f"WAVEOPT_ISA={isa} runner failed:\n{result.stderr[-3000:]}"


def assert_streams_match(model, mels, noise, ref, got) -> list[int]:
    """The near-tie rule for each batch row on its own (rows never interact, so a near-tie in
    one row says nothing about the others); returns each row's agreeing leading steps."""
    return [assert_samples_match(model, mels[b:b + 1], noise[:, b:b + 1], ref[:, b:b + 1], got[:, b:b + 1])
            for b in range(ref.shape[1])]


def sess(model):
    return ort.InferenceSession(model.SerializeToString(), ops.session_options(1), providers=["CPUExecutionProvider"])


# --- WaveRNNLoop vs the torch reference, per ISA ---------------------------------------------
def loop_cases(model, name: str, batch: int) -> dict:
    """Reference results and op inputs of one (model, batch): teacher-forced and free-running."""
    frames = -(-FREE_STEPS // model.hop_length)
    mels = demo_mels(frames, batch=batch, feat_dims=model.hp.feat_dims, seed=11 + batch)
    steps = frames * model.hop_length
    noise = uniform_noise(steps, batch, seed=12 + batch)
    prev = demo_prev_samples(steps, batch, seed=13 + batch)
    inputs = hoisted_inputs(model, mels, noise=noise, prev_samples=prev, weights=False)
    mt = torch.from_numpy(mels)
    logits = model.teacher_forced_logits(mt, torch.from_numpy(prev)).numpy()[:TF_STEPS]
    samples = model.generate_samples(mt, torch.from_numpy(noise)).numpy()
    step_inputs = {k: inputs[k] for k in ("gi1", "gi2", "f1", "f2")}
    return {
        "mels": mels, "noise": noise, "ref_logits": logits, "ref_samples": samples,
        "tf_feeds": {**{k: v[:TF_STEPS] for k, v in step_inputs.items()}, "prev_samples": prev[:TF_STEPS]},
        "free_feeds": {**step_inputs, "noise": noise},
    }


@pytest.fixture(scope="session")
def loop_results(native_library, models, tmp_path_factory):
    """{(config, batch): case} with each ISA's outputs under case['out'][isa]."""
    folder = tmp_path_factory.mktemp("native_loop")
    cases = {}
    _prepare_loop_cases(folder, models, cases)
    for isa in ISAS:
        run_isa(folder, isa)
    for (name, batch), case in cases.items():
        case["out"] = {}
        for isa in ISAS:
            tf = np.load(folder / f"{name}_b{batch}_tf.{isa}.npz")["arr_0"]
            free = np.load(folder / f"{name}_b{batch}_free.{isa}.npz")["arr_0"]
            case["out"][isa] = (tf, free)
    infos = {isa: json.loads((folder / f"info.{isa}.json").read_text()) for isa in ISAS}
    for path in folder.glob("*.npz"):  # ~1 GB of inputs and outputs: don't leave them in /tmp
        path.unlink()
    return cases, infos


def _prepare_loop_cases(folder, models, cases):
    for name in CONFIGS:
        model = models(name)
        weights = loop_weights(model)
        for tf in (True, False):
            proto = loop_model(weights, model.hp.mode, teacher_forced=tf)
            for batch in BATCHES:
                (folder / f"{name}_b{batch}_{'tf' if tf else 'free'}.onnx").write_bytes(proto.SerializeToString())
        for batch in BATCHES:
            case = loop_cases(model, name, batch)
            for form in ("tf", "free"):
                np.savez(folder / f"{name}_b{batch}_{form}.in.npz", **case[f"{form}_feeds"])
            cases[(name, batch)] = case


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("isa", [isa_param(i) for i in ALL_ISAS])
def test_loop_matches_torch_reference(isa, name, batch, loop_results, models):
    cases, infos = loop_results
    assert infos[isa]["isa"] == isa
    model = models(name)
    case = cases[(name, batch)]
    logits, samples = case["out"][isa]
    assert logits.shape == case["ref_logits"].shape
    assert np.abs(logits - case["ref_logits"]).max() <= 1e-4
    assert samples.shape == case["ref_samples"].shape and samples.shape[0] >= FREE_STEPS
    assert_streams_match(model, case["mels"], case["noise"], case["ref_samples"], samples)


@pytest.mark.parametrize("isa", [isa_param(i) for i in ("avx2", "avx512", "avx512vnni")])
def test_simd_paths_match_scalar_path(isa, loop_results, models):
    cases, _ = loop_results
    # WAVEOPT_ISA really switched the code: SIMD logits round differently from the scalar ones.
    assert any(not np.array_equal(case["out"][isa][0], case["out"]["scalar"][0]) for case in cases.values())
    for (name, batch), case in cases.items():
        logits, samples = case["out"][isa]
        ref_logits, ref_samples = case["out"]["scalar"]
        assert np.abs(logits - ref_logits).max() <= 2e-5, (name, batch)
        model = models(name)
        # Against the scalar path's own history: agree, or first differ at a near-tie.
        assert_streams_match(model, case["mels"], case["noise"], ref_samples, samples)


@pytest.mark.skipif(len(SIMD_ISAS) < 2, reason="needs two SIMD paths (AVX2 and AVX-512)")
def test_simd_paths_are_bitwise_identical(loop_results):
    cases, _ = loop_results
    for key, case in cases.items():
        for isa in SIMD_ISAS[1:]:
            for a, b in zip(case["out"][SIMD_ISAS[0]], case["out"][isa]):
                assert np.array_equal(a, b), (key, isa)


# --- FusedDense ------------------------------------------------------------------------------
def dense_model(splits, n, activation, lead=("M",), constant=True, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((sum(splits), n)).astype(np.float32) * 0.3
    b = rng.standard_normal(n).astype(np.float32)
    xs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, list(lead) + [k]) for i, k in enumerate(splits)]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    inputs = xs
    if not constant:
        inputs = xs + [helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape)),
                       helper.make_tensor_value_info("b", TensorProto.FLOAT, [n])]
        inits = []
    node = helper.make_node("FusedDense", [x.name for x in xs] + ["W", "b"], ["y"], domain=ops.DOMAIN,
                            activation=activation)
    graph = helper.make_graph([node], "dense", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ops.DOMAIN, 1)],
                              ir_version=9)
    return proto, w, b


ACTS = {
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0),
    "tanh": np.tanh,
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
}
DENSE_CASES = [  # (splits, n, activation, leading shape)
    ((512,), 1536, "none", (4,)),
    ((200, 24), 136, "relu", (3, 5)),
    ((7,), 30, "tanh", (1,)),
    ((33, 1, 16), 17, "sigmoid", (130,)),
    ((64,), 48, "relu", (16,)),
]


def dense_feeds(splits, lead, seed):
    rng = np.random.default_rng(seed + 100)
    return {f"x{i}": rng.standard_normal(tuple(lead) + (k,)).astype(np.float32) for i, k in enumerate(splits)}


def dense_expected(feeds, w, b, activation):
    x = np.concatenate([feeds[f"x{i}"] for i in range(len(feeds))], axis=-1).astype(np.float64)
    return ACTS[activation](x @ w.astype(np.float64) + b)


@pytest.fixture(scope="session")
def dense_results(native_library, tmp_path_factory):
    folder = tmp_path_factory.mktemp("native_dense")
    expected = {}
    for i, (splits, n, act, lead) in enumerate(DENSE_CASES):
        for constant in (True, False):
            proto, w, b = dense_model(splits, n, act, lead=[f"d{j}" for j in range(len(lead))], constant=constant,
                                      seed=i)
            feeds = dense_feeds(splits, lead, i)
            if not constant:
                feeds.update(W=w, b=b)
            case = f"dense{i}_{'const' if constant else 'input'}"
            (folder / f"{case}.onnx").write_bytes(proto.SerializeToString())
            np.savez(folder / f"{case}.in.npz", **feeds)
            expected[case] = dense_expected({k: v for k, v in feeds.items() if k.startswith("x")}, w, b, act)
    for isa in ISAS:
        run_isa(folder, isa)
    return {case: (exp, {isa: np.load(folder / f"{case}.{isa}.npz")["arr_0"] for isa in ISAS})
            for case, exp in expected.items()}


@pytest.mark.parametrize("isa", [isa_param(i) for i in ALL_ISAS])
def test_fused_dense_matches_numpy(isa, dense_results):
    for case, (expected, outs) in dense_results.items():
        got = outs[isa]
        assert got.shape == expected.shape, case
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5, err_msg=case)


def test_fused_dense_large_row_count(native_library):
    proto, w, b = dense_model((112,), 1536, "none", lead=("M",))
    x = np.random.default_rng(1).standard_normal((1000, 112)).astype(np.float32)
    (y,) = sess(proto).run(None, {"x0": x})
    np.testing.assert_allclose(y, x.astype(np.float64) @ w + b, atol=3e-5, rtol=1e-5)


def test_fused_dense_empty_dims(native_library):
    proto, w, b = dense_model((4, 0), 6, "tanh", lead=("M",))
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((3, 4), dtype=np.float32)
    (y,) = sess(proto).run(None, {"x0": x0, "x1": np.zeros((3, 0), np.float32)})
    np.testing.assert_allclose(y, np.tanh(x0.astype(np.float64) @ w + b), atol=1e-6)
    (y,) = sess(proto).run(None, {"x0": x0[:0], "x1": np.zeros((0, 0), np.float32)})
    assert y.shape == (0, 6)


# --- dispatch --------------------------------------------------------------------------------
def info_in_fresh_process(isa: str | None) -> dict:
    result = run_fresh("-", isa=isa)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dispatch_picks_the_best_isa_the_cpu_has(native_library):
    info = info_in_fresh_process(None)
    assert info["requested"] == "auto"
    assert info["isa"] == ISAS[-1], info
    assert info["ort_version"] == ort.__version__
    assert Path(info["library"]).resolve() == native_library.resolve()
    flags = cpu_flags()
    assert info["cpu"]["avx512f"] == ("avx512f" in flags) and info["cpu"]["avx2"] == ("avx2" in flags)


@pytest.mark.parametrize("isa", [isa_param(i) for i in ALL_ISAS])
def test_waveopt_isa_forces_the_path(isa, native_library):
    info = info_in_fresh_process(isa)
    assert info["isa"] == isa and info["requested"] == isa
    assert "forced" in info["reason"]


def test_unknown_or_unsupported_isa_is_an_error(native_library):
    result = run_fresh("-", isa="avx1024")
    assert result.returncode != 0 and "WAVEOPT_ISA=avx1024 is not one of" in result.stderr
    for isa in set(ALL_ISAS) - set(ISAS):  # only on CPUs lacking an ISA
        result = run_fresh("-", isa=isa)
        assert result.returncode != 0 and "lacks" in result.stderr


def test_ops_info_in_this_process(native_library):
    info = ops.info()
    assert info["isa"] in ISAS and Path(info["library_path"]) == ops.library_path()


# --- errors, not crashes ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_loop(native_library, models):
    model = models("odd")
    mels = demo_mels(2, batch=2, feat_dims=model.hp.feat_dims, seed=1)
    steps = 2 * model.hop_length
    inputs = hoisted_inputs(model, mels, noise=uniform_noise(steps, 2, seed=1),
                            prev_samples=demo_prev_samples(steps, 2, seed=1))
    return model, inputs


def relaxed(proto):
    """The model with every graph input's shape unknown, so wrong shapes reach the op."""
    for value in proto.graph.input:
        value.type.tensor_type.ClearField("shape")
    return proto


def free_feeds(inputs):
    return {k: inputs[k] for k in ("gi1", "gi2", "f1", "f2", "noise")}


@pytest.mark.parametrize("change", [
    ("gi1", lambda a: a[..., :-1]),
    ("gi2", lambda a: a[:-1]),
    ("f1", lambda a: a[:, :1]),
    ("f2", lambda a: a[..., None]),
    ("noise", lambda a: np.concatenate([a, a[..., :1]], axis=-1)),
    ("noise", lambda a: a[:-3]),
])
def test_loop_rejects_wrong_shapes(change, small_loop):
    model, inputs = small_loop
    name, edit = change
    s = sess(relaxed(loop_model(loop_weights(model), "raw")))
    feeds = free_feeds(inputs)
    feeds[name] = np.ascontiguousarray(edit(feeds[name]))
    with pytest.raises(Exception, match=f"WaveRNNLoop: input [0-9]+ \\({name}\\)"):
        s.run(None, feeds)
    s.run(None, free_feeds(inputs))  # the session still works


def test_loop_rejects_wrong_weight_shapes_and_dtypes(small_loop):
    model, inputs = small_loop
    weights = loop_weights(model)
    bad = dict(weights, W_fc2=weights["W_fc2"][:, :-1].copy())
    with pytest.raises(Exception, match="W_fc2"):
        sess(loop_model(bad, "raw")).run(None, free_feeds(inputs))
    bad = dict(weights, b_fc3=weights["b_fc3"][:-1].copy())
    with pytest.raises(Exception, match="b_fc3"):
        sess(loop_model(bad, "raw")).run(None, free_feeds(inputs))
    with pytest.raises(Exception, match="mol"):  # MOL needs 30 logits, this model has 1024
        sess(loop_model(weights, "mol")).run(None, free_feeds(inputs))
    proto = loop_model(weights, "raw")
    u1 = next(t for t in proto.graph.initializer if t.name == "u1")
    u1.CopyFrom(numpy_helper.from_array(weights["u1"].astype(np.float64), "u1"))
    with pytest.raises(Exception, match="u1|type"):  # a double weight: ORT refuses the model
        sess(proto).run(None, free_feeds(inputs))
    feeds = free_feeds(inputs)
    feeds["gi1"] = feeds["gi1"].astype(np.float64)
    with pytest.raises(Exception):
        sess(loop_model(weights, "raw")).run(None, feeds)


def test_loop_rejects_bad_attributes(small_loop):
    model, _ = small_loop
    proto = loop_model(loop_weights(model), "raw")
    proto.graph.node[0].attribute[0].s = b"mu-law"
    with pytest.raises(Exception, match="mode"):
        sess(proto)


def test_loop_with_weights_as_graph_inputs_equals_constant_weights(small_loop):
    model, inputs = small_loop
    weights = loop_weights(model)
    feeds = free_feeds(inputs)
    (expected,) = sess(loop_model(weights, "raw")).run(None, feeds)
    s = sess(loop_model(weights, "raw", constant_weights=False))
    (got,) = s.run(None, {**feeds, **weights})
    np.testing.assert_array_equal(got, expected)
    # New values in the same shapes are used, not a stale packing.
    scaled = {**weights, "W_fc3": weights["W_fc3"] * 0.5}
    (other,) = s.run(None, {**feeds, **scaled})
    (expected_other,) = sess(loop_model(scaled, "raw")).run(None, feeds)
    np.testing.assert_array_equal(other, expected_other)


def test_loop_empty_and_x0(small_loop):
    model, inputs = small_loop
    weights = loop_weights(model)
    feeds = free_feeds(inputs)
    s = sess(loop_model(weights, "raw"))
    (empty,) = s.run(None, {k: v[:0] for k, v in feeds.items()})
    assert empty.shape == (0, 2)
    # x0 = 0 given explicitly is the default.
    proto = loop_model(weights, "raw")
    proto.graph.node[0].input.append("x0")
    proto.graph.input.append(helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["B"]))
    (with_x0,) = sess(proto).run(None, {**feeds, "x0": np.zeros(2, np.float32)})
    (without,) = s.run(None, feeds)
    np.testing.assert_array_equal(with_x0, without)


def test_fused_dense_rejects_wrong_shapes(native_library):
    proto, w, b = dense_model((200, 24), 136, "relu", lead=("M",))
    s = sess(relaxed(proto))
    rng = np.random.default_rng(0)
    with pytest.raises(Exception, match="FusedDense"):
        s.run(None, {"x0": rng.standard_normal((3, 200), dtype=np.float32),
                     "x1": rng.standard_normal((3, 25), dtype=np.float32)})
    with pytest.raises(Exception, match="FusedDense"):
        s.run(None, {"x0": rng.standard_normal((3, 200), dtype=np.float32),
                     "x1": rng.standard_normal((4, 24), dtype=np.float32)})
    proto, _, _ = dense_model((8,), 4, "gelu")
    with pytest.raises(Exception, match="activation"):
        sess(proto)

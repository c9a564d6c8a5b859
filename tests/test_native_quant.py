"""The int8 and int16 WaveRNNLoop and FusedDense in ONNX Runtime, on every ISA path this CPU has.

- every SIMD path (AVX2, AVX-512BW, VNNI) gives bit-identical logits and samples: the
  integer products are exact and the float epilogue is written in one order (kernels.h);
- the scalar path agrees with them up to its libm transcendentals (teacher-forced logits);
- the quantized loop against the float64 numpy reference of the op: logit SNR above the
  floors the README documents, for int8 and int16, default (fatchord-shaped) and odd dims;
- constant and non-constant weights give the same result (packed at creation or per run);
- FusedDense int8/int16 against numpy.
Each ISA runs in a fresh process (the kernels are chosen once per process).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from native_emulation import wavernn_loop
from onnx import helper
from test_native_op import ISAS, SIMD_ISAS, dense_feeds, dense_model, run_isa

from waveopt import ops
from waveopt.quant.accuracy import logit_snr_db
from waveopt.demo_data import demo_mels, demo_prev_samples, uniform_noise
from waveopt.models.native_reference import hoisted_inputs, loop_model, loop_weights

STEPS = 800
SNR_FLOOR = {"int8": 28.0, "int16": 55.0}
CONFIGS = ["raw", "mol", "odd"]


def quantized(proto, quant, ranges):
    node = proto.graph.node[0]
    node.attribute.extend([helper.make_attribute("quant", quant), helper.make_attribute("act_ranges", ranges)])
    return proto


@pytest.fixture(scope="module")
def quant_results(models, tmp_path_factory):
    ops.build()
    folder = tmp_path_factory.mktemp("native_quant")
    expected = {}
    for name in CONFIGS:
        model = models(name)
        weights = loop_weights(model)
        batch = 3
        frames = -(-STEPS // model.hop_length)
        mels = demo_mels(frames, batch=batch, feat_dims=model.hp.feat_dims, seed=5)
        steps = frames * model.hop_length
        noise = uniform_noise(steps, batch, seed=6)
        prev = demo_prev_samples(steps, batch, seed=7)
        inputs = hoisted_inputs(model, mels, noise=noise, prev_samples=prev, weights=False)
        step = {k: inputs[k] for k in ("gi1", "gi2", "f1", "f2")}
        args = [np.asarray(step[k], np.float64) for k in ("gi1", "gi2", "f1", "f2")]
        args += [np.asarray(weights[k], np.float64) for k in ("u1", "u2", "u3", "W_hh1", "b_hh1", "W_x2", "W_hh2",
                                                             "b_hh2", "W_fc1", "W_fc2", "W_fc3", "b_fc3")]
        peaks: dict = {}
        reference = wavernn_loop(*args, prev, mode=model.hp.mode, teacher_forced=True, peaks=peaks)
        ranges = [peaks["fc1"], peaks["fc2"]]
        for quant in ("int8", "int16"):
            for tf in (True, False):
                for constant in (True, False):
                    proto = quantized(loop_model(weights, model.hp.mode, teacher_forced=tf,
                                                 constant_weights=constant), quant, ranges)
                    case = f"{name}_{quant}_{'tf' if tf else 'free'}_{'c' if constant else 'in'}"
                    (folder / f"{case}.onnx").write_bytes(proto.SerializeToString())
                    feeds = {**step, **({"prev_samples": prev} if tf else {"noise": noise})}
                    if not constant:
                        feeds.update({k: np.asarray(v, np.float32) for k, v in weights.items()})
                    np.savez(folder / f"{case}.in.npz", **feeds)
        expected[name] = reference
    for quant in ("int8", "int16"):
        for i, (splits, n, act, lead) in enumerate([((512,), 96, "relu", (5,)), ((200, 24), 136, "none", (3, 2))]):
            proto, w, b = dense_model(splits, n, act, lead=[f"d{j}" for j in range(len(lead))], seed=i)
            proto.graph.node[0].attribute.append(helper.make_attribute("quant", quant))
            (folder / f"dense{i}_{quant}.onnx").write_bytes(proto.SerializeToString())
            feeds = dense_feeds(splits, lead, i)
            np.savez(folder / f"dense{i}_{quant}.in.npz", **feeds)
            x = np.concatenate([feeds[f"x{j}"] for j in range(len(splits))], -1).astype(np.float64)
            y = x @ w + b
            expected[f"dense{i}_{quant}"] = np.maximum(y, 0) if act == "relu" else y
    for isa in ISAS:
        run_isa(folder, isa)
    outputs = {path.name.rsplit(".", 2)[0]: {} for path in folder.glob("*.onnx")}
    for case in outputs:
        for isa in ISAS:
            outputs[case][isa] = np.load(folder / f"{case}.{isa}.npz")["arr_0"]
    return expected, outputs


@pytest.mark.skipif(not SIMD_ISAS, reason="no SIMD path on this CPU")
def test_simd_paths_bit_identical(quant_results):
    _, outputs = quant_results
    for case, by_isa in outputs.items():
        for isa in SIMD_ISAS[1:]:
            assert np.array_equal(by_isa[SIMD_ISAS[0]], by_isa[isa]), (case, isa)


def test_constant_and_input_weights_agree(quant_results):
    _, outputs = quant_results
    for case in [c for c in outputs if c.endswith("_c")]:
        for isa in ISAS:
            assert np.array_equal(outputs[case][isa], outputs[case[:-2] + "_in"][isa]), (case, isa)


@pytest.mark.parametrize("quant", ["int8", "int16"])
@pytest.mark.parametrize("name", CONFIGS)
def test_quantized_logits_against_float_reference(quant_results, name, quant):
    expected, outputs = quant_results
    for isa in ISAS:
        logits = outputs[f"{name}_{quant}_tf_c"][isa]
        snr = logit_snr_db(expected[name], logits)
        assert snr >= SNR_FLOOR[quant], (isa, snr)
        if isa != "scalar" and "scalar" in ISAS:  # the scalar path differs only by its libm
            scalar = outputs[f"{name}_{quant}_tf_c"]["scalar"]
            assert logit_snr_db(scalar, logits) > SNR_FLOOR[quant] + 10, isa


@pytest.mark.parametrize("quant", ["int8", "int16"])
def test_free_running_quantized_loop_samples_are_valid(quant_results, quant):
    _, outputs = quant_results
    for name in CONFIGS:
        for isa, samples in outputs[f"{name}_{quant}_free_c"].items():
            assert samples.shape[0] >= STEPS and np.all(np.abs(samples) <= 1.0) and np.all(np.isfinite(samples))


@pytest.mark.parametrize("quant", ["int8", "int16"])
def test_quantized_fused_dense_against_numpy(quant_results, quant):
    expected, outputs = quant_results
    floor = SNR_FLOOR[quant]
    for i in range(2):
        for isa, y in outputs[f"dense{i}_{quant}"].items():
            ref = expected[f"dense{i}_{quant}"]
            noise = np.sum((y - ref) ** 2)
            assert 10 * np.log10(np.sum(ref ** 2) / noise) >= floor, (i, isa)


@pytest.mark.parametrize("attrs, needle", [
    ({"quant": "int4", "act_ranges": [1.0, 1.0]}, "quant must be 'none', 'int8' or 'int16'"),
    ({"quant": "int8"}, "needs act_ranges"),
    ({"quant": "int16", "act_ranges": [1.0, float("nan")]}, "needs act_ranges"),
    ({"quant": "int8", "act_ranges": [1.0]}, "needs act_ranges"),
])
def test_bad_quant_attributes_are_errors(models, attrs, needle):
    import onnxruntime as ort

    ops.build()
    proto = loop_model(loop_weights(models("raw")), "raw")
    proto.graph.node[0].attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    with pytest.raises(Exception, match=needle):
        ort.InferenceSession(proto.SerializeToString(), ops.session_options(1), providers=["CPUExecutionProvider"])

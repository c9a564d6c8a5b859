import numpy as np
import onnxsim
import onnxruntime as ort
from onnx_builders import ar_loop_model, cnn_model

from waveopt.check import random_inputs
from waveopt.graph import to_ir, to_proto
from waveopt.passes import SimplifyPass
from waveopt.report import graph_stats


def _run(model, inputs):
    session = ort.InferenceSession(
        to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, inputs)


def _simplify(proto):
    model = to_ir(proto)
    p = SimplifyPass()
    result = p(model)
    assert result.model is model  # in place
    return model, p


def test_removes_loop_body_redundancy():
    model, p = _simplify(ar_loop_model())
    assert p.modified
    stats = graph_stats(model)
    body = stats.ops_in_loop_body
    assert body["Tanh"] == 1  # the duplicate is gone (CSE inside the body)
    assert "Relu" not in body  # dead node removed
    assert "Sub" not in body and "Div" not in body  # constant subgraph folded
    assert stats.n_ops_in_loop_body == 31 - 7
    assert "(7 in Loop bodies)" in p.summary and p.summary.startswith("removed ")


def test_is_exact():
    proto = ar_loop_model()
    model, _ = _simplify(proto)
    for seed in range(3):
        inputs = random_inputs(proto, seed=seed, dims={"T": 40, "B": 3})
        for want, got in zip(_run(proto, inputs), _run(model, inputs)):
            np.testing.assert_array_equal(got, want)


def test_keeps_interface_and_metadata():
    proto = ar_loop_model()
    out = to_proto(_simplify(proto)[0])
    assert out.graph.input == proto.graph.input
    assert out.graph.output == proto.graph.output
    assert {p.key: p.value for p in out.metadata_props} == {
        p.key: p.value for p in proto.metadata_props
    }


def test_is_idempotent():
    model, _ = _simplify(ar_loop_model())
    once = to_proto(model).SerializeToString()
    p = SimplifyPass()
    assert p(model).modified is False
    assert p.summary == "not applicable"
    assert to_proto(model).SerializeToString() == once


def test_not_applicable_leaves_model_unchanged():
    model = to_ir(cnn_model())
    before = to_proto(model).SerializeToString()
    p = SimplifyPass()
    assert p(model).modified is False
    assert p.summary == "not applicable"
    assert to_proto(model).SerializeToString() == before


def test_onnxsim_failure_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    model, p = _simplify(ar_loop_model())
    assert p.modified  # the Loop-body clean-up still ran
    assert "onnxsim failed and was skipped: RuntimeError: boom" in p.summary
    assert graph_stats(model).n_ops_in_loop_body == 24

    cnn = to_ir(cnn_model())
    p = SimplifyPass()
    assert p(cnn).modified is False
    assert p.summary == "not applicable (onnxsim failed and was skipped: RuntimeError: boom)"


def test_onnxsim_renaming_outputs_is_refused(monkeypatch):
    real = onnxsim.simplify

    def renaming(model, **kwargs):
        out, ok = real(model, **kwargs)
        out.graph.output[0].name = "renamed"
        return out, ok

    monkeypatch.setattr(onnxsim, "simplify", renaming)
    model, p = _simplify(ar_loop_model())
    assert [v.name for v in model.graph.outputs] == ["samples", "h_last"]
    assert "onnxsim changed the model's inputs or outputs and was skipped" in p.summary

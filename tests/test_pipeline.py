import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx_builders import ar_loop_model, cnn_model

from waveopt.check import CheckFailed, random_inputs
from waveopt.errors import WaveoptError
from waveopt.graph import to_ir
from waveopt.passes import PASSES, PRESETS, SimplifyPass, WaveoptPass, get_pass, register
from waveopt.pipeline import optimize, resolve_passes


class PerturbPass(WaveoptPass):
    """Test-only: scales the recurrent weight W by 1.1, which no check should accept."""

    name = "perturb"
    description = "breaks the model on purpose"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        w = model.graph.initializers["W"]
        w.const_value = ir.tensor(w.const_value.numpy() * np.float32(1.1), name="W")
        return self.result(model, "scaled W by 1.1")


@pytest.fixture
def perturb():
    register(PerturbPass)
    try:
        yield "perturb"
    finally:
        del PASSES["perturb"]


def test_registry():
    # lower_gru first: ONNX GRU ops become the gate math every later pass reads
    assert PRESETS["portable"][:2] == PRESETS["native"][:2] == ["lower_gru", "simplify"]
    assert PRESETS["portable"][-1] == "simplify"
    assert all(name in PASSES for preset in PRESETS.values() for name in preset)
    assert get_pass("simplify") is SimplifyPass
    assert PASSES["simplify"].name == "simplify"
    with pytest.raises(WaveoptError, match=r"unknown pass .nope. \(known passes: .*simplify.*\)"):
        get_pass("nope")


def test_proto_in_proto_out_and_input_untouched():
    proto = ar_loop_model()
    before = proto.SerializeToString()
    result = optimize(proto, passes=["simplify"])
    assert isinstance(result.model, onnx.ModelProto)
    assert proto.SerializeToString() == before
    assert [r.name for r in result.reports] == ["simplify"]
    report = result.reports[0]
    assert report.modified and report.summary.startswith("removed ") and report.seconds > 0
    assert len(result.model.graph.node[-1].attribute[0].g.node) < len(
        proto.graph.node[-1].attribute[0].g.node
    )


def test_ir_in_ir_out_and_input_untouched():
    model = to_ir(ar_loop_model())
    before = ir.serde.serialize_model(model).SerializeToString()
    result = optimize(model)
    assert isinstance(result.model, ir.Model) and result.model is not model
    assert result.modified
    assert ir.serde.serialize_model(model).SerializeToString() == before


def test_not_applicable_returns_the_same_bytes():
    proto = cnn_model()
    result = optimize(proto)
    assert not result.modified
    assert [r.summary for r in result.reports[:2]] == ["not applicable (no GRU op)", "not applicable"]
    assert result.model.SerializeToString() == proto.SerializeToString()
    assert result.model is not proto


def test_skip_and_explicit_lists():
    proto = ar_loop_model()
    result = optimize(proto, passes=["simplify"], skip=["simplify"])
    assert result.reports == []
    assert result.model.SerializeToString() == proto.SerializeToString()
    assert resolve_passes(["simplify"], skip=()) == ["simplify"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"passes": ["simplify", "fuse_everything"]}, "unknown pass 'fuse_everything'"),
        ({"skip": ["typo"]}, "unknown pass 'typo' .known passes: .*simplify"),
        ({"preset": "turbo"}, "unknown preset 'turbo' .known presets: .*portable"),
    ],
)
def test_unknown_names(kwargs, message):
    with pytest.raises(WaveoptError, match=message):
        optimize(ar_loop_model(), **kwargs)


def test_check_each_accepts_simplify():
    proto = ar_loop_model()
    inputs = random_inputs(proto, seed=5, dims={"T": 32, "B": 2})
    result = optimize(proto, check_each=True, check_inputs=inputs)
    assert next(r for r in result.reports if r.name == "simplify").modified


def test_check_each_names_the_pass_that_broke_the_graph(perturb):
    proto = ar_loop_model()
    inputs = random_inputs(proto, seed=5, dims={"T": 32, "B": 2})
    with pytest.raises(CheckFailed, match=r"^pass 'perturb' broke the graph: outputs differ") as info:
        optimize(proto, passes=["simplify", "perturb"], check_each=True, check_inputs=inputs)
    assert "max abs diff" in str(info.value)
    # Without the check the same pipeline runs through: the check is what caught it.
    result = optimize(proto, passes=["simplify", "perturb"])
    assert [r.modified for r in result.reports] == [True, True]


def test_check_options_are_passed_on(perturb):
    proto = cnn_model()
    proto.graph.initializer[0].name = "W"  # so the perturb pass finds it
    for node in proto.graph.node:
        node.input[:] = ["W" if i == "w1" else i for i in node.input]
    inputs = random_inputs(proto, dims={"N": 1})
    with pytest.raises(CheckFailed, match="perturb"):
        optimize(proto, passes=["perturb"], check_each=True, check_inputs=inputs)
    optimize(proto, passes=["perturb"], check_each=True, check_inputs=inputs,
             check_options={"atol": 1e3})


def test_test_pass_is_not_left_registered():
    assert "perturb" not in PASSES

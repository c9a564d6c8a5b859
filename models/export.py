"""Export a WaveRNN as ONE ONNX model: conditioning network + the whole sample loop as an ONNX Loop.

torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, the default in torch 2.13)
traces three small modules (``modules.py``); this file joins them with onnx_ir::

    mels [B, feat, frames] ─ conditioning ─> m [T, B', feat], aux [T, B', 4·aux]
    noise [T, B', 2] ───────────────────────┐
    Loop(T) body: x, h1, h2 ─ Gather(m, t), Gather(aux, t), Gather(noise, t) ─ step ─> x', h1', h2'
                  scan output: sample [B']  ─> samples [T, B']
    samples, mels ─ post-processing ─> wave [B, (frames-1)·hop]

Every node carries ``metadata_props[MODULE_KEY]`` ("waveopt.module"): the WaveRNN module it computes
(``conditioning``, ``I``, ``rnn1``, ``rnn2``, ``fc1``, ``fc2``, ``fc3``, ``sampling``,
``loop``, ``postprocess``), from the exporter's name scopes; the step's glue (aux slices,
concats) carries ``step``. Passes keep it on the nodes they create, so a profile can
attribute time by provenance. The exporter's bulkier metadata (stack traces) is dropped.

B' is the batch, or the number of folds with ``fold=(target, overlap)``. The weights are
initializers of the main graph that the Loop body reads from the outer scope. With
``teacher_forced=True`` the loop reads ``prev_samples [T, B']`` instead of feeding its own
samples back and returns the per-step ``logits [T, B', C]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings

import onnx
import onnx_ir as ir
import torch

from waveopt.loop.assembly import PerStep, adopt_graph, add_node, build_step_loop, const_i64, take_outputs
from .modules import Conditioning, PostProcess, Step, TeacherForcedStep
from .threads import one_torch_thread
from .wavernn import WaveRNN

__all__ = ["export_wavernn", "export_step", "OPSET"]

OPSET = 18
FLOAT = ir.DataType.FLOAT


def export_wavernn(
    model: WaveRNN,
    *,
    teacher_forced: bool = False,
    fold: tuple[int, int] | None = None,
) -> onnx.ModelProto:
    """The whole generation of ``model`` as one ONNX model (see the module docstring)."""
    model = model.eval()
    if fold is not None:
        target, overlap = int(fold[0]), int(fold[1])
        if target < 1 or overlap < 1:
            raise ValueError(f"fold target and overlap must be positive, got {fold}")
        fold = (target, overlap)
    hp = model.hp
    cond = _trace(Conditioning(model, fold), (torch.rand(1 if fold else 2, hp.feat_dims, 6),),
                  {"mels": {**({} if fold else {0: _dim("batch")}), 2: _dim("frames", 2)}})
    step = _export_step_ir(model, teacher_forced)
    main = ir.Graph([], [], nodes=[], opset_imports={"": OPSET}, name="wavernn")

    (mels,) = adopt_graph(cond, main, "cond", module="conditioning", scopes=_SCOPES)
    m_seq, aux_seq = take_outputs(cond)
    mels.name = "mels"
    main.inputs.append(mels)
    folds = "folds" if fold else "batch"
    if teacher_forced:
        driver = _input("prev_samples", ["steps", folds])
    else:
        driver = _input("noise", ["steps", folds, 2])
    main.inputs.append(driver)

    loop = _build_loop(main, step, m_seq, aux_seq, driver, model.rnn_dims, teacher_forced)
    if teacher_forced:
        logits = loop.outputs[-1]
        logits.name = "logits"
        main.outputs.append(logits)
    else:
        samples = loop.outputs[-1]
        samples.name = "samples"
        # Folded, every fold has the same length and only the number of folds varies.
        steps = sum(fold) + fold[1] if fold else 13
        samples_dims = {1: _dim("folds")} if fold else {0: _dim("steps"), 1: _dim("batch")}
        post = _trace(PostProcess(model, fold), (torch.rand(steps, 2), torch.rand(1, hp.feat_dims, 6)),
                      {"samples": samples_dims, "mels": {0: _dim("mel_batch"), 2: _dim("frames", 2)}})
        post_samples, post_mels = adopt_graph(post, main, "post", module="postprocess", scopes=_SCOPES)
        post_samples.replace_all_uses_with(samples)
        post_mels.replace_all_uses_with(mels)
        (wave,) = take_outputs(post)
        wave.name = "wave"
        main.outputs.extend([wave, samples])

    for value in main.outputs:
        value.shape = None  # let ORT/onnx infer; declared below
    _declare_outputs(main, teacher_forced, fold, model.n_classes)
    ir_model = ir.Model(main, ir_version=onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", OPSET)]), producer_name="waveopt")
    ir_model.metadata_props.update(_metadata(model, teacher_forced, fold))
    proto = ir.serde.serialize_model(ir_model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_step(model: WaveRNN, *, teacher_forced: bool = False) -> onnx.ModelProto:
    """One step of the recurrence as its own ONNX model (inputs x, m_t, aux_t, h1, h2[, u])."""
    return ir.serde.serialize_model(_export_step_ir(model.eval(), teacher_forced))


def _export_step_ir(model: WaveRNN, teacher_forced: bool) -> ir.Model:
    hp = model.hp
    b = 2
    args = [torch.zeros(b, 1), torch.rand(b, hp.feat_dims), torch.rand(b, 4 * hp.aux_dims),
            torch.rand(b, hp.rnn_dims), torch.rand(b, hp.rnn_dims)]
    names = ["x", "m_t", "aux_t", "h1", "h2"]
    module = TeacherForcedStep(model) if teacher_forced else Step(model)
    if not teacher_forced:
        args.append(torch.rand(b, 2))
        names.append("u")
    batch = _dim("batch")
    return _trace(module, tuple(args), {n: {0: batch} for n in names})


# --- tracing ------------------------------------------------------------------------------
def _dim(name: str, minimum: int = 1):
    return torch.export.Dim(name, min=minimum)


def _trace(module: torch.nn.Module, args: tuple, dynamic_shapes: dict) -> ir.Model:
    """Dynamo-export ``module`` quietly and return it as an onnx_ir model."""
    module = module.eval()
    with warnings.catch_warnings(), _quiet_torch_logs(), one_torch_thread():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, args, dynamo=True, dynamic_shapes=dynamic_shapes, opset_version=OPSET,
            optimize=True, verbose=False,
        )
    return ir.serde.deserialize_model(program.model_proto)


@contextlib.contextmanager
def _quiet_torch_logs():
    """Silence the exporter's progress lines and warnings (torchvision missing, ...)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --- assembly -----------------------------------------------------------------------------
# Name scopes of the traced modules -> the WaveRNN module a node belongs to.
_SCOPES = {"model.I": "I", "rnn1": "rnn1", "rnn2": "rnn2", "model.fc1": "fc1", "model.fc2": "fc2",
           "model.fc3": "fc3", "sampler": "sampling"}


def _input(name: str, dims: list) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(FLOAT), shape=ir.Shape(dims))


def _build_loop(main, step: ir.Model, m_seq, aux_seq, driver, rnn_dims, teacher_forced) -> ir.Node:
    """Append the initial states and the Loop node that runs ``step`` once per time step."""
    # Trip count and the zero initial states, from m's shape [T, B', feat].
    shape = add_node(main, "Shape", [m_seq], "loop/shape").outputs[0]
    one, two = (const_i64(main, f"loop/c{i}", [i]) for i in (1, 2))
    steps = add_node(main, "Gather", [shape, const_i64(main, "loop/i0", [0])], "loop/steps_1d").outputs[0]
    trip_count = add_node(main, "Squeeze", [steps], "loop/trip_count").outputs[0]
    batch = add_node(main, "Slice", [shape, one, two], "loop/batch").outputs[0]
    state_shape = add_node(main, "Concat", [batch, const_i64(main, "loop/rnn_dims", [rnn_dims])],
                           "loop/state_shape", axis=0).outputs[0]
    zeros = ir.tensor([0.0], dtype=FLOAT)
    h_init = add_node(main, "ConstantOfShape", [state_shape], "loop/h_init", value=zeros).outputs[0]

    # Step inputs (x, m_t, aux_t, h1, h2[, u]); outputs (logits, h1', h2') teacher-forced,
    # else (x', h1', h2', sample).
    per_step = {1: PerStep(m_seq, "loop/m_t"), 2: PerStep(aux_seq, "loop/aux_t")}
    if teacher_forced:
        per_step[0] = PerStep(driver, "loop/drive_t", unsqueeze_axis=1)
        carried = [(3, 1, h_init, "loop/h1"), (4, 2, h_init, "loop/h2")]
        scanned = [0]
    else:
        per_step[5] = PerStep(driver, "loop/drive_t")
        x_shape = add_node(main, "Concat", [batch, one], "loop/x_shape", axis=0).outputs[0]
        x_init = add_node(main, "ConstantOfShape", [x_shape], "loop/x_init", value=zeros).outputs[0]
        carried = [(0, 0, x_init, "loop/x"), (3, 1, h_init, "loop/h1"), (4, 2, h_init, "loop/h2")]
        scanned = [3]
    return build_step_loop(main, step, trip_count, per_step=per_step, carried=carried, scanned=scanned,
                           scopes=_SCOPES)


def _declare_outputs(main: ir.Graph, teacher_forced: bool, fold, n_classes: int) -> None:
    folds = "folds" if fold else "batch"
    for value in main.outputs:
        value.type = ir.TensorType(FLOAT)
        if value.name == "logits":
            value.shape = ir.Shape(["steps", folds, n_classes])
        elif value.name == "samples":
            value.shape = ir.Shape(["steps", folds])
        elif value.name == "wave":
            value.shape = ir.Shape([1 if fold else "batch", "wave_len"])


def _metadata(model: WaveRNN, teacher_forced: bool, fold) -> dict[str, str]:
    meta = {
        "waveopt.kind": "wavernn",
        "waveopt.mode": model.hp.mode,
        "waveopt.form": "teacher_forced" if teacher_forced else "free_running",
        "waveopt.hparams": json.dumps(model.hp.to_dict(), sort_keys=True),
    }
    if fold is not None:
        meta["waveopt.fold"] = json.dumps({"target": fold[0], "overlap": fold[1]})
    if not teacher_forced:
        meta["waveopt.noise_input"] = "noise"
        meta["waveopt.sampled_outputs"] = "samples"
    return meta

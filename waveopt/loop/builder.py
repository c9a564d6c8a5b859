"""Build the whole-generation Loop model from your own exported one-step WaveRNN cell.

``from_step(step, conditioning, sampler="raw-icdf")`` wraps a step model ::

    step:         (prev_sample [B, 1] or [B], cond_1 [B, k_1], ..., cond_n, state_1, ..., state_m)
                  -> (logits [B, C], state_1', ..., state_m')
    conditioning: (mels, ...) -> (cond_1, ..., cond_n) over all steps, [B, T, k] (layout "btc"),
                  [B, k, T] ("bct") or [T, B, k] ("tbc")

into one model with waveopt's conventions (README, "The exported model")::

    mels ─ conditioning ─> cond_i, made [T, B, k_i]
    noise [T, B, 2] ─┐
    Loop(T) body: prev, states ─ Gather(cond_i, t) ─ step ─> logits, states'
                  sample = sampler(logits, Gather(noise, t)); prev' = sample
    ─> samples [T, B]

Teacher-forced (``teacher_forced=True``): the loop reads ``prev_samples [T, B]`` and
returns ``logits [T, B, C]`` instead (no sampler). States start at zero; a state input's
symbolic dims are the batch (e.g. [1, batch, H] for ``nn.GRU`` states). Without a
conditioning model the step's conditioning inputs become model inputs, time-major.
The states are the last m step inputs, m = (step outputs) - 1.
"""

from __future__ import annotations

import os

import onnx
import onnx_ir as ir

from waveopt.errors import WaveoptError
from waveopt.graph import to_ir
from waveopt.loop.assembly import PerStep, add_node, adopt_graph, build_step_loop, const_i64, take_outputs
from waveopt.loop.samplers import SAMPLERS, add_sampler, needed_noise_width, sampler_mode
from waveopt.provenance import MODULE_KEY

__all__ = ["from_step", "SAMPLERS", "LAYOUTS"]

OPSET = 18
FLOAT = ir.DataType.FLOAT
# Conditioning layout -> the Transpose perm that makes it time-major [T, B, k].
LAYOUTS = {"btc": [1, 0, 2], "bct": [2, 0, 1], "tbc": None}


def from_step(step_model, conditioning_model=None, sampler: str = "raw-icdf", *,
              teacher_forced: bool = False, conditioning_layout: str = "btc",
              noise_width: int | None = None, noise_index: int = 0) -> onnx.ModelProto:
    """The whole-generation model of a one-step cell (see the module docstring).

    ``step_model``, ``conditioning_model``: ONNX models (path, ModelProto or onnx_ir.Model).
    ``sampler``: one of ``SAMPLERS`` (``waveopt.loop.samplers``); its mode (raw / mol) is
    written to the metadata. ``noise_width``: the noise input's trailing size (0: noise is
    [T, B]; default 2, or K + 1 for ``mol-gumbel``) and ``noise_index`` where ``raw-icdf``
    reads its uniform. Raises WaveoptError when the models do not fit together.
    """
    _check_choices(sampler, conditioning_layout)
    step = _load(step_model, "step")
    cond = _load(conditioning_model, "conditioning") if conditioning_model is not None else None
    width = None if teacher_forced else needed_noise_width(sampler, noise_width)
    if width is not None and not 0 <= noise_index < max(width, 1):
        raise WaveoptError(f"noise index {noise_index} is outside a noise row of size {width}")
    n_cond = _conditioning_inputs(step, cond)
    sample_in = step.graph.inputs[0]
    logits = step.graph.outputs[0]
    classes = _static_last(logits, "the step's logits")
    states = list(step.graph.inputs[1 + n_cond:])  # before the sampler adds its noise input
    if not teacher_forced:
        _append_sampler(step, sampler, logits, classes, width, noise_index, sample_in)

    main = ir.Graph([], [], nodes=[], opset_imports={"": OPSET}, name="wavernn")
    sequences = _time_major_sequences(main, step, cond, n_cond, conditioning_layout)
    trip_count, batch = _trip_count_and_batch(main, sequences[0])
    per_step, carried, scanned = _loop_wiring(main, sequences, states, batch, sample_in, teacher_forced, width)
    loop = build_step_loop(main, step, trip_count, per_step=per_step, carried=carried, scanned=scanned)
    result = loop.outputs[-1]
    result.name = "logits" if teacher_forced else "samples"
    result.type = ir.TensorType(FLOAT)
    result.shape = ir.Shape(["steps", "batch", classes] if teacher_forced else ["steps", "batch"])
    main.outputs.append(result)
    sources = [step] if cond is None else [step, cond]
    return _checked_model(main, sources, _metadata(sampler, teacher_forced, width))


def _check_choices(sampler: str, conditioning_layout: str) -> None:
    if sampler not in SAMPLERS:
        raise WaveoptError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
    if conditioning_layout not in LAYOUTS:
        raise WaveoptError(f"unknown conditioning layout {conditioning_layout!r} (known: {', '.join(LAYOUTS)})")


def _conditioning_inputs(step: ir.Model, cond: ir.Model | None) -> int:
    """How many conditioning inputs the step has (between the previous sample and the states)."""
    n_in, n_out = len(step.graph.inputs), len(step.graph.outputs)
    n_states = n_out - 1
    n_cond = n_in - 1 - n_states
    if n_out < 1 or n_cond < 0:
        raise WaveoptError(f"the step has {n_in} inputs and {n_out} outputs; it needs (previous sample, "
                           "conditioning..., states...) -> (logits, states...)")
    if cond is not None and len(cond.graph.outputs) != n_cond:
        raise WaveoptError(f"the conditioning model has {len(cond.graph.outputs)} outputs, the step "
                           f"{n_cond} conditioning inputs")
    return n_cond


def _time_major_sequences(main: ir.Graph, step: ir.Model, cond: ir.Model | None, n_cond: int,
                          layout: str) -> list[ir.Value]:
    """The conditioning sequences in ``main`` as [T, B, k]: the conditioning model's outputs,
    else main-graph inputs in ``layout``."""
    if cond is not None:
        main.inputs.extend(adopt_graph(cond, main, "cond", module="conditioning"))
        for value in main.inputs:
            value.name = value.name.removeprefix("cond/")
        sequences = take_outputs(cond)
        for value in sequences:  # exporters may give different sizes one symbolic name
            if value.shape is not None:
                value.shape = ir.Shape([d if isinstance(d, int) else None for d in value.shape])
    else:
        sequences = []
        for value in step.graph.inputs[1:1 + n_cond]:
            outer = ir.Value(name=value.name, type=ir.TensorType(FLOAT), shape=_layout_shape(value, layout))
            main.inputs.append(outer)
            sequences.append(outer)
    perm = LAYOUTS[layout]
    if perm is not None:
        sequences = [add_node(main, "Transpose", [v], f"loop/cond{i}_tbc", perm=perm).outputs[0]
                     for i, v in enumerate(sequences)]
    if not sequences:
        raise WaveoptError("the step has no conditioning input: the number of steps is unknown")
    for value, step_input in zip(sequences, step.graph.inputs[1:1 + n_cond]):
        # [T, B, k] with the width the step declares (the conditioning model may not know it)
        k = step_input.shape[-1] if step_input.shape is not None and step_input.shape else None
        value.shape = ir.Shape(["steps", "batch", k if isinstance(k, int) else None])
        value.type = ir.TensorType(FLOAT)
    return sequences


def _trip_count_and_batch(main: ir.Graph, sequence: ir.Value) -> tuple[ir.Value, ir.Value]:
    """The Loop's trip count (T, a scalar) and the batch size (1-D) of a [T, B, k] sequence."""
    shape = add_node(main, "Shape", [sequence], "loop/shape").outputs[0]
    steps = add_node(main, "Gather", [shape, const_i64(main, "loop/i0", [0])], "loop/steps_1d").outputs[0]
    trip_count = add_node(main, "Squeeze", [steps], "loop/trip_count").outputs[0]
    batch = add_node(main, "Slice", [shape, const_i64(main, "loop/c1", [1]), const_i64(main, "loop/c2", [2])],
                     "loop/batch").outputs[0]
    return trip_count, batch


def _loop_wiring(main: ir.Graph, sequences: list[ir.Value], states: list[ir.Value], batch: ir.Value,
                 sample_in: ir.Value, teacher_forced: bool, width: int | None):
    """``build_step_loop``'s per-step inputs, carried states (zeros at first) and scanned
    outputs: the previous sample is read from ``prev_samples`` (teacher-forced) or fed back."""
    n_cond = len(sequences)
    n_in, n_out = 1 + n_cond + len(states), 1 + len(states)
    per_step = {1 + i: PerStep(v, f"loop/cond{i}_t") for i, v in enumerate(sequences)}
    carried = [(1 + n_cond + i, 1 + i, _zeros(main, batch, v, f"loop/state{i}_init"), f"loop/state{i}")
               for i, v in enumerate(states)]
    rank = len(sample_in.shape) if sample_in.shape is not None else 2
    if teacher_forced:
        driver = _main_input(main, "prev_samples", ["steps", "batch"])
        per_step[0] = PerStep(driver, "loop/prev_t", unsqueeze_axis=1 if rank == 2 else None)
        return per_step, carried, [0]
    if width is not None:
        driver = _main_input(main, "noise", ["steps", "batch"] + ([width] if width else []))
        per_step[n_in] = PerStep(driver, "loop/noise_t")
    carried.insert(0, (0, n_out, _zeros(main, batch, sample_in, "loop/prev_init"), "loop/prev"))
    return per_step, carried, [n_out + 1]


def _checked_model(main: ir.Graph, sources: list[ir.Model], metadata: dict[str, str]) -> onnx.ModelProto:
    """The model of ``main`` with the custom opsets of ``sources``, checked by ONNX."""
    model = ir.Model(main, ir_version=onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", OPSET)]),
                     producer_name="waveopt")
    for domain, version in {k: v for m in sources for k, v in m.opset_imports.items()}.items():
        if domain not in ("", "ai.onnx"):
            model.opset_imports[domain] = version
    model.metadata_props.update(metadata)
    proto = ir.serde.serialize_model(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise WaveoptError(f"the assembled model is not valid ONNX: {' '.join(str(e).split())[:300]}") from None
    return proto


def _load(model, what: str) -> ir.Model:
    if isinstance(model, (str, os.PathLike)):
        try:
            model = onnx.load(os.fspath(model))
        except Exception as e:
            raise WaveoptError(f"cannot read the {what} model {os.fspath(model)}: {' '.join(str(e).split())[:200]}") \
                from None
    if isinstance(model, onnx.ModelProto):
        model = onnx.ModelProto.FromString(model.SerializeToString())  # never modify the caller's model
    elif isinstance(model, ir.Model):
        model = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    else:
        raise WaveoptError(f"the {what} model must be a path, an onnx.ModelProto or an onnx_ir.Model")
    ir_model = to_ir(model)
    version = ir_model.opset_imports.get("", ir_model.opset_imports.get("ai.onnx", 0))
    if version and version != OPSET:
        proto = onnx.version_converter.convert_version(ir.serde.serialize_model(ir_model), OPSET)
        ir_model = ir.serde.deserialize_model(proto)
    return ir_model


def _static_last(value: ir.Value, what: str) -> int:
    if value.shape is None or not value.shape or not isinstance(value.shape[-1], int):
        raise WaveoptError(f"{what} have no static last dimension (the number of classes)")
    return value.shape[-1]


def _append_sampler(step: ir.Model, sampler: str, logits: ir.Value, classes: int, width, index: int,
                    sample_in: ir.Value) -> None:
    """Add the noise input u and the sampler to the step: outputs (..., fed back, sample)."""
    graph = step.graph
    u = None
    if width is not None:
        u = ir.Value(name="u", type=ir.TensorType(FLOAT), shape=ir.Shape(["batch"] + ([width] if width else [])))
        graph.inputs.append(u)
    if sampler_mode(sampler) == "mol" and classes != 30:
        raise WaveoptError(f"a MOL sampler needs logits of 30 (3 x 10 mixtures), the step has {classes}")
    sample = add_sampler(graph, sampler, logits, u, classes, index)
    fed_back = sample
    if sample_in.shape is None or len(sample_in.shape) == 2:
        axis = ir.Value(name="sampler/axis1", const_value=ir.tensor([1], dtype=ir.DataType.INT64, name="sampler/axis1"))
        graph.register_initializer(axis)
        node = ir.Node("", "Unsqueeze", [sample, axis], name="sampler/fed_back",
                       metadata_props={MODULE_KEY: "sampling"})
        node.outputs[0].name = "sampler/fed_back"
        graph.append(node)
        fed_back = node.outputs[0]
    else:
        node = ir.Node("", "Identity", [sample], name="sampler/fed_back", metadata_props={MODULE_KEY: "sampling"})
        node.outputs[0].name = "sampler/fed_back"
        graph.append(node)
        fed_back = node.outputs[0]
    graph.outputs.extend([fed_back, sample])


def _layout_shape(value: ir.Value, layout: str) -> ir.Shape:
    width = value.shape[-1] if value.shape is not None and value.shape else None
    dims = {"btc": ["batch", "steps", width], "bct": ["batch", width, "steps"], "tbc": ["steps", "batch", width]}
    return ir.Shape(dims[layout])


def _main_input(main: ir.Graph, name: str, dims: list) -> ir.Value:
    value = ir.Value(name=name, type=ir.TensorType(FLOAT), shape=ir.Shape(dims))
    main.inputs.append(value)
    return value


def _zeros(main: ir.Graph, batch: ir.Value, like: ir.Value, name: str) -> ir.Value:
    """Zeros of ``like``'s shape with its symbolic dims set to the batch."""
    if like.shape is None:
        raise WaveoptError(f"step input {like.name!r} has no shape; give it one with a symbolic batch dim")
    parts = [batch if not isinstance(d, int) else const_i64(main, f"{name}/d{i}", [d])
             for i, d in enumerate(like.shape)]
    if not any(p is batch for p in parts):
        raise WaveoptError(f"step input {like.name!r} has no symbolic (batch) dimension: export it with a "
                           "dynamic batch axis")
    shape = add_node(main, "Concat", parts, f"{name}/shape", axis=0).outputs[0]
    return add_node(main, "ConstantOfShape", [shape], name, value=ir.tensor([0.0], dtype=FLOAT)).outputs[0]


def _metadata(sampler: str, teacher_forced: bool, width) -> dict[str, str]:
    meta = {"waveopt.mode": sampler_mode(sampler),
            "waveopt.form": "teacher_forced" if teacher_forced else "free_running",
            "waveopt.builder": "from_step"}
    if not teacher_forced:
        meta["waveopt.sampler"] = sampler
        meta["waveopt.sampled_outputs"] = "samples"
        if width is not None:
            meta["waveopt.noise_input"] = "noise"
    return meta

"""Lower a one-step ONNX GRU op to the GRUCell math our exporter writes (Gemm + Split + gates).

before (seq_len 1, e.g. inside a Loop body; ONNX gate order z, r, h)::

    Y, Y_h = GRU(Unsqueeze(x, 0), W, R, B, , Unsqueeze(h, 0))
    h'     = Squeeze(Y_h, 0)

after (PyTorch's GRUCell as torch exports it; gate order r, z, n in new fp32 weights)::

    i_r, i_z, i_n = Split(Gemm(x, W_rzn, b_ih_rzn, transB=1))
    h_r, h_z, h_n = Split(Gemm(h, R_rzn, b_hh_rzn, transB=1))
    r = Sigmoid(h_r + i_r);  z = Sigmoid(h_z + i_z)
    n = Tanh(i_n + h_n * r)                         # linear_before_reset=1 (PyTorch)
    h' = (h - n) * z + n                            # = (1 - z) * n + z * h

    linear_before_reset=0: h_r, h_z = Split(Gemm(h, R_rz, b_hh_rz));
                           n = Tanh(i_n + Gemm(r * h, R_n, b_hn))

Exact: the same products and sums as the ONNX GRU definition, with only the fp32 rounding
order of the additions free (the ONNX kernel adds the biases in its own order).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from waveopt.passes._analysis.const_eval import constant_value
from waveopt.passes._ir import (
    Builder, Cursor, const_array, int_list, is_default_domain, remove_dead, replace_value,
)
from waveopt.passes._unit_states import narrow_unit_states
from waveopt.passes.base import WaveoptPass

__all__ = ["LowerGruPass"]

_DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh"]


class LowerGruPass(WaveoptPass):
    """Rewrite every one-step ONNX GRU op as Gemm + Split + Sigmoid/Tanh gate math.

    1. A ``GRU`` of the default domain is lowered when it provably runs exactly one step:
       its X has size 1 on the sequence axis by a static shape or by structure
       (Unsqueeze / Reshape / Expand / Slice to a size-1 axis, through Transpose: e.g.
       ``Transpose(Unsqueeze(x, 1), [1, 0, 2])`` of ``nn.GRU(batch_first=True)``).
    2. It must be ``direction="forward"`` (one direction), have the default activations
       (Sigmoid, Tanh) without alpha/beta, no ``clip``, no ``sequence_lens`` input, and
       float32 W, R (and B, if given) that are constants or computed from constants only
       (the dynamo exporter re-slices nn.GRU's weights into ONNX gate order inside the
       body: evaluated once here, the slicing becomes dead). ``layout`` 0 and 1 and
       ``linear_before_reset`` 0 and 1 are handled; a missing B is a zero bias, a missing
       ``initial_h`` a zero state; initial_h may come from the body or the outer scope.
    3. X = Unsqueeze(x) and initial_h = Unsqueeze(h) are read through (x and h feed the
       Gemms), else squeezed; consumers of Y / Y_h that only drop the unit axes
       (Squeeze, or Gather of index 0: PyTorch's ``h_n[0]``) read h' directly; any other
       consumer gets Y / Y_h back from an Unsqueeze of h'. A Loop state carried as
       [1, B, H] around a lowered GRU is then carried as [B, H] (``_unit_states``).
    4. Any other GRU is left alone and the summary says why. Every new node copies the
       GRU's metadata (``waveopt.module``); weights no longer used are removed.
    """

    name = "lower_gru"
    description = "lower one-step ONNX GRU ops to Gemm + Split + Sigmoid/Tanh (PyTorch GRUCell form)"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        grus = [n for n in ir.traversal.RecursiveGraphIterator(model.graph)
                if n.op_type == "GRU" and is_default_domain(n)]
        if not grus:
            return self.result(model, note="no GRU op")
        builder = Builder(model, "lower_gru")
        lowered, skipped, bodies = 0, [], set()
        for node in grus:
            label = node.name or (node.outputs[1].name if len(node.outputs) > 1 else "") or "GRU"
            plan, why = _plan(node)
            if plan is None:
                skipped.append(f"GRU {label!r}: {why}")
                continue
            bodies.add(id(node.graph))
            _lower(node, plan, builder)
            lowered += 1
        note = "; ".join(skipped)
        if not lowered:
            return self.result(model, note=note)
        loops = [n for n in ir.traversal.RecursiveGraphIterator(model.graph)
                 if n.op_type == "Loop" and is_default_domain(n) and id(n.attributes["body"].value) in bodies]
        narrowed = sum(narrow_unit_states(loop, builder) for loop in loops)
        done = f"lowered {lowered} GRU op(s) to Gemm + Split + gate math"
        if narrowed:
            done += f", {narrowed} Loop state(s) carried without their unit axis"
        return self.result(model, done, note)


class _Plan:
    def __init__(self, layout, lbr, hidden, w, r, b, x, h):
        self.layout, self.lbr, self.hidden = layout, lbr, hidden
        self.w, self.r, self.b = w, r, b  # numpy, ONNX order: W [3H, I], R [3H, H], B [6H] or None
        self.x, self.h = x, h  # (value, read_through): x [B, I] / h [B, H] or None


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


def _plan(node: ir.Node) -> tuple[_Plan | None, str]:
    """What lowering ``node`` needs, or None and the reason it does not apply."""
    attrs = node.attributes
    direction = attrs.get_string("direction", "forward")
    if direction != "forward":
        return None, f"direction {direction!r} (only 'forward' is lowered)"
    activations = attrs.get_strings("activations", None)
    if activations is not None and list(activations) != _DEFAULT_ACTIVATIONS:
        return None, f"activations {list(activations)} (only the default Sigmoid, Tanh)"
    if "activation_alpha" in attrs or "activation_beta" in attrs:
        return None, "activation_alpha/beta set"
    if "clip" in attrs:
        return None, "clip set"
    layout = attrs.get_int("layout", 0)
    lbr = attrs.get_int("linear_before_reset", 0)
    if _input(node, 4) is not None:
        return None, "sequence_lens given"
    w, r = constant_value(_input(node, 1)), constant_value(_input(node, 2))
    b_value = _input(node, 3)
    b = constant_value(b_value) if b_value is not None else None
    if w is None or r is None or (b_value is not None and b is None):
        return None, "weights are not constant"
    if any(a.dtype != np.float32 for a in (w, r, *([b] if b is not None else []))):
        return None, "weights are not float32"
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != 1 or r.shape[0] != 1:
        return None, "not one direction"
    hidden = r.shape[2]
    if attrs.get_int("hidden_size", hidden) != hidden or r.shape[1] != 3 * hidden or w.shape[1] != 3 * hidden:
        return None, "weight shapes do not match hidden_size"
    if b is not None and b.shape != (1, 6 * hidden):
        return None, f"bias shape {list(b.shape)}"
    seq_axis, dir_axis = (1, 1) if layout else (0, 0)
    x = _unit_axis_source(_input(node, 0), seq_axis, 3)
    if x is None:
        return None, "sequence length not known to be 1"
    h_value = _input(node, 5)
    h = _unit_axis_source(h_value, dir_axis, 3) if h_value is not None else None
    if h_value is not None and h is None:
        return None, "initial_h has no unit direction axis"
    return _Plan(layout, lbr, hidden, w[0], r[0], b[0] if b is not None else None, x, h), ""


def _unit_axis_source(value: ir.Value | None, axis: int, rank: int):
    """(value, source) when ``value`` provably has size 1 on ``axis``, else None. ``source``
    is a value equal to Squeeze(value, [axis]) found in the graph (e.g. x of
    ``Transpose(Unsqueeze(x, 1), [1, 0, 2])``), or None: the lowering then squeezes."""
    if value is None or not _has_unit_axis(value, axis, rank, 0):
        return None
    return value, _squeezed(value, axis, rank)


def _has_unit_axis(value: ir.Value, axis: int, rank: int, depth: int) -> bool:
    """Structural proof that ``value`` (of rank ``rank``) has size 1 on ``axis``: a static
    shape, or Unsqueeze / Reshape / Expand / Slice / ConstantOfShape producing the size-1
    axis, through Transpose and Identity."""
    shape = value.shape
    if shape is not None and len(shape) == rank and shape[axis] == 1:
        return True
    node = value.producer()
    if node is None or not is_default_domain(node) or depth > 8:
        return False
    op = node.op_type
    if op == "Identity":
        return _has_unit_axis(node.inputs[0], axis, rank, depth + 1)
    if op == "Transpose":
        perm = node.attributes.get_ints("perm", None)
        return perm is not None and len(perm) == rank and _has_unit_axis(node.inputs[0], perm[axis], rank, depth + 1)
    if op == "Unsqueeze":
        axes = int_list(_input(node, 1))
        return axes is not None and axis in [a % rank for a in axes]
    if op == "Reshape":
        target = int_list(_input(node, 1))
        return target is not None and len(target) == rank and target[axis] == 1
    if op == "Expand":
        target, src = int_list(_input(node, 1)), node.inputs[0]
        if target is None or src.shape is None or max(len(src.shape), len(target)) != rank:
            return False
        src_rank = len(src.shape)
        t_axis, s_axis = axis - (rank - len(target)), axis - (rank - src_rank)
        if t_axis >= 0 and target[t_axis] != 1:
            return False
        return s_axis < 0 or _has_unit_axis(src, s_axis, src_rank, depth + 1)
    if op == "ConstantOfShape":  # zeros [1, B, H] built from a computed shape
        return _shape_entry(node.inputs[0], axis) == 1
    if op == "Slice":
        starts, ends = int_list(_input(node, 1)), int_list(_input(node, 2))
        axes = int_list(_input(node, 3)) if _input(node, 3) is not None else list(range(len(starts or [])))
        steps = int_list(_input(node, 4)) if _input(node, 4) is not None else [1] * len(axes or [])
        if None in (starts, ends, axes, steps):
            return False
        for start, end, a, step in zip(starts, ends, axes, steps):
            if a % rank == axis:
                return (step == 1 and 0 <= start and end == start + 1) or \
                    _has_unit_axis(node.inputs[0], axis, rank, depth + 1)
        return _has_unit_axis(node.inputs[0], axis, rank, depth + 1)
    return False


def _shape_entry(shape: ir.Value, index: int) -> int | None:
    """Entry ``index`` of a 1-D int64 shape tensor: a constant, or a Concat of pieces of
    known length (constants, or values of static shape)."""
    known = int_list(shape)
    if known is not None:
        return known[index] if index < len(known) else None
    node = shape.producer()
    if node is None or node.op_type != "Concat" or not is_default_domain(node):
        return None
    offset = 0
    for piece in node.inputs:
        values = int_list(piece)
        length = len(values) if values is not None else (
            piece.shape[0] if piece.shape is not None and len(piece.shape) == 1 else None)
        if not isinstance(length, int):
            return None
        if offset <= index < offset + length:
            return values[index - offset] if values is not None else None
        offset += length
    return None


def _squeezed(value: ir.Value, axis: int, rank: int) -> ir.Value | None:
    """A value in the graph equal to Squeeze(value, [axis]), or None."""
    node = value.producer()
    if node is None or not is_default_domain(node):
        return None
    if node.op_type == "Unsqueeze":
        axes = int_list(_input(node, 1))
        if axes is not None and [a % rank for a in axes] == [axis]:
            return node.inputs[0]
    if node.op_type == "Transpose":
        perm = node.attributes.get_ints("perm", None)
        if perm is not None and len(perm) == rank:
            rest = [p for i, p in enumerate(perm) if i != axis]
            if rest == sorted(rest):  # the other axes keep their order
                return _squeezed(node.inputs[0], perm[axis], rank)
    return None


def _drops_unit_axes(user: ir.Node, axes: list[int], rank: int) -> bool:
    """``user`` only removes the unit ``axes`` of its first input: Squeeze(axes), or, for
    one axis, Gather of the scalar index 0 / -1 on it (``h_n[0]`` in PyTorch)."""
    if not is_default_domain(user) or user.op_type not in ("Squeeze", "Gather"):
        return False
    if user.op_type == "Squeeze":
        squeezed = int_list(_input(user, 1))
        return squeezed is not None and sorted(a % rank for a in squeezed) == axes
    index = const_array(user.inputs[1])
    axis = user.attributes.get_int("axis", 0) % rank
    return len(axes) == 1 and axis == axes[0] and index is not None and index.ndim == 0 and int(index) in (0, -1)


def _gates(array: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX blocks (z, r, h) along axis 0 -> (r, z, n)."""
    z, r, n = (array[i * hidden:(i + 1) * hidden] for i in range(3))
    return r, z, n


def _lower(node: ir.Node, plan: _Plan, builder: Builder) -> None:
    """Replace the GRU ``node`` by its one step, built before it, and drop what it read alone."""
    emit = builder.at(node, metadata=node.metadata_props)
    x, h = _step_inputs(plan, emit)
    h_new, gi, gh = _cell(plan, emit, x, h)
    _annotate(emit, x, {gi: 3 * plan.hidden, gh: (3 if plan.lbr else 2) * plan.hidden}, plan.hidden)
    bypassed = _rewire_outputs(node, plan, builder, h_new)
    old_inputs = [v for v in node.inputs if v is not None]
    node.graph.remove(node, safe=True)
    remove_dead([*old_inputs, *bypassed])


def _step_inputs(plan: _Plan, emit: Cursor) -> tuple[ir.Value, ir.Value]:
    """x [B, I] and h [B, H] of the one step: the sequence and direction axes squeezed (or the
    values that had them unsqueezed), zeros when the GRU has no initial state."""
    seq_axis = dir_axis = 1 if plan.layout else 0
    x, x_source = plan.x
    x = x_source if x_source is not None else emit.one("Squeeze", [x, emit.ints([seq_axis])], "x")
    if plan.h is None:
        batch = emit.one("Shape", [x], "batch", start=0, end=1)
        shape = emit.one("Concat", [batch, emit.ints([plan.hidden])], "h0_shape", axis=0)
        return x, emit.one("ConstantOfShape", [shape], "h0", value=ir.tensor(np.zeros(1, np.float32)))
    h, h_source = plan.h
    return x, h_source if h_source is not None else emit.one("Squeeze", [h, emit.ints([dir_axis])], "h")


def _cell(plan: _Plan, emit: Cursor, x: ir.Value, h: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """The GRU cell in standard ops: (h', the input projection gi, the recurrent projection gh)."""
    hidden, has_b = plan.hidden, plan.b is not None
    w_r, w_z, w_n = _gates(plan.w, hidden)
    r_r, r_z, r_n = _gates(plan.r, hidden)
    if has_b:
        wb_r, wb_z, wb_n = _gates(plan.b[:3 * hidden], hidden)
        rb_r, rb_z, rb_n = _gates(plan.b[3 * hidden:], hidden)
    gi = _gemm(emit, x, np.concatenate([w_r, w_z, w_n]), np.concatenate([wb_r, wb_z, wb_n]) if has_b else None,
               "gemm_ih")
    i_r, i_z, i_n = emit.op("Split", [gi], 3, "split_ih", axis=1, num_outputs=3)
    if plan.lbr:
        gh = _gemm(emit, h, np.concatenate([r_r, r_z, r_n]), np.concatenate([rb_r, rb_z, rb_n]) if has_b else None,
                   "gemm_hh")
        h_r, h_z, h_n = emit.op("Split", [gh], 3, "split_hh", axis=1, num_outputs=3)
    else:
        gh = _gemm(emit, h, np.concatenate([r_r, r_z]), np.concatenate([rb_r, rb_z]) if has_b else None, "gemm_hh")
        h_r, h_z = emit.op("Split", [gh], 2, "split_hh", axis=1, num_outputs=2)
    r = emit.one("Sigmoid", [emit.one("Add", [h_r, i_r], "r_pre")], "r")
    z = emit.one("Sigmoid", [emit.one("Add", [h_z, i_z], "z_pre")], "z")
    if plan.lbr:
        n_pre = emit.one("Add", [i_n, emit.one("Mul", [h_n, r], "r_h_n")], "n_pre")
    else:
        h_n = _gemm(emit, emit.one("Mul", [r, h], "r_h"), r_n, rb_n if has_b else None, "gemm_hn")
        n_pre = emit.one("Add", [i_n, h_n], "n_pre")
    n = emit.one("Tanh", [n_pre], "n")
    h_minus_n = emit.one("Sub", [h, n], "h_minus_n")
    h_new = emit.one("Add", [emit.one("Mul", [h_minus_n, z], "z_h_minus_n"), n], "h_new")
    return h_new, gi, gh


def _gemm(emit: Cursor, a: ir.Value, weight: np.ndarray, bias: np.ndarray | None, name: str) -> ir.Value:
    inputs = [a, emit.weight(weight, f"{name}_weight")]
    if bias is not None:
        inputs.append(emit.weight(bias, f"{name}_bias"))
    return emit.one("Gemm", inputs, name, transB=1)


def _annotate(emit: Cursor, x: ir.Value, widths: dict[ir.Value, int], hidden: int) -> None:
    """Float [B, width] on the cell's values (``hidden`` wide unless ``widths`` says otherwise)."""
    batch = x.shape[0] if x.shape is not None and len(x.shape) == 2 else None
    for value in (o for n in emit.nodes if n.op_type not in ("Shape", "Concat", "Squeeze") for o in n.outputs):
        if value.const_value is None:
            value.type = ir.TensorType(ir.DataType.FLOAT)
            value.shape = ir.Shape([batch, widths.get(value, hidden)])


def _rewire_outputs(node: ir.Node, plan: _Plan, builder: Builder, h_new: ir.Value) -> list[ir.Value]:
    """Readers of Y [seq, dir, B, H] (layout 1: [B, seq, dir, H]) and Y_h [dir, B, H] ([B, dir,
    H]) read h' instead: directly where they only drop the unit axes (those values are
    returned, bypassed), else through an Unsqueeze."""
    bypassed = []
    for index, axes, rank in ((0, [1, 2] if plan.layout else [0, 1], 4), (1, [1 if plan.layout else 0], 3)):
        if len(node.outputs) <= index:
            continue
        old = node.outputs[index]
        for user, position in list(old.uses()):
            if position == 0 and _drops_unit_axes(user, axes, rank):
                replace_value(user.outputs[0], h_new, builder)
                bypassed.append(user.outputs[0])
        if old.uses() or old.is_graph_output():
            after = builder.at(node, after=True, metadata=node.metadata_props)
            restored = after.one("Unsqueeze", [h_new, after.ints(axes)], f"y{index}")
            replace_value(old, restored, builder)
    return bypassed

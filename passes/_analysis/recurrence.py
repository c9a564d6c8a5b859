"""Recognise the WaveRNN recurrence in a Loop body, by structure and algebra, not by names.

What it finds (``match_wavernn_loop``), in a Loop body whose carried states are the fed-back
sample (free-running) and two GRU states:

1. Two GRU cells: a Tanh ``n = tanh(A + r ⊙ B)`` with ``r = σ(R)``, and a value ``h'``
   equal, as a polynomial in (n, z, h), to ``(1 - z)·n + z·h`` for ``z = σ(Z)`` and a
   loop-carried ``h`` (so every way of writing the update is recognised). The cell whose
   output feeds the other is rnn1.
2. Linear forms (``linear_forms``) of R, Z, A, B of both cells, of the two ReLU inputs
   and of the logits over the sources: the previous sample s, the GRU states h1, h2 and
   outputs h1', h2', the ReLU outputs, and per-step rows ``Gather(P, t)`` of outer tensors.
   They must have exactly the WaveRNN shape (e.g. B of a cell reads only its own state,
   fc1 sees h1' and h2' through the same matrix), else it is not the recurrence.
3. The sampler: the fed-back sample is computed from the logits and a per-step row of an
   outer noise tensor ([T, B] or [T, B, k]). Its semantics are verified numerically by
   running the sampler subgraph alone in ONNX Runtime against the reference RAW / MOL
   samplers, with their uniforms at any columns of the row (``sampler.py``).

The result says how to build the fused op's inputs; anything unrecognised returns a reason.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx_ir as ir

from waveopt.passes._analysis.errors import NotRecognised
from waveopt.passes._analysis.linear_forms import LinearForm, LinearForms
from waveopt.passes._analysis.sampler import SamplerMatch, verify_noiseless_sampler, verify_sampler
from waveopt.passes._ir import constant_float64

__all__ = ["GRUCell", "NotRecognised", "Recurrence", "match_wavernn_loop"]


@dataclasses.dataclass
class GRUCell:
    h_in: ir.Value  # the loop-carried state
    h_out: ir.Value
    r_pre: ir.Value
    z_pre: ir.Value
    n_input: ir.Value  # A in tanh(A + r ⊙ B)
    n_hidden: ir.Value  # B


@dataclasses.dataclass
class Recurrence:
    """A matched WaveRNN Loop and the linear forms the fused op is built from."""

    loop: ir.Node
    mode: str  # "raw" or "mol"
    teacher_forced: bool
    cells: tuple[GRUCell, GRUCell]
    forms: dict[str, LinearForm]  # r1 z1 a1 b1 r2 z2 a2 b2 f1 f2 logits
    step_tensors: dict  # key -> (outer value [T,B,k] or [B,T,k], gather axis)
    driver: tuple[ir.Value, int] | None  # noise [T,B(,k)] (None: argmax) or prev_samples [T,B], gather axis
    output_index: int  # the Loop output holding samples (free) or logits (teacher-forced)
    hidden: int
    fc: int
    classes: int
    logits_value: ir.Value | None = None  # the per-step logits in the body
    sample_input: ir.Value | None = None  # free-running: the body input carrying the fed-back sample
    sampler: SamplerMatch | None = None  # free-running: which sampler, reading which noise columns


def match_wavernn_loop(loop: ir.Node, mode_hint: str | None = None, check_sampler: bool = True) -> Recurrence:
    """The recurrence of ``loop``, or NotRecognised. With ``check_sampler=False`` a free-running
    loop's sampler is not looked at (``driver`` is None, ``output_index`` -1): enough to
    find the logits and the fed-back sample."""
    body: ir.Graph = loop.attributes["body"].value
    carried = list(body.inputs[2:])
    cells = _find_cells(body, carried)
    if len(cells) != 2:
        raise NotRecognised(f"found {len(cells)} GRU cells in the Loop body, not 2")
    relus = [n for n in body if n.op_type == "Relu"]
    sources = _Sources(body, carried, cells, relus)
    forms_of = LinearForms(sources)
    order, g1, g2 = _cell_order(cells, forms_of)
    rnn1, rnn2 = cells[order[0]], cells[order[1]]
    h1_key, h2_key = ("carried", carried.index(rnn1.h_in)), ("carried", carried.index(rnn2.h_in))
    h1o_key, h2o_key = ("cell", order[0]), ("cell", order[1])
    fc1, fc2, relu_forms = _dense_layers(relus, forms_of, h2o_key)
    t1_key, t2_key = ("relu", id(fc1)), ("relu", id(fc2))
    logits_value = _logits_value(body, fc2.outputs[0], forms_of, t2_key)
    logits = forms_of.of(logits_value)

    # The fed-back sample (free-running): the carried input that is not a GRU state.
    # Teacher-forced loops carry only the GRU states and read the previous sample per step
    # (as a source, or already folded into the hoisted per-step tensors).
    others = [i for i, v in enumerate(carried) if v is not rnn1.h_in and v is not rnn2.h_in]
    teacher_forced = not others
    s_key = ("prev_sample",) if "prev" in sources.sample_keys else None
    forms = {"r1": g1["r"], "z1": g1["z"], "a1": g1["a"], "b1": g1["b"],
             "r2": g2["r"], "z2": g2["z"], "a2": g2["a"], "b2": g2["b"],
             "f1": relu_forms[id(fc1)], "f2": relu_forms[id(fc2)], "logits": logits}
    if teacher_forced:
        driver = sources.sample_keys.get("prev")  # None: the op is given zeros for s, u1..u3 are 0
        output_index = _scan_output_index(loop, body, logits_value)
        mode = mode_hint or ("mol" if logits.width == 30 else "raw")
    else:
        if len(others) != 1:
            raise NotRecognised("the loop does not carry exactly one sample besides the GRU states")
        s_key = ("carried", others[0])
        if check_sampler:
            driver, output_index, sampler = _free_running_sampler(loop, body, sources.iteration,
                                                                  carried[others[0]], logits_value, mode_hint)
            mode = sampler.mode
        else:
            driver, output_index = None, -1
            mode = mode_hint or ("mol" if logits.width == 30 else "raw")
    keys = {"s": s_key, "h1": h1_key, "h2": h2_key, "h1o": h1o_key, "h2o": h2o_key, "t1": t1_key, "t2": t2_key}
    _check_reads(forms, keys)
    hidden, fc = forms["b1"].width, forms["f1"].width
    forms = {**forms, **{f"key:{k}": v for k, v in keys.items()}}
    sample_input = None if teacher_forced else carried[others[0]]
    return Recurrence(loop, mode, teacher_forced, (rnn1, rnn2), forms, sources.steps, driver, output_index,
                      hidden, fc, logits.width, logits_value, sample_input,
                      sampler if not teacher_forced and check_sampler else None)


class _Sources:
    """What the linear forms of a Loop body are over, by key: carried values, rows of
    per-step tensors, the teacher-forced previous sample, the GRU cells' and the ReLU
    layers' outputs. Records the per-step tensors (``steps``) and the previous-sample
    tensor (``sample_keys["prev"]``) it meets."""

    def __init__(self, body: ir.Graph, carried: list[ir.Value], cells: list[GRUCell], relus: list[ir.Node]):
        self.body, self.carried, self.cells, self.relus = body, carried, cells, relus
        self.iteration = body.inputs[0]
        self.steps: dict = {}
        self.sample_keys: dict = {}

    def __call__(self, value: ir.Value):
        body, iteration = self.body, self.iteration
        if value in self.carried:
            return ("carried", self.carried.index(value)), _width(value)
        node = value.producer()
        if node is not None and node.op_type == "Gather" and node.inputs[1] is iteration:
            outer = node.inputs[0]
            if outer.graph is body or outer.shape is None:
                return None
            axis = node.attributes["axis"].value if "axis" in node.attributes else 0
            if len(outer.shape) == 3 and axis in (0, 1):
                self.steps[("step", id(outer), axis)] = (outer, axis)
                return ("step", id(outer), axis), _static(outer.shape[-1])
            return None
        if node is not None and node.op_type == "Unsqueeze":  # teacher-forced sample [B] -> [B,1]
            inner = node.inputs[0].producer()
            if inner is not None and inner.op_type == "Gather" and inner.inputs[1] is iteration:
                outer = inner.inputs[0]
                if outer.graph is not body and outer.shape is not None and len(outer.shape) == 2:
                    axis = inner.attributes["axis"].value if "axis" in inner.attributes else 0
                    self.sample_keys["prev"] = (outer, axis)
                    return ("prev_sample",), 1
        for i, cell in enumerate(self.cells):
            if value is cell.h_out:
                return ("cell", i), _width(value)
        for relu in self.relus:
            if value is relu.outputs[0]:
                return ("relu", id(relu)), _width(value)
        return None


def _cell_order(cells: list[GRUCell], forms_of: LinearForms) -> tuple[tuple[int, int], dict, dict]:
    """(rnn1's index, rnn2's index) and their gates' forms: rnn1 is the cell the other reads."""
    def cell_form(cell):
        return {name: forms_of.of(v) for name, v in
                (("r", cell.r_pre), ("z", cell.z_pre), ("a", cell.n_input), ("b", cell.n_hidden))}

    f0, f1 = cell_form(cells[0]), cell_form(cells[1])
    if any(v is None for v in [*f0.values(), *f1.values()]):
        raise NotRecognised("a GRU gate pre-activation is not linear in the loop's sources")
    if ("cell", 0) in _sources(f1):
        return (0, 1), f0, f1
    if ("cell", 1) in _sources(f0):
        return (1, 0), f1, f0
    raise NotRecognised("neither GRU cell feeds the other")


def _dense_layers(relus: list[ir.Node], forms_of: LinearForms, h2o_key) -> tuple[ir.Node, ir.Node, dict]:
    """The two ReLU layers: fc1 over h1', h2'; fc2 over fc1's output; and every ReLU's input form."""
    relu_forms = {id(r): forms_of.of(r.inputs[0]) for r in relus}
    fc1 = [r for r in relus if relu_forms[id(r)] is not None and h2o_key in relu_forms[id(r)].sources()]
    if len(fc1) != 1:
        raise NotRecognised("no single ReLU layer reads the second GRU's output")
    fc2 = [r for r in relus if relu_forms[id(r)] is not None
           and ("relu", id(fc1[0])) in relu_forms[id(r)].sources()]
    if len(fc2) != 1:
        raise NotRecognised("no single ReLU layer reads the first dense layer")
    return fc1[0], fc2[0], relu_forms


def _check_reads(forms: dict, keys: dict) -> None:
    """Each form reads only what the WaveRNN recurrence lets it read (per-step rows aside)."""
    s, h1, h2, h1o, h2o = keys["s"], keys["h1"], keys["h2"], keys["h1o"], keys["h2o"]
    allowed = {
        "r1": {h1, s}, "z1": {h1, s}, "a1": {s}, "b1": {h1},
        "r2": {h1o, h2, s}, "z2": {h1o, h2, s}, "a2": {h1o, s},
        "b2": {h2}, "f1": {h1o, h2o, s}, "f2": {keys["t1"]},
        "logits": {keys["t2"]},
    }
    for name, form in forms.items():
        extra = {k for k in form.sources() if k[0] != "step"} - allowed[name]
        if extra:
            raise NotRecognised(f"{name} reads {sorted(map(str, extra))}, which the WaveRNN recurrence does not")
    for name in ("b1", "b2", "logits"):
        if any(k[0] == "step" for k in forms[name].sources()):
            raise NotRecognised(f"{name} reads per-step tensors, which the fused op does not take")
    f1 = forms["f1"]
    if not np.allclose(f1.terms.get(h1o, 0), f1.terms.get(h2o, 0), rtol=1e-6, atol=1e-7):
        raise NotRecognised("fc1 sees the two GRU outputs through different matrices")


# --- GRU cells ---------------------------------------------------------------------------
def _find_cells(body: ir.Graph, carried: list[ir.Value]) -> list[GRUCell]:
    cells = []
    for tanh in (n for n in body if n.op_type == "Tanh"):
        pre = tanh.inputs[0].producer()
        if pre is None or pre.op_type != "Add":
            continue
        for a, m in itertools.permutations(pre.inputs):
            mul = m.producer()
            if mul is None or mul.op_type != "Mul":
                continue
            for b, r in itertools.permutations(mul.inputs):
                sig = r.producer()
                if sig is None or sig.op_type != "Sigmoid":
                    continue
                found = _find_update(tanh.outputs[0], sig.outputs[0], carried)
                if found:
                    h_in, h_out, z = found
                    cells.append(GRUCell(h_in, h_out, sig.inputs[0], z.producer().inputs[0], a, b))
                    break
            else:
                continue
            break
    return cells


def _find_update(n: ir.Value, r: ir.Value, carried: list[ir.Value]):
    """The value ``(1 - z)·n + z·h`` downstream of n (within a few nodes), if any."""
    frontier, seen = [n], set()
    for _ in range(4):
        nxt = []
        for value in frontier:
            for node in value.consumers():
                if id(node) in seen or node.op_type not in ("Add", "Sub", "Mul"):
                    continue
                seen.add(id(node))
                out = node.outputs[0]
                poly = _polynomial(out, n, r, carried)
                if poly is not None:
                    found = _is_gru_update(poly)
                    if found:
                        z, h = found
                        return h, out, z
                nxt.append(out)
        frontier = nxt
    return None


def _polynomial(value, n, r, carried, depth=0):
    """``value`` as {monomial (sorted tuple of leaf ids): coefficient} over leaves n, z (a
    Sigmoid output other than r), a carried h and numeric constants; None otherwise."""
    if depth > 6:
        return None
    if value is n:
        return {(("n", n),): 1.0}
    if value in carried:
        return {(("h", value),): 1.0}
    const = constant_float64(value)
    if const is not None:
        return {(): float(const.reshape(-1)[0])} if const.size == 1 else None
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Sigmoid" and value is not r:
        return {(("z", value),): 1.0}
    if node.op_type not in ("Add", "Sub", "Mul"):
        return None
    a, b = (_polynomial(v, n, r, carried, depth + 1) for v in node.inputs)
    if a is None or b is None:
        return None
    if node.op_type == "Mul":
        out: dict = {}
        for (ma, ca), (mb, cb) in itertools.product(a.items(), b.items()):
            key = tuple(sorted(ma + mb, key=lambda x: (x[0], id(x[1]))))
            out[key] = out.get(key, 0.0) + ca * cb
    else:
        sign = 1.0 if node.op_type == "Add" else -1.0
        out = dict(a)
        for key, c in b.items():
            out[key] = out.get(key, 0.0) + sign * c
    return {k: c for k, c in out.items() if c != 0.0}


def _is_gru_update(poly):
    """(z, h) when poly == n - z·n + z·h."""
    if len(poly) != 3:
        return None
    n_terms = [k for k in poly if len(k) == 1 and k[0][0] == "n"]
    zn = [k for k in poly if len(k) == 2 and {x[0] for x in k} == {"n", "z"}]
    zh = [k for k in poly if len(k) == 2 and {x[0] for x in k} == {"h", "z"}]
    if not (n_terms and zn and zh) or poly[n_terms[0]] != 1.0 or poly[zn[0]] != -1.0 or poly[zh[0]] != 1.0:
        return None
    z1 = next(x[1] for x in zn[0] if x[0] == "z")
    z2 = next(x[1] for x in zh[0] if x[0] == "z")
    if z1 is not z2:
        return None
    return z1, next(x[1] for x in zh[0] if x[0] == "h")


# --- logits and the sampler ---------------------------------------------------------------
def _logits_value(body, t2: ir.Value, forms_of: LinearForms, t2_key) -> ir.Value:
    """The last value downstream of t2 that is still linear in t2 (the logits)."""
    value = t2
    while True:
        linear_next = [out for node in value.consumers() for out in node.outputs
                       if node.op_type in ("Gemm", "MatMul", "Add") and (f := forms_of.of(out)) is not None
                       and f.sources() == {t2_key}]
        if len(linear_next) != 1:
            break
        value = linear_next[0]
    if value is t2:
        raise NotRecognised("no linear output layer after the second dense layer")
    return value


def _scan_output_index(loop: ir.Node, body: ir.Graph, value: ir.Value) -> int:
    n_carried = len(body.inputs) - 2
    for i, out in enumerate(body.outputs[1 + n_carried:]):
        if out is value:
            return n_carried + i
    raise NotRecognised("the logits are not a scan output of the Loop")


def _free_running_sampler(loop, body, iteration, x_in, logits, mode_hint):
    """Find the noise and the samples scan output; verify the sampler numerically."""
    n_carried = len(body.inputs) - 2
    x_index = list(body.inputs[2:]).index(x_in)
    x_out = body.outputs[1 + x_index]
    before_logits, before_sample = _ancestors(body, logits), _ancestors(body, x_out)
    noise = [n for n in body if id(n) in before_sample and id(n) not in before_logits
             and n.op_type == "Gather" and n.inputs[1] is iteration and n.inputs[0].graph is not body
             and n.inputs[0].shape is not None and len(n.inputs[0].shape) in (2, 3)]
    scan = [i for i, out in enumerate(body.outputs[1 + n_carried:]) if _same_sample(out, x_out)]
    if len(scan) != 1:
        raise NotRecognised("no scan output holds the fed-back sample")
    if not noise:  # RAW argmax, or NotRecognised
        return None, n_carried + scan[0], verify_noiseless_sampler(body, logits, x_out)
    if len(noise) != 1:
        raise NotRecognised("more than one per-step tensor besides the logits feeds the sampler")
    noise_node = noise[0]
    axis = noise_node.attributes["axis"].value if "axis" in noise_node.attributes else 0
    found = verify_sampler(body, logits, noise_node.outputs[0], x_out, mode_hint)
    return (noise_node.inputs[0], axis), n_carried + scan[0], found


def _ancestors(body: ir.Graph, value: ir.Value) -> set[int]:
    """ids of the body nodes ``value`` depends on (in ``body`` only)."""
    seen, stack = set(), [value]
    while stack:
        node = stack.pop().producer()
        if node is None or node.graph is not body or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(v for v in node.inputs if v is not None)
    return seen


def _same_sample(scan_out: ir.Value, x_out: ir.Value) -> bool:
    """scan_out is x_out, or x_out is Unsqueeze/Reshape(scan_out) (or the reverse)."""
    if scan_out is x_out:
        return True
    for a, b in ((scan_out, x_out), (x_out, scan_out)):
        node = b.producer()
        if node is not None and node.op_type in ("Unsqueeze", "Reshape", "Squeeze") and node.inputs[0] is a:
            return True
    return False


def _sources(forms: dict) -> set:
    return set().union(*(f.sources() for f in forms.values()))


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) else None


def _width(value: ir.Value) -> int:
    if value.shape is None or not isinstance(value.shape[-1], int):
        raise NotRecognised(f"the width of {value.name or 'a body value'} is unknown (run shape inference)")
    return value.shape[-1]

"""Which WaveRNN module each node computes: ``waveopt.module`` provenance, else graph structure.

``attribute(model)`` labels every node (subgraphs included) with a module name:

1. Provenance: a node's ``metadata_props["waveopt.module"]`` names its module; ``loop``
   becomes ``loop glue``; ``step`` (glue inside the step) is refined by rule 3.
2. Structure, in a graph where no node carries provenance (a foreign graph, or one whose
   metadata a tool dropped). In the body of each Loop of the main graph:
   a. loop glue: index arithmetic on the iteration number / condition, and the per-step
      fetches (Gather, Slice, ...) of outer-scope data at such an index;
   b. recurrent cells: a loop-carried state whose next value is computed, back to the
      nearest matrix products, through Sigmoid and Tanh (GRU / LSTM gates) and from a
      matrix product that reads the state itself, or by a GRU / LSTM / RNN op:
      rnn1, rnn2, ... in graph order;
   c. sampling: from the distribution ops (Softmax, CumSum, ArgMax, ...) to the
      loop-carried or scanned outputs that are not a cell's state;
   d. dense layers: the other matrix products with a constant operand; products summed
      into one pre-activation (through Add, or as a Gemm's bias: what split / hoisted /
      folded layers look like) are one layer; in graph order, layers feeding the first
      cell are ``I``, the others fc1, fc2, fc3, ...
   In the main graph (when it has no provenance either): what computes outer-scope values
   the body reads is ``conditioning``, what only feeds the Loop's trip count / initial
   states is ``loop glue``, what follows the Loop is ``postprocess``.
3. Glue and unlabeled nodes join a neighbouring module, repeated until nothing changes.
   Data movement (Slice, Split, Concat, Reshape, ...) joins the one module all its
   consumers have (the aux Slice and Concat feeding fc1's Gemm are fc1, the Slices of MOL
   logits are sampling); computation takes the latest module among its producers (the
   Relu after fc1's Gemm is fc1, the residual Add of I and rnn1 is rnn1); each falls back
   on the other direction when nothing else moves. Constants count as no producer; loop
   glue never spreads.
4. Nodes inside other subgraphs (If branches, nested Loops) take their owner's module.
   Anything left is ``step glue`` (provenance ``step``) or ``unattributed``.

``map_optimized(optimized, original, labels)`` carries the labels over to the graph ORT
optimized (ORT keeps no metadata_props there): the same node name; else the module of the
original nodes that produced its outputs (``step glue`` when they are several: one Split
that slices aux for four modules); else an original name inside the new one (``fused X``);
else the one module consuming its inputs; then rules 3 and 4 on the optimized graph.
Names are matched, so node names must be unique across the model
(``profile_session.with_unique_node_names`` makes them so).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import onnx_ir as ir

from waveopt.graph import subgraphs
from waveopt.provenance import MODULE_KEY

__all__ = [
    "LOOP_GLUE", "LOOP_OVERHEAD", "STEP_GLUE", "UNATTRIBUTED", "MATMUL_OPS",
    "attribute", "map_optimized", "module_rank",
]

LOOP_GLUE = "loop glue"
LOOP_OVERHEAD = "loop overhead"
STEP_GLUE = "step glue"
UNATTRIBUTED = "unattributed"
_NOT_A_MODULE = {LOOP_GLUE, LOOP_OVERHEAD, STEP_GLUE, UNATTRIBUTED}

MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedGemm", "FusedMatMul", "MatMulNBits",
              "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm"}
RNN_OPS = {"GRU", "LSTM", "RNN", "DynamicQuantizeLSTM"}
_GATES = ({"Sigmoid", "HardSigmoid"}, {"Tanh"})
_DISTRIBUTION_OPS = {"Softmax", "LogSoftmax", "CumSum", "ArgMax", "ArgMin", "TopK", "Multinomial",
                     "RandomUniformLike", "RandomNormalLike", "Bernoulli"}
_FETCH_OPS = {"Gather", "GatherElements", "GatherND", "Slice", "Split"}
_SHAPE_ONLY_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast", "Transpose", "Flatten"}
_MOVEMENT_OPS = _FETCH_OPS | _SHAPE_ONLY_OPS | {"Concat", "Expand", "Tile"}
_ORDER = ["conditioning", "I", "rnn", "fc", "sampling", "postprocess"]


def module_rank(module: str) -> tuple[int, int, str]:
    """Sort key: conditioning, I, rnn1.., fc1.., sampling, postprocess, then anything else."""
    match = re.fullmatch(r"(rnn|fc)(\d+)", module)
    if match:
        return _ORDER.index(match[1]), int(match[2]), module
    if module in _ORDER:
        return _ORDER.index(module), 0, module
    return len(_ORDER), 0, module


def attribute(model: ir.Model) -> dict[str, str]:
    """The module of every node, by node name (see the module docstring)."""
    walk = _Walker(model.graph)
    labels: dict[ir.Node, str] = {}
    step_tagged: set[ir.Node] = set()
    tagged_graphs: set[int] = set()
    for node in walk.all_nodes():
        tag = node.metadata_props.get(MODULE_KEY)
        if tag:
            tagged_graphs.add(id(node.graph))
        if tag == "loop":
            labels[node] = LOOP_GLUE
        elif tag == "step":
            step_tagged.add(node)
        elif tag:
            labels[node] = tag
    for loop in _outer_loops(model.graph):
        body = loop.attributes["body"].as_graph()
        if not any(id(g) in tagged_graphs for g in _graphs(body)):
            _seed_body(walk, body, labels)
    if id(model.graph) not in tagged_graphs:
        _seed_main(walk, model.graph, labels)
    _finish(walk, labels, step_tagged)
    return {node.name: label for node, label in labels.items()}


def map_optimized(optimized: ir.Model, original: ir.Model, labels: dict[str, str]) -> dict[str, str]:
    """Labels for the nodes of ORT's optimized copy of ``original`` (see the module docstring)."""
    originals = {n.name: n for n in _Walker(original.graph).all_nodes()}
    produced_by: dict[str, str] = {}
    consumed_by: dict[str, set[str]] = {}
    for name, node in originals.items():
        label = labels.get(name, UNATTRIBUTED)
        for out in node.outputs:
            produced_by[out.name] = label
        for value in node.inputs:
            if value is not None:
                consumed_by.setdefault(value.name, set()).add(label)
    longest_first = sorted((n for n in originals if n), key=len, reverse=True)
    walk = _Walker(optimized.graph)
    mapped: dict[ir.Node, str] = {}
    for node in walk.all_nodes():
        label = _match(node, labels, longest_first, produced_by, consumed_by)
        if label is not None and label != UNATTRIBUTED:
            mapped[node] = label
    _finish(walk, mapped, set())
    return {node.name: label for node, label in mapped.items()}


# --- structure (rule 2) -----------------------------------------------------------------------
def _outer_loops(graph: ir.Graph) -> list[ir.Node]:
    return [n for n in graph if n.op_type == "Loop" and n.domain in ("", "ai.onnx")]


def _is_stop(node: ir.Node) -> bool:
    return node.op_type in MATMUL_OPS or node.op_type in RNN_OPS


def _seed_body(walk: _Walker, body: ir.Graph, labels: dict[ir.Node, str]) -> None:
    nodes = list(body)
    position = {node: i for i, node in enumerate(nodes)}
    invariant = _invariant_values(body)
    glue = _loop_glue(body, invariant)
    for node in glue:
        labels.setdefault(node, LOOP_GLUE)

    cells = []  # b.
    for state_in, state_out in zip(body.inputs[2:], body.outputs[1:]):
        cell = walk.ancestors([state_out], body, stop=_is_stop, skip=glue)
        if _is_recurrent_cell(cell, state_in):
            cells.append(cell)
    cells = sorted(_merge_overlapping(cells), key=lambda cell: min(position[n] for n in cell))
    in_cells: set[ir.Node] = set().union(*cells) if cells else set()
    for i, cell in enumerate(cells, start=1):
        for node in cell:
            labels.setdefault(node, f"rnn{i}")

    samples = [v for v in body.outputs[1:] if v.producer() is not None and v.producer() not in in_cells]  # c.
    chain = walk.ancestors(samples, body, stop=lambda n: _is_stop(n) or n in in_cells, skip=glue)
    chain = {n for n in chain if not _is_stop(n) and n not in in_cells}
    sources = [n for n in chain if n.op_type in _DISTRIBUTION_OPS]
    for node in (walk.descendants(sources, body) & chain) if sources else chain:
        labels.setdefault(node, "sampling")

    feeds_first_cell = walk.ancestors(cells[0], body, stop=lambda n: False, skip=set()) if cells else set()  # d.
    layers: dict[ir.Node, list[ir.Node]] = {}  # products summed into one pre-activation are one layer
    for node in nodes:
        weighted = any(v is not None and v in invariant for v in node.inputs)
        if node.op_type in MATMUL_OPS and node not in in_cells and weighted:
            layers.setdefault(_sum_root(walk, node, body), []).append(node)
    fc = 0
    for root in sorted(layers, key=position.get):
        if root in feeds_first_cell:
            module = "I"
        else:
            fc += 1
            module = f"fc{fc}"
        for node in layers[root]:
            labels.setdefault(node, module)


def _sum_root(walk: _Walker, node: ir.Node, body: ir.Graph) -> ir.Node:
    """Where a product's output stops being summed: through Add / Sub / Sum, and a Gemm's bias."""
    current = node
    while True:
        consumers = walk.consumers(current, body)
        if len(consumers) != 1:
            return current
        (consumer,) = consumers
        summed = consumer.op_type in ("Add", "Sub", "Sum") or (
            consumer.op_type == "Gemm" and len(consumer.inputs) > 2 and consumer.inputs[2] in current.outputs)
        if not summed:
            return current
        current = consumer


def _seed_main(walk: _Walker, graph: ir.Graph, labels: dict[ir.Node, str]) -> None:
    for loop in _outer_loops(graph):
        labels.setdefault(loop, LOOP_GLUE)
        body = loop.attributes["body"].as_graph()
        for node in walk.ancestors(_outer_scope_values(body), graph, stop=lambda n: False, skip=set()):
            labels.setdefault(node, "conditioning")
        control = [v for v in loop.inputs if v is not None]  # trip count, condition, initial states
        for node in walk.ancestors(control, graph, stop=lambda n: False, skip=set()):
            labels.setdefault(node, LOOP_GLUE)
        for node in walk.descendants([loop], graph) - {loop}:
            labels.setdefault(node, "postprocess")


def _is_recurrent_cell(cell: set[ir.Node], state_in: ir.Value) -> bool:
    ops = {n.op_type for n in cell}
    if ops & RNN_OPS:
        return True
    if not all(ops & gate for gate in _GATES):
        return False
    reads_state = _through_shape_ops(state_in)
    return any(n.op_type in MATMUL_OPS and any(v in reads_state for v in n.inputs if v is not None) for n in cell)


def _through_shape_ops(value: ir.Value) -> set[ir.Value]:
    """``value`` and what Reshape / Squeeze / Cast / ... make of it."""
    seen = {value}
    stack = [value]
    while stack:
        for use in stack.pop().uses():
            if use.node.op_type in _SHAPE_ONLY_OPS:
                for out in use.node.outputs:
                    if out not in seen:
                        seen.add(out)
                        stack.append(out)
    return seen


def _loop_glue(body: ir.Graph, invariant: set[ir.Value]) -> set[ir.Node]:
    """Index arithmetic on the iteration number / condition, and the fetches it indexes."""
    index_values = set(body.inputs[:2])
    glue: set[ir.Node] = set()
    for node in body:
        variable = [v for v in node.inputs if v is not None and v not in invariant]
        if not variable or list(subgraphs(node)) or not all(v in index_values for v in variable):
            continue
        if node.op_type not in _FETCH_OPS:
            index_values.update(node.outputs)
        glue.add(node)
    return glue


def _invariant_values(body: ir.Graph) -> set[ir.Value]:
    """Values that are the same at every step: initializers, outer scope, nodes of only those."""
    per_step = set(body.inputs)
    invariant: set[ir.Value] = set()
    for node in body:
        for value in node.inputs:
            if value is None or value in per_step:
                continue
            producer = value.producer()
            if producer is None or producer.graph is not body:  # initializer or outer scope
                invariant.add(value)
        if not list(subgraphs(node)) and all(v is None or v in invariant for v in node.inputs):
            invariant.update(node.outputs)
    return invariant


def _outer_scope_values(body: ir.Graph) -> list[ir.Value]:
    """Values the body (and its subgraphs) read from an enclosing graph."""
    graphs = list(_graphs(body))
    inner = {v for g in graphs for v in g.inputs} | {out for g in graphs for n in g for out in n.outputs}
    found: list[ir.Value] = []
    for g in graphs:
        for node in g:
            for value in node.inputs:
                if value is not None and value not in inner and value not in found:
                    found.append(value)
    return found


def _merge_overlapping(groups: list[set[ir.Node]]) -> list[set[ir.Node]]:
    merged: list[set[ir.Node]] = []
    for group in groups:
        group = set(group)
        for other in [m for m in merged if m & group]:
            merged.remove(other)
            group |= other
        merged.append(group)
    return merged


# --- propagation (rules 3 and 4) --------------------------------------------------------------
def _finish(walk: _Walker, labels: dict[ir.Node, str], step_tagged: set[ir.Node]) -> None:
    for graph in _graphs(walk.root):
        _propagate(walk, graph, labels)
    for node in walk.all_nodes():  # rule 4; graphs come parents first, so owners are final
        owner = walk.owner_of(node.graph)
        if node not in labels and owner is not None and not walk.is_outer_loop(owner) and owner in labels:
            labels[node] = labels[owner]
    for node in walk.all_nodes():
        if node not in labels:
            labels[node] = STEP_GLUE if node in step_tagged else UNATTRIBUTED


def _propagate(walk: _Walker, graph: ir.Graph, labels: dict[ir.Node, str]) -> None:
    nodes = list(graph)
    moving = [n for n in nodes if n.op_type in _MOVEMENT_OPS]
    computing = [n for n in nodes if n.op_type not in _MOVEMENT_OPS]
    graph_outputs = set(graph.outputs)

    def forward(candidates: list[ir.Node]) -> bool:  # the latest module among the producers
        changed = False
        for node in candidates:
            if node in labels:
                continue
            found = [labels.get(p) for p in walk.producers(node, graph) if not _is_constant(p)]
            if found and all(m is not None and m not in _NOT_A_MODULE for m in found):
                labels[node] = max(found, key=module_rank)
                changed = True
        return changed

    def backward(candidates: list[ir.Node]) -> bool:  # the one module of all consumers
        changed = False
        for node in reversed(candidates):
            if node in labels or any(out in graph_outputs for out in node.outputs):
                continue
            found = {labels.get(c) for c in walk.consumers(node, graph)}
            if len(found) == 1 and None not in found and not found & _NOT_A_MODULE:
                labels[node] = found.pop()
                changed = True
        return changed

    # Data movement serves the module that uses the data, computation belongs to the one that
    # made its inputs; the other direction only once neither finds anything more.
    while True:
        changed = backward(moving) | forward(computing) | backward(computing)
        if not changed and not forward(moving):
            return


def _is_constant(node: ir.Node) -> bool:
    return all(v is None for v in node.inputs) and not list(subgraphs(node))


# --- mapping onto ORT's optimized graph -------------------------------------------------------
def _match(node: ir.Node, labels: dict[str, str], longest_first: list[str],
           produced_by: dict[str, str], consumed_by: dict[str, set[str]]) -> str | None:
    if node.name in labels:
        return labels[node.name]
    made = {produced_by[out.name] for out in node.outputs if out.name in produced_by}
    if made:  # a fused node keeps its last node's outputs; one feeding several modules is shared glue
        return made.pop() if len(made) == 1 else STEP_GLUE
    for name in longest_first:
        if _contains_name(node.name or "", name):
            return labels.get(name)
    found: set[str] = set()
    for value in node.inputs:
        if value is not None and value.name in consumed_by:
            found |= consumed_by[value.name]
    return found.pop() if len(found) == 1 else None


def _contains_name(text: str, name: str) -> bool:
    """``name`` occurs in ``text`` with no letter, digit or underscore right before or after it."""
    start = text.find(name)
    while start >= 0:
        end = start + len(name)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        start = text.find(name, start + 1)
    return False


# --- graph walking ----------------------------------------------------------------------------
class _Walker:
    """Producers, consumers and owners across a model's graphs (onnx_ir graphs know no parent)."""

    def __init__(self, root: ir.Graph) -> None:
        self.root = root
        self._owner: dict[int, ir.Node] = {}
        for graph in _graphs(root):
            for node in graph:
                for sub in list(subgraphs(node)):
                    self._owner[id(sub)] = node

    def all_nodes(self) -> list[ir.Node]:
        return [node for graph in _graphs(self.root) for node in graph]

    def owner_of(self, graph: ir.Graph | None) -> ir.Node | None:
        return self._owner.get(id(graph)) if graph is not None else None

    def is_outer_loop(self, node: ir.Node) -> bool:
        return node.graph is self.root and node.op_type == "Loop" and node.domain in ("", "ai.onnx")

    def in_graph(self, node: ir.Node, graph: ir.Graph) -> ir.Node | None:
        """``node``, or the node of ``graph`` whose subgraph (at any depth) holds it."""
        while node is not None and node.graph is not graph:
            node = self.owner_of(node.graph)
        return node

    def producers(self, node: ir.Node, graph: ir.Graph) -> list[ir.Node]:
        found: list[ir.Node] = []
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and producer.graph is graph and producer not in found:
                found.append(producer)
        return found

    def consumers(self, node: ir.Node, graph: ir.Graph) -> list[ir.Node]:
        found: list[ir.Node] = []
        for out in node.outputs:
            for use in out.uses():
                consumer = self.in_graph(use.node, graph)
                if consumer is not None and consumer is not node and consumer not in found:
                    found.append(consumer)
        return found

    def ancestors(self, start: Iterable, graph: ir.Graph, stop: Callable[[ir.Node], bool],
                  skip: set[ir.Node]) -> set[ir.Node]:
        """Nodes of ``graph`` that ``start`` (values or nodes) depends on, not past ``stop`` nodes.

        Nodes given in ``start`` are included; values contribute their producers.
        """
        stack: list[ir.Node] = []
        for item in start:
            if isinstance(item, ir.Node):
                stack.append(item)
            elif item is not None and item.producer() is not None:
                stack.append(item.producer())
        found: set[ir.Node] = set()
        while stack:
            node = self.in_graph(stack.pop(), graph)
            if node is None or node in found or node in skip:
                continue
            found.add(node)
            if not stop(node):
                stack.extend(self.producers(node, graph))
        return found

    def descendants(self, start: Iterable[ir.Node], graph: ir.Graph) -> set[ir.Node]:
        found: set[ir.Node] = set()
        stack = list(start)
        while stack:
            node = stack.pop()
            if node not in found:
                found.add(node)
                stack.extend(self.consumers(node, graph))
        return found


def _graphs(graph: ir.Graph):
    """``graph`` and every subgraph below it, parents before children."""
    yield graph
    for node in graph:
        for sub in list(subgraphs(node)):
            yield from _graphs(sub)

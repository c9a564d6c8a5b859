"""Give ``Relu(product + other terms)`` the Gemm form that ONNX Runtime runs as one FusedGemm kernel.

Before (what split/hoist/fold leave of ``Relu(fc1(Concat(x, a3_t)))`` in the Loop body)::

    y = Relu(Add(Add(MatMul(h, W), Mul(s, w)), Gather(P, t)))

After::

    y = Relu(Gemm(h, W, Add(Mul(s, w), Gather(P, t))))

ONNX Runtime fuses a Gemm whose only reader is a Relu into ``FusedGemm(activation=Relu)``
(GemmActivationFusion) — but only when the Relu reads the Gemm directly, not an Add after
it. Exact up to the order of fp32 summation: Gemm adds C to the product instead of the
terms being added one after the other. Does not apply to a Relu that already reads a Gemm
(ORT fuses that), or when a term could broadcast the product to a larger shape.
"""

from __future__ import annotations

import onnx_ir as ir

from waveopt.passes._ir import Builder, ShapeInfo, const_array, is_onnx_op, set_shape
from waveopt.passes.base import WaveoptPass

__all__ = ["FuseConcatMatMulReluPass"]


class FuseConcatMatMulReluPass(WaveoptPass):
    """Rewrite ``Relu(sum of terms)`` as ``Relu(Gemm(x, W, C))``.

    In every graph, Loop bodies included:

    1. Match a Relu whose input is a tree of Adds read only by it (inner Adds only by the tree)
       with a term ``MatMul(x, W)`` (x of rank 2, W a constant 2-D) or a Gemm
       (beta = 1) read only by the tree. With several, the largest W is taken.
    2. Every other term must broadcast into the product's [M, N] (rank <= 2, first dim
       1 or the product's own); their sum, in the original order, becomes C (added to
       the Gemm's own C if it has one).
    3. A Relu directly on a Gemm or MatMul is left alone (ONNX Runtime already fuses
       Gemm + Relu; MatMul + Relu has nothing to add).
    """

    name = "fuse_concat_matmul_relu"
    description = "Relu(MatMul + terms) -> Relu(Gemm(x, W, terms)), which ONNX Runtime fuses into FusedGemm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        shapes = ShapeInfo(model)
        builder = Builder(model, "fuse")
        fused = 0
        for relu in list(ir.traversal.RecursiveGraphIterator(model.graph)):
            if is_onnx_op(relu, "Relu") and _try_fuse(relu, shapes, builder):
                fused += 1
        if not fused:
            return self.result(model)
        return self.result(model, f"fused {fused} Relu(MatMul + terms) into Gemm + Relu")


def _try_fuse(relu: ir.Node, shapes: ShapeInfo, builder: Builder) -> bool:
    top = relu.inputs[0].producer()
    if top is None or not is_onnx_op(top, "Add") or top.graph is not relu.graph:
        return False
    if len(relu.inputs[0].uses()) != 1 or relu.inputs[0].is_graph_output():
        return False  # the sum is needed as it is elsewhere
    terms, adds = _add_tree(top)
    products = [t for t in terms if _is_product(t, shapes) and len(t.uses()) == 1]
    if not products:
        return False
    product = max(products, key=lambda v: const_array(v.producer().inputs[1]).size)
    rows = _dims(product, shapes)
    others = [t for t in terms if t is not product]
    if rows is None or any(not _fits(_dims(t, shapes), rows) for t in others):
        return False

    graph, node = relu.graph, product.producer()
    new_nodes = []
    bias = others[0]
    for term in others[1:]:
        add = builder.node("Add", [bias, term], like=top)
        set_shape(add.outputs[0], relu.inputs[0].shape, like=relu.inputs[0])
        new_nodes.append(add)
        bias = add.outputs[0]
    inputs = list(node.inputs[:2])
    attrs = {}
    if node.op_type == "Gemm":
        attrs = {a.name: a.value for a in node.attributes.values()}
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            add = builder.node("Add", [node.inputs[2], bias], like=top)
            set_shape(add.outputs[0], relu.inputs[0].shape, like=relu.inputs[0])
            new_nodes.append(add)
            bias = add.outputs[0]
    gemm = builder.node("Gemm", [*inputs, bias], like=node, **attrs)
    set_shape(gemm.outputs[0], relu.inputs[0].shape, like=relu.inputs[0])
    new_nodes.append(gemm)
    graph.insert_before(relu, new_nodes)
    relu.replace_input_with(0, gemm.outputs[0])
    graph.remove([n for n in reversed(list(graph)) if n in adds or n is node], safe=True)
    return True


def _add_tree(top: ir.Node) -> tuple[list[ir.Value], set[ir.Node]]:
    """The terms of a tree of Adds (in order) and its Add nodes; inner Adds have one reader."""
    terms, adds = [], {top}
    for value in top.inputs:
        node = value.producer()
        if (node is not None and is_onnx_op(node, "Add") and node.graph is top.graph
                and len(value.uses()) == 1 and not value.is_graph_output()):
            inner_terms, inner_adds = _add_tree(node)
            terms.extend(inner_terms)
            adds |= inner_adds
        else:
            terms.append(value)
    return terms, adds


def _is_product(value: ir.Value, shapes: ShapeInfo) -> bool:
    node = value.producer()
    if node is None or not is_onnx_op(node, "MatMul", "Gemm") or value.is_graph_output():
        return False
    weight = const_array(node.inputs[1])
    if weight is None or weight.ndim != 2:
        return False
    if node.op_type == "Gemm":
        return node.attributes.get_float("beta", 1.0) == 1.0
    return shapes.rank(node.inputs[0]) == 2


def _dims(value: ir.Value, shapes: ShapeInfo) -> list | None:
    """Dims as ints or dim names; None where unknown (two unknown dims never match)."""
    return shapes.dims(value)


def _fits(dims: list | None, rows: list) -> bool:
    """Does a tensor of ``dims`` broadcast into the product's ``rows`` = [M, N] without growing it?"""
    if dims is None or len(dims) > 2 or len(rows) != 2:
        return False
    if len(dims) == 2 and not (dims[0] == 1 or (dims[0] == rows[0] and dims[0] is not None)):
        return False
    last = dims[-1] if dims else 1
    return last == 1 or (last == rows[-1] and last is not None)

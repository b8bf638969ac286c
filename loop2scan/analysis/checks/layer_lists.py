"""Loops over per-layer parameter lists (``L2S303``, ``L2S304``, ``L2S308``, ``L2S309``)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from ...plan import LayoutChange, LayoutEdit, LoopResult
from ..activity import int_literal, target_names, walk_all
from ..decline import Code, Decline
from ..examples import Invalid, Valid
from ..iteration import ElementSource
from ..outputs import index_offset

CODES = (
    Code("L2S303", "layer-loop", "the loop calls each element: a loop over layers or callables",
         "Nothing to change: this version scans arrays and per-layer parameter lists, not module objects or "
         "callables; the loop is left as it is"),
    Code("L2S304", "parameter-list", "the loop iterates over a list of per-layer parameters built out of sight",
        "Build the list in a function of this module whose result is passed here (loop2scan then stacks it once, "
        "where it is built), or run with `--layout keep` to stack it inside the function on every call."),
    Code("L2S308", "layers-differ", "the per-layer parameters may differ in shape from layer to layer",
        "Build every layer from the same shapes (loop over `jax.random.split(key, n)` or `range(n)` used only to "
        "pick keys); layers of different widths cannot be stacked into one scan."),
    Code("L2S309", "layout-use", "the per-layer parameter list is used in a way the stacked layout would change",
        "Replace the use with a layout-independent one (`jax.tree.map` over leaves, or scan it too), or keep the "
        "list layout with `--layout keep`."),
)


@dataclass
class LayerLoop:
    mode: str  # "stacked" | "keep"
    name: str  # the list, as named in the loop's function
    part: Optional[str]  # `a:b` when iterating a slice of it
    structure: object  # layers.Structure (stacked mode)


def find_layer_loop(la) -> None:
    """``la.layer``: set when the loop iterates a per-layer parameter list."""
    la.layer = _layer_loop(la, la.iteration)


def _layer_loop(la, iteration) -> Optional[LayerLoop]:
    """A loop over a per-layer parameter list: ``for W, b in params``,
    ``for p in params[1:]``, ``for i in range(len(params)): ... params[i]``."""
    seq: Optional[str] = None
    part: Optional[str] = None
    r = iteration.range_loop
    if r is not None:
        stop = r.stop
        if r.start is None and r.step is None and isinstance(stop, ast.Call) and isinstance(stop.func, ast.Name) \
                and stop.func.id == "len" and len(stop.args) == 1 and isinstance(stop.args[0], ast.Name) \
                and not iteration.reverse:
            seq = stop.args[0].id
    elif len(iteration.leaves) == 1 and isinstance(iteration.leaves[0], ElementSource) and not iteration.reverse:
        expr = iteration.leaves[0].expr
        if isinstance(expr, ast.Name):
            seq = expr.id
        elif isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name) and isinstance(
                expr.slice, ast.Slice) and all(b is None or int_literal(b) is not None
                                               for b in (expr.slice.lower, expr.slice.upper, expr.slice.step)):
            seq, part = expr.value.id, ast.unparse(expr.slice)
    if seq is None or seq in la.written:
        return None
    structure = None
    func = la.func
    if la.mctx.layout == "stacked" and func is not None and la.mctx.parent(func) is la.mctx.tree:
        # the layout analysis follows module-level functions (not methods or nested functions)
        structure = la.mctx.layers.structure_of(func, seq)
    if structure is not None:
        if structure.builder.problem is not None:
            raise structure.builder.problem
        if structure.problem is not None:
            raise structure.problem
        return LayerLoop("stacked", seq, part, structure)
    if not _looks_like_parameter_list(la, iteration, seq):
        return None
    if la.mctx.layout == "keep":
        return LayerLoop("keep", seq, part, None)
    header = f"for {ast.unparse(la.loop.target)} in {ast.unparse(la.loop.iter)}"
    raise Decline("L2S304", f"`{header}`: `{seq}` is a list of per-layer parameters, but where it is built is "
                  "not visible "
                  "from this loop (a function of this module returning it, whose result reaches this "
                  "function): the stacked layout cannot be introduced safely. Build it in this module, or run "
                  "with `--layout keep` to stack it inside the function on every call (slower under "
                  "`jax.grad`)", la.loop.iter)


def _looks_like_parameter_list(la, iteration, seq: str) -> bool:
    if iteration.range_loop is not None:
        index = iteration.range_loop.name
        for node in walk_all(la.loop.body):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Subscript) \
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == seq \
                    and index_offset(node.value.slice, index) == 0:
                return True  # params[i]["w"], params[i][0]
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                    and isinstance(node.value, ast.Subscript) and isinstance(node.value.value, ast.Name) \
                    and node.value.value.id == seq:
                return True  # W, b = params[i]
        return False
    leaf = iteration.leaves[0]
    if isinstance(leaf.target, (ast.Tuple, ast.List)):
        return True
    names = set(target_names(leaf.target))
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in names \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            return True
    return False


def layout_change(la) -> Optional[LayoutChange]:
    layer = la.layer
    if layer is None:
        return None
    if layer.mode == "keep":
        return LayoutChange("keep", layer.name)
    st = layer.structure
    mctx = la.mctx
    edits = []
    for use in st.uses:
        edits.append(LayoutEdit(use.kind, mctx.span(use.node), mctx.span(use.arg) if use.arg is not None else None,
                                use.text))
    edits.sort(key=lambda e: (e.span.line, e.span.col))
    return LayoutChange("stacked", layer.name, st.builder.name, st.builder.func.lineno, edits,
                        list(st.returned_from), key=id(st))


def layouts_change_together(mctx, results: list[LoopResult]) -> None:
    """All loops over one parameter list change with its layout, or none does."""
    if "layers" not in mctx.__dict__:
        return
    index = {id(loop): i for i, loop in enumerate(mctx.loops)}
    for st in mctx.layers.structures:
        members = [index[id(loop)] for loop in st.loops if id(loop) in index]
        if not members:
            continue
        blocking = [results[i] for i in members if results[i].status != "rewritten"]
        if not blocking:
            continue
        first = blocking[0]
        for i in members:
            r = results[i]
            if r.status == "rewritten":
                results[i] = LoopResult(r.line, r.col, r.end_line, "declined", "L2S309",
                                        f"every loop over the parameter list built by `{st.builder.name}` must "
                                        f"become a scan together; the loop at line {first.line} cannot "
                                        f"({first.code}: {first.message})")


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S303", "layer-loop", """
        def mlp(layers, x):
            for layer in layers:
                x = jax.nn.relu(layer(x))  # <-
            return x
        """, says=("layer",)),
    Invalid("L2S303", "layer-list-by-index", """
        def mlp(layers, x):
            for i in range(len(layers)):
                x = jax.nn.relu(layers[i](x))  # <-
            return x
        """, says=("layers[i]",)),
    Invalid("L2S304", "list-of-weight-tuples", """
        def mlp(params, x):
            for w, b in params:  # <-
                x = jnp.tanh(x @ w + b)
            return x
        """, says=("w, b", "stack")),
    Invalid("L2S304", "list-of-param-dicts", """
        def mlp(params, x):
            for p in params:  # <-
                x = jnp.tanh(x @ p["w"] + p["b"])
            return x
        """, says=("`params`", "per-layer", "--layout keep")),
    Invalid("L2S308", "layers-of-different-widths", """
        def init(key, sizes):
            keys = jax.random.split(key, len(sizes) - 1)
            return [(jax.random.normal(k, (m, n)), jnp.zeros(n))
                    for k, (m, n) in zip(keys, zip(sizes[:-1], sizes[1:]))]  # <-

        def mlp(params, x):
            for w, b in params:
                x = jnp.tanh(x @ w + b)
            return x

        def run(key, x):
            return mlp(init(key, [3, 4, 4]), x)
        """, says=("`init`", "differ")),
    Invalid("L2S309", "layout-changing-use", """
        def init(key, n, d):
            return [(jax.random.normal(k, (d, d)), jnp.zeros(d)) for k in jax.random.split(key, n)]

        def mlp(params, x):
            for w, b in params:
                x = jnp.tanh(x @ w + b)
            return x

        def count(params):
            return sum(w.size + b.size for w, b in params)  # <-

        def run(key, x):
            params = init(key, 3, 4)
            return mlp(params, x), count(params)
        """, says=("`params`", "`init`", "line")),
    Invalid("L2S303", "nnx-module-layers", """
        from flax import nnx

        class Decoder(nnx.Module):
            def __init__(self, n, rngs):
                self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(n)])

            def __call__(self, x):
                for layer in self.layers:
                    x = layer(x)  # <-
                return x
        """, says=("`layer`",)),
)

VALID = (
    Valid("L2S303", "method-on-element-is-not-a-layer", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x.sum(axis=0))
            return h
        """, "rnn", ('f32[5,3,4], f32[4]',)),
    Valid("L2S303", "array-method-on-element", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x.clip(-1.0, 1.0))
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
)

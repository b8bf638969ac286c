"""Loops over per-layer parameter lists (``L2S303``, ``L2S304``, ``L2S308``, ``L2S309``)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from ...plan import LayoutChange, LayoutEdit, LoopResult
from ..activity import int_literal, target_names, walk_all
from ..builders import vmap_variable
from ..decline import Code, Decline
from ..examples import Invalid, Valid
from ..iteration import ElementSource
from ..kinds import UNKNOWN
from ..layers import imported_list_sources, module_builders
from ..outputs import index_offset
from ..nodes import walk

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
    Code("L2S312", "layout-public", "the per-layer parameter list crosses an API callers out of sight may use",
         "The stacked layout would change what a public function returns or takes for importers the project does "
         "not show (a published library's public name, `__all__`, `import *`): keep the list layout with "
         "`--layout keep`, or make the function private."),
    Code("L2S313", "layout-optimizer", "an optimizer update over the parameter list is not element-wise per leaf",
         "Per-leaf statistics (LAMB, LARS, Adafactor, block RMS clipping) and masks that read shapes, `ndim` or "
         "paths change meaning when the layers are stacked into one leaf: keep the list layout with "
         "`--layout keep`."),
    Code("L2S314", "layout-edit-outside-run", "the layout change needs an edit in a file not among this run's files",
         "Name that file too (or run on the whole project), or keep the list layout with `--layout keep`."),
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
    looks = None
    if la.mctx.layout == "stacked" and func is not None and la.mctx.parent(func) is la.mctx.tree:
        # the layout analysis follows module-level functions (not methods or nested functions)
        structure = la.mctx.layers.structure_of(func, seq)
        if structure is None:
            # a list whose layers may differ, built here: say so (L2S308)
            la.mctx.layers.follow_differing_builders()
            structure = la.mctx.layers.structure_of(func, seq)
        if structure is None:
            looks = _looks_like_parameter_list(la, iteration, seq)
            if looks or _unknown_parameter(la, seq):
                # built in another module of the project, maybe: look where this one is used from
                # (a parameter of unknown kind may be such a list even when its elements look like arrays)
                la.mctx.layers.search_neighbourhood(la.mctx)
                structure = la.mctx.layers.structure_of(func, seq)
                if structure is None and not looks:
                    la.mctx.layers.follow_differing_builders(everywhere=True)
                    structure = la.mctx.layers.structure_of(func, seq)
    if structure is not None:
        if structure.builder.problem is not None:
            raise structure.builder.problem
        if structure.problem is not None:
            raise structure.problem
        return LayerLoop("stacked", seq, part, structure)
    if not (looks if looks is not None else _looks_like_parameter_list(la, iteration, seq)):
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
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript) \
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == seq:
                if isinstance(node.targets[0], ast.Tuple):
                    return True  # W, b = params[i]
                if isinstance(node.targets[0], ast.Name) and _string_indexed(la, node.targets[0].id):
                    return True  # p = params[i]; p["w"]
        return False
    leaf = iteration.leaves[0]
    if isinstance(leaf.target, (ast.Tuple, ast.List)):
        return True
    names = set(target_names(leaf.target))
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in names \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            return True
        # each element handed to a visible helper that reads it as a dict or a tuple of parameters
        if isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id in names for a in node.args):
            found = la.visible_function(node.func)
            if found is not None:
                pos = next(i for i, a in enumerate(node.args) if isinstance(a, ast.Name) and a.id in names)
                if _reads_parameters(found[0], pos):
                    return True
    return False


def _string_indexed(la, name: str) -> bool:
    """``name`` is indexed by a string key in the loop body (``p["w"]``)."""
    return any(isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == name
               and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str)
               for n in walk_all(la.loop.body))


def _reads_parameters(fn: ast.AST, pos: int) -> bool:
    """The function indexes its ``pos``-th parameter by string keys (``p["w"]``) or
    unpacks it (``w, b = p``): a per-layer parameter structure."""
    params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if pos >= len(params):
        return False
    param = params[pos]
    for node in walk(fn):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == param \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            return True
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                and isinstance(node.value, ast.Name) and node.value.id == param:
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
    edits = _edits_in(st, mctx)
    where = st.builder.mctx if st.builder.mctx is not mctx else None
    builder = st.builder.name if where is None or where.name is None else f"{where.name}.{st.builder.name}"
    return LayoutChange("stacked", layer.name, builder, st.builder.func.lineno, edits,
                        list(st.returned_from), key=id(st))


def _edits_in(st, mctx) -> list[LayoutEdit]:
    """The uses of the structure in module ``mctx`` rewritten for the stacked layout."""
    edits = []
    for use in st.uses:
        if use.mctx is not None and use.mctx is not mctx:
            continue
        edit = LayoutEdit(use.kind, mctx.span(use.node), mctx.span(use.arg) if use.arg is not None else None,
                          use.text)
        if use.kind == "builder-return":
            # `[f(k, ...) for k in keys]` builds the stacked layout as `jax.vmap(lambda k: f(k, ...))(keys)`
            edit.vmap = vmap_variable(mctx, st.builder.func, use.node)
        edits.append(edit)
    edits.sort(key=lambda e: (e.span.line, e.span.col))
    return edits


def _blocking(st, mctx, results: list[LoopResult]) -> Optional[tuple[str, LoopResult]]:
    """Why the layout change of the structure cannot be made everywhere: the
    first loop over it (in this module or another) that is not rewritten, or a
    module that needs an edit but does not see the structure itself (its own run
    would not make the edit): ``(where, result)``; ``None`` when nothing blocks it."""
    index = {id(loop): i for i, loop in enumerate(mctx.loops)}
    for loop in sorted(st.loops, key=lambda n: (st.loop_modules.get(id(n)) is not mctx, n.lineno)):
        owner = st.loop_modules.get(id(loop), mctx)
        if owner is mctx:
            r = results[index[id(loop)]] if id(loop) in index else None
        else:
            r = owner.first_pass_result(loop)
        if r is None:
            return f"{owner.display_path()}, line {loop.lineno}", LoopResult(
                loop.lineno, loop.col_offset, loop.end_lineno or loop.lineno, "declined", "L2S309",
                "its result depends on this one")
        if r.status != "rewritten":
            where = f"line {r.line}" if owner is mctx else f"{owner.display_path()}, line {r.line}"
            return where, r
    for owner in {id(u.mctx): u.mctx for u in st.uses if u.mctx is not None}.values():
        if owner is st.builder.mctx:
            continue
        if owner.layers.structure_built_by(st.builder.func) is None:
            first = next(u for u in st.uses if u.mctx is owner)
            line = getattr(first.node, "lineno", 0)
            return f"{owner.display_path()}, line {line}", LoopResult(
                line, 0, line, "declined", "L2S309",
                f"`{owner.display_path()}` uses the list built by `{st.builder.name}` without calling it (the value "
                "reaches it through another function); the stacked layout is introduced only where the builder "
                "is called")
    return None


def layouts_change_together(mctx, results: list[LoopResult]) -> None:
    """All loops over one parameter list change with its layout, or none does
    (loops in other modules of the project included)."""
    if "layers" not in mctx.__dict__:
        return
    index = {id(loop): i for i, loop in enumerate(mctx.loops)}
    for st in mctx.layers.structures:
        members = [index[id(loop)] for loop in st.loops if id(loop) in index and st.loop_modules.get(id(loop),
                                                                                                    mctx) is mctx]
        if not members:
            continue
        blocked = _blocking(st, mctx, results)
        if blocked is None:
            continue
        where, first = blocked
        for i in members:
            r = results[i]
            if r.status == "rewritten":
                results[i] = LoopResult(r.line, r.col, r.end_line, "declined", "L2S309",
                                        f"every loop over the parameter list built by `{st.builder.name}` must "
                                        f"become a scan together; the loop at {where} cannot "
                                        f"({first.code}: {first.message})")


def _unknown_parameter(la, seq: str) -> bool:
    """``seq`` is a parameter of the loop's function whose kind nothing shows."""
    if seq not in la.fctx.params:
        return False
    return la.facts.name_kind(seq, la.fctx.defs_before(la.loop, seq) or None).tag == UNKNOWN


def standalone_edits(mctx, results: list[LoopResult]) -> list[LayoutEdit]:
    """Edits this module needs for parameter lists whose loops are all in other
    modules and all rewritten (a builder module, an importer using ``len(v)``)."""
    if mctx.layout != "stacked" or mctx.project is None:
        return []
    if "layers" not in mctx.__dict__ and not any(b.problem is None for b in module_builders(mctx).values()) \
            and not imported_list_sources(mctx):
        return []  # no list this module sees can change layout (the analysis follows no other)
    out: list[LayoutEdit] = []
    for st in mctx.layers.structures:
        if not st.loops or st.problem is not None or st.builder.problem is not None:
            continue
        if any(st.loop_modules.get(id(loop), mctx) is mctx for loop in st.loops):
            continue  # the plans of this module's loops carry the edits
        if not any(use.mctx is mctx for use in st.uses):
            continue
        if _blocking(st, mctx, results) is None:
            out += _edits_in(st, mctx)
    return out


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S303", "layer-loop", """
        def mlp(layers, x):
            for layer in layers:
                x = jax.nn.relu(layer(x))  # <-
            return x
        """, says=("layer",)),
    Invalid("L2S303", "objects-whose-apply-is-called", """
        def compose(*transforms):
            def apply_fn(x):
                for tx in transforms:
                    x = jnp.tanh(tx.apply(x))  # <-
                return x
            return apply_fn
        """, says=("`tx.apply`",)),
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
    Invalid("L2S312", "public-builder-of-a-published-library", """
        import jax
        import jax.numpy as jnp

        def init_params(key, n, d):  # <-
            return [jax.random.normal(k, (d, d)) for k in jax.random.split(key, n)]

        def apply(params, x):
            for w in params:
                x = jnp.tanh(x @ w)
            return x

        def run(key, x):
            return apply(init_params(key, 3, x.shape[-1]), x)
        """, says=("`--layout keep`", "published library"), header=False,
        project=(("pyproject.toml", '[project]\nname = "mylib"\nversion = "1.0"\n'), ("pkg/__init__.py", ""))),
    Invalid("L2S312", "builder-listed-in-all", """
        import jax
        import jax.numpy as jnp

        __all__ = ["init_params", "apply"]

        def init_params(key, n, d):  # <-
            return [jax.random.normal(k, (d, d)) for k in jax.random.split(key, n)]

        def apply(params, x):
            for w in params:
                x = jnp.tanh(x @ w)
            return x

        def run(key, x):
            return apply(init_params(key, 3, x.shape[-1]), x)
        """, says=("`__all__`",), header=False, project=(("pkg/__init__.py", ""),)),
    Invalid("L2S313", "per-leaf-optimizer", """
        import optax

        def init_params(key, n, d):
            return [jax.random.normal(k, (d, d)) for k in jax.random.split(key, n)]

        def loss(params, x):
            for w in params:
                x = jnp.tanh(x @ w)
            return jnp.mean(x ** 2)

        def train(key, x, steps):
            params = init_params(key, 3, x.shape[-1])
            tx = optax.lamb(1e-3)
            opt_state = tx.init(params)  # <-
            return loss(params, x), opt_state
        """, says=("optax.lamb", "per-leaf")),
    Invalid("L2S313", "weight-decay-mask-reads-ndim", """
        import optax

        def init_params(key, n, d):
            return [(jax.random.normal(k, (d, d)), jnp.zeros(d)) for k in jax.random.split(key, n)]

        def loss(params, x):
            for w, b in params:
                x = jnp.tanh(x @ w + b)
            return jnp.mean(x ** 2)

        def train(key, x):
            params = init_params(key, 3, x.shape[-1])
            tx = optax.adamw(1e-3, mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p))
            opt_state = tx.init(params)  # <-
            grads = jax.grad(loss)(params, x)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates)
        """, says=("mask",)),
    Invalid("L2S314", "importer-not-in-the-run", """
        import jax
        import jax.numpy as jnp

        def init_params(key, n, d):  # <-
            return [jax.random.normal(k, (d, d)) for k in jax.random.split(key, n)]

        def apply(params, x):
            for w in params:
                x = jnp.tanh(x @ w)
            return x
        """, says=("pkg/train.py", "not among the files"), header=False,
        project=(("pkg/__init__.py", ""), ("pkg/train.py", """
            from .model import apply, init_params

            def first_layer(key, x):
                params = init_params(key, 2, x.shape[-1])
                return params[0], apply(params, x)
            """)), run=("pkg/model.py",)),
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


def _nnx_optimizer_example() -> Invalid:
    from .module_stacks import SAME_LAYERS, nnx_decoder

    src = nnx_decoder(SAME_LAYERS) + ("\n\ndef make_optimizer(model):\n"
                                      "    return nnx.Optimizer(model, optax.lamb(1e-3), wrt=nnx.Param)  # <-\n")
    return Invalid("L2S313", "per-leaf-optimizer-of-an-nnx-layer-stack", src, says=("optax.lamb", "per-leaf"),
                   framework="flax", header=False)


INVALID += (_nnx_optimizer_example(),)

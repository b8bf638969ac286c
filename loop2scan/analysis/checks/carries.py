"""Values carried from step to step (``L2S4xx``)."""

from __future__ import annotations

import ast

from ..activity import header_effects, int_literal, walk_body
from ..decline import Code, Decline, short
from ..examples import Invalid, Valid
from ..imports import is_under
from ..kinds import UNKNOWN, changes, promote
from ..nodes import walk

CODES = (
    Code("L2S401", "carry-unbound", "a value carried from step to step is not assigned before the loop",
        "Initialise it before the loop with a value of the same shape and dtype it has inside the loop."),
    Code("L2S402", "carry-none", "a carried value starts as `None`",
        "Initialise it with an array of the shape and dtype it has inside the loop (e.g. `jnp.zeros(...)`).",
        torch_fix="Initialise it with a tensor of the shape and dtype it has inside the loop (e.g. `torch.zeros(...)` "
                  "or `x.new_zeros(...)`)."),
    Code("L2S403", "python-value-carry", "a carried value is a Python value (a number that never meets an array, "
        "a set, a dict, a string)",
        "A scan would turn it into a traced array; if it really is an array value, initialise it as one "
        "(`jnp.zeros(())`, `jnp.float32(0)`), otherwise keep the loop.",
        torch_fix="A scan would turn it into a tensor; if it really is a tensor value, initialise it as one "
                  "(`torch.zeros(())`), otherwise keep the loop."),
    Code("L2S404", "carry-shape", "a carried value may change shape from step to step",
        "A scan carry keeps one shape and dtype: initialise it with the shape it has inside the loop "
        "(e.g. `jnp.zeros_like(...)`), and do not grow it (collect per-step values in a list instead).",
        torch_fix="A scan carry keeps one shape and dtype: initialise it with the shape it has inside the loop "
                  "(e.g. `torch.zeros_like(...)`), and do not grow it (collect per-step values in a list instead)."),
    Code("L2S406", "carry-not-shown", "a carried value is not shown to be an array or a pytree of arrays",
         "It starts and is updated as the result of calls whose source is not visible (an optimizer state, an "
         "object): build it with array operations, annotate it, or keep the loop."),
    Code("L2S405", "carry-dtype", "a carried value may change dtype from step to step",
         "A scan carry keeps one dtype: start it in the dtype it has inside the loop, or cast the update "
         "(`.astype(h.dtype)`)."),
)


SHAPE_CHANGING = {"concatenate", "append", "hstack", "vstack", "dstack", "column_stack", "row_stack", "stack",
                  "pad", "expand_dims", "outer", "kron", "insert", "repeat", "tile", "convolve", "correlate",
                  "polymul", "polyadd", "atleast_1d", "atleast_2d", "atleast_3d", "concat"}


REDUCTIONS = {"sum", "mean", "max", "min", "prod", "std", "var", "median", "amax", "amin", "nansum", "nanmean",
              "nanmax", "nanmin", "count_nonzero", "norm", "all", "any", "logsumexp", "average", "ptp"}


SCALAR_CONSTRUCTORS = {"asarray", "array", "float32", "float64", "float16", "bfloat16", "int32", "int64", "int8",
                       "uint8", "complex64"}


ELEMENTWISE_NAMES = {"tanh", "exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "square", "sigmoid",
                     "relu", "gelu", "softplus", "silu", "maximum", "minimum", "clip", "sign", "floor", "ceil",
                     "round", "power", "logaddexp", "float32", "float64", "asarray", "array", "exp2", "log2",
                     "reciprocal", "negative", "arctan2", "hypot", "rsqrt", "logistic", "stop_gradient"}


def check_initial_values(la) -> None:
    """Every carry is bound before the loop, not ``None``, not a Python value, and
    shown to be an array (or a pytree of them) at one end at least."""
    for name in la.carries:
        _check_carry_init(la, name)
    _check_python_container_carries(la, la.carries)
    _check_python_number_carries(la, la.carries)
    for name in la.carries:
        _check_carry_shown(la, name)


def _check_carry_shown(la, name: str) -> None:
    """A carry that starts as the result of a call whose source is not visible,
    and that the loop only updates with such results too, is not shown to be an
    array of fixed dtype and structure (an optimizer state whose flags change
    type, an object): decline rather than assume."""
    defs = la.fctx.defs_before(la.loop, name)
    if any(d.kind == "param" for d in defs):
        return  # a parameter used as an array: the documented assumption
    kind = la.facts.name_kind(name, defs)
    if kind.tag != UNKNOWN:
        return
    calls = [d.node.value for d in defs if d.kind == "assign" and isinstance(d.node, (ast.Assign, ast.AnnAssign))
             and isinstance(getattr(d.node, "value", None), ast.Call)]
    if not calls:
        return
    if la.mctx.framework == "torch_xla" and all(_torch_tensor_call(la, c) for c in calls):
        return  # `torch.zeros_like(h)`, `x.new_zeros(...)`: a tensor (the torch rules check its dtype)
    for stmt, value in _carry_updates(la, name):
        after = la.facts.kind(value, _defs_in_body(la, stmt))
        if after.is_array or after.is_array_tree():
            return
        if isinstance(stmt, ast.AugAssign):
            return  # `h += x` keeps h's type: arithmetic on it
    first = calls[0]
    raise Decline("L2S406", f"`{name}` starts as the result of `{short(ast.unparse(first))}` and the loop only updates "
                  "it with results of calls whose source is not visible: nothing shows it is an array (or a "
                  "pytree of arrays) whose dtype and structure stay the same from step to step", first)


#: Tensor methods building a new tensor (of the receiver's dtype and device, unless told otherwise).
TORCH_NEW_METHODS = ("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor")


def _torch_tensor_call(la, call: ast.Call) -> bool:
    """``call`` returns one tensor: a ``torch`` function such as ``torch.zeros_like``
    (not one returning a tuple), or ``x.new_zeros(...)`` and its kin."""
    from .torch_layers import _expr_kind

    f = call.func
    return _expr_kind(la, call) == "tensor" or (isinstance(f, ast.Attribute) and f.attr in TORCH_NEW_METHODS)


def _check_carry_init(la, name: str) -> None:
    defs = la.fctx.defs_before(la.loop, name)
    if not defs or any(d.kind in ("undef", "del") for d in defs):
        raise Decline("L2S401", f"`{name}` is carried from step to step but may be unassigned before the loop; "
                      "initialise it before the loop", la.first_write(name) or la.loop)
    for d in defs:
        node = d.node
        value = getattr(node, "value", None) if d.kind == "assign" else None
        if isinstance(node, ast.Assign) and isinstance(value, ast.Constant) and value.value is None:
            raise Decline("L2S402", f"`{name}` is carried from step to step but starts as `None` "
                          f"(line {node.lineno}); initialise it with an array of its final shape", node)
        if isinstance(node, ast.AnnAssign) and isinstance(value, ast.Constant) and value.value is None:
            raise Decline("L2S402", f"`{name}` is carried from step to step but starts as `None` "
                          f"(line {node.lineno})", node)
    if len(defs) == 1:
        d = next(iter(defs))
        default = la.fctx.param_defaults.get(name) if d.kind == "param" else None
        if isinstance(default, ast.Constant) and default.value is None:
            raise Decline("L2S402", f"`{name}` is carried from step to step and its default is `None`; "
                          "initialise it before the loop (e.g. `if h is None: h = jnp.zeros(...)`)", default)


def _check_python_container_carries(la, carries: list[str]) -> None:
    for name in carries:
        for d in la.fctx.defs_before(la.loop, name):
            value = getattr(d.node, "value", None) if d.kind == "assign" else None
            if value is None or not isinstance(d.node, (ast.Assign, ast.AnnAssign)):
                continue
            kind = None
            if isinstance(value, (ast.Set, ast.Dict, ast.SetComp, ast.DictComp, ast.JoinedStr)) or (
                    isinstance(value, ast.Constant) and isinstance(value.value, (str, bytes))):
                kind = "a Python set, dict or string"
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
                    value.func.id in ("set", "dict", "frozenset", "str", "collections.defaultdict") and \
                    value.func.id not in la.fctx.shadowing:
                kind = f"a Python `{value.func.id}`"
            if kind:
                raise Decline("L2S403", f"`{name}` is carried from step to step but starts as {kind} "
                              f"(line {d.node.lineno}); a scan can only carry arrays", d.node)


def _check_python_number_carries(la, carries: list[str]) -> None:
    """A carry that starts as a Python number and is only ever updated by
    non-array computations is a Python value (a counter, a size)."""
    for name in carries:
        defs = la.fctx.defs_before(la.loop, name)
        if not defs or not all(_numeric_literal_def(d) for d in defs):
            continue
        updates = []
        for stmt in la.body_statements():
            if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and name in header_effects(stmt).writes:
                updates.append(stmt)
        if any(_update_is_array(la, stmt, name) for stmt in updates):
            continue
        first = updates[0] if updates else la.loop
        raise Decline("L2S403", f"`{name}` starts as a Python number and is never combined with an array in "
                      "the loop, so it is a Python value; a scan would turn it into a traced array "
                      f"(initialise it with `jnp.asarray(...)` if it is meant to be an array)", first)


def _numeric_literal_def(d) -> bool:
    node = d.node
    if d.kind != "assign" or not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
        return False
    if isinstance(node, ast.Assign) and (len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name)):
        return False
    value = node.value
    while isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
        value = value.operand
    return isinstance(value, ast.Constant) and type(value.value) in (int, float, bool, complex)


def _update_is_array(la, stmt: ast.stmt, name: str) -> bool:
    state = la.body_rd.before.get(id(stmt), {})

    def defs_of(n):
        d = state.get(n)
        if n == name:
            return None
        if d is None or any(x.kind == "entry" for x in d):
            return la.fctx.defs_before(la.loop, n) or None
        return d

    value = stmt.value
    if value is None:
        return False
    return la.facts.is_array(value, defs_of) or any(
        isinstance(n, ast.Call) and la.facts.call_is_array(n) for n in walk(value))


def _carry_updates(la, name: str) -> list[tuple[ast.stmt, ast.AST]]:
    """The statements of the body that rebind ``name``, with the value each combines in."""
    out = []
    for stmt in la.body_statements():
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and stmt.value is not None \
                and name in header_effects(stmt).writes:
            out.append((stmt, stmt.value))
    return out


def check_shapes(la) -> None:
    """A scan carry keeps its shape and structure.  Decline a carry grown by a
    shape-changing operation on itself or by adding items to a Python list or
    tuple, and one that starts as a scalar but is updated with values not known
    to be scalars (``h = 0`` then ``h = h + x``)."""
    carries = la.carries
    for name in carries:
        updates = _carry_updates(la, name)
        for stmt, value in updates:
            grown = _grows_container(la, stmt, value, name)
            if grown is not None:
                raise Decline("L2S404", f"`{name}` grows by {grown} every step (`{short(ast.unparse(stmt))}`): a "
                              "growing container is never a scan carry (collect per-step values with `.append` "
                              "and stack them after the loop instead)", stmt)
        for stmt, value in updates:
            for node in walk(value):
                if not isinstance(node, ast.Call):
                    continue
                q = la.qual(node.func) or ""
                last = q.rsplit(".", 1)[-1] if q else getattr(node.func, "attr", getattr(node.func, "id", ""))
                if (last in SHAPE_CHANGING and (is_under(q, "jax.numpy", "jax._src.numpy") or not q)
                        and any(isinstance(n, ast.Name) and n.id == name for a in node.args for n in walk(a))):
                    raise Decline("L2S404", f"`{name}` is updated with `{short(ast.unparse(node))}`, which "
                                  "changes its shape from step to step; a scan carry keeps one shape", node)
        defs = la.fctx.defs_before(la.loop, name)
        init = [getattr(d.node, "value", None) for d in defs]
        if not defs or not all(d.kind == "assign" and v is not None and _scalar_literal(la, v)
                               for d, v in zip(defs, init)):
            continue
        for stmt, value in updates:
            if not _scalar(la, value, name, stmt, 0):
                d = next(iter(defs))
                raise Decline("L2S404", f"`{name}` starts as the scalar `{short(ast.unparse(d.node.value))}` "
                              f"(line {d.node.lineno}) but is updated with `{short(ast.unparse(value))}`, which "
                              "is not known to be a scalar; a scan carry keeps its shape, so initialise it with "
                              "the shape it has inside the loop", stmt)


def _grows_container(la, stmt: ast.stmt, value: ast.AST, name: str):
    """How ``stmt`` grows the Python list or tuple ``name`` (``acc + [g]``,
    ``acc += (g,)``, ``[*acc, g]``), or ``None``."""
    def is_literal(e):
        return isinstance(e, (ast.List, ast.Tuple, ast.ListComp))

    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.op, ast.Add) and is_literal(value):
        return f"`+= {short(ast.unparse(value), 30)}`"
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add):
        sides = (value.left, value.right)
        if any(isinstance(e, ast.Name) and e.id == name for e in sides) and any(is_literal(e) for e in sides):
            return "concatenating a Python sequence"
    if isinstance(value, (ast.List, ast.Tuple)) and any(
            isinstance(e, ast.Starred) and isinstance(e.value, ast.Name) and e.value.id == name for e in value.elts):
        return "unpacking itself into a longer sequence"
    return None


def check_dtypes(la) -> None:
    """A scan carry keeps its dtype.  Decline a carry whose update visibly
    changes its dtype (an int32 accumulator updated with floats, a bfloat16
    state updated with float32 values) or mixes two dtype sources the code
    names (``param_dtype`` and the layer's ``dtype``), unless a cast pins it."""
    for name in la.carries:
        defs = la.fctx.defs_before(la.loop, name)
        # the carry's dtype where the loop starts, and that of each definition reaching it on its own
        # (in a nested loop, the value an enclosing loop's previous step left is one of them)
        befores = [la.facts.name_kind(name, defs).dtype]
        if defs and len(defs) > 1:
            befores += [la.facts.name_kind(name, {d}).dtype for d in defs]
        for stmt, value in _carry_updates(la, name):
            defs_of = _defs_in_body(la, stmt)
            after_value = la.facts.dtype(value, defs_of)
            why = None
            for before in befores:
                after = promote(before, after_value) if isinstance(stmt, ast.AugAssign) else after_value
                why = changes(before, after)
                if why is not None:
                    break
            if why is not None:
                raise Decline("L2S405", f"`{name}` may change dtype from step to step ({why}): "
                              f"`{short(ast.unparse(stmt))}`; a scan carry keeps one dtype, so cast the update "
                              f"(`.astype({name}.dtype)`) or start `{name}` in the dtype it has inside the loop",
                              stmt)


def _defs_in_body(la, stmt: ast.stmt):
    """Reaching definitions at ``stmt`` in the body, where a value carried in
    from the previous step (or the loop's start) has the carry's initial kind."""
    state = la.body_rd.before.get(id(stmt), {})

    def defs_of(n):
        d = state.get(n)
        if d is None:
            return la.fctx.defs_before(la.loop, n) or None
        if any(x.kind == "entry" for x in d):
            return (d - {x for x in d if x.kind == "entry"}) | la.fctx.defs_before(la.loop, n) or None
        return d
    return defs_of


def _scalar_literal(la, value: ast.AST) -> bool:
    if int_literal(value) is not None or (isinstance(value, ast.Constant) and type(value.value) in (float, bool)):
        return True
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
        return _scalar_literal(la, value.operand)
    if isinstance(value, ast.Call):
        q = la.qual(value.func) or ""
        last = q.rsplit(".", 1)[-1]
        if is_under(q, "jax.numpy", "numpy") and last in ("zeros", "ones", "full", "empty") and value.args \
                and isinstance(value.args[0], ast.Tuple) and not value.args[0].elts:
            return True
        if is_under(q, "jax.numpy", "numpy") and last in SCALAR_CONSTRUCTORS and 1 <= len(value.args) <= 2:
            return _scalar_literal(la, value.args[0])
    return False


def _scalar(la, expr: ast.AST, carry: str, stmt: ast.stmt, depth: int) -> bool:
    """``expr`` is provably a scalar (carry ``carry`` is one by induction)."""
    if depth > 6:
        return False
    if _scalar_literal(la, expr):
        return True
    if isinstance(expr, ast.Name):
        if expr.id == carry:
            return True
        state = la.body_rd.before.get(id(stmt), {})
        defs = state.get(expr.id)
        if not defs:
            return False
        for d in defs:
            node = d.node
            if d.kind == "entry":
                ok = all(x.kind == "assign" and _scalar_literal(la, getattr(x.node, "value", None) or ast.Pass())
                         for x in la.fctx.defs_before(la.loop, expr.id)) and \
                    bool(la.fctx.defs_before(la.loop, expr.id))
            elif d.kind == "assign" and isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                ok = _scalar(la, node.value, carry, node, depth + 1)
            else:
                ok = False
            if not ok:
                return False
        return True
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
        return _scalar_attribute(la, expr.attr)
    if isinstance(expr, ast.BinOp):
        return _scalar(la, expr.left, carry, stmt, depth + 1) and _scalar(la, expr.right, carry, stmt, depth + 1)
    if isinstance(expr, ast.UnaryOp):
        return _scalar(la, expr.operand, carry, stmt, depth + 1)
    if isinstance(expr, ast.IfExp):
        return _scalar(la, expr.body, carry, stmt, depth + 1) and _scalar(la, expr.orelse, carry, stmt,
                                                                                depth + 1)
    if isinstance(expr, ast.Call):
        kw = {k.arg for k in expr.keywords}
        q = la.qual(expr.func) or ""
        last = q.rsplit(".", 1)[-1]
        if is_under(q, "jax.numpy", "jax.numpy.linalg") and last in REDUCTIONS and len(expr.args) == 1 \
                and not kw & {"axis", "keepdims", "axes"}:
            return True
        if q in ("jax.numpy.vdot",) and len(expr.args) == 2:
            return True
        if (is_under(q, "jax.numpy", "jax.nn", "jax.lax") and last in ELEMENTWISE_NAMES) or \
                (q in ("jax.numpy.where",) and len(expr.args) == 3):
            return all(_scalar(la, a, carry, stmt, depth + 1) for a in expr.args)
        if not q and isinstance(expr.func, ast.Attribute) and expr.func.attr in REDUCTIONS \
                and not expr.args and not kw & {"axis", "keepdims"}:
            return True
        if isinstance(expr.func, ast.Name) and expr.func.id not in la.fctx.shadowing:
            return _returns_scalar(la, expr.func.id, depth + 1)
    return False


def _scalar_attribute(la, attr: str) -> bool:
    """``la.attr`` is only ever set to a Python number (a literal, or a
    constructor parameter annotated ``float``/``int`` or defaulting to a number)."""
    cls = la.mctx.enclosing_class(la.func)
    if cls is None:
        return False
    values = []
    for method in cls.body:
        if not isinstance(method, ast.FunctionDef):
            continue
        ctx = la.mctx.function(method)
        for node in walk(method):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Attribute) and t.attr == attr and isinstance(t.value, ast.Name)
                       and t.value.id == "self" for t in targets):
                    values.append((ctx, node.value))
    if not values:
        return False
    for ctx, v in values:
        if v is not None and _scalar_literal(la, v):
            continue
        if isinstance(v, ast.Name) and v.id in ctx.params:
            ann = ctx.param_annotations.get(v.id)
            default = ctx.param_defaults.get(v.id)
            if (ann is not None and ast.unparse(ann) in ("float", "int")) or (
                    default is not None and _scalar_literal(la, default)):
                continue
        return False
    return True


def _returns_scalar(la, name: str, depth: int) -> bool:
    """A module function whose every ``return`` is a reduction to a scalar."""
    fn = la.mctx.module_functions.get(name)
    if fn is None or depth > 3:
        return False
    returns = [n for n in walk_body(fn) if isinstance(n, ast.Return)]
    if not returns:
        return False
    imports = la.mctx.function(fn).imports
    for r in returns:
        v = r.value
        if v is None or not isinstance(v, ast.Call):
            return False
        kw = {k.arg for k in v.keywords}
        q = imports.qualname(v.func) or ""
        if not (is_under(q, "jax.numpy", "jax.numpy.linalg") and q.rsplit(".", 1)[-1] in REDUCTIONS
                and len(v.args) == 1 and not kw & {"axis", "keepdims", "axes"}):
            return False
    return True


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S404", "scalar-carry-grows", """
        def f(xs):
            h = 0.0
            for x in xs:
                h = 0.9 * h + jnp.tanh(x)  # <-
            return h
        """, says=("`h`", "scalar", "`0.0`")),
    Invalid("L2S404", "carry-concatenated", """
        def f(xs):
            acc = jnp.zeros((1,))
            for x in xs:
                acc = jnp.concatenate([acc, x[None]])  # <-
            return acc
        """, says=("`acc`", "concatenate", "shape")),
    Invalid("L2S401", "carry-unbound", """
        def rnn(xs):
            for x in xs:
                h = jnp.tanh(h + x)  # <-
            return h
        """, says=("`h`", "before the loop")),
    Invalid("L2S401", "carry-bound-on-one-branch", """
        def rnn(xs, h0, warm):
            if warm:
                h = h0
            for x in xs:
                h = jnp.tanh(h + x)  # <-
            return h
        """, says=("`h`",)),
    Invalid("L2S402", "carry-none", """
        def rnn(xs, w):
            h = None  # <-
            for x in xs:
                h = jnp.tanh(x @ w + (0.0 if h is None else h))
            return h
        """, says=("`h`", "None")),
    Invalid("L2S402", "carry-default-none", """
        def rnn(xs, w, h=None):  # <-
            for x in xs:
                h = jnp.tanh(x @ w + h)
            return h
        """, says=("`h`", "None")),
    Invalid("L2S403", "python-counter", """
        def rnn(xs, h):
            n = 0
            for x in xs:
                h = jnp.tanh(h + x)
                n = n + 1  # <-
            return h, n
        """, says=("`n`", "Python number")),
    Invalid("L2S404", "list-carry-grown-by-concatenation", """
        def collect(xs, acc):
            acc = list(acc)
            for x in xs:
                acc = acc + [jnp.tanh(x)]  # <-
            return jnp.stack(acc)
        """, says=("`acc`", "grows")),
    Invalid("L2S404", "list-carry-grown-in-place", """
        def history(xs, h):
            hs = [h]
            for x in xs:
                h = jnp.tanh(h + x)
                hs += [h]  # <-
            return jnp.stack(hs)
        """, says=("`hs`", "grows")),
    Invalid("L2S404", "numpy-scalar-start-broadcast", """
        import numpy as np

        def total(xs):
            acc = np.array(0, xs.dtype)
            for x in xs:
                acc = acc + jnp.tanh(x)  # <-
            return acc
        """, says=("`acc`", "scalar")),
    Invalid("L2S405", "int-accumulator-updated-with-floats", """
        def count(xs, n):
            acc = jnp.zeros(n, dtype=jnp.int32)
            for x in xs:
                acc = acc + jnp.tanh(x) * 0.5  # <-
            return acc
        """, says=("`acc`", "int32")),
    Invalid("L2S405", "int-accumulator-plus-tanh-of-a-parameter", """
        def count(h, n):
            cnt = jnp.full((3, 4), 0, jnp.int32)
            for _ in range(n):
                cnt = cnt + jnp.tanh(h)  # <-
            return cnt
        """, says=("`cnt`", "int32 before, at least float after")),
    Invalid("L2S405", "bfloat16-state-updated-with-float32", """
        def run(xs, d):
            h = jnp.zeros(d, jnp.bfloat16)
            for x in xs:
                h = h * 0.5 + jnp.tanh(x.astype(jnp.float32))  # <-
            return h
        """, says=("`h`", "bfloat16", "float32")),
    Invalid("L2S405", "two-dtype-sources-meet", """
        class Norm:
            def __init__(self, param_dtype, dtype):
                self.param_dtype = param_dtype
                self.dtype = dtype

            def power_iteration(self, w, n):
                u = jnp.ones((w.shape[0],), self.param_dtype)
                w = jnp.asarray(w, self.dtype)
                for _ in range(n):
                    u = jnp.tanh(w @ u)  # <-
                return u
        """, says=("`u`", "self.param_dtype", "self.dtype")),
    Invalid("L2S406", "optimizer-state-out-of-sight", """
        import optax
        from mylib.optim import advance, make_state

        def fit(params, grads, steps):
            state = make_state(params)  # <-
            for _ in range(steps):
                updates, state = advance(grads, state)
                params = optax.apply_updates(params, updates)
            return params
        """, says=("`state`", "make_state(params)")),
    Invalid("L2S405", "configured-dtype-meets-the-data", """
        def series(value, concentration, dtype, num_terms):
            rn = jnp.zeros_like(value, dtype=dtype)
            for n in range(num_terms, 0, -1):
                rn = 1.0 / (2.0 * n / concentration + rn)  # <-
            return rn
        """, says=("`rn`", "`dtype`", "`concentration`")),
)

VALID = (
    Valid("L2S402", "carry-from-jnp-zeros", """
        def rnn(xs, w):
            h = jnp.zeros((xs.shape[1], w.shape[1]))
            for x in xs:
                h = jnp.tanh(x @ w + h)
            return h
        """, "rnn", ('f32[5,3,4], f32[4,6]',)),
    Valid("L2S403", "python-float-that-meets-arrays", """
        def total_energy(xs):
            e = 0.0
            for x in xs:
                e = e + jnp.sum(x ** 2)
            return e
        """, "total_energy", ('f32[5,3,4]',)),
    Valid("L2S405", "cast-pins-the-carry-dtype", """
        def run(xs, d):
            h = jnp.zeros(d, jnp.bfloat16)
            for x in xs:
                h = (h * 0.5 + jnp.tanh(x)).astype(h.dtype)
            return h
        """, "run", ("f32[5,3], 3", "f32[1,3], 3"), static_argnums=(1,), grad=False),
    Valid("L2S405", "weak-scalar-start-promoted", """
        def energy(xs):
            total = 0.0
            for x in xs:
                total = total + jnp.sum(jnp.tanh(x) ** 2)
            return total
        """, "energy", ("f32[5,3]", "f32[1,3]"), modes=("x64",)),
)

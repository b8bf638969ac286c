"""What the loop iterates over, its loop variable and its trip count (``L2S30x``)."""

from __future__ import annotations

import ast
from typing import Optional

from ..activity import int_literal, target_names, walk_all, walk_body
from ..decline import advice, Code, Decline, position, short
from ..examples import Invalid, Valid
from ..iteration import (
    ElementSource,
    EnumerateIndex,
    RangeSource,
    parse_iteration,
    static_int,
)
from ..kinds import (
    ARRAY_METHODS,
    ARRAY_ONLY_ATTRIBUTES,
    CONTAINER,
    NONE,
    NUMBER,
    OBJECT,
    STRING,
    UNKNOWN,
    Kind,
)
from ..imports import is_array_call
from ..outputs import index_offset
from .static_uses import _static_parameter_of
from ..nodes import children, walk

CODES = (
    Code("L2S301", "dynamic-trip-count", "the number of steps is not static",
        "Scan needs a trip count known at trace time: derive it from shapes, `len()` or Python ints, not from array values."),
    Code("L2S302", "unsupported-iterable", "the loop iterates over something that cannot be scanned",
        "Iterate over an array, `range(...)`, `zip`, `enumerate` or `reversed` of those."),
    Code("L2S305", "target-reassigned", "the loop variable is reassigned in the loop body",
        "Use a new name for the modified value."),
    Code("L2S306", "target-used-after", "the loop variable is used after the loop",
        "Compute the last index or element explicitly after the loop."),
    Code("L2S310", "non-array-elements", "the elements of the iterated sequence are not shown to be arrays",
         "A scan stacks the sequence into one array: iterate over an array (annotate it, or build it with "
         "`jnp.stack`), or keep the loop for sequences of strings, objects, dicts, `None` or mixed numbers.",
         torch_fix="A scan stacks the sequence into one tensor: step through a tensor (`for x_t in x.unbind(1)`, or "
                   "`x[:, t]` for `t` in `range(x.size(1))`), or keep the loop for sequences of strings, objects, "
                   "dicts, `None` or mixed numbers."),
)

STATIC_ATTRS = {"shape", "ndim", "dtype", "size", "itemsize", "nbytes"}
# Calls returning several arrays of different shapes: iterating them cannot be stacked.
HETEROGENEOUS_CALLS = {"ix_", "array_split", "svd", "eig", "eigh", "qr", "lu", "lu_factor", "unique_all",
                       "unique_counts", "unique_inverse", "histogram", "histogram2d", "histogramdd", "polyfit",
                       "lstsq", "slogdet", "schur", "hessenberg", "tree_leaves", "tree_flatten", "leaves",
                       "tree_flatten_with_path", "tree_leaves_with_path"}
# Builtins whose results are Python sequences or iterators.
PYTHON_SEQUENCE_CALLS = {"sorted", "set", "frozenset", "range", "map", "filter", "zip", "enumerate", "reversed",
                         "iter", "dict", "str", "bytes"}
NOT_ARRAY_ATTRS = STATIC_ATTRS | {"T", "mT", "real", "imag", "at"}


def find_iteration(la) -> None:
    """What the loop iterates over (``range``, ``zip``, ``enumerate``, ``reversed``, elements)."""
    la.iteration = parse_iteration(la.loop, set(la.fctx.locals), la)


def check_iterables(la) -> None:
    """Loops over layers, per-layer parameter structures, or Python values."""
    loop, iteration = la.loop, la.iteration
    element_names: set[str] = set()
    for leaf in iteration.leaves:
        if isinstance(leaf, ElementSource):
            element_names.update(target_names(leaf.target))
            if isinstance(leaf.target, (ast.Tuple, ast.List)) and la.layer is None:
                raise Decline("L2S304", f"the loop unpacks each element of `{ast.unparse(leaf.expr)}` into "
                              f"`{ast.unparse(leaf.target)}`: a list of per-layer parameter tuples; stack them "
                              "into one pytree of arrays (one leading layer axis) and scan over that", leaf.target)
    for leaf in iteration.leaves:
        if isinstance(leaf, ElementSource) and la.layer is None:
            _check_element_iterable(la, leaf.expr)
    index = iteration.range_loop.name if iteration.range_loop else None
    problems = []
    for node in walk_all(loop.body):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in element_names:
                problems.append(Decline("L2S303", f"the loop calls its element `{f.id}`: a loop over layers or "
                                        "callables", node))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in element_names \
                    and f.attr not in NOT_ARRAY_ATTRS and f.attr not in ARRAY_METHODS:
                problems.append(Decline("L2S303", f"the loop calls `{ast.unparse(f)}` on each element: a loop "
                                        "over layers or objects", node))
            elif isinstance(f, ast.Subscript) and index is not None and any(
                    isinstance(n, ast.Name) and n.id == index for n in walk(f.slice)):
                problems.append(Decline("L2S303", f"the loop calls `{ast.unparse(f)}`: a loop over a list of "
                                        "layers or callables", node))
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and la.layer is None and \
                node.value.id in element_names and isinstance(node.slice, ast.Constant) and \
                isinstance(node.slice.value, str):
            problems.append(Decline("L2S304", f"each element `{node.value.id}` is indexed by a string "
                                    f"(`{ast.unparse(node)}`): a list of per-layer parameter dicts; stack them "
                                    "into one pytree of arrays and scan over that", node))
        elif isinstance(node, ast.Subscript) and index is not None and isinstance(node.value, ast.Subscript) \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str) \
                and index_offset(node.value.slice, index) is not None and la.layer is None:
            problems.append(Decline("L2S304", f"`{ast.unparse(node)}` indexes a per-layer structure by the loop "
                                    "index: a list of per-layer parameter dicts; stack them into one pytree "
                                    "of arrays and scan over that", node))
    if problems:
        raise min(problems, key=lambda d: position(d.node))


def _check_element_iterable(la, expr: ast.AST) -> None:
    """Iterating a parameter annotated as Python values, a Python list (whose
    arrays may differ in shape), or the parts of a call that returns arrays
    of different shapes."""
    check_sequence(la, expr, "iterates over")
    if isinstance(expr, ast.Name) and expr.id in la.fctx.params and expr.id not in la.written:
        ann = la.fctx.param_annotations.get(expr.id)
        if ann is not None and not la.mctx.annotation_is_array(ann):
            text = ast.unparse(ann)
            if _python_values_annotation(ann):
                raise Decline("L2S302", f"the loop iterates over `{expr.id}`, annotated `{text}`: Python values, "
                              "not the rows of an array", expr)
    if isinstance(expr, ast.Name) and expr.id in la.fctx.locals:
        for d in la.fctx.defs_before(la.loop, expr.id):
            value = getattr(d.node, "value", None) if d.kind == "assign" else None
            if value is None or not isinstance(d.node, (ast.Assign, ast.AnnAssign)):
                continue
            if isinstance(value, ast.Call) and la.is_progress_bar(value):
                raise Decline("L2S201", f"the loop iterates through a progress bar (`{expr.id}`, line "
                              f"{d.node.lineno}); drop it (a scan runs all steps at once)", expr)
            why = _python_sequence(la, value)
            if why:
                raise Decline("L2S302", f"the loop iterates over `{expr.id}`, {why} (line {d.node.lineno}): "
                              "Python values, not the rows of an array", expr)
    if isinstance(expr, ast.Call):
        last = expr.func.attr if isinstance(expr.func, ast.Attribute) else getattr(expr.func, "id", "")
        if last in HETEROGENEOUS_CALLS:
            raise Decline("L2S302", f"the loop iterates over the results of `{ast.unparse(expr.func)}`, which "
                          "have different shapes and cannot be stacked into one array", expr)


def check_sequence(la, expr: ast.AST, how: str) -> None:
    """``expr`` (or the name it slices) holds a Python list or dict: scanning it would
    need ``jnp.asarray``, which changes Python numbers into strongly typed arrays and
    fails on arrays of different shapes."""
    base = expr
    while isinstance(base, ast.Subscript) and isinstance(base.slice, ast.Slice):
        base = base.value
    if not isinstance(base, ast.Name) or la.fctx is None:
        return
    name = base.id
    if name in la.fctx.params and name not in la.written:
        ann = la.fctx.param_annotations.get(name)
        root = ann.value if isinstance(ann, ast.Subscript) else ann
        root_name = getattr(root, "attr", getattr(root, "id", None))
        if root_name in ("dict", "Dict", "Mapping", "MutableMapping"):
            raise Decline("L2S302", f"the loop {how} `{name}`, annotated `{ast.unparse(ann)}`: a dict, not an "
                          "array (its values may also differ in shape)", expr)
        return
    if name not in la.fctx.locals:
        return
    for d in la.fctx.defs_before(la.loop, name):
        node = d.node
        if d.kind != "assign" or not isinstance(node, ast.Assign):
            continue
        value = node.value
        starred = any(isinstance(t, (ast.Tuple, ast.List)) and any(
            isinstance(e, ast.Starred) and isinstance(e.value, ast.Name) and e.value.id == name for e in t.elts)
            for t in node.targets)
        kind = None
        if starred:
            kind = "the rest of an unpacked sequence (a Python list)"
        elif isinstance(value, (ast.List, ast.ListComp, ast.Dict, ast.DictComp)):
            kind = "a Python list" if isinstance(value, (ast.List, ast.ListComp)) else "a Python dict"
            if isinstance(value, ast.List) and value.elts and all(
                    isinstance(e, ast.Constant) or int_literal(e) is not None for e in value.elts):
                kind = "a Python list of numbers (a scan would make them strongly typed float32 arrays)"
        elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in (
                "list", "dict") and value.func.id not in la.fctx.shadowing:
            kind = f"a Python {value.func.id}"
        if kind:
            raise Decline("L2S302", f"the loop {how} `{name}`, {kind} (line {node.lineno}): its items may "
                          "differ in shape or type; stack them into one array first "
                          f"({advice(la, '`jnp.stack`', '`torch.stack`')}) and loop over that", expr)


def _python_sequence(la, value: ast.AST) -> str:
    """Why ``value`` is certainly a Python sequence/iterator of non-arrays ('' if not)."""
    if isinstance(value, (ast.GeneratorExp, ast.SetComp, ast.DictComp, ast.Dict, ast.Set)):
        return "a generator, set or dict"
    if isinstance(value, (ast.List, ast.Tuple)) and value.elts and all(
            isinstance(e, ast.Constant) for e in value.elts):
        return "a literal sequence of constants"
    if isinstance(value, ast.Call):
        f = value.func
        if isinstance(f, ast.Name) and f.id in PYTHON_SEQUENCE_CALLS and f.id not in la.fctx.locals:
            return f"built by `{f.id}(...)`"
        q = la.qual(f)
        if q and q.split(".")[0] in ("itertools", "functools", "collections", "string", "os", "re"):
            return f"built by `{q}(...)`"
    return ""


_SCALAR_TYPES = {"int", "float", "str", "bool", "bytes", "complex"}


_CONTAINER_TYPES = {"list", "tuple", "set", "frozenset", "dict", "List", "Tuple", "Set", "FrozenSet", "Dict",
                    "Sequence", "Iterable", "Collection", "Mapping", "MutableSequence", "Iterator"}


def _python_values_annotation(ann: ast.AST) -> bool:
    """An annotation that says "Python values": ``int``, ``str``, ``Sequence[int]``,
    ``tuple[str, ...]``, ``dict[...]``... (unknown names, such as type
    variables, say nothing)."""
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        try:
            ann = ast.parse(ann.value, mode="eval").body
        except SyntaxError:
            return False
    name = ann.attr if isinstance(ann, ast.Attribute) else getattr(ann, "id", None)
    if name in _SCALAR_TYPES or name in ("dict", "Dict", "Mapping", "set", "Set", "frozenset", "FrozenSet"):
        return True
    if isinstance(ann, ast.Subscript):
        base = ann.value.attr if isinstance(ann.value, ast.Attribute) else getattr(ann.value, "id", None)
        if base in _CONTAINER_TYPES:
            items = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            items = [i for i in items if not (isinstance(i, ast.Constant) and i.value is Ellipsis)]
            return bool(items) and all(_python_values_annotation(i) for i in items)
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return _python_values_annotation(ann.left) and _python_values_annotation(ann.right)
    return False


def _torch_tensor(la, seq: ast.AST) -> bool:
    """``seq`` is a tensor (or ``x.unbind(k)`` of one) that cannot be ``None``."""
    from .torch_layers import may_be_none
    from .torch_time import tensor_source

    base = tensor_source(la, seq)
    return base is not None and not may_be_none(la, base.id)


def check_elements(la) -> None:
    """The elements of every iterated sequence are arrays (or numbers of one
    dtype): shown by the sequence's kind, or, for a sequence of unknown kind,
    by an array use of each element and no use that an array would not allow.
    A scan stacks the sequence with ``jnp.asarray``, which Python values, objects,
    ``None`` and numbers of mixed dtypes would not survive."""
    if la.layer is not None:
        return
    at_loop = lambda n: la.fctx.defs_before(la.loop, n) or None  # noqa: E731
    if la.iteration.range_loop is not None:
        _check_rows(la, la.iteration.range_loop.name, at_loop)
    for leaf in la.iteration.leaves:
        if not isinstance(leaf, ElementSource):
            continue
        seq = leaf.expr
        text = short(la.mctx.source(seq))
        if la.mctx.framework == "torch_xla" and _torch_tensor(la, seq):
            continue  # a tensor, or `x.unbind(k)` of one: stepped through as a tensor
        kind = la.facts.kind(seq, at_loop)
        if kind.is_array:
            continue
        if kind.tag in (STRING, NONE, NUMBER, OBJECT) or (kind.tag == UNKNOWN and kind.why.startswith("may be None")):
            what = kind.why if kind.tag == UNKNOWN else kind.describe()
            raise Decline("L2S310", f"the loop iterates over `{text}`, {what}: its elements are not arrays a scan "
                          "can stack", seq)
        elem = _element_kind(kind)
        if elem is not None:
            if elem.is_array:
                continue
            if elem.tag == NUMBER and elem.dtype.category is not None or (
                    elem.tag == CONTAINER and elem.elem is not None and elem.elem.tag == NUMBER):
                continue
            raise Decline("L2S310", f"the elements of `{text}` are {elem.why or _describe_items(kind)}, not arrays "
                          "of one dtype: stacking them with `jnp.asarray` would fail or change them", seq)
        names = set(target_names(leaf.target)) - {"_"}
        if not names or isinstance(leaf.target, (ast.Tuple, ast.List)):
            continue  # unpacked elements are per-layer structures (checked with the layer lists)
        name = next(iter(names))
        evidence, problem = _element_uses(la, name, kind.tag == CONTAINER)
        if problem is not None:
            node, why = problem
            raise Decline("L2S310", f"each element `{name}` of `{text}` is used as {why} (`{short(la.mctx.source(node))}`), "
                          "which an array element would not allow: the sequence is not shown to hold arrays", node)
        if not evidence:
            used = name in la.value_reads_in_body()
            how = f"only passes `{name}` on" if used else f"never reads `{name}`"
            raise Decline("L2S310", f"nothing shows that the elements of `{text}` are arrays: the loop {how}, and a "
                          f"scan would stack `{text}` with `jnp.asarray` (a list of per-layer dicts or objects "
                          f"would not survive it); annotate `{text}` as an array"
                          + (f", or use `{name}` in an array operation" if used else ", or drop it from the loop"),
                          seq)


def _check_rows(la, index: str, at_loop) -> None:
    """``xs[t]`` of an ``xs`` whose kind is not shown: the rows are scanned (as
    elements are), so each read must be an array use too."""
    for node in walk_all(la.loop.body):
        if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name) and node.slice.id == index
                and isinstance(node.ctx, ast.Load)):
            continue
        base = node.value
        if not isinstance(base, ast.Name) or base.id in la.written:
            continue
        kind = la.facts.kind(base, at_loop)
        if kind.is_array or kind.tag != UNKNOWN:
            continue
        parent = la.mctx.parent(node)
        if isinstance(parent, ast.Assign) and parent.value is node and len(parent.targets) == 1 \
                and isinstance(parent.targets[0], ast.Name):
            evidence, problem = _element_uses(la, parent.targets[0].id, False)
        else:
            evidence = _array_context(node, la.mctx.parent, la.fctx.imports, la.fctx.shadowing,
                                      lambda e: la.facts.kind(e, at_loop).is_array
                                      or bool(la.value_reads(e) & set(la.carries)))
            problem = None
        if problem is not None:
            where, why = problem
            raise Decline("L2S310", f"each row `{ast.unparse(node)}` of `{base.id}` is used as {why} "
                          f"(`{short(la.mctx.source(where))}`), which an array row would not allow: `{base.id}` "
                          "is not shown to hold arrays", where)
        if not evidence:
            raise Decline("L2S310", f"nothing shows that `{base.id}` is an array: the loop reads `{ast.unparse(node)}` "
                          f"but uses it in no array operation; annotate `{base.id}` as an array", node)


def _element_kind(kind: Kind) -> Optional[Kind]:
    if kind.tag != CONTAINER:
        return None
    if kind.elem is not None and kind.elem.tag != UNKNOWN:
        return kind.elem
    items = [k for k in kind.items or () if k.tag != UNKNOWN]
    if not items or len(items) != len(kind.items or ()):
        return None
    if all(k.is_array for k in items):
        return items[0]
    numbers = _number_leaves(items)
    if numbers is not None:
        categories = {k.dtype.category for k in numbers}
        if len(categories) > 1:
            return Kind(UNKNOWN, why=f"numbers of mixed types ({' and '.join(sorted(categories))})")
        return numbers[0] if all(k.tag == NUMBER for k in items) else Kind(CONTAINER, container="tuple",
                                                                             elem=numbers[0])
    return Kind(OBJECT, why=_describe_items(kind))


def _number_leaves(items) -> Optional[list[Kind]]:
    """The Python numbers of nested literal tuples/lists, or ``None`` if anything else is there."""
    out: list[Kind] = []
    for k in items:
        if k.tag == NUMBER:
            out.append(k)
        elif k.tag == CONTAINER and k.items is not None:
            inner = _number_leaves(k.items)
            if inner is None:
                return None
            out += inner
        else:
            return None
    return out


def _describe_items(kind: Kind) -> str:
    items = list(kind.items or ()) + ([kind.elem] if kind.elem is not None else [])
    tags = sorted({k.describe() if k.tag != UNKNOWN else (k.why or "values of unknown kind") for k in items})
    return " and ".join(tags) if tags else "values of unknown kind"


def _element_uses(la, name: str, in_container: bool):
    """Whether the loop uses the element ``name`` as an array (evidence), and the
    first use an array would not allow (``(node, why)``) if any."""
    evidence = False
    at_loop = lambda n: la.fctx.defs_before(la.loop, n) or None  # noqa: E731
    for node in walk_all(la.loop.body):
        if not (isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)):
            continue
        parent = la.mctx.parent(node)
        if isinstance(parent, ast.Attribute) and parent.value is node and not (
                parent.attr in ARRAY_ONLY_ATTRIBUTES or parent.attr in ARRAY_METHODS):
            return evidence, (parent, f"an object (`.{parent.attr}`)")
        if isinstance(parent, ast.Subscript) and parent.slice is node:
            return evidence, (parent, "an index")
        if isinstance(parent, ast.Subscript) and parent.value is node and isinstance(parent.slice, ast.Constant) \
                and isinstance(parent.slice.value, str):
            return evidence, (parent, "a dict")
        if isinstance(parent, ast.Call) and parent.func is node:
            return evidence, (parent, "a function")
        if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "isinstance":
            return evidence, (parent, "a value whose type is tested")
        if _array_context(node, la.mctx.parent, la.fctx.imports, la.fctx.shadowing,
                          lambda e: la.facts.kind(e, at_loop).is_array or bool(
                              la.value_reads(e) & set(la.carries))):
            evidence = True
            continue
        call = _enclosing_call(node, la.mctx.parent)
        if call is not None and not evidence:
            found = la.visible_function(call[0].func)
            if found is not None and _array_parameter(la, call[0], call[1], found):
                evidence = True
    return evidence, None


def _enclosing_call(node: ast.AST, parent_of) -> Optional[tuple[ast.Call, ast.AST]]:
    """The call ``node`` is an argument of (directly, or as a keyword), and the argument."""
    parent = parent_of(node)
    if isinstance(parent, ast.keyword):
        call = parent_of(parent)
        return (call, node) if isinstance(call, ast.Call) else None
    if isinstance(parent, ast.Call) and node is not parent.func:
        return parent, node
    return None


def _array_context(node: ast.AST, parent_of, imports, shadowing, is_array) -> bool:
    """``node`` takes part in an array operation: an operand of ``@``, of
    arithmetic with an array, an argument of a framework array function (not a
    conversion), the receiver of an array method or attribute, or an array
    indexed with slices, ``None`` or ``...``."""
    cur = node
    parent = parent_of(cur)
    while parent is not None:
        if isinstance(parent, ast.Attribute) and parent.value is cur:
            return parent.attr in ARRAY_ONLY_ATTRIBUTES or parent.attr in ARRAY_METHODS
        if isinstance(parent, ast.Subscript) and parent.value is cur:
            sl = parent.slice
            parts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
            if any(isinstance(p, ast.Slice) or (isinstance(p, ast.Constant) and p.value in (None, Ellipsis))
                   for p in parts) or len(parts) > 1:
                return True
            return False
        if isinstance(parent, ast.BinOp):
            if isinstance(parent.op, ast.MatMult):
                return True
            other = parent.right if parent.left is cur else parent.left
            if is_array(other):
                return True
            cur, parent = parent, parent_of(parent)
            continue
        if isinstance(parent, (ast.UnaryOp, ast.List, ast.Tuple, ast.Starred, ast.Compare)):
            cur, parent = parent, parent_of(parent)
            continue
        if isinstance(parent, ast.keyword):
            cur, parent = parent, parent_of(parent)
            continue
        if isinstance(parent, ast.Call) and cur is not parent.func:
            q = imports.qualname(parent.func, shadowing) or ""
            last = q.rsplit(".", 1)[-1]
            if _static_parameter_of(parent, cur, q) is not None:
                return False  # a shape, an axis: a Python value there, not an array
            return is_array_call(q) and last not in ("asarray", "array") and not last[:1].isupper()
        return False
    return False


def _array_parameter(la, call: ast.Call, arg: ast.AST, found) -> bool:
    """The visible function ``found`` uses the parameter ``arg`` binds in an array
    operation (and never as a dict)."""
    callee, mctx = found
    params = [a.arg for a in callee.args.posonlyargs + callee.args.args]
    pos = next((i for i, a in enumerate(call.args) if a is arg), None)
    kw = next((k.arg for k in call.keywords if k.value is arg), None)
    param = params[pos] if pos is not None and pos < len(params) and not any(
        isinstance(a, ast.Starred) for a in call.args[:pos]) else kw
    if param is None:
        return False
    fctx = mctx.function(callee)
    parents = {}
    for n in walk(callee):
        for child in children(n):
            parents[id(child)] = n
    parent_of = lambda n: parents.get(id(n))  # noqa: E731
    found_array = False
    for node in walk(callee):
        if not (isinstance(node, ast.Name) and node.id == param and isinstance(node.ctx, ast.Load)):
            continue
        p = parent_of(node)
        if isinstance(p, ast.Subscript) and p.value is node and isinstance(p.slice, ast.Constant) \
                and isinstance(p.slice.value, str):
            return False
        if _array_context(node, parent_of, fctx.imports, fctx.shadowing, lambda e: False):
            found_array = True
    return found_array


def check_loop_variables(la) -> None:
    """A loop variable rebound in the body, or read after the loop."""
    loop = la.loop
    # a throwaway `_` (never read in the body) may be rebound: `for _ in range(n): x, _ = f(x)`
    throwaway = {"_"} - la.value_reads_in_body()
    reassigned = sorted(la.targets & la.written - throwaway)
    if reassigned:
        node = la.first_write(reassigned[0])
        raise Decline("L2S305", f"the loop variable `{reassigned[0]}` is reassigned in the body", node)
    used_after = sorted(n for n in la.targets & la.live_out if n != "_")
    if used_after:
        name = used_after[0]
        read = next((n for n in walk_body(la.func) if isinstance(n, ast.Name) and n.id == name
                     and isinstance(n.ctx, ast.Load) and position(n) > (loop.end_lineno, loop.end_col_offset)), loop)
        raise Decline("L2S306", f"the loop variable `{name}` is read after the loop; compute its last value "
                      "explicitly instead", read)


def check_trip_count(la) -> None:
    """The number of steps must be known at trace time."""
    fctx = la.fctx
    for leaf in la.iteration.leaves:
        if isinstance(leaf, RangeSource):
            for arg in leaf.args():
                bad = static_int(arg, fctx, set())
                if bad is not None:
                    raise Decline("L2S301", f"the trip count depends on `{ast.unparse(bad)}`, which is not "
                                  "known at trace time", bad)
            if leaf.step is not None and int_literal(leaf.step) is None:
                raise Decline("L2S301", f"the `range` step `{ast.unparse(leaf.step)}` must be an integer "
                              "literal (its sign decides the direction of the scan)", leaf.step)
            if leaf.step is not None and int_literal(leaf.step) == 0:
                raise Decline("L2S302", "`range` step 0", leaf.step)
        elif isinstance(leaf, EnumerateIndex) and leaf.start is not None:
            bad = static_int(leaf.start, fctx, set())
            if bad is not None:
                raise Decline("L2S301", f"the `enumerate` start `{ast.unparse(bad)}` is not static", bad)


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S301", "range-of-array-value", """
        def rnn(xs, h, mask):
            for t in range(int(mask.sum())):  # <-
                h = jnp.tanh(h + xs[t])
            return h
        """, says=("mask.sum()", "trace time")),
    Invalid("L2S301", "range-of-argmax", """
        def rnn(xs, h):
            n = jnp.argmax(xs.sum(axis=1))
            for t in range(n):  # <-
                h = jnp.tanh(h + xs[t])
            return h
        """, says=("`n`",)),
    Invalid("L2S301", "range-step-not-literal", """
        def rnn(xs, h, stride):
            for t in range(0, xs.shape[0], stride):  # <-
                h = jnp.tanh(h + xs[t])
            return h
        """, says=("step", "literal")),
    Invalid("L2S302", "dict-items", """
        def rnn(inputs, h):
            for name, x in inputs.items():  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=(".items()", "dict")),
    Invalid("L2S302", "literal-list", """
        def rnn(a, b, c, h):
            for x in [a, b, c]:  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("literal", "jnp.stack")),
    Invalid("L2S302", "generator", """
        def rnn(xs, h):
            for x in (2.0 * v for v in xs):  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("generator",)),
    Invalid("L2S302", "sorted", """
        def rnn(xs, h):
            for x in sorted(xs, key=lambda v: v.shape[0]):  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("sorted(...)",)),
    Invalid("L2S302", "ix-results", """
        def gather(x, rows, cols, total):
            for idx in jnp.ix_(rows, cols):  # <-
                total = total + jnp.sum(x[idx])
            return total
        """, says=("jnp.ix_", "different shapes")),
    Invalid("L2S302", "tree-leaves", """
        def weight_norm(params):
            total = jnp.zeros(())
            for leaf in jax.tree_util.tree_leaves(params):  # <-
                total = total + jnp.sum(leaf ** 2)
            return total
        """, says=("tree_leaves", "different shapes")),
    Invalid("L2S302", "sequence-int-annotation", """
        from typing import Sequence

        def shift_all(h, shifts: Sequence[int]):
            for s in shifts:  # <-
                h = jnp.roll(h, s) * 0.5 + h
            return h
        """, says=("shifts", "Sequence[int]")),
    Invalid("L2S302", "name-bound-to-literal-ints", """
        def multi_scale(h):
            scales = [1, 2, 4]
            for s in scales:  # <-
                h = h + jnp.roll(h, s)
            return h
        """, says=("scales", "line 5")),
    Invalid("L2S302", "python-list-of-masks", """
        def combine(masks):
            first, *others = masks
            m = first
            for other in others:  # <-
                m = jnp.logical_and(m, other)
            return m
        """, says=("`others`", "Python list")),
    Invalid("L2S305", "target-reassigned", """
        def rnn(xs, h):
            for x in xs:
                x = x / jnp.linalg.norm(x)  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("`x`", "reassigned")),
    Invalid("L2S306", "target-used-after", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h, x  # <-
        """, says=("`x`", "after the loop")),
    Invalid("L2S302", "index-into-python-list", """
        def every_other_layer(x, h):
            weights = [jnp.eye(3), 2.0 * jnp.eye(3), 3.0 * jnp.eye(3)]
            for t in range(len(weights) - 1, -1, -2):
                h = jnp.tanh(h @ weights[t] + x)  # <-
            return h
        """, says=("`weights`", "Python list", "jnp.stack")),
    Invalid("L2S310", "objects-read-through-attributes", """
        def total_force(bodies, f):
            for b in bodies:
                f = f + jnp.asarray(b.mass) * 9.81  # <-
            return f
        """, says=("`b`", ".mass")),
    Invalid("L2S310", "indexers-with-slices", """
        def gather(x, indexers, acc):
            for idx in indexers:
                acc = acc + jnp.sum(x[idx])  # <-
            return acc
        """, says=("`idx`", "an index")),
    Invalid("L2S310", "per-layer-dicts-to-a-helper-out-of-sight", """
        from mylib.layers import dense

        def mlp(params, x):
            for p in params:
                x = jnp.tanh(dense(p, x))
            return x
        """, says=("`params`", "nothing shows")),
    Invalid("L2S310", "optional-masks", """
        def masked(xs, h, masks=None):
            for x, m in zip(xs, masks):
                h = jnp.tanh(h + x * m)
            return h
        """, says=("`masks`", "None")),
    Invalid("L2S310", "optional-annotated-sequence", """
        from typing import Optional

        def masked(xs: jax.Array, h, masks: Optional[jax.Array]):
            for x, m in zip(xs, masks):
                h = jnp.tanh(h + x * m)
            return h
        """, says=("`masks`", "None")),
    Invalid("L2S310", "mixed-number-coordinates", """
        def shift(x, offsets):
            offsets = ((0, 1.5), (2, 3))
            for o in offsets:
                x = jnp.roll(x, 1) + jnp.asarray(o)[0]
            return x
        """, says=("`offsets`", "mixed")),
    Invalid("L2S310", "rows-used-as-dicts", """
        def apply_both(tree, element):
            x = element
            for i in range(2):
                s_tree = tree[i]
                x = jnp.dot(s_tree["weights"], x) + s_tree["biases"]  # <-
            return x
        """, says=("tree[i]", "dict")),
    Invalid("L2S310", "shape-entries-maybe-none", """
        from typing import Optional

        def in_bounds(volume, coordinates, unflattened_shape: Optional[tuple] = None):
            shape = volume.shape
            if unflattened_shape is not None:
                shape = unflattened_shape
            ok = jnp.full(coordinates.shape[1:], True)
            for dim, size in enumerate(shape):
                ok = jnp.logical_and(ok, coordinates[dim] <= size - 1)
            return ok
        """, says=("`shape`", "None")),
)

VALID = (
    Valid("L2S301", "static-trip-count-from-shape", """
        def rnn(xs, h):
            n = xs.shape[0]
            for t in range(n - 1):
                h = jnp.tanh(h + xs[t + 1] - xs[t])
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]', 'f32[2,3,4], f32[3,4]')),
    Valid("L2S302", "zip-of-arrays", """
        def rnn(xs, gates, h):
            for x, g in zip(xs, gates):
                h = g * jnp.tanh(h + x) + (1.0 - g) * h
            return h
        """, "rnn", ('f32[5,3,4], f32[5,3,4], f32[3,4]',)),
    Valid("L2S302", "array-annotated-parameter", """
        def rnn(xs: jax.Array, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    Valid("L2S305", "new-name-for-modified-element", """
        def rnn(xs, h):
            for x in xs:
                y = x / (1.0 + jnp.abs(x))
                h = jnp.tanh(h + y)
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    Valid("L2S305", "throwaway-name-rebound", """
        def refine(h, w, n):
            for _ in range(n):
                h, _ = jnp.tanh(h @ w), jnp.sum(h)
            return h
        """, "refine", ("f32[3,4], f32[4,4], 3", "f32[3,4], f32[4,4], 0"), static_argnums=(2,)),
    Valid("L2S305", "throwaway-element-rebound", """
        def smooth(xs, h):
            for _, x in enumerate(xs):
                h, _ = jnp.tanh(h + x), x * 2.0
            return h
        """, "smooth", ("f32[5,3,4], f32[3,4]", "f32[1,3,4], f32[3,4]")),
    Valid("L2S310", "elements-used-by-a-visible-helper", """
        def cell(h, x, w):
            return jnp.tanh(h @ w + x)

        def rnn(xs, h, w):
            for x in xs:
                h = cell(h, x, w)
            return h
        """, "rnn", ("f32[5,3,4], f32[3,4], f32[4,4]", "f32[1,3,4], f32[3,4], f32[4,4]")),
    Valid("L2S310", "elements-of-a-list-of-arrays", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x[None, :])
            return h
        """, "rnn", ("f32[5,4], f32[3,4]", "f32[1,4], f32[3,4]")),
)

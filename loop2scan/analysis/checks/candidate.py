"""Is the loop a candidate at all? Suppression comments (``L2S002``) and array
evidence (``L2S001``: a loop that computes Python values is not an array loop)."""

from __future__ import annotations

import ast
import re
from typing import Optional

from ..activity import all_read_names, all_written_names, target_names, walk_all
from ..decline import Code
from ..examples import Invalid
from ..decline import short
from ..imports import is_array_call, is_under
from ..kinds import JAX, NUMPY
from ..nodes import walk

REWRITTEN = "L2S000"
NOT_CANDIDATE = "L2S001"
SKIPPED = "L2S002"
NUMPY_LOOP = "L2S003"

CODES = (
    Code("L2S000", "scan-rewrite", "loop rewritten as a scan", "Review the diff; `--write` applies it."),
    Code("L2S001", "not-a-candidate", "not an array loop",
        "Nothing to do: the loop computes Python values (shapes, names, config), which must stay a loop."),
    Code("L2S002", "skipped", "skipped by a `# loop2scan: skip` comment",
        "Remove the comment to let loop2scan rewrite the loop."),
    Code("L2S003", "numpy-loop", "NumPy host code",
         "Nothing to do: the loop's array operations are NumPy's; it stays NumPy (a scan would move it to the "
         "accelerator and make float64 float32)."),
)


SKIP_RE = re.compile(r"#\s*loop2scan:\s*skip\b(?!-)")


SKIP_FILE_RE = re.compile(r"^\s*#\s*loop2scan:\s*skip-file\b", re.MULTILINE)


DIFFERENTIATE = {"jax.grad", "jax.value_and_grad", "jax.vjp", "jax.jvp", "jax.hessian", "jax.jacfwd",
                 "jax.jacrev", "jax.linearize"}


def has_skip_comment(la) -> bool:
    loop = la.loop
    first = loop.lineno
    last = loop.body[0].lineno if loop.body else loop.lineno
    if last > first:
        last -= 1 if _body_on_own_line(la) else 0
    for line in la.mctx.lines[first - 1:max(first, last)]:
        if SKIP_RE.search(line):
            return True
    # an own-line comment directly above the loop also counts
    if first >= 2 and SKIP_RE.search(la.mctx.lines[first - 2]) and \
            la.mctx.lines[first - 2].lstrip().startswith("#"):
        return True
    return False


def _body_on_own_line(la) -> bool:
    return bool(la.loop.body) and la.loop.body[0].lineno > la.loop.lineno


def not_candidate_reason(la) -> str:
    fw = la.mctx.framework
    if fw is None:
        return "the module imports no array framework (jax, flax, torch_xla), so its loops are left alone"
    return ("no array operations in the loop: it computes Python values (shapes, names, config), "
            "which must stay a Python loop")


def evidence(la) -> Optional[ast.AST]:
    """An array operation in the loop, or ``None`` (not a candidate).  Cheap
    syntactic evidence first; dataflow only for loops without it."""
    if la.mctx.framework is None:
        return None
    loop = la.loop
    imports = la.fctx.imports if la.fctx is not None else la.mctx.imports
    for node in walk(loop):
        found = None
        if isinstance(node, ast.Call):
            f = node.func
            if is_array_call(imports.qualname(f)):
                found = f
            elif isinstance(f, ast.Call) and imports.qualname(f.func) in DIFFERENTIATE:
                found = f.func  # jax.grad(loss)(params, x): computes arrays
            elif isinstance(f, ast.Name) and la.mctx.is_array_function(f.id):
                found = f
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            return node
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "at":
            return node
        if found is not None and not _shadowed(la, found):
            return node
    if la.fctx is None:
        return None
    fctx = la.fctx
    layers = _module_layers(la)
    if layers is not None:
        return layers
    cell = _module_cell_call(la)
    if cell is not None:
        return cell
    # carried names that start from arrays
    body_written = all_written_names(loop.body)
    body_read = all_read_names(loop.body)
    for name in sorted(body_written & body_read):
        if name in fctx.params and la.mctx.annotation_is_array(fctx.param_annotations.get(name)):
            return loop
        if not any(not isinstance(v, tuple) and _array_value(la, v) for v in fctx.assigned_values(name)):
            continue  # cheap filter before reaching definitions
        for d in fctx.defs_before(loop, name):
            value = getattr(d.node, "value", None) if d.kind == "assign" else None
            if value is not None and isinstance(d.node, (ast.Assign, ast.AnnAssign)) \
                    and _array_value(la, value):
                return loop
    # iterating an array, or reading arrays (known from `.shape`, annotations...)
    it = loop.iter
    seqs = it.args if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and \
        it.func.id in ("reversed", "zip", "enumerate") else [it]
    for s in seqs:
        if isinstance(s, ast.Name) and _array_name(la, s.id):
            return s
    targets = set(target_names(loop.target))
    for node in walk_all(loop.body):
        # an array computed with: indexed, or an operand of arithmetic
        if isinstance(node, ast.Subscript):
            operands = [node.value]
        elif isinstance(node, ast.BinOp):
            operands = [node.left, node.right]
        elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not):
            operands = [node.operand]
        else:
            continue
        for op in operands:
            if isinstance(op, ast.Name) and op.id not in targets and op.id not in body_written \
                    and op.id in fctx.locals and _array_name(la, op.id):
                return op
    return None


def _array_value(la, value: ast.AST) -> bool:
    """``value`` is an array, as the function shows it with nothing known about
    a loop (asked once per value: the loops of a function ask about the same ones)."""
    memo = la.fctx.__dict__.setdefault("_evidence_arrays", {})
    if id(value) not in memo:
        memo[id(value)] = la.facts.is_array(value)
    return memo[id(value)]


def _array_name(la, name: str) -> bool:
    memo = la.fctx.__dict__.setdefault("_evidence_array_names", {})
    if name not in memo:
        memo[name] = la.facts.name_is_array(name)
    return memo[name]


MODULE_LISTS = {"flax.nnx.List", "flax.nnx.Sequential", "torch.nn.ModuleList", "torch.nn.Sequential",
                "haiku.Sequential", "equinox.nn.Sequential"}


def _module_layers(la) -> Optional[ast.AST]:
    """A loop that calls each of its elements, which are modules: attributes of
    a Flax/Haiku/Equinox/PyTorch module (``for layer in self.layers``) or an
    ``nnx.List``/``ModuleList``.  Not a Python-value loop: an array loop over
    layers (the layer-loop rule explains what happens to it)."""
    it = la.loop.iter
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id in ("enumerate", "reversed") \
            and it.args:
        it = it.args[0]
    while isinstance(it, ast.Subscript) and isinstance(it.slice, ast.Slice):
        it = it.value
    names = set(target_names(la.loop.target))
    calls = [n for n in walk_all(la.loop.body) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in names]
    if not calls:
        return None
    if isinstance(it, ast.Attribute) and isinstance(it.value, ast.Name) and it.value.id == "self":
        from .framework import _is_module_class

        cls = la.mctx.enclosing_class(la.func)
        if cls is not None and _is_module_class(la, cls):
            return calls[0]
    if isinstance(it, ast.Name) and it.id in la.fctx.locals:
        for value in la.fctx.assigned_values(it.id):
            if isinstance(value, ast.Call) and la.fctx.imports.qualname(value.func) in MODULE_LISTS:
                return calls[0]
    return None


def _module_cell_call(la) -> Optional[ast.AST]:
    """Under the Flax target, a loop in a method of an ``nnx.Module`` that calls a
    submodule (``h = self.cell(h, x)``): a recurrent loop over arrays (whether
    the submodule can be carried is the framework rule's question)."""
    if la.mctx.framework != "flax" or la.func is None:
        return None
    cls = la.mctx.enclosing_class(la.func)
    if cls is None:
        return None
    from .module_stacks import is_nnx_module

    if not is_nnx_module(la.mctx, cls):
        return None
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
            return node
    return None


def calls_numpy(la) -> bool:
    """The loop calls a NumPy function."""
    if la.fctx is None:
        return False
    imports = la.fctx.imports
    return any(isinstance(n, ast.Call) and is_under(imports.qualname(n.func, la.fctx.shadowing), "numpy")
               for n in walk(la.loop))


def numpy_loop(la) -> Optional[str]:
    """Why the loop is NumPy host code (its array operations are NumPy's and no
    value it uses is a JAX array), or ``None``.  A scan would move it to the
    accelerator and turn float64 into float32: it stays NumPy."""
    if la.fctx is None:
        return None
    fctx, loop = la.fctx, la.loop
    if not any(q == "numpy" or q.startswith("numpy.") for q in fctx.imports.all_aliases().values()):
        return None  # nothing here can be a NumPy array
    numpy_calls = []
    for node in walk(loop):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "at":
            return None  # x.at[i]: JAX
        if not isinstance(node, ast.Call):
            continue
        q = fctx.imports.qualname(node.func, fctx.shadowing)
        if is_under(q, "numpy"):
            numpy_calls.append(node)
        elif is_array_call(q) or (isinstance(node.func, ast.Call)
                                  and fctx.imports.qualname(node.func.func) in DIFFERENTIATE):
            return None
        elif isinstance(node.func, ast.Name) and la.mctx.is_array_function(node.func.id):
            uses = _framework_calls(la.mctx, node.func.id, set())
            if uses != "numpy":
                return None  # a helper of the module that computes with JAX (or with nothing known)
            numpy_calls.append(node)
    numpy_values = []
    for name in sorted(all_read_names(loop.body) | set(_iterated_names(loop))):
        if name not in fctx.locals:
            continue
        kind = la.facts.name_kind(name, fctx.defs_before(loop, name) or None)
        if kind.tag == JAX:
            return None
        if kind.tag == NUMPY:
            numpy_values.append(name)
    if numpy_values:
        return (f"NumPy host code: `{numpy_values[0]}` is a NumPy array and the loop does no JAX operation; it "
                "stays NumPy (a scan would move it to the accelerator and make float64 float32)")
    if numpy_calls:
        call = numpy_calls[0]
        return (f"NumPy host code: the loop computes with `{short(ast.unparse(call.func))}` and does no JAX "
                "operation; it stays NumPy (a scan would move it to the accelerator and make float64 float32)")
    return None


def _framework_calls(mctx, name: str, seen: set) -> Optional[str]:
    """``"numpy"`` when the module function ``name`` (and the module functions it
    calls) computes with NumPy and never with JAX; ``"jax"`` when it calls JAX;
    ``None`` when it calls neither."""
    fn = mctx.module_functions.get(name)
    if fn is None or name in seen:
        return None
    seen.add(name)
    found = None
    for node in walk(fn):
        if not isinstance(node, ast.Call):
            continue
        q = mctx.imports.qualname(node.func)
        if is_array_call(q) and not is_under(q, "numpy"):
            return "jax"
        if is_under(q, "numpy"):
            found = "numpy"
        elif isinstance(node.func, ast.Name):
            inner = _framework_calls(mctx, node.func.id, seen)
            if inner == "jax":
                return "jax"
            found = found or inner
    return found


def _iterated_names(loop: ast.AST) -> list[str]:
    it = loop.iter
    seqs = it.args if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and \
        it.func.id in ("reversed", "zip", "enumerate") else [it]
    return [s.id for s in seqs if isinstance(s, ast.Name)]


def _shadowed(la, expr: ast.AST) -> bool:
    """The root name of ``expr`` is rebound locally (not by an import)."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return isinstance(expr, ast.Name) and la.fctx is not None and expr.id in la.fctx.shadowing


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S001", "python-shape-loop", """
        def layer_sizes(d_in, widths):
            sizes = []
            for w in widths:
                sizes.append((d_in, w))
                d_in = w
            return sizes
        """, says=("no array operations",), status="not-candidate"),
    Invalid("L2S001", "no-framework-import", """
        import numpy as np

        def smooth(xs, h):
            for x in xs:
                h = np.tanh(h + x)
            return h
        """, says=("no array framework",), status="not-candidate", header=False, framework="auto"),
    Invalid("L2S002", "skip-comment-on-loop", """
        def rnn(xs, h):
            for x in xs:  # loop2scan: skip
                h = jnp.tanh(h + x)
            return h
        """, says=("loop2scan: skip",), status="skipped"),
    Invalid("L2S002", "skip-comment-above-loop", """
        def rnn(xs, h):
            # loop2scan: skip (reference implementation, kept unrolled on purpose)
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("loop2scan: skip",), status="skipped"),
    Invalid("L2S002", "skip-file", """
        # loop2scan: skip-file
        import jax.numpy as jnp

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("skip-file",), status="skipped", header=False),
    Invalid("L2S003", "numpy-host-buffer", """
        import numpy as np

        def smooth(x):
            y = np.zeros_like(x)
            for i in range(x.shape[0]):
                y = y * 0.5 + x[i]
            return y
        """, says=("NumPy", "`y`", "float64"), status="not-candidate"),
    Invalid("L2S003", "numpy-annotated-arguments", """
        import numpy as np

        def host_norms(rows: np.ndarray, acc):
            for r in rows:
                acc = acc + r @ r
            return acc
        """, says=("NumPy", "`rows`"), status="not-candidate"),
    Invalid("L2S003", "numpy-through-a-helper", """
        import numpy as np

        def cell(a, x, w):
            return np.tanh(a @ w + x)

        def run(xs, w):
            h = np.zeros(w.shape[1])
            for t in range(xs.shape[0]):
                h = cell(h, xs[t] @ w, w)
            return h
        """, says=("NumPy host code",), status="not-candidate"),
    Invalid("L2S003", "numpy-calls-only", """
        import numpy as np

        def host_sum(rows, acc):
            for r in rows:
                acc = acc + np.tanh(r)
            return acc
        """, says=("np.tanh",), status="not-candidate"),
)

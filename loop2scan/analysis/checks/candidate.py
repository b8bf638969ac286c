"""Is the loop a candidate at all? Suppression comments (``L2S002``) and array
evidence (``L2S001``: a loop that computes Python values is not an array loop)."""

from __future__ import annotations

import ast
import re
from typing import Optional

from ..activity import all_read_names, all_written_names, target_names, walk_all
from ..decline import Code
from ..examples import Invalid
from ..imports import is_array_call

REWRITTEN = "L2S000"
NOT_CANDIDATE = "L2S001"
SKIPPED = "L2S002"

CODES = (
    Code("L2S000", "scan-rewrite", "loop rewritten as a scan", "Review the diff; `--write` applies it."),
    Code("L2S001", "not-a-candidate", "not an array loop",
        "Nothing to do: the loop computes Python values (shapes, names, config), which must stay a loop."),
    Code("L2S002", "skipped", "skipped by a `# loop2scan: skip` comment",
        "Remove the comment to let loop2scan rewrite the loop."),
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
    for node in ast.walk(loop):
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
    # carried names that start from arrays
    body_written = all_written_names(loop.body)
    body_read = all_read_names(loop.body)
    for name in sorted(body_written & body_read):
        if name in fctx.params and la.mctx.annotation_is_array(fctx.param_annotations.get(name)):
            return loop
        if not any(not isinstance(v, tuple) and la.facts.is_array(v) for v in fctx.assigned_values(name)):
            continue  # cheap filter before reaching definitions
        for d in fctx.defs_before(loop, name):
            value = getattr(d.node, "value", None) if d.kind == "assign" else None
            if value is not None and isinstance(d.node, (ast.Assign, ast.AnnAssign)) \
                    and la.facts.is_array(value):
                return loop
    # iterating an array, or reading arrays (known from `.shape`, annotations...)
    it = loop.iter
    seqs = it.args if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and \
        it.func.id in ("reversed", "zip", "enumerate") else [it]
    for s in seqs:
        if isinstance(s, ast.Name) and la.facts.name_is_array(s.id):
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
                    and op.id in fctx.locals and la.facts.name_is_array(op.id):
                return op
    return None


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
)

"""Control flow in the loop body (``L2S1xx``)."""

from __future__ import annotations

import ast
from typing import Optional

from ..activity import all_read_names, walk_all, walk_scope
from ..decline import Code, Decline, position, short
from ..examples import Invalid, NotThis, Valid
from ..nodes import walk

CODES = (
    Code("L2S101", "break", "`break` in the loop body",
        "A scan always runs every step: compute the stopping step and mask with `jnp.where`, or use `jax.lax.while_loop`.",
        torch_fix="A scan always runs every step: compute the stopping step and mask with `torch.where`, or keep the "
                  "Python loop."),
    Code("L2S102", "continue", "`continue` in the loop body",
        "Replace the skipped part with `jnp.where(condition, new, old)` so every step runs the same code.",
        torch_fix="Replace the skipped part with `torch.where(condition, new, old)` so every step runs the same code."),
    Code("L2S103", "return", "`return` in the loop body", "Return after the loop; a scan step cannot leave the enclosing function."),
    Code("L2S104", "yield", "`yield` in the loop body", "A generator loop cannot become a scan."),
    Code("L2S105", "await", "`await` in the loop body", "An asynchronous loop body cannot become a scan."),
    Code("L2S106", "global-nonlocal", "`global`/`nonlocal` declaration in or around the loop",
        "A scan step cannot rebind the enclosing scope's names; return the values instead."),
    Code("L2S107", "del", "`del` in the loop body", "Drop the `del`: names local to a step are freed when the step ends."),
    Code("L2S108", "try", "`try` in the loop body", "Exceptions cannot be caught per step inside a scan; handle them around the loop."),
    Code("L2S109", "data-dependent-branch", "Python control flow depends on a per-step value",
        "Inside a scan the per-step values are traced arrays: use `jnp.where` / `jax.lax.cond` instead of `if`, `while`, `and`/`or` or a conditional expression.",
        torch_fix="Inside a scan the per-step values are traced tensors: use `torch.where` instead of `if`, `while`, "
                  "`and`/`or` or a conditional expression."),
    Code("L2S110", "with", "`with` statement in the loop body",
        "Only known pure context managers (such as `jax.named_scope`) may run once per traced step."),
    Code("L2S111", "class-def", "class definition or `match` statement in the loop body",
        "Move it out of the loop."),
    Code("L2S112", "raise", "`raise` in the loop body",
        "A scan step cannot stop the loop with an exception: check the condition before or after the loop "
        "(or use `checkify`)."),
)


PURE_CONTEXT_MANAGERS = {
    "jax.named_scope", "jax.default_matmul_precision", "jax.numpy_dtype_promotion", "jax.numpy_rank_promotion",
    "jax.default_device", "jax.checking_leaks", "contextlib.nullcontext",
}


def body_problems(la) -> list[Decline]:
    """``break``/``continue``/``return``/``yield``/``await``, ``global``, ``del``,
    ``raise``, ``try``, ``with``, class definitions and ``match`` in the body."""
    problems: list[Decline] = []

    def add(code: str, message: str, node: ast.AST) -> None:
        problems.append(Decline(code, message, node))

    def binding(stmts: list[ast.stmt], binds: bool) -> None:
        for s in stmts:
            if isinstance(s, ast.Break) and binds:
                add("L2S101", "`break` ends the loop early; a scan always runs every step", s)
            elif isinstance(s, ast.Continue) and binds:
                add("L2S102", "`continue` skips the rest of a step; a scan runs the same code every step", s)
            elif isinstance(s, (ast.For, ast.AsyncFor, ast.While)):
                binding(s.body, False)
                binding(s.orelse, binds)
            elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            else:
                for name in ("body", "orelse", "finalbody"):
                    block = getattr(s, name, None)
                    if isinstance(block, list):
                        binding(block, binds)
                for h in getattr(s, "handlers", []) or []:
                    binding(h.body, binds)
                for c in getattr(s, "cases", []) or []:
                    binding(c.body, binds)

    binding(la.loop.body, True)
    for stmt in la.loop.body:
        for node in walk_scope(stmt):
            if isinstance(node, ast.Return):
                add("L2S103", "`return` inside the loop leaves the function from within a step; "
                    "return after the loop", node)
            elif isinstance(node, (ast.Yield, ast.YieldFrom)):
                add("L2S104", "`yield` inside the loop makes it a generator loop", node)
            elif isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
                add("L2S105", "asynchronous code inside the loop", node)
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                add("L2S106", f"`{type(node).__name__.lower()} {', '.join(node.names)}` inside the loop; "
                    "return the value from the step instead", node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in walk(node):
                    if isinstance(sub, (ast.Global, ast.Nonlocal)):
                        add("L2S106", f"`{type(sub).__name__.lower()} {', '.join(sub.names)}` in a function "
                            "defined inside the loop; return the value instead", sub)
            elif isinstance(node, ast.Delete):
                add("L2S107", f"`{ast.unparse(node)}` inside the loop; drop it (step locals are freed anyway)",
                    node)
            elif isinstance(node, ast.Raise):
                add("L2S112", "`raise` inside the loop: a step cannot end the scan with an exception; "
                    "check the condition before or after the loop", node)
            elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
                add("L2S108", "`try` inside the loop; handle errors around the loop instead", node)
            elif isinstance(node, ast.ClassDef):
                add("L2S111", f"class `{node.name}` is defined inside the loop; define it before the loop", node)
            elif isinstance(node, ast.Match):
                add("L2S111", "`match` statement inside the loop; use `jax.lax.switch` or move it out", node)
            elif isinstance(node, ast.With):
                for item in node.items:
                    expr = item.context_expr
                    q = la.qual(expr.func) if isinstance(expr, ast.Call) else la.qual(expr)
                    if q not in PURE_CONTEXT_MANAGERS:
                        add("L2S110", f"`with {ast.unparse(expr)}` inside the loop: a context manager would be "
                            "entered once when the scan traces the step, not once per step", node)
    return problems


def check_globals(la) -> None:
    declared = la.fctx.declared_global
    if not declared:
        return
    used = (all_read_names(la.loop.body) | la.written) & declared
    if used:
        name = sorted(used)[0]
        decl = next((n for n in walk(la.func) if isinstance(n, (ast.Global, ast.Nonlocal))
                     and name in n.names), la.loop)
        raise Decline("L2S106", f"`{name}` is declared `global`/`nonlocal` in the function and used in the loop; "
                      "a scan step cannot rebind it (return the value instead)", decl)


def check_branches(la) -> None:
    """Python control flow (``if``, ``while``, ``and``/``or``, conditional expressions,
    comprehension filters and lengths, nested trip counts) on per-step values."""
    tainted = la.tainted
    problems = []
    for stmt in la.loop.body:
        for node in walk_all([stmt]):
            bad: set[str] = set()
            what = ""
            if isinstance(node, (ast.If, ast.While)):
                bad, what = la.value_reads(node.test) & tainted, f"`{type(node).__name__.lower()}` tests"
            elif isinstance(node, ast.IfExp):
                bad, what = la.value_reads(node.test) & tainted, "a conditional expression tests"
            elif isinstance(node, ast.BoolOp):
                bad = set()
                for v in node.values:
                    bad |= la.value_reads(v) & tainted
                what = f"`{'and' if isinstance(node.op, ast.And) else 'or'}` takes the truth value of"
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                bad, what = la.value_reads(node.operand) & tainted, "`not` takes the truth value of"
            elif isinstance(node, ast.Compare) and len(node.ops) > 1:
                bad = set()
                for v in [node.left, *node.comparators]:
                    bad |= la.value_reads(v) & tainted
                what = "a chained comparison takes the truth value of"
            elif isinstance(node, ast.Assert):
                bad, what = la.value_reads(node.test) & tainted, "`assert` tests"
            elif isinstance(node, ast.comprehension):
                bad = set()
                for cond in node.ifs:
                    bad |= la.value_reads(cond) & tainted
                what = "a comprehension filter tests"
                where = node.ifs[0] if node.ifs else node.iter
                if not bad and not isinstance(node.iter, _FIXED_LENGTH):
                    bad, what, where = la.value_reads(node.iter) & tainted, \
                        f"the length of a comprehension (`{short(ast.unparse(node.iter))}`) depends on", node.iter
                if bad:
                    problems.append((position(where), what, la.ordered(bad)[0], where))
                continue
            elif isinstance(node, (ast.For, ast.AsyncFor)) and node is not la.loop:
                if not isinstance(node.iter, _FIXED_LENGTH) and not _array_arithmetic(node.iter):
                    bad = la.value_reads(node.iter) & tainted
                    what = f"the trip count of a nested loop (`{short(ast.unparse(node.iter))}`) depends on"
            if bad:
                name = la.ordered(bad)[0]
                problems.append((position(node), what, name, node))
    if problems:
        problems.sort(key=lambda p: p[0])
        _, what, name, node = problems[0]
        if name in la.targets and "trip count" in what or "length" in what and name in la.targets:
            raise Decline("L2S307", f"{what} the loop variable `{name}`; inside a scan it is traced, so the "
                          "number of iterations would not be static", node)
        kind = "the loop variable" if name in la.targets else "a value that changes every step"
        raise Decline("L2S109", f"{what} `{name}`, {kind}; inside a scan it is a traced array "
                      "(use `jnp.where` or `jax.lax.cond`)", node)


_FIXED_LENGTH = (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List)


def _array_arithmetic(expr: ast.AST) -> bool:
    """Arithmetic over names, attributes and subscripts with a ``@`` in it
    (``x @ w``, ``x @ w + b``): the ``@`` makes an array (Python sequences do not
    define it), arithmetic with an array stays an array, and a traced array's
    length is static."""
    def walk(e: ast.AST) -> Optional[bool]:  # None: not such an expression; else: contains `@`
        if isinstance(e, (ast.Name, ast.Attribute, ast.Subscript, ast.Constant)):
            return False
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
            return walk(e.operand)
        if isinstance(e, ast.BinOp):
            left, right = walk(e.left), walk(e.right)
            if left is None or right is None:
                return None
            return left or right or isinstance(e.op, ast.MatMult)
        return None
    return bool(walk(expr))


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S101", "break", """
        def rnn(xs, h, stop):
            for x in xs:
                h = jnp.tanh(h + x)
                if stop:
                    break  # <-
            return h
        """, says=("`break`", "every step")),
    Invalid("L2S101", "break-in-inner-else", """
        def rnn(xs, h):
            for x in xs:
                for k in range(2):
                    h = jnp.tanh(h + x)
                else:
                    break  # <-
            return h
        """, says=("`break`",)),
    Invalid("L2S102", "continue", """
        def rnn(xs, h, skip_first):
            for t in range(xs.shape[0]):
                if skip_first and t == 0:
                    continue  # <-
                h = jnp.tanh(h + xs[t])
            return h
        """, says=("`continue`",)),
    Invalid("L2S103", "return", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                return h  # <-
            return h
        """, says=("`return`",)),
    Invalid("L2S104", "yield", """
        def rnn_states(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                yield h  # <-
        """, says=("`yield`", "generator")),
    Invalid("L2S105", "await", """
        import asyncio

        async def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                await asyncio.sleep(0)  # <-
            return h
        """, says=("asynchronous",)),
    Invalid("L2S106", "nonlocal-in-body", """
        def make_rnn():
            steps = 0

            def rnn(xs, h):
                for x in xs:
                    nonlocal steps  # <-
                    steps = steps + 1
                    h = jnp.tanh(h + x)
                return h
            return rnn
        """, says=("nonlocal steps",)),
    Invalid("L2S106", "global-in-function", """
        STATE = jnp.zeros(3)

        def rnn(xs):
            global STATE  # <-
            for x in xs:
                STATE = jnp.tanh(STATE + x)  # <-
            return STATE
        """, says=("STATE", "global")),
    Invalid("L2S107", "del", """
        def rnn(xs, h):
            for x in xs:
                z = jnp.tanh(h + x)
                h = z * 0.5
                del z  # <-
            return h
        """, says=("del z",)),
    Invalid("L2S108", "try", """
        def rnn(xs, h):
            for x in xs:
                try:  # <-
                    h = jnp.tanh(h + x)
                except FloatingPointError:
                    h = jnp.zeros_like(h)
            return h
        """, says=("`try`",)),
    Invalid("L2S109", "if-on-carry", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                if h.sum() > 0:  # <-
                    h = -h
            return h
        """, says=("`if`", "`h`", "jnp.where")),
    Invalid("L2S109", "if-on-element", """
        def clip_steps(xs, h):
            for x in xs:
                if jnp.max(x) > 1.0:  # <-
                    h = h * 0.5
                h = jnp.tanh(h + x)
            return h
        """, says=("`if`", "`x`", "loop variable")),
    Invalid("L2S109", "if-on-index", """
        def rnn(xs, h):
            for t in range(xs.shape[0]):
                if t % 2 == 0:  # <-
                    h = jnp.tanh(h + xs[t])
            return h
        """, says=("`t`", "loop variable")),
    Invalid("L2S109", "while-on-carry", """
        def normalise(xs, h):
            for x in xs:
                h = h + x
                while jnp.linalg.norm(h) > 10.0:  # <-
                    h = h * 0.5
            return h
        """, says=("`while`", "`h`")),
    Invalid("L2S109", "ternary", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x) if x.sum() > 0 else h  # <-
            return h
        """, says=("conditional expression", "`x`")),
    Invalid("L2S109", "and-or", """
        def rnn(xs, h, scale):
            for x in xs:
                h = jnp.tanh(h + (jnp.any(x > 0) and scale or x))  # <-
            return h
        """, says=("truth value", "`x`")),
    Invalid("L2S109", "chained-comparison", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                ok = 0.0 < h.mean() < 1.0  # <-
                h = h * ok
            return h
        """, says=("chained comparison", "`h`")),
    Invalid("L2S109", "assert", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                assert jnp.isfinite(h).all()  # <-
            return h
        """, says=("`assert`", "`h`")),
    Invalid("L2S109", "comprehension-filter", """
        def rnn(xs, h, ws):
            for x in xs:
                h = jnp.tanh(h + x)
                g = sum(w for w in ws if jnp.vdot(w, h) > 0)  # <-
                h = h + g
            return h
        """, says=("comprehension filter", "`h`")),
    Invalid("L2S109", "comprehension-filter-on-per-step-items", """
        def rnn(xs, h):
            for x in xs:
                candidates = (h, x)
                keep = [v for v in candidates if v.sum() > 0]  # <-
                h = jnp.tanh(h + sum(keep))
            return h
        """, says=("comprehension filter",)),
    Invalid("L2S109", "not", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                flag = not h.any()  # <-
                h = h + flag
            return h
        """, says=("`not`", "`h`")),
    Invalid("L2S110", "with-open", """
        def rnn(xs, h, path):
            for x in xs:
                with open(path, "a") as f:  # <-
                    h = jnp.tanh(h + x)
            return h
        """, says=("with open(path",)),
    Invalid("L2S110", "with-profiler-trace", """
        def rnn(xs, h):
            for x in xs:
                with jax.profiler.TraceAnnotation("step"):  # <-
                    h = jnp.tanh(h + x)
            return h
        """, says=("jax.profiler.TraceAnnotation",)),
    Invalid("L2S111", "class-def", """
        def rnn(xs, h):
            for x in xs:
                class Step:  # <-
                    scale = 2.0
                h = jnp.tanh(h + x * Step.scale)
            return h
        """, says=("class `Step`",)),
    Invalid("L2S111", "match", """
        def rnn(xs, h, mode):
            for x in xs:
                match mode:  # <-
                    case "tanh":
                        h = jnp.tanh(h + x)
                    case _:
                        h = jax.nn.relu(h + x)
            return h
        """, says=("`match`",)),
    Invalid("L2S112", "raise", """
        def rnn(xs, h, strict):
            for x in xs:
                if strict and x.ndim != 1:
                    raise ValueError("expected vectors")  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("`raise`",)),
)

VALID = (
    Valid("L2S109", "if-on-invariant-flag", """
        def rnn(xs, h, b, use_bias):
            for x in xs:
                h = h * 0.5 + x
                if use_bias:
                    h = h + b
                h = jnp.tanh(h)
            return h

        rnn_jit = jax.jit(rnn, static_argnums=3)
        """, "rnn", ('f32[5,3,4], f32[3,4], f32[4], True', 'f32[2,3,4], f32[3,4], f32[4], False'),
          static_argnums=(3,)),
    Valid("L2S109", "static-shape-condition", """
        def rnn(xs, h):
            for x in xs:
                if h.shape[0] > 2:
                    h = jnp.tanh(h + x)
                else:
                    h = h + x
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]', 'f32[2,1,4], f32[1,4]')),
    Valid("L2S109", "static-chained-comparison-and-len", """
        def rnn(xs, h):
            for x in xs:
                scale = 2.0 if 0 < len(x) < 10 and x.ndim == 2 else 1.0
                h = jnp.tanh(h + scale * x)
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]', 'f32[2,11,4], f32[11,4]')),
    Valid("L2S109", "comprehension-over-a-tuple-of-per-step-values", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(sum(0.5 * v for v in (h, jnp.tanh(x))))
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    Valid("L2S110", "pure-named-scope", """
        def rnn(xs, h):
            for x in xs:
                with jax.named_scope("rnn_step"):
                    h = jnp.tanh(h + x)
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
)

NOT_THIS = (
    NotThis("L2S101", "break-in-inner-loop", """
        def rnn(xs, h, n_inner):
            for x in xs:
                for k in range(n_inner):
                    if k >= 2:
                        break
                    h = jnp.tanh(h + x)
            return h

        rnn_jit = jax.jit(rnn, static_argnums=2)
        """, "rnn", ('f32[5,3,4], f32[3,4], 3', 'f32[2,3,4], f32[3,4], 1'),
        static_argnums=(2,)),
    NotThis("L2S102", "continue-in-inner-loop", """
        def rnn(xs, h):
            for x in xs:
                for k in range(3):
                    if k == 1:
                        continue
                    h = jnp.tanh(h + x * (k + 1))
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    NotThis("L2S103", "return-in-nested-function", """
        def rnn(xs, h):
            for x in xs:
                def cell(a, b):
                    return jnp.tanh(a + b)
                h = cell(h, x)
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
)

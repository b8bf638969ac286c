"""Side effects in the loop body (``L2S2xx``)."""

from __future__ import annotations

import ast

from ..activity import target_side_effects, walk_all, walk_scope
from ..decline import advice, Code, Decline, position, short
from ..examples import Invalid, Valid
from ..imports import is_under
from ..kinds import OBJECT

CODES = (
    Code("L2S201", "host-side-effect", "host side effect in the loop body (printing, logging, I/O, Python randomness, progress bars)",
        "A scan traces the body once, so the effect would happen once instead of every step: use `jax.debug.print`/`jax.debug.callback`, or move it out of the loop.",
        torch_fix="A scan traces the body once, so the effect would happen once instead of every step: move it out of "
                  "the loop."),
    Code("L2S202", "host-conversion", "a per-step value is converted to a Python or NumPy value",
        "`.item()`, `float()`, `int()`, `bool()`, `.tolist()` and `np.*` need concrete values; keep the computation in `jnp`.",
        torch_fix="`.item()`, `float()`, `int()`, `bool()`, `.tolist()` and `np.*` need concrete values; keep the "
                  "computation in tensor operations."),
    Code("L2S203", "attribute-write", "an attribute is assigned in the loop body",
        "Assign to a local name and set the attribute once after the loop."),
    Code("L2S204", "subscript-write", "an item is assigned in the loop body",
        "Use a functional update (`x = x.at[i].set(v)`) or collect per-step values in a list and stack them after the loop.",
        torch_fix="In a loop over time steps, collect per-step values in a list and stack them with `torch.stack` "
                  "after the loop."),
    Code("L2S205", "mutation", "an object is mutated by a method call in the loop body",
        "Only `outs.append(y)` into a list that is stacked after the loop is understood; keep other state in local names."),
    Code("L2S206", "closure-capture", "a name changed by the loop is read by a function defined outside the loop",
        "That function would keep seeing the value from before the loop; pass the value as an argument instead."),
    Code("L2S207", "stateful-object", "the loop creates or calls an object whose state calls change",
         "A scan step must be a pure function of arrays: keep loops over NNX, Haiku, linen or PyTorch modules, "
         "optimizers, RNG streams and mutable references as they are, or pass their arrays explicitly."),
)


HOST_CALL_ROOTS = (
    "logging", "warnings", "time", "random", "os", "sys", "subprocess", "shutil", "tqdm", "wandb", "mlflow",
    "tensorboard", "tensorboardX", "absl.logging", "pdb", "pickle", "numpy.random", "numpy.save", "numpy.savez",
    "numpy.savetxt", "torch.save", "matplotlib", "rich", "IPython", "socket", "requests", "threading",
    "multiprocessing", "json.dump", "csv", "builtins.print", "timeit",
)


HOST_BUILTINS = {"print", "input", "open", "breakpoint", "exit", "quit", "help", "next", "iter", "globals"}


ATTR_BUILTINS = {"setattr", "delattr"}


LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


IO_METHODS = {"write", "writelines", "flush", "set_description", "set_postfix", "set_postfix_str", "refresh",
              "display", "savefig", "show"}


MUTATING_METHODS = {
    "append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem", "discard",
    "sort", "reverse", "add", "__setitem__", "__delitem__", "put", "put_nowait", "send",
}


CONVERSION_BUILTINS = {"float", "int", "bool", "complex"}


CONVERSION_METHODS = {"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "to_py"}


def body_problems(la) -> list[Decline]:
    """Host effects, discarded calls, in-place changes and attribute or item
    writes in the body."""
    problems: list[Decline] = []

    def add(code: str, message: str, node: ast.AST) -> None:
        problems.append(Decline(code, message, node))

    shadow = set(la.fctx.shadowing)
    for stmt in la.loop.body:
        for node in walk_scope(stmt):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                call = node.value
                if not call_problem(la, call, shadow, add, statement=True) and not _is_append_statement(node) \
                        and not is_under(la.qual(call.func), "jax.debug"):
                    add("L2S201", f"the result of `{short(ast.unparse(call))}` is discarded: a call made "
                        "for its effect would run once, when the scan traces the step ("
                        + advice(la, "use `jax.debug.callback` for host effects", "move host effects out of the loop")
                        + ")", node)
            elif isinstance(node, ast.Call) and not isinstance(la.mctx.parent(node), ast.Expr):
                call_problem(la, node, shadow, add)
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.With)):
                targets: list[ast.AST] = []
                if isinstance(node, ast.Assign):
                    targets = list(node.targets)
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                    targets = [node.target] if (not isinstance(node, ast.AnnAssign) or node.value is not None) else []
                elif isinstance(node, ast.For):
                    targets = [node.target]
                else:
                    targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
                for t in targets:
                    for leaf in target_side_effects(t):
                        if isinstance(leaf, ast.Attribute):
                            add("L2S203", f"`{ast.unparse(leaf)}` is assigned inside the loop; a scan step "
                                "cannot change objects outside it (assign a local name and set the attribute "
                                "after the loop)", leaf)
                        else:
                            add("L2S204", f"`{ast.unparse(leaf)}` is assigned inside the loop; "
                                + advice(la, "use `x = x.at[i].set(v)` or collect values and stack them after the "
                                         "loop", "collect the values in a list and `torch.stack` them after the "
                                         "loop"), leaf)
    return problems


def check_stateful_objects(la) -> None:
    """A step of a scan is a pure function of arrays: the loop may not create
    modules that hold state, call objects whose state a call changes (NNX,
    Haiku, linen or PyTorch modules, optimizers, RNG streams), or use mutable
    references."""
    at_loop = lambda n: la.fctx.defs_before(la.loop, n) or None  # noqa: E731
    problems = []
    seen: dict[str, object] = {}
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Call):
            kind = la.facts.call_kind(node, at_loop)
            if kind.tag == OBJECT and "state" in kind.why:
                problems.append(Decline("L2S207", f"the loop creates {kind.why} (`{short(ast.unparse(node))}`): "
                                        "a scan step must be a pure function of arrays", node))
                continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in la.fctx.locals:
            if node.id not in seen:
                seen[node.id] = la.facts.name_kind(node.id, at_loop(node.id))
            kind = seen[node.id]
            if kind.tag == OBJECT and ("state" in kind.why or "reference" in kind.why):
                parent = la.mctx.parent(node)
                use = "calls" if isinstance(parent, ast.Call) and parent.func is node else "uses"
                problems.append(Decline("L2S207", f"the loop {use} `{node.id}`, {kind.why}: under a scan its "
                                        "changes would happen once, when the step is traced, or be lost", node))
    if problems:
        raise min(problems, key=lambda d: position(d.node))


def check_closures(la) -> None:
    """A function defined outside the loop reads a name the loop changes: it would
    keep seeing the value from before the loop."""
    for name in sorted(la.written | la.targets):
        outside = [n for n in la.fctx.captured.get(name, []) if not la.inside_loop(n)]
        if outside:
            raise Decline("L2S206", f"`{name}` changes in the loop and is read by a function or lambda "
                          f"defined at line {outside[0].lineno}, outside the loop", outside[0])


def _is_append_statement(stmt: ast.Expr) -> bool:
    call = stmt.value
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "append"
            and isinstance(call.func.value, ast.Name))


def call_problem(la, node: ast.Call, shadow: set[str], add, statement: bool = False) -> bool:
    """Report a host effect, attribute change or in-place mutation made by
    this call; ``True`` when one was reported."""
    f = node.func
    if isinstance(f, ast.Name) and f.id not in shadow:
        if f.id in HOST_BUILTINS:
            hint = "jax.debug.print" if f.id == "print" else "jax.debug.callback"
            add("L2S201", f"`{f.id}(...)` is a host side effect; inside a scan it would run once, at trace "
                f"time ({advice(la, f'use `{hint}`', 'move it out of the loop')})", node)
            return True
        if f.id in ATTR_BUILTINS:
            add("L2S203", f"`{f.id}(...)` changes an object inside the loop", node)
            return True
        if la.mctx.is_impure_function(f.id):
            add("L2S201", f"`{f.id}()` rebinds module globals (it has a `global` statement)", node)
            return True
        if la.is_progress_bar(node):
            add("L2S201", f"`{f.id}(...)` is a progress bar; drop it (a scan runs all steps at once)", node)
            return True
        return False
    q = la.qual(f)
    if q is not None:
        if is_under(q, *HOST_CALL_ROOTS) or (q.split(".")[0] == "builtins" and q.split(".")[-1] in HOST_BUILTINS):
            add("L2S201", f"`{ast.unparse(f)}(...)` is a host side effect; inside a scan it would run once, at "
                f"trace time ({advice(la, 'use `jax.debug.callback`, or move it out of the loop', 'move it out of the loop')})",
                node)
            return True
        return False
    if not isinstance(f, ast.Attribute):
        return False
    recv = f.value
    if isinstance(recv, ast.Subscript) and isinstance(recv.value, ast.Attribute) and recv.value.attr == "at":
        return False
    recv_text = ast.unparse(recv).lower()
    if f.attr in LOG_METHODS and "log" in recv_text:
        add("L2S201", f"`{ast.unparse(f)}(...)` logs; inside a scan it would run once, at trace time "
            "(use `jax.debug.print`)", node)
        return True
    if f.attr in IO_METHODS:
        add("L2S201", f"`{ast.unparse(f)}(...)` writes output; inside a scan it would run once", node)
        return True
    host = _host_object(la, recv)
    if host:
        add("L2S201", f"`{ast.unparse(f)}(...)` draws from {host}; a scan would draw once, when it traces the "
            "step, and reuse the value every step (use `jax.random` with a key in the carry)", node)
        return True
    if f.attr == "append" and isinstance(recv, ast.Name):
        return False  # list accumulators are judged by the output analysis
    if f.attr in MUTATING_METHODS or (f.attr.endswith("_") and not f.attr.startswith("_")):
        add("L2S205", f"`{ast.unparse(f)}(...)` changes an object in place inside the loop; a scan step must "
            "only return new values", node)
        return True
    return False


def _host_object(la, recv: ast.AST) -> str:
    """``rng`` in ``rng.normal(...)`` when it is a NumPy / Python random generator."""
    root = recv
    while isinstance(root, (ast.Attribute, ast.Subscript)):
        root = root.value
    if not isinstance(root, ast.Name):
        return ""
    values = list(la.fctx.assigned_values(root.id)) if root.id in la.fctx.locals else \
        list(la.mctx.module_assigned_values(root.id))
    for v in values:
        if isinstance(v, ast.Call):
            q = la.qual(v.func) if root.id in la.fctx.locals else la.mctx.imports.qualname(v.func)
            if q and (is_under(q, "numpy.random", "random") or q in ("numpy.random.default_rng",)):
                return f"a host random generator (`{root.id}`, line {v.lineno})"
    return ""


def check_mutations(la) -> None:
    """``x.append(...)`` on a name that is not a recognised accumulator (other
    in-place calls were rejected with the body structure)."""
    handled = {id(a.stmt) for a in la.accs.values()}
    for stmt in la.loop.body:
        for node in walk_scope(stmt):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
                    and isinstance(node.func.value, ast.Name) and id(la.mctx.parent(node)) not in handled):
                raise Decline("L2S205", f"`{ast.unparse(node.func)}(...)` changes a list in place inside the "
                              "loop; a scan step must only return new values", node)


def check_conversions(la) -> None:
    tainted = la.tainted
    shadow = set(la.fctx.locals)
    for stmt in la.loop.body:
        for node in walk_all([stmt]):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            args = list(node.args) + [k.value for k in node.keywords]
            arg_reads: set[str] = set()
            for a in args:
                arg_reads |= la.value_reads(a)
            if isinstance(f, ast.Name) and f.id in CONVERSION_BUILTINS and f.id not in shadow:
                if arg_reads & tainted:
                    raise Decline("L2S202", f"`{ast.unparse(node)}` converts a per-step value to a Python "
                                  "number; inside a scan it is a traced array", node)
            elif isinstance(f, ast.Attribute) and f.attr in CONVERSION_METHODS:
                if la.value_reads(f.value) & tainted:
                    raise Decline("L2S202", f"`{ast.unparse(node)}` converts a per-step value to a Python "
                                  "value; inside a scan it is a traced array", node)
            else:
                q = la.qual(f)
                if q and (is_under(q, "numpy", "math", "scipy")) and arg_reads & tainted:
                    raise Decline("L2S202", f"`{ast.unparse(f)}(...)` is a host NumPy/math call on a per-step "
                                  "value; use the `jnp` equivalent", node)


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S201", "print", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                print("h =", h)  # <-
            return h
        """, says=("print", "jax.debug.print")),
    Invalid("L2S201", "logging", """
        import logging

        logger = logging.getLogger(__name__)

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                logger.info("step done")  # <-
            return h
        """, says=("logger.info",)),
    Invalid("L2S201", "logging-module", """
        import logging

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                logging.debug("h norm %s", jnp.linalg.norm(h))  # <-
            return h
        """, says=("logging.debug",)),
    Invalid("L2S201", "time", """
        import time

        def rnn(xs, h):
            times = jnp.zeros(())
            for x in xs:
                h = jnp.tanh(h + x)
                times = times + time.perf_counter()  # <-
            return h, times
        """, says=("time.perf_counter",)),
    Invalid("L2S201", "python-random", """
        import random

        def noisy(xs, h):
            for x in xs:
                h = jnp.tanh(h + x * random.random())  # <-
            return h
        """, says=("random.random",)),
    Invalid("L2S201", "numpy-generator", """
        import numpy as np

        def noisy(xs, h, seed):
            rng = np.random.default_rng(seed)
            for x in xs:
                h = jnp.tanh(h + x + rng.normal(size=h.shape))  # <-
            return h
        """, says=("rng.normal",)),
    Invalid("L2S201", "tqdm-iterable", """
        from tqdm import tqdm

        def rnn(xs, h):
            for x in tqdm(xs):  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("progress bar",)),
    Invalid("L2S201", "tqdm-bound-to-a-name", """
        from tqdm import tqdm

        def rnn(xs, h):
            pbar = tqdm(xs)
            for x in pbar:  # <-
                h = jnp.tanh(h + x)
            return h
        """, says=("progress bar",)),
    Invalid("L2S201", "tqdm-inside-enumerate", """
        from tqdm import tqdm

        def rnn(xs, h):
            for t, x in enumerate(tqdm(xs)):  # <-
                h = jnp.tanh(h + x * t)
            return h
        """, says=("progress bar",)),
    Invalid("L2S201", "tqdm-postfix", """
        def rnn(xs, h, pbar):
            for x in xs:
                h = jnp.tanh(h + x)
                pbar.set_postfix(loss=h.mean())  # <-
            return h
        """, says=("pbar.set_postfix",)),
    Invalid("L2S201", "discarded-call", """
        def rnn(xs, h, on_step):
            for x in xs:
                h = jnp.tanh(h + x)
                on_step(h)  # <-
            return h
        """, says=("on_step(h)", "discarded")),
    Invalid("L2S202", "item", """
        def rnn(xs, h):
            total = jnp.zeros(())
            for x in xs:
                h = jnp.tanh(h + x)
                total = total + h.sum().item()  # <-
            return h, total
        """, says=("h.sum().item()", "per-step"), hint="jnp"),
    Invalid("L2S202", "float", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x) * float(x.mean())  # <-
            return h
        """, says=("float(x.mean())",)),
    Invalid("L2S202", "numpy-call", """
        import numpy as np

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + np.clip(x, -1.0, 1.0))  # <-
            return h
        """, says=("np.clip", "jnp")),
    Invalid("L2S203", "attribute-write", """
        class Recorder:
            last = None

        def rnn(xs, h, rec):
            for x in xs:
                h = jnp.tanh(h + x)
                rec.last = h  # <-
            return h
        """, says=("rec.last",), hint="after the loop"),
    Invalid("L2S203", "setattr", """
        def rnn(xs, h, rec):
            for x in xs:
                h = jnp.tanh(h + x)
                setattr(rec, "last", h)  # <-
            return h
        """, says=("setattr",)),
    Invalid("L2S204", "item-write", """
        def rnn(xs, h, out):
            for t in range(xs.shape[0]):
                h = jnp.tanh(h + xs[t])
                out[t] = h  # <-
            return h, out
        """, says=("out[t]", ".at[")),
    Invalid("L2S204", "dict-item-write", """
        def rnn(xs, h):
            cache = {}
            for x in xs:
                h = jnp.tanh(h + x)
                cache["h"] = h  # <-
            return h, cache
        """, says=("cache['h']",)),
    Invalid("L2S205", "pop", """
        def rnn(xs, h, queue):
            for x in xs:
                bias = queue.pop()  # <-
                h = jnp.tanh(h + x + bias)
            return h
        """, says=("queue.pop",)),
    Invalid("L2S205", "dict-update", """
        def rnn(xs, h, cache):
            for x in xs:
                h = jnp.tanh(h + x)
                cache.update(h=h)  # <-
            return h
        """, says=("cache.update",)),
    Invalid("L2S205", "inplace-underscore-method", """
        def rnn(xs, h):
            for x in xs:
                y = jnp.tanh(x)
                h.add_(y)  # <-
            return h
        """, says=("h.add_",)),
    Invalid("L2S205", "inplace-method-result-used", """
        def rnn(xs, h):
            for x in xs:
                h = h.mul_(jnp.tanh(x))  # <-
            return h
        """, says=("h.mul_",)),
    Invalid("L2S205", "extend", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                n = hs.extend([h])  # <-
            return jnp.stack(hs)
        """, says=("hs.extend",)),
    Invalid("L2S206", "closure-capture", """
        def rnn(xs, h):
            readout = lambda v: v @ h.T  # <-
            ys = []
            for x in xs:
                h = jnp.tanh(h + x)
                ys.append(readout(x))
            return jnp.stack(ys)
        """, says=("`h`", "line 5", "outside the loop")),
    Invalid("L2S206", "nested-def-capture", """
        def rnn(xs, h):
            def energy():  # <-
                return jnp.sum(h ** 2)
            for x in xs:
                h = jnp.tanh(h + x) / energy()
            return h
        """, says=("`h`",)),
    Invalid("L2S207", "nnx-module-called", """
        from flax import nnx

        def refine(model: nnx.Module, xs, h):
            for x in xs:
                h = jnp.tanh(model(h) + x)  # <-
            return h
        """, says=("`model`", "state")),
    Invalid("L2S207", "module-built-before-the-loop", """
        from flax import nnx

        def run(xs, h):
            dense = nnx.Linear(4, 4, rngs=nnx.Rngs(0))
            for x in xs:
                h = jnp.tanh(dense(h) + x)  # <-
            return h
        """, says=("`dense`", "nnx.Linear")),
    Invalid("L2S207", "project-module-created-in-the-loop", """
        from flax import nnx

        class Block(nnx.Module):
            def __init__(self, rngs):
                self.w = nnx.Param(jnp.ones((4, 4)))

            def __call__(self, x):
                return x @ self.w[...]

        def run(xs, h):
            for x in xs:
                h = jnp.tanh(Block(None)(h) + x)  # <-
            return h
        """, says=("Block", "state")),
    Invalid("L2S207", "mutable-reference", """
        def accumulate(xs, h):
            total = jax.new_ref(jnp.zeros(4))
            for x in xs:
                h = jnp.tanh(h + x + total[...])  # <-
            return h
        """, says=("`total`", "reference")),
)

VALID = (
    Valid("L2S201", "jax-debug-print", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                jax.debug.print("norm {n}", n=jnp.linalg.norm(h))
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    Valid("L2S202", "conversion-of-static-shape", """
        import numpy as np

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x / float(np.sqrt(x.shape[-1])))
            return h
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
    Valid("L2S204", "functional-at-set", """
        def rnn(xs, h):
            out = jnp.zeros((xs.shape[0],) + h.shape)
            for t in range(xs.shape[0]):
                h = jnp.tanh(h + xs[t])
                out = out.at[t].set(h)
            return out
        """, "rnn", ('f32[5,3,4], f32[3,4]',)),
)

"""Every loop2scan code, one small JAX function per trigger.

The table below is read like a lint rule's test suite: each ``INVALID`` case is
a loop that must be declined with exactly that code (or reported as not a
candidate / skipped), each ``VALID`` case a near miss on the same rule that
must be rewritten, and then run, original against rewrite, on random inputs.

In the snippets a trailing ``# <-`` marks the line the decline must point at
(``LoopResult.where``); a case with no marker is about the loop itself, so
``where`` is either absent or on the ``for`` line.  ``says`` lists text the
message must contain: the offending construct or name, and what to do.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import pytest

from helpers import check_equivalent, rewrite, statuses
from loop2scan import rewrite_source
from loop2scan.codes import CODES, NOT_CANDIDATE, REWRITTEN, SKIPPED

HEADER = "import jax\nimport jax.numpy as jnp\n"
MARK = "# <-"

# distinct sizes, so that a swapped axis or a wrong trip count shows
T, B, D, H = 5, 3, 4, 6


def rand(*shape, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@dataclass(frozen=True)
class Invalid:
    code: str
    desc: str
    src: str
    says: tuple[str, ...] = ()
    hint: str = ""  # what to do: in the message, or in the code's documented fix
    status: str = "declined"
    framework: str = "jax"
    header: bool = True  # prepend `import jax` / `import jax.numpy as jnp`

    @property
    def id(self) -> str:
        return f"{self.code}-{self.desc}"

    @property
    def text(self) -> str:
        body = textwrap.dedent(self.src).lstrip("\n")
        return (HEADER + "\n" + body) if self.header else body


@dataclass(frozen=True)
class Valid:
    near: str  # the code this case is a near miss for
    desc: str
    src: str
    fn: str
    args: Callable[[], Sequence[tuple]]
    static_argnums: tuple[int, ...] = ()
    grad: bool = True

    @property
    def id(self) -> str:
        return f"{self.near}-valid-{self.desc}"

    @property
    def text(self) -> str:
        return HEADER + "\n" + textwrap.dedent(self.src).lstrip("\n")


@dataclass(frozen=True)
class NotThis:
    """A loop that may be declined, but never for ``code``."""

    code: str
    desc: str
    src: str
    fn: Optional[str] = None  # when the loop must be rewritten: run it
    args: Optional[Callable[[], Sequence[tuple]]] = None
    static_argnums: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.code}-not-{self.desc}"

    @property
    def text(self) -> str:
        return HEADER + "\n" + textwrap.dedent(self.src).lstrip("\n")


INVALID: list[Invalid] = [
    # ------------------------------------------------------------------ not a candidate / skipped
    Invalid(NOT_CANDIDATE, "python-shape-loop", """
        def layer_sizes(d_in, widths):
            sizes = []
            for w in widths:
                sizes.append((d_in, w))
                d_in = w
            return sizes
        """, says=("no array operations",), status="not-candidate"),
    Invalid(NOT_CANDIDATE, "no-framework-import", """
        import numpy as np

        def smooth(xs, h):
            for x in xs:
                h = np.tanh(h + x)
            return h
        """, says=("no array framework",), status="not-candidate", header=False, framework="auto"),
    Invalid(SKIPPED, "skip-comment-on-loop", """
        def rnn(xs, h):
            for x in xs:  # loop2scan: skip
                h = jnp.tanh(h + x)
            return h
        """, says=("loop2scan: skip",), status="skipped"),
    Invalid(SKIPPED, "skip-comment-above-loop", """
        def rnn(xs, h):
            # loop2scan: skip (reference implementation, kept unrolled on purpose)
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("loop2scan: skip",), status="skipped"),
    Invalid(SKIPPED, "skip-file", """
        # loop2scan: skip-file
        import jax.numpy as jnp

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("skip-file",), status="skipped", header=False),

    # ------------------------------------------------------------------ structure
    Invalid("L2S010", "async-for", """
        async def consume(stream, h):
            async for x in stream:
                h = jnp.tanh(h + x)
            return h
        """, says=("async for",)),
    Invalid("L2S011", "module-level-loop", """
        xs = jnp.ones((5, 3))
        h = jnp.zeros(3)
        for x in xs:
            h = jnp.tanh(h + x)
        """, says=("not inside a function", "move it into one")),
    Invalid("L2S012", "for-else", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            else:
                h = h * 2.0  # <-
            return h
        """, says=("else", "after the loop")),
    Invalid("L2S013", "attribute-target", """
        class State:
            pass

        def rnn(xs, h):
            s = State()
            for s.x in xs:  # <-
                h = jnp.tanh(h + s.x)
            return h
        """, says=("s.x", "not to a name")),
    Invalid("L2S013", "starred-target", """
        def rnn(rows, h):
            for first, *rest in rows:  # <-
                h = jnp.tanh(h + first)
            return h
        """, says=("starred",)),
    Invalid("L2S013", "range-unpacked", """
        def rnn(xs, h):
            for t, s in range(xs.shape[0]):  # <-
                h = jnp.tanh(h + xs[t])
            return h
        """, says=("range()", "unpacked")),
    Invalid("L2S014", "locals", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            debug = locals()  # <-
            return h
        """, says=("locals()",)),
    Invalid("L2S014", "eval", """
        def rnn(xs, h, activation):
            for x in xs:
                h = eval(activation)(h + x)  # <-
                h = jnp.tanh(h)
            return h
        """, says=("eval()",)),

    # ------------------------------------------------------------------ control flow
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

    # ------------------------------------------------------------------ side effects
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

    # ------------------------------------------------------------------ iteration
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
    Invalid("L2S307", "index-passed-to-helper-used-as-list-index", """
        COEFFS = [0.5, 0.25, 0.125]

        def f(x):
            def coefficient(i):
                return jnp.float32(COEFFS[i]) if i < 3 else jnp.float32(0.0)

            p = jnp.zeros_like(x)
            for i in range(3):
                p = coefficient(i) + p * x  # <-
            return p
        """, says=("`i`", "`coefficient`")),
    Invalid("L2S302", "python-list-of-masks", """
        def combine(masks):
            first, *others = masks
            m = first
            for other in others:  # <-
                m = jnp.logical_and(m, other)
            return m
        """, says=("`others`", "Python list")),
    Invalid("L2S302", "dict-annotated-weights", """
        def layers(w: dict[int, jax.Array], x, n: int):
            for l in range(n):
                x = jnp.tanh(x @ w[l])  # <-
            return x
        """, says=("`w`", "dict")),
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
    Invalid("L2S307", "index-as-axis-keyword", """
        def rnn(xs, h):
            for t in range(xs.ndim):
                h = h + jnp.sum(xs, axis=t)  # <-
            return h
        """, says=("`t`", "axis=")),
    Invalid("L2S307", "index-bounds-slice", """
        def prefix_means(xs, h):
            for t in range(1, xs.shape[0]):
                h = h + jnp.mean(xs[:t], axis=0)  # <-
            return h
        """, says=("`t`", "dynamic_slice")),
    Invalid("L2S307", "index-as-range", """
        def rnn(xs, h):
            for t in range(xs.shape[0]):
                for s in range(t):  # <-
                    h = jnp.tanh(h + xs[s])
            return h
        """, says=("range(t)",)),
    Invalid("L2S302", "index-into-python-list", """
        def every_other_layer(x, h):
            weights = [jnp.eye(3), 2.0 * jnp.eye(3), 3.0 * jnp.eye(3)]
            for t in range(len(weights) - 1, -1, -2):
                h = jnp.tanh(h @ weights[t] + x)  # <-
            return h
        """, says=("`weights`", "Python list", "jnp.stack")),
    Invalid("L2S307", "index-formats-a-dict-key", """
        def mlp(params, x):
            for i in range(3):
                w = params[f"layer_{i}"]  # <-
                x = jnp.tanh(x @ w)
            return x
        """, says=("`i`",)),
    Invalid("L2S307", "index-sizes-an-array", """
        def causal_sums(xs, h):
            for t in range(xs.shape[0]):
                h = h + jnp.sum(jnp.ones(t + 1)) * xs[t]  # <-
            return h
        """, says=("`t`",)),

    # ------------------------------------------------------------------ carries
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

    # ------------------------------------------------------------------ outputs
    Invalid("L2S501", "returned-as-list", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return hs  # <-
        """, says=("`hs`", "after the loop")),
    Invalid("L2S501", "appended-twice", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                hs.append(h)
                h = jnp.tanh(h + x)
                hs.append(h)  # <-
            return jnp.stack(hs)
        """, says=("hs.append", "2 times")),
    Invalid("L2S501", "appended-conditionally", """
        def rnn(xs, h, keep_all):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                if keep_all:
                    hs.append(h)  # <-
            return h, jnp.stack(hs)
        """, says=("hs.append", "conditionally")),
    Invalid("L2S501", "read-inside-loop", """
        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x + len(hs))  # <-
                hs.append(h)
            return jnp.stack(hs)
        """, says=("`hs`", "inside the loop")),
    Invalid("L2S501", "numpy-stack", """
        import numpy as np

        def rnn(xs, h):
            hs = []
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return np.stack(hs)  # <-
        """, says=("np.stack(hs)",)),
    Invalid("L2S501", "tuple-grown-twice", """
        def rnn(xs, h):
            hs = ()
            for x in xs:
                hs += (h,)  # <-
                h = jnp.tanh(h + x)
                hs += (h,)  # <-
            return jnp.stack(hs)
        """, says=("`hs`", "2 times")),
    Invalid("L2S502", "list-not-empty", """
        def rnn(xs, h):
            hs = [h]  # <-
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return jnp.stack(hs)
        """, says=("hs = []",)),
    Invalid("L2S502", "tuple-init-shared", """
        def rnn(xs, h0):
            h, hs = h0, []  # <-
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return jnp.stack(hs)
        """, says=("`h`", "own")),
    Invalid("L2S502", "init-not-right-before", """
        def rnn(xs, h):
            hs = []
            hs_len = len(hs)  # <-
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
            return jnp.stack(hs), hs_len
        """, says=("`hs`", "between")),

    # ------------------------------------------------------------------ framework
    Invalid("L2S601", "torch-call-in-jax-file", """
        import jax.numpy as jnp
        import torch

        def mixed(xs, h):
            for x in xs:
                h = jnp.tanh(h + torch.as_tensor(x).numpy())  # <-
            return h
        """, says=("torch.as_tensor",), framework="auto", header=False),
    Invalid("L2S601", "flax-linen-module-built-in-loop", """
        import flax.linen as nn

        def tower(x):
            for _ in range(3):
                x = jnp.tanh(nn.Dense(4)(x))  # <-
            return x
        """, says=("nn.Dense", "Flax")),
    Invalid("L2S602", "plain-torch-file", """
        import torch

        def rnn(xs, h):
            for x in xs:
                h = torch.tanh(h + x)
            return h
        """, says=("torch_xla",), framework="auto", header=False),
    Invalid("L2S602", "torch-xla-file", """
        import torch
        import torch_xla

        def rnn(xs, h):
            for x in xs:
                h = torch.tanh(h + x)
            return h
        """, says=("torch_xla",), framework="auto", header=False),

    # ------------------------------------------------------------------ internal
    Invalid("L2S901", "module-rebinds-jax", """
        import importlib

        import jax.numpy as jnp

        jax = importlib.import_module("jax")

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("`jax`", "left unchanged"), header=False),
]


def _seqs(*shapes):
    return lambda: [tuple(rand(*s, seed=i) for i, s in enumerate(case)) for case in shapes]


VALID: list[Valid] = [
    Valid("L2S109", "if-on-invariant-flag", """
        def rnn(xs, h, b, use_bias):
            for x in xs:
                h = h * 0.5 + x
                if use_bias:
                    h = h + b
                h = jnp.tanh(h)
            return h
        """, "rnn", lambda: [(rand(T, B, D), rand(B, D, seed=1), rand(D, seed=2), True),
                             (rand(2, B, D), rand(B, D, seed=1), rand(D, seed=2), False)],
          static_argnums=(3,)),
    Valid("L2S109", "static-shape-condition", """
        def rnn(xs, h):
            for x in xs:
                if h.shape[0] > 2:
                    h = jnp.tanh(h + x)
                else:
                    h = h + x
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)], [(2, 1, D), (1, D)])),
    Valid("L2S109", "static-chained-comparison-and-len", """
        def rnn(xs, h):
            for x in xs:
                scale = 2.0 if 0 < len(x) < 10 and x.ndim == 2 else 1.0
                h = jnp.tanh(h + scale * x)
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)], [(2, 11, D), (11, D)])),
    Valid("L2S201", "jax-debug-print", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
                jax.debug.print("norm {n}", n=jnp.linalg.norm(h))
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S202", "conversion-of-static-shape", """
        import numpy as np

        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x / float(np.sqrt(x.shape[-1])))
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S204", "functional-at-set", """
        def rnn(xs, h):
            out = jnp.zeros((xs.shape[0],) + h.shape)
            for t in range(xs.shape[0]):
                h = jnp.tanh(h + xs[t])
                out = out.at[t].set(h)
            return out
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S301", "static-trip-count-from-shape", """
        def rnn(xs, h):
            n = xs.shape[0]
            for t in range(n - 1):
                h = jnp.tanh(h + xs[t + 1] - xs[t])
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)], [(2, B, D), (B, D)])),
    Valid("L2S302", "zip-of-arrays", """
        def rnn(xs, gates, h):
            for x, g in zip(xs, gates):
                h = g * jnp.tanh(h + x) + (1.0 - g) * h
            return h
        """, "rnn", _seqs([(T, B, D), (T, B, D), (B, D)])),
    Valid("L2S302", "array-annotated-parameter", """
        def rnn(xs: jax.Array, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S303", "method-on-element-is-not-a-layer", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x.sum(axis=0))
            return h
        """, "rnn", _seqs([(T, B, D), (D,)])),
    Valid("L2S305", "new-name-for-modified-element", """
        def rnn(xs, h):
            for x in xs:
                y = x / (1.0 + jnp.abs(x))
                h = jnp.tanh(h + y)
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S307", "index-only-indexes-arrays", """
        def rnn(xs, ws, h):
            for t in range(xs.shape[0]):
                h = jnp.tanh(h @ ws[t] + xs[t])
            return h
        """, "rnn", _seqs([(T, B, D), (T, D, D), (B, D)])),
    Valid("L2S402", "carry-from-jnp-zeros", """
        def rnn(xs, w):
            h = jnp.zeros((xs.shape[1], w.shape[1]))
            for x in xs:
                h = jnp.tanh(x @ w + h)
            return h
        """, "rnn", _seqs([(T, B, D), (D, H)])),
    Valid("L2S403", "python-float-that-meets-arrays", """
        def total_energy(xs):
            e = 0.0
            for x in xs:
                e = e + jnp.sum(x ** 2)
            return e
        """, "total_energy", _seqs([(T, B, D)])),
    Valid("L2S501", "append-then-stack", """
        def rnn(xs, h):
            outs = []
            for x in xs:
                h = jnp.tanh(h + x)
                outs.append(h)
            return h, jnp.stack(outs)
        """, "rnn", _seqs([(T, B, D), (B, D)], [(1, B, D), (B, D)])),
    Valid("L2S502", "two-empty-accumulators-on-one-line", """
        def rnn(xs, h):
            hs, gs = [], []
            for x in xs:
                h = jnp.tanh(h + x)
                hs.append(h)
                gs.append(1.0 - h ** 2)
            return jnp.stack(hs), jnp.stack(gs, axis=1)
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S109", "comprehension-over-a-tuple-of-per-step-values", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(sum(0.5 * v for v in (h, x)))
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S303", "array-method-on-element", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x.clip(-1.0, 1.0))
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    Valid("L2S307", "index-into-stacked-arrays", """
        def rnn(x, h):
            weights = jnp.stack([jnp.eye(4), 0.5 * jnp.eye(4), -jnp.eye(4)])
            for t in range(len(weights)):
                h = jnp.tanh(h @ weights[t] + x)
            return h
        """, "rnn", _seqs([(B, D), (B, D)])),
    Valid("L2S110", "pure-named-scope", """
        def rnn(xs, h):
            for x in xs:
                with jax.named_scope("rnn_step"):
                    h = jnp.tanh(h + x)
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
]


NOT_THIS: list[NotThis] = [
    NotThis("L2S101", "break-in-inner-loop", """
        def rnn(xs, h, n_inner):
            for x in xs:
                for k in range(n_inner):
                    if k >= 2:
                        break
                    h = jnp.tanh(h + x)
            return h
        """, "rnn", lambda: [(rand(T, B, D), rand(B, D, seed=1), 3), (rand(2, B, D), rand(B, D, seed=1), 1)],
        static_argnums=(2,)),
    NotThis("L2S102", "continue-in-inner-loop", """
        def rnn(xs, h):
            for x in xs:
                for k in range(3):
                    if k == 1:
                        continue
                    h = jnp.tanh(h + x * (k + 1))
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
    NotThis("L2S103", "return-in-nested-function", """
        def rnn(xs, h):
            for x in xs:
                def cell(a, b):
                    return jnp.tanh(a + b)
                h = cell(h, x)
            return h
        """, "rnn", _seqs([(T, B, D), (B, D)])),
]


# ----------------------------------------------------------------------------- helpers

def _marked_lines(text: str) -> set[int]:
    return {i for i, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith(MARK)
            or (MARK + " ") in line}


def _first_loop(result):
    assert result.error is None, result.error
    assert result.loops, "no loop was found"
    return min(result.loops, key=lambda loop: (loop.line, loop.col))


# ----------------------------------------------------------------------------- tests

def test_every_code_has_a_case():
    """The table covers every code of ``loop2scan.codes`` but ``L2S000``."""
    covered = {c.code for c in INVALID}
    missing = sorted(set(CODES) - {REWRITTEN} - covered)
    assert not missing, f"codes without an INVALID case: {missing}"
    unknown = sorted({c.code for c in INVALID} - set(CODES))
    assert not unknown, unknown
    near = {c.near for c in VALID} | {c.code for c in NOT_THIS}
    assert near <= set(CODES)


def test_case_ids_are_unique():
    ids = [c.id for c in INVALID] + [c.id for c in VALID] + [c.id for c in NOT_THIS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid(case: Invalid):
    text = case.text
    result = rewrite_source(text, case.framework)
    loop = _first_loop(result)
    assert (loop.status, loop.code) == (case.status, case.code), \
        f"{statuses(result)}: {loop.message}"
    # nothing is rewritten when this was the only loop
    if len(result.loops) == 1:
        assert result.new_text is None, result.new_text
    for part in case.says:
        assert part in loop.message, f"message {loop.message!r} does not mention {part!r}"
    # the construct at fault
    marked = _marked_lines(text)
    if marked:
        assert loop.where is not None, f"no `where` for {loop.message!r}"
        assert loop.where.line in marked, \
            f"`where` is line {loop.where.line} ({loop.where.kind}), expected one of {sorted(marked)}"
    else:
        assert loop.where is None or loop.where.line == loop.line, loop.where
    # the message, or the code's documented fix shown with it, says what to do
    fix = CODES[loop.code].fix
    assert fix and len(loop.message) > 15
    if case.hint:
        assert case.hint in loop.message + " " + fix, (loop.message, fix)


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid(case: Valid):
    text = case.text
    result = rewrite(text)
    assert [(l.status, l.code) for l in result.loops] == [("rewritten", REWRITTEN)] * len(result.loops), \
        [(l.line, l.code, l.message) for l in result.loops]
    check_equivalent(text, case.fn, case.args(), rewritten=len(result.loops),
                     static_argnums=case.static_argnums, grad=case.grad)


@pytest.mark.parametrize("case", NOT_THIS, ids=lambda c: c.id)
def test_not_declined_for(case: NotThis):
    text = case.text
    result = rewrite(text)
    outer = _first_loop(result)
    assert outer.code != case.code, f"{statuses(result)}: {outer.message}"
    if case.fn is not None:
        assert outer.status == "rewritten", f"{statuses(result)}: {outer.message}"
        check_equivalent(text, case.fn, case.args(), static_argnums=case.static_argnums)

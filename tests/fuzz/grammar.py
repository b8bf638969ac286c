"""A grammar of small JAX programs with one loop, each labelled by construction.

Every program is a whole module holding one function ``f`` with one ``for``
loop (sometimes with a nested inner loop), the shapes and dtypes of the
arguments to call it with, and a label:

``must-rewrite``
    The loop (and the inner loop, if any) follows only patterns that the
    rewrite semantics say become a scan: carries of fixed shape (several,
    tuple-unpacked, a weak-typed ``total = 0.0``), iteration over ``xs`` /
    ``range`` / ``zip`` / ``enumerate`` / ``reversed``, per-step outputs
    collected with ``append`` + ``jnp.stack`` / ``jnp.array`` /
    ``jnp.concatenate``, tuple accumulators or ``.at[t].set``, closed-over
    weights, ``jnp.where`` on data, names used after the loop.

``must-decline``
    The same kind of program with exactly one construct that the semantics
    say can never become a scan (``break``, ``continue``, ``return``, a host
    side effect, an ``if`` on a per-step value or on the index, an item or
    attribute write, a carry starting as ``None``, a list accumulator
    returned as a list), inserted at a random place in the body of the outer
    or the inner loop.  ``Program.must_not_rewrite`` holds the lines of the
    loops that must stay loops because of it (the loop holding it, and the
    enclosing loop too when the construct reaches past the inner loop).

The grammar is written once against a small *chooser* interface, so the same
code is driven by hypothesis (:func:`programs`, which shrinks) and by a seeded
``random.Random`` (:func:`generate`, for long runs).  Sizes are all different
(``T`` steps in {0, 1, 2, 5}; ``B``, ``D``, ``H`` = 3, 4, 6), so a swapped axis or a reversed order shows in the numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional, Sequence

from hypothesis import strategies as st

MUST_REWRITE = "must-rewrite"
MUST_DECLINE = "must-decline"

STEPS = (5, 2, 1, 0)
# batch, input and hidden sizes: fixed, so that JAX's per-shape caches of eager
# operations are shared by all programs (compiles are the fuzzer's cost), and
# different from each other and from every T
B, D, H = 3, 4, 6

ITERATIONS = (
    "elements",           # for x in xs
    "range",              # for t in range(xs.shape[0]) ... xs[t]
    "range_T",            # T = xs.shape[0]; for t in range(T) ... xs[t]
    "axis1",              # for t in range(xs.shape[1]) ... xs[:, t]
    "axis_last",          # for t in range(xs.shape[-1]) ... xs[..., t]
    "range_slice",        # for t in range(a, b, s) ... xs[t]
    "shifted",            # for t in range(T - 1) ... xs[t], xs[t + 1]
    "descending",         # for t in range(T - 1, -1, -1) ... xs[t]
    "reversed_range",     # for t in reversed(range(T)) ... xs[t]
    "reversed_elements",  # for x in reversed(xs)
    "zip",                # for x, u in zip(xs, us)
    "enumerate",          # for i, x in enumerate(xs)
    "enumerate_start",    # for i, x in enumerate(xs, start=1)
    "enumerate_zip",      # for i, (x, u) in enumerate(zip(xs, us))
)
# loops over the elements of xs: xs may also be a Python list of arrays
ELEMENT_ITERATIONS = ("elements", "reversed_elements", "zip", "enumerate", "enumerate_start", "enumerate_zip")
RANGE_SLICES = ("range(1, T)", "range(0, T, 2)", "range(1, T, 2)", "range(T - 1)", "range(2, T)")

CONSTRUCTS = (
    "break", "continue", "return", "print", "logger", "if_value", "if_element", "if_index",
    "subscript_write", "attribute_write", "none_carry", "list_returned",
)
# constructs whose effect reaches past the inner loop: the enclosing loop must stay a loop too
ESCAPING = {"return", "print", "logger", "if_value", "if_element", "subscript_write", "attribute_write",
            "list_returned"}

LIST_CONSUMERS_2D = ("jnp.stack({n})", "jnp.stack({n}, axis=1)", "jnp.stack({n}, axis=2)",
                     "jnp.stack({n}, axis=-1)", "jnp.array({n})", "jnp.concatenate({n})",
                     "jnp.concatenate({n}, axis=1)", "jnp.concatenate({n}, axis=-1)")
LIST_CONSUMERS_0D = ("jnp.stack({n})", "jnp.array({n})")
ACTIVATIONS = ("jnp.tanh({e})", "jnp.sin({e})", "jax.nn.sigmoid({e})", "0.5 * ({e})")

HEADER = """\
import logging
import types

import jax
import jax.numpy as jnp
import numpy as np

logger = logging.getLogger(__name__)
SCALE = 0.5
"""

CELL = """

def cell(a, c, xp, w):
    a = jnp.tanh(a @ w + xp)
    return a, 0.5 * c + a
"""


@dataclass(frozen=True)
class ArgSpec:
    name: str
    shape: tuple[int, ...]  # for a list: (number of items,) + the shape of each
    dtype: str = "float32"
    scale: float = 1.0  # standard deviation of the random values
    kind: str = "array"  # "array" or "list" (a Python list of arrays along the first axis)


@dataclass(frozen=True)
class Program:
    source: str
    args: tuple[ArgSpec, ...]
    label: str
    loops: tuple[int, ...]  # line of every `for` (outer first)
    must_not_rewrite: tuple[int, ...] = ()  # loops a must-decline construct forbids rewriting
    construct: Optional[str] = None
    construct_loop: Optional[str] = None  # "outer" or "inner"
    steps: int = 0  # T, the length of the time axis of xs
    features: tuple[str, ...] = ()
    fn: str = "f"

    def describe(self) -> str:
        args = ", ".join(f"{a.name}: {'list of ' if a.kind == 'list' else ''}{a.dtype}{list(a.shape)}"
                         for a in self.args)
        what = self.label + (f" ({self.construct} in the {self.construct_loop} loop)" if self.construct else "")
        return f"{what}; f({args})\n{self.source}"


# ----------------------------------------------------------------------------- choosers

class RandomChooser:
    """Drives the grammar from a seeded ``random.Random`` (long runs)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, options: Sequence):
        return options[self.rng.randrange(len(options))]

    def flag(self, p: float) -> bool:
        return self.rng.random() < p

    def position(self, n: int) -> int:  # an index in 0..n
        return self.rng.randint(0, n)


class DrawChooser:
    """Drives the grammar from hypothesis draws: every choice shrinks towards
    the first option and every optional feature towards absent."""

    def __init__(self, draw):
        self.draw = draw

    def pick(self, options: Sequence):
        return self.draw(st.sampled_from(list(options)))

    def flag(self, p: float) -> bool:
        # hypothesis favours small integers: spread them (0 stays 0, i.e. False) so
        # that the share of True is close to p
        n = self.draw(st.integers(0, 99))
        return (n * 37) % 100 >= 100 - round(100 * p)

    def position(self, n: int) -> int:
        return self.draw(st.integers(0, n))


# ----------------------------------------------------------------------------- the grammar

@dataclass
class _Loop:
    """What a construct inserted into one loop's body may refer to."""

    which: str  # "outer" / "inner"
    carry: str  # an array carry of this loop, (B, H) or (H,)
    carry_shape: str  # source for its shape, for buffers
    index: Optional[str]  # an int loop variable in 0..n-1, if any
    element: str  # a per-step value (expression)
    body: list = field(default_factory=list)  # statements: lists of lines (relative indentation)


def _gen(c) -> Program:
    T = c.pick(STEPS)
    decline = c.flag(0.3)
    it = c.pick(ITERATIONS)
    feats: list[str] = [f"iter:{it}", f"T={T}"]

    layout = {"axis1": "axis1", "axis_last": "axis_last"}.get(it, "axis0")  # where the time axis of xs is
    has_us = it in ("zip", "enumerate_zip")
    b_expr = "xs.shape[1]" if layout == "axis0" else "xs.shape[0]"
    t_expr = {"axis0": "xs.shape[0]", "axis1": "xs.shape[1]", "axis_last": "xs.shape[-1]"}[layout]
    hshape = f"({b_expr}, wx.shape[1])"

    pre: list[str] = []  # statements before the loop (one line each)
    index: Optional[str] = None  # an int loop variable (arithmetic, `if`, buffer writes)
    index_is_position = False  # ... that runs over positions 0..T-1 of the time axis (`.at[t]`)
    pu = None
    shifted = None  # a second read of xs at another step
    if it == "elements":
        head, px = "for x in xs:", "x"
    elif it == "reversed_elements":
        head, px = "for x in reversed(xs):", "x"
    elif it == "range":
        head, px, index = "for t in range(xs.shape[0]):", "xs[t]", "t"
    elif it == "range_T":
        pre.append("T = xs.shape[0]")
        head, px, index = "for t in range(T):", "xs[t]", "t"
    elif it == "axis1":
        head, px, index = "for t in range(xs.shape[1]):", "xs[:, t]", "t"
    elif it == "axis_last":
        head, px, index = "for t in range(xs.shape[-1]):", "xs[..., t]", "t"
    elif it == "range_slice":
        spec = c.pick(RANGE_SLICES)
        feats.append(f"range:{spec}")
        pre.append("T = xs.shape[0]")
        head, px, index = f"for t in {spec}:", "xs[t]", "t"
    elif it == "shifted":
        pre.append("T = xs.shape[0]")
        head, px, index, shifted = "for t in range(T - 1):", "xs[t]", "t", "xs[t + 1]"
    elif it == "descending":
        pre.append("T = xs.shape[0]")
        head, px, index = "for t in range(T - 1, -1, -1):", "xs[t]", "t"
    elif it == "reversed_range":
        head, px, index = "for t in reversed(range(xs.shape[0])):", "xs[t]", "t"
    elif it == "zip":
        head, px, pu = "for x, u in zip(xs, us):", "x", "u"
    elif it == "enumerate":
        head, px, index = "for i, x in enumerate(xs):", "x", "i"
    elif it == "enumerate_start":
        head, px, index = "for i, x in enumerate(xs, start=1):", "x", "i"
    else:  # enumerate_zip
        head, px, pu, index = "for i, (x, u) in enumerate(zip(xs, us)):", "x", "u", "i"
    index_is_position = index is not None and it != "enumerate_start"

    # xs (and us) as arrays, or, for loops over their elements, as Python lists of arrays
    as_list = it in ELEMENT_ITERATIONS and c.flag(0.2)
    if as_list:
        feats.append("xs:list")
    xs_shape = {"axis0": (T, B, D), "axis1": (B, T, D), "axis_last": (B, D, T)}[layout]
    args = [ArgSpec("xs", xs_shape, kind="list" if as_list else "array")]
    if has_us:
        args.append(ArgSpec("us", (T, B, D), kind="list" if as_list else "array"))
    args += [ArgSpec("wx", (D, H), scale=0.5), ArgSpec("wh", (H, H), scale=0.4), ArgSpec("b", (H,), scale=0.5)]

    body: list[list[str]] = []  # statements of the outer body, in order
    module_extra = ""

    # --- the per-step input, projected to (B, H); a zipped second input always takes part
    # (an element that is never read shows nothing about what the sequence holds)
    projected = f"{px} @ wx" if pu is None else f"{px} @ wx + 0.5 * {pu} @ wx"
    if c.flag(0.6):
        body.append([f"xp = {projected}"])
        xp = "xp"
        feats.append("xp-local")
    else:
        xp = f"({projected})"
    up = None
    if pu is not None:
        up = f"({pu} @ wx)"

    # --- carries
    n_carries = c.pick([1, 2, 3])
    names = ["h", "c", "g"][:n_carries]
    feats.append(f"carries:{n_carries}")
    for name in names:
        init = c.pick(["arg", "zeros", "full"])
        if init == "arg":
            args.append(ArgSpec(f"{name}0", (B, H)))
            pre.append(f"{name} = {name}0")
        elif init == "zeros":
            pre.append(f"{name} = jnp.zeros({hshape})")
        else:
            pre.append(f"{name} = jnp.full({hshape}, 0.1)")
    scalar = c.flag(0.35)
    if scalar:
        init = c.pick(["0.0", "jnp.zeros(())"])
        feats.append("scalar-carry:weak" if init == "0.0" else "scalar-carry:array")
        pre.append(f"total = {init}")

    def term(self_name: str) -> str:
        options = ["matmul", "xp", "bias", "scaled", "product", "where", "sin"]
        if index is not None:
            options.append("index")
        if up is not None:
            options.append("u")
        if scalar:
            options.append("total")
        if shifted is not None:
            options.append("shift")
        kind = c.pick(options)
        other = c.pick(names)
        feats.append(f"term:{kind}")
        return {
            "matmul": f"{other} @ wh",
            "xp": xp,
            "bias": "b",
            "scaled": f"SCALE * {other}",
            "product": f"{self_name} * jnp.tanh({other})",
            "where": f"jnp.where({xp} > 0, {other}, -{other})",
            "sin": f"jnp.sin({other})",
            "index": f"{xp} * ({index} + 1)",
            "u": up or xp,
            "total": "0.1 * total",
            "shift": f"({shifted} @ wx)",
        }[kind]

    def update_expr(name: str) -> str:
        terms = [c.pick([f"{name} @ wh", f"0.5 * {name}", name])]
        for _ in range(c.pick([1, 2])):
            terms.append(term(name))
        act = c.pick(ACTIVATIONS)
        return act.format(e=" + ".join(terms))

    # an iteration-local value, maybe used after the loop (its last value)
    z_local = c.flag(0.3)
    z_after = False
    if z_local:
        body.append([f"z = jnp.tanh({xp} + {names[0]})"])
        feats.append("local")
        z_after = c.flag(0.5)
        if z_after:
            if c.flag(0.5):
                pre.append(f"z = jnp.zeros({hshape})")
                feats.append("last-value:bound-before")
            else:
                feats.append("last-value")

    # the inner loop (nested), which replaces the update of the first carry
    inner: Optional[_Loop] = None
    nested = c.pick([None, None, "count", "rows"])
    first_update_at = len(body)
    if nested == "count":
        K = c.pick([2, 3])
        feats.append("nested:count")
        inner = _Loop("inner", "acc", hshape, "j", "acc")  # `xp` is loop-invariant for the inner loop
        inner.body = [[f"acc = jnp.tanh(acc @ wh + {xp})"]]
        body.append(["acc = " + names[0]])
        body.append(("INNER", f"for j in range({K}):"))
        body.append([f"{names[0]} = 0.5 * {names[0]} + acc"])
    elif nested == "rows":
        feats.append("nested:rows")
        inner = _Loop("inner", "s", "(wx.shape[1],)", None, "r")
        inner.body = [["s = s * 0.5 + jnp.sin(r)"]]
        body.append(["s = jnp.zeros(wx.shape[1])"])
        body.append(("INNER", f"for r in {xp}:"))
        body.append([f"{names[0]} = jnp.tanh({names[0]} + s)"])

    # carry updates
    todo = names[1:] if inner is not None else list(names)
    if len(todo) >= 2 and c.flag(0.4):
        a, b_ = todo[0], todo[1]
        if c.flag(0.5):
            module_extra = CELL
            body.append([f"{a}, {b_} = cell({a}, {b_}, {xp}, wh)"])
            feats.append("tuple-unpack:cell")
        else:
            body.append([f"{a}, {b_} = {update_expr(a)}, {update_expr(b_)}"])
            feats.append("tuple-unpack")
        todo = todo[2:]
    for name in todo:
        body.append([f"{name} = {update_expr(name)}"])
    if scalar:
        red = c.pick(["jnp.sum", "jnp.mean"])
        pos = c.position(len(body) - first_update_at) + first_update_at
        body.insert(pos, [f"total = total + {red}({c.pick(names)}) * 0.1"])

    # per-step outputs
    returns: list[str] = []
    n_out = c.pick([0, 1, 1, 2])
    out_names = ["outs", "ys"]
    kinds_allowed = ["list", "list", "tuple"] + (["at"] if index_is_position else [])
    for k in range(n_out):
        kind = c.pick(kinds_allowed)
        yk = c.pick(["carry", "scaled", "sum", "input"])
        carry_y = c.pick(names)
        y = {"carry": carry_y, "scaled": f"{carry_y} * 2.0", "sum": f"jnp.sum({carry_y})",
             "input": f"jnp.tanh({xp})"}[yk]
        feats.append(f"y:{yk}")
        if kind == "at" and yk == "sum":
            y = carry_y
        lo = 1 if xp == "xp" else 0  # after `xp = ...`
        pos = lo + c.position(len(body) - lo)
        if kind == "list":
            n = out_names[k]
            pre.append(f"{n} = []")
            body.insert(pos, [f"{n}.append({y})"])
            consumer = c.pick(LIST_CONSUMERS_0D if yk == "sum" else LIST_CONSUMERS_2D)
            feats.append("ys:" + consumer.split("(")[0] + ("(axis)" if "axis" in consumer else ""))
            if it in ("reversed_range", "reversed_elements", "descending") and c.flag(0.3):
                consumer = consumer.replace("{n}", "{n}[::-1]")  # flip back to index order
                feats.append("ys:flipped")
            returns.append(consumer.format(n=n))
            returns += _extra_uses(c, n, feats)
        elif kind == "tuple":
            n = out_names[k]
            pre.append(f"{n} = ()")
            body.insert(pos, [f"{n} += ({y},)"])
            axis = c.pick(["", ", axis=1", ", axis=-1"]) if yk != "sum" else ""
            feats.append("ys:tuple")
            returns.append(f"jnp.stack({n}{axis})")
            returns += _extra_uses(c, n, feats)
        else:
            n = "out" if k == 0 else "out2"
            if layout == "axis1":
                pre.append(f"{n} = jnp.zeros(({b_expr}, {t_expr}, wx.shape[1]))")
                body.insert(pos, [f"{n} = {n}.at[:, {index}].set({y})"])
                feats.append("ys:at[:, t]")
            elif layout == "axis_last":
                pre.append(f"{n} = jnp.zeros(({b_expr}, wx.shape[1], {t_expr}))")
                body.insert(pos, [f"{n} = {n}.at[..., {index}].set({y})"])
                feats.append("ys:at[..., t]")
            else:
                pre.append(f"{n} = jnp.zeros(({t_expr}, {b_expr}, wx.shape[1]))")
                body.insert(pos, [f"{n} = {n}.at[{index}].set({y})"])
                feats.append("ys:at[t]")
            returns.append(n)

    # final values of the carries (at least one is returned)
    kept = [n for n in names if c.flag(0.7)] or [names[0]]
    returns = kept + returns
    if scalar:
        returns.append("total")
    if z_after:
        returns.append("z")

    # --- the must-decline construct
    construct = construct_loop = None
    outer = _Loop("outer", names[0], hshape, index, px, body)
    inner_pre: list[str] = []  # statements right before the inner loop (in the outer body)
    if decline:
        loops = [outer] + ([inner] if inner is not None else [])
        construct = c.pick(CONSTRUCTS)
        fits = [lp for lp in loops if construct != "if_index" or lp.index is not None]
        if not fits:  # no index to branch on: branch on the per-step element instead
            construct, fits = "if_element", loops
        target = c.pick(fits)
        construct_loop = target.which
        cv = target.carry
        stmt: list[str]
        if construct == "break":
            stmt = ["break"]
        elif construct == "continue":
            stmt = ["continue"]
        elif construct == "return":
            stmt = [f"return {cv}"]
        elif construct == "print":
            stmt = [f'print("step", {cv}.shape)']
        elif construct == "logger":
            stmt = [f'logger.info("step %s", {cv}.shape)']
        elif construct == "if_value":
            stmt = [f"if {cv}.sum() > 0:", f"    {cv} = -{cv}"]
        elif construct == "if_element":
            stmt = [f"if jnp.max({target.element}) > 0.5:", f"    {cv} = {cv} * 0.5"]
        elif construct == "if_index":
            stmt = [f"if {target.index} % 2 == 0:", f"    {cv} = {cv} * 0.5"]
        elif construct == "subscript_write":
            shape = target.carry_shape
            pre.append(f"buf = np.zeros((16,) + {shape}, dtype=np.float32)")
            stmt = [f"buf[{target.index or 0}] = {cv}"]
            returns.append("buf")
        elif construct == "attribute_write":
            pre.append("state = types.SimpleNamespace(x=None)")
            stmt = [f"state.x = {cv}"]
            returns.append("state.x")
        elif construct == "none_carry":
            plain = target.which == "outer" and c.flag(0.5)
            (pre if target.which == "outer" else inner_pre).append("prev = None")
            if plain:  # written first, live after the loop, bound to None before it
                stmt = [f"prev = {cv}"]
                returns.append("prev")
            else:
                stmt = ["if prev is not None:", f"    {cv} = {cv} + 0.5 * prev", f"prev = {cv}"]
        else:  # list_returned
            pre.append("saved = []")
            stmt = [f"saved.append({cv})"]
            returns.append("saved")
        feats.append(f"construct:{construct}:{construct_loop}")
        tb = target.body
        tb.insert(c.position(len(tb)), stmt)

    # --- render
    params = ", ".join(a.name for a in args)
    lines = [f"def f({params}):"]
    for s in pre:
        lines.append("    " + s)
    lines.append("    " + head)
    loop_lines = [len(lines)]
    for stmt in body:
        if isinstance(stmt, tuple):  # the inner loop
            for s in inner_pre:
                lines.append("        " + s)
            lines.append("        " + stmt[1])
            loop_lines.append(len(lines))
            for inner_stmt in inner.body:
                lines += ["            " + s for s in inner_stmt]
        else:
            lines += ["        " + s for s in stmt]
    lines.append("    return " + ", ".join(returns))

    header = HEADER + module_extra + "\n\n"
    offset = header.count("\n")
    source = header + "\n".join(lines) + "\n"
    loop_lines = [offset + n for n in loop_lines]

    must_not: list[int] = []
    if decline:
        if construct_loop == "outer":
            must_not = [loop_lines[0]]
        else:
            must_not = [loop_lines[1]] + ([loop_lines[0]] if construct in ESCAPING else [])
    return Program(
        source=source,
        args=tuple(args),
        label=MUST_DECLINE if decline else MUST_REWRITE,
        loops=tuple(loop_lines),
        must_not_rewrite=tuple(sorted(must_not)),
        construct=construct,
        construct_loop=construct_loop,
        steps=T,
        features=tuple(dict.fromkeys(feats)),
    )


def _extra_uses(c, n: str, feats: list) -> list[str]:
    """Other uses of an accumulator after the loop that the stacked array can serve."""
    extra = c.pick([None, None, None, "len", "last", "first"])
    if extra is None:
        return []
    feats.append(f"ys-use:{extra}")
    return [{"len": f"len({n})", "last": f"{n}[-1]", "first": f"{n}[0]"}[extra]]


@st.composite
def programs(draw, label: Optional[str] = None) -> Program:
    """A hypothesis strategy of labelled programs (``label`` fixes the label)."""
    chooser = DrawChooser(draw)
    return _gen(_Forced(chooser, label) if label is not None else chooser)


class _Forced:
    """A chooser whose first ``flag`` (the label) is fixed."""

    def __init__(self, inner, label: str):
        self.inner = inner
        self.label = label
        self.first = True

    def pick(self, options):
        return self.inner.pick(options)

    def position(self, n):
        return self.inner.position(n)

    def flag(self, p):
        if self.first:
            self.first = False
            return self.label == MUST_DECLINE
        return self.inner.flag(p)


def generate(seed: int, label: Optional[str] = None) -> Program:
    """One program from a seed (deterministic); ``label`` fixes the label."""
    chooser = RandomChooser(random.Random(seed))
    return _gen(_Forced(chooser, label) if label is not None else chooser)

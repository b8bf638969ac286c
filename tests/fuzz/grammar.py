"""A grammar of small JAX programs with loops, each labelled by construction.

Most programs are a whole module holding one function ``f`` with one ``for``
loop (sometimes with a nested inner loop), the arguments to call it with,
and a label:

``must-rewrite``
    The loop (and the inner loop, if any) follows only patterns that the
    rewrite semantics say become a scan: carries of fixed shape (several,
    tuple-unpacked, a weak-typed ``total = 0.0``), iteration over ``xs`` /
    ``range`` / ``zip`` / ``enumerate`` / ``reversed``, per-step outputs
    collected with ``append`` + ``jnp.stack`` / ``jnp.array`` /
    ``jnp.concatenate``, tuple accumulators or ``.at[t].set``, per-step
    pytrees stacked leaf by leaf, lists never read after the loop,
    closed-over weights, ``jnp.where`` on data, names used after the loop,
    arithmetic on the loop index that must stay weakly typed.

``must-decline``
    The same kind of program with exactly one construct that the semantics
    say can never become a scan, inserted at a random place in the body of
    the outer or the inner loop.  ``Program.must_not_rewrite`` holds the
    lines of the loops that must stay loops because of it (the loop holding
    it, and the enclosing loop too when the construct reaches past the inner
    loop, or the loop the construct brings).

Every program belongs to a *class* (:data:`CLASSES`, ``Program.klass``):

``basic``
    the original grammar; its must-decline constructs (:data:`CONSTRUCTS`)
    are ``break``, ``continue``, ``return``, host side effects, data or index
    branches, subscript and attribute writes, ``None`` carries, a list
    accumulator returned as a list;
``non-numeric``, ``static-use``, ``bool-mask``, ``dtype-carry``, ``growing-list``, ``stateful``
    must-decline constructs of the failure classes seen in real code, built
    in :mod:`fuzz.constructs` (strings, objects, indexers, optional masks,
    per-layer dicts and mixed numbers as elements; the index or an element
    as an axis, axis name, size, shape, string key, slice bound or dict key,
    directly or through a helper; boolean masks from the index; carries that
    change dtype; growing list carries; NNX objects whose calls change
    state);
``numpy-host``
    must-decline: the whole program computes with NumPy on NumPy inputs
    (``np.zeros_like`` buffers, ``np.ndarray`` annotations, ``np.tanh``): a
    host loop that must stay NumPy;
``index-arith``
    must-rewrite: arithmetic on the loop index (``DECAY ** (t + 1)``,
    ``x * (t + 1.0)``, ...) that must stay weakly typed; such programs are
    also compared under strict dtype promotion and with 64-bit types
    (``Program.modes``);
``pytree-outputs``
    must-rewrite: per-step NamedTuples, tuples or dicts stacked with
    ``jax.tree.map(lambda *xs: jnp.stack(xs), *outs)``, and lists never read
    after the loop;
``stateful-pure``
    must-rewrite: an ``nnx.Linear`` only called, mutable references read or
    updated: calls whose scan is exact;
``package``
    a package of modules (:mod:`fuzz.packages`): a parameter-list builder,
    the loop over the list in another module, importers that index it, take
    its ``len`` or train it with optax; must-rewrite, or must-decline when an
    importer's use or the builder forbids the stacked layout;
``nnx``
    Flax NNX models (:mod:`fuzz.nnx_programs`): layer stacks and recurrent
    cells, must-rewrite, or must-decline with a construct a stacked module or
    a carried cell cannot keep;
``torch``
    PyTorch/XLA models and functions (:mod:`fuzz.torch_programs`): loops over
    lists of torch layers and time loops over tensors, must-rewrite, or
    must-decline with a construct that JAX would allow but PyTorch (calls are
    not assumed pure) or torch_xla's scans cannot keep.  Drawn only when asked
    for (:data:`OWN_RUN`), never in the mix.

The grammar is written once against a small *chooser* interface, so the same
code is driven by hypothesis (:func:`programs`, which shrinks) and by a seeded
``random.Random`` (:func:`generate`, for long runs).  Sizes are all different
(``T`` steps in {0, 1, 2, 5}; ``B``, ``D``, ``H`` = 3, 4, 6), so a swapped axis or a reversed order shows in the numbers.
"""

from __future__ import annotations

import random
import re
from typing import Optional, Sequence

from hypothesis import strategies as st

from fuzz import constructs, nnx_programs, packages, torch_programs
from fuzz.program import B, D, H, MUST_DECLINE, MUST_REWRITE, ArgSpec, Mark, Program, Snippet, Target

__all__ = ["ArgSpec", "Program", "MUST_DECLINE", "MUST_REWRITE", "CLASSES", "CONSTRUCTS", "ITERATIONS", "STEPS",
           "generate", "programs"]

STEPS = (5, 2, 1, 0)

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
# iterations with an index (the index-arith class needs one)
INDEX_ITERATIONS = tuple(it for it in ITERATIONS if it not in ("elements", "reversed_elements", "zip"))
RANGE_SLICES = ("range(1, T)", "range(0, T, 2)", "range(1, T, 2)", "range(T - 1)", "range(2, T)")

CONSTRUCTS = (
    "break", "continue", "return", "print", "logger", "if_value", "if_element", "if_index",
    "subscript_write", "attribute_write", "none_carry", "list_returned",
)
# constructs whose effect reaches past the inner loop: the enclosing loop must stay a loop too
ESCAPING = {"return", "print", "logger", "if_value", "if_element", "subscript_write", "attribute_write",
            "list_returned"}

#: Every class of program (see the module docstring).
CLASSES = ("basic", "non-numeric", "static-use", "bool-mask", "index-arith", "dtype-carry", "growing-list",
           "pytree-outputs", "numpy-host", "stateful", "stateful-pure", "package", "nnx", "torch")
#: Classes drawn only when asked for (``klass=``), never in the mix: their programs run on another
#: framework (``torch``: PyTorch/XLA, whose compiles are slower), and the mix stays what it was, so
#: that a seed of the mix gives the same program as before.
OWN_RUN = ("torch",)
#: Classes whose programs are must-decline / must-rewrite only; the others have both labels.
DECLINE_ONLY = ("non-numeric", "static-use", "bool-mask", "dtype-carry", "growing-list", "numpy-host", "stateful")
REWRITE_ONLY = ("index-arith", "pytree-outputs", "stateful-pure")
# how often each class is drawn, given the label (by repetition; the first option is what
# hypothesis shrinks towards)
P_DECLINE = 0.35
REWRITE_MIX = ("basic",) * 12 + ("index-arith",) * 3 + ("pytree-outputs",) * 3 + ("package",) * 2 + \
    ("stateful-pure",) + ("nnx",) * 2
DECLINE_MIX = ("basic",) * 4 + ("non-numeric", "static-use", "bool-mask", "dtype-carry", "growing-list",
                                 "numpy-host", "stateful", "package", "nnx")

LIST_CONSUMERS_2D = ("{ns}.stack({n})", "{ns}.stack({n}, axis=1)", "{ns}.stack({n}, axis=2)",
                     "{ns}.stack({n}, axis=-1)", "{ns}.array({n})", "{ns}.concatenate({n})",
                     "{ns}.concatenate({n}, axis=1)", "{ns}.concatenate({n}, axis=-1)")
LIST_CONSUMERS_0D = ("{ns}.stack({n})", "{ns}.array({n})")
ACTIVATIONS = ("{ns}.tanh({e})", "{ns}.sin({e})", "jax.nn.sigmoid({e})", "0.5 * ({e})")
NUMPY_ACTIVATIONS = ("np.tanh({e})", "np.sin({e})", "0.5 * ({e})")

# arithmetic on an index `i` that must stay weakly typed: `o` is another carry, `xp` the
# projected input; "index" is the original grammar's `xp * (i + 1)`
INDEX_TERMS = {
    "index": "{xp} * ({i} + 1)",
    "float": "{xp} * ({i} + 1.0)",
    "div": "{xp} / ({i} + 1)",
    "scaled": "{xp} * ({i} * 0.1)",
    "decay-pow": "DECAY ** ({i} + 1) * {o}",
    "bias-correction": "{o} / (1 - DECAY ** ({i} + 1))",
    "half-pow": "SCALE ** {i} * {o}",
    "beta-pow": "beta ** ({i} + 1) * {o}",  # beta: a float32 scalar argument
    "exp": "{ns}.exp(-0.1 * {i}) * {o}",
    "cos": "{ns}.cos({i} * 0.5) * {xp}",
    "recip": "{o} * (1.0 / ({i} + 1))",
}
# per-step pytree outputs: structures and their leaf-wise stacking consumers
PYTREE_STRUCTURES = ("namedtuple", "namedtuple-kw", "tuple", "dict")
PYTREE_CONSUMERS = ("jax.tree.map(lambda *xs: jnp.stack(xs), *{n})",
                    "jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *{n})",
                    "jax.tree.map(lambda *s: jnp.stack(s, axis=1), *{n})",
                    "jax.tree.map(lambda *s: jnp.stack(s, axis=-1), *{n})")
NUMPY_VARIANTS = ("buffer", "annotated", "calls")

HEADER = """\
import dataclasses
import logging
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
{imports}
logger = logging.getLogger(__name__)
SCALE = 0.5
DECAY = 0.9
BATCH = {batch}
"""

CELL = """

def cell(a, c, xp, w):
    a = {ns}.tanh(a @ w + xp)
    return a, 0.5 * c + a
"""

STEP_TUPLE = """

class Step(typing.NamedTuple):
    first: jax.Array
    second: jax.Array
"""


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

def _gen(c, klass: Optional[str] = None) -> Program:
    """One program: the label first (the chooser's first ``flag``), then the
    class (given, or drawn for the label), then the program."""
    decline = c.flag(P_DECLINE)  # always drawn first, so that a forced label is this flag
    if klass is None:
        klass = c.pick(DECLINE_MIX if decline else REWRITE_MIX)
    elif klass in DECLINE_ONLY or klass in REWRITE_ONLY:
        decline = klass in DECLINE_ONLY
    if klass == "package":
        return packages.generate_package(c, decline)
    if klass == "nnx":
        return nnx_programs.generate_nnx(c, decline)
    if klass == "torch":
        return torch_programs.generate_torch(c, decline)
    return _gen_module(c, klass, decline)


def _gen_module(c, klass: str, decline: bool) -> Program:
    numpy = klass == "numpy-host"
    ns = "np" if numpy else "jnp"
    # the new classes (but index-arith) always run steps, so that their originals run (zero steps
    # would leave an empty list to stack, say); zero steps stay in the basic and index-arith ones
    T = c.pick(STEPS if klass in ("basic", "index-arith") else STEPS[:-1])
    it = c.pick(INDEX_ITERATIONS if klass == "index-arith" else ITERATIONS)
    feats: list[str] = [f"class:{klass}", f"iter:{it}", f"T={T}"]
    numpy_variant = None
    if numpy:
        numpy_variant = c.pick(NUMPY_VARIANTS)
        feats.append(f"numpy-host:{numpy_variant}")

    layout = {"axis1": "axis1", "axis_last": "axis_last"}.get(it, "axis0")  # where the time axis of xs is
    has_us = it in ("zip", "enumerate_zip")
    # xs (and us) as arrays, or, for loops over their elements, as Python lists of arrays (whose
    # sizes are then `len(xs)` and the module's BATCH); NumPy programs take NumPy float64 arrays
    # (a scan would make them float32)
    as_list = it in ELEMENT_ITERATIONS and not numpy and c.flag(0.2)
    if as_list:
        feats.append("xs:list")
    b_expr = "BATCH" if as_list else ("xs.shape[1]" if layout == "axis0" else "xs.shape[0]")
    t_expr = "len(xs)" if as_list else {"axis0": "xs.shape[0]", "axis1": "xs.shape[1]",
                                        "axis_last": "xs.shape[-1]"}[layout]
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

    annotation = "np.ndarray" if numpy_variant == "annotated" else ""

    def array(name, shape, **kw) -> ArgSpec:
        if numpy:
            return ArgSpec(name, shape, dtype="float64", kind="numpy", annotation=annotation, **kw)
        return ArgSpec(name, shape, **kw)

    xs_shape = {"axis0": (T, B, D), "axis1": (B, T, D), "axis_last": (B, D, T)}[layout]
    args = [ArgSpec("xs", xs_shape, kind="list") if as_list else array("xs", xs_shape)]
    if has_us:
        args.append(ArgSpec("us", (T, B, D), kind="list") if as_list else array("us", (T, B, D)))
    args += [array("wx", (D, H), scale=0.5), array("wh", (H, H), scale=0.4), array("b", (H,), scale=0.5)]

    body: list[list[str]] = []  # statements of the outer body, in order
    module_extra = ""
    # the index-arith class is also compared with 64-bit types: its arrays are created float32, as
    # its arguments are (a default-dtype `jnp.zeros` would be float64 there and change a carry's
    # dtype in the original itself)
    index_terms: list[str] = []  # forms of index arithmetic used
    dt = ", jnp.float32" if klass == "index-arith" else ""

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
        init = c.pick(["arg", "zeros", "full"] + (["zeros_like"] if numpy_variant == "buffer" else []))
        if init == "arg" or init == "zeros_like":
            args.append(array(f"{name}0", (B, H)))
            pre.append(f"{name} = {name}0" if init == "arg" else f"{name} = np.zeros_like({name}0)")
        elif init == "zeros":
            pre.append(f"{name} = {ns}.zeros({hshape}{dt})")
        else:
            pre.append(f"{name} = {ns}.full({hshape}, 0.1{dt})")
    scalar = c.flag(0.35)
    if scalar:
        init = c.pick(["0.0", f"{ns}.zeros((){dt})"])
        feats.append("scalar-carry:weak" if init == "0.0" else "scalar-carry:array")
        pre.append(f"total = {init}")


    def index_term(i: str, other: str) -> str:
        options = list(INDEX_TERMS)
        if i == "i" and it == "enumerate_start":
            options.append("div-start")  # i starts at 1
        form = c.pick(options)
        index_terms.append(form)
        feats.append("term:index" if form == "index" else f"term:index:{form}")
        if form == "beta-pow" and not any(a.name == "beta" for a in args):
            args.append(array("beta", (), scale=0.5))
        if form == "div-start":
            return f"{xp} / {i}"
        return INDEX_TERMS[form].format(i=i, o=other, xp=xp, ns=ns)

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
        if kind == "index":
            return index_term(index, other)
        feats.append(f"term:{kind}")
        return {
            "matmul": f"{other} @ wh",
            "xp": xp,
            "bias": "b",
            "scaled": f"SCALE * {other}",
            "product": f"{self_name} * {ns}.tanh({other})",
            "where": f"{ns}.where({xp} > 0, {other}, -{other})",
            "sin": f"{ns}.sin({other})",
            "u": up or xp,
            "total": "0.1 * total",
            "shift": f"({shifted} @ wx)",
        }[kind]

    def update_expr(name: str) -> str:
        terms = [c.pick([f"{name} @ wh", f"0.5 * {name}", name])]
        for _ in range(c.pick([1, 2])):
            terms.append(term(name))
        act = c.pick(NUMPY_ACTIVATIONS if numpy else ACTIVATIONS)
        return act.format(e=" + ".join(terms), ns=ns)

    # an iteration-local value, maybe used after the loop (its last value)
    z_local = c.flag(0.3)
    z_after = False
    if z_local:
        body.append([f"z = {ns}.tanh({xp} + {names[0]})"])
        feats.append("local")
        z_after = c.flag(0.5)
        if z_after:
            if c.flag(0.5):
                pre.append(f"z = {ns}.zeros({hshape}{dt})")
                feats.append("last-value:bound-before")
            else:
                feats.append("last-value")

    # the inner loop (nested), which replaces the update of the first carry
    inner: Optional[Target] = None
    nested = c.pick([None, None, "count", "rows"])
    first_update_at = len(body)
    if nested == "count":
        K = c.pick([2, 3])
        feats.append("nested:count")
        inner = Target("inner", "acc", hshape, 2, "j", "acc", rows="acc")  # `xp` is loop-invariant for the inner loop
        extra = ""
        if klass == "index-arith" and c.flag(0.5):
            extra = " + 0.1 * " + index_term("j", "acc")
        inner.body = [[f"acc = {ns}.tanh(acc @ wh + {xp}{extra})"]]
        body.append(["acc = " + names[0]])
        body.append(("INNER", f"for j in range({K}):"))
        body.append([f"{names[0]} = 0.5 * {names[0]} + acc"])
    elif nested == "rows":
        feats.append("nested:rows")
        inner = Target("inner", "s", "(wx.shape[1],)", 1, None, "r")
        inner.body = [[f"s = s * 0.5 + {ns}.sin(r)"]]
        body.append([f"s = {ns}.zeros(wx.shape[1]{dt})"])
        body.append(("INNER", f"for r in {xp}:"))
        body.append([f"{names[0]} = {ns}.tanh({names[0]} + s)"])

    # carry updates
    todo = names[1:] if inner is not None else list(names)
    if len(todo) >= 2 and c.flag(0.4):
        a, b_ = todo[0], todo[1]
        if c.flag(0.5):
            module_extra = CELL.format(ns=ns)
            body.append([f"{a}, {b_} = cell({a}, {b_}, {xp}, wh)"])
            feats.append("tuple-unpack:cell")
        else:
            body.append([f"{a}, {b_} = {update_expr(a)}, {update_expr(b_)}"])
            feats.append("tuple-unpack")
        todo = todo[2:]
    for name in todo:
        body.append([f"{name} = {update_expr(name)}"])
    if klass == "index-arith" and not index_terms:
        # the updates drew no index term: add one (the class is about them)
        body.append([f"{names[0]} = 0.5 * {names[0]} + 0.1 * {index_term(index, names[-1])}"])
    # the per-step input takes part in the computation: elements a loop never reads show nothing
    # about what the sequence holds (the tool declines such loops, L2S310)
    reads = [line for stmt in body if not isinstance(stmt, tuple) for line in stmt if not line.startswith("xp = ")]
    reads += [line for stmt in (inner.body if inner is not None else []) for line in stmt]
    if not any(re.search(r"\bxp\b", line) if xp == "xp" else xp in line for line in reads):
        body.append([f"{names[0]} = {names[0]} + 0.1 * {ns}.tanh({xp})"])
        feats.append("input-read-added")
    if scalar:
        red = c.pick([f"{ns}.sum", f"{ns}.mean"])
        pos = c.position(len(body) - first_update_at) + first_update_at
        body.insert(pos, [f"total = total + {red}({c.pick(names)}) * 0.1"])

    # per-step outputs
    returns: list[str] = []
    n_out = c.pick([0, 1, 1, 2])
    if klass == "pytree-outputs":
        n_out = max(n_out, 1)
    out_names = ["outs", "ys"]
    kinds_allowed = ["list", "list", "tuple"] + (["at"] if index_is_position and not numpy else [])
    if not numpy:
        kinds_allowed += ["pytree", "unread"] if klass == "pytree-outputs" else []
    for k in range(n_out):
        kind = c.pick(kinds_allowed)
        if klass == "pytree-outputs" and k == 0:
            kind = c.pick(["pytree", "pytree", "unread"])
        lo = 1 if xp == "xp" else 0  # after `xp = ...`
        pos = lo + c.position(len(body) - lo)
        n = out_names[k]
        if kind in ("pytree", "unread"):
            module_extra += _pytree_output(c, kind, n, names, xp, it, pre, body, pos, returns, feats)
            continue
        yk = c.pick(["carry", "scaled", "sum", "input"])
        carry_y = c.pick(names)
        y = {"carry": carry_y, "scaled": f"{carry_y} * 2.0", "sum": f"{ns}.sum({carry_y})",
             "input": f"{ns}.tanh({xp})"}[yk]
        feats.append(f"y:{yk}")
        if kind == "at" and yk == "sum":
            y = carry_y
        if kind == "list":
            pre.append(f"{n} = []")
            body.insert(pos, [f"{n}.append({y})"])
            consumer = c.pick(LIST_CONSUMERS_0D if yk == "sum" else LIST_CONSUMERS_2D)
            feats.append("ys:jnp." + consumer.split("(")[0].split(".")[1] + ("(axis)" if "axis" in consumer else ""))
            if it in ("reversed_range", "reversed_elements", "descending") and c.flag(0.3):
                consumer = consumer.replace("{n}", "{n}[::-1]")  # flip back to index order
                feats.append("ys:flipped")
            returns.append(consumer.format(n=n, ns=ns))
            returns += _extra_uses(c, n, feats)
        elif kind == "tuple":
            pre.append(f"{n} = ()")
            body.insert(pos, [f"{n} += ({y},)"])
            axis = c.pick(["", ", axis=1", ", axis=-1"]) if yk != "sum" else ""
            feats.append("ys:tuple")
            returns.append(f"{ns}.stack({n}{axis})")
            returns += _extra_uses(c, n, feats)
        else:
            n = "out" if k == 0 else "out2"
            if layout == "axis1":
                pre.append(f"{n} = jnp.zeros(({b_expr}, {t_expr}, wx.shape[1]){dt})")
                body.insert(pos, [f"{n} = {n}.at[:, {index}].set({y})"])
                feats.append("ys:at[:, t]")
            elif layout == "axis_last":
                pre.append(f"{n} = jnp.zeros(({b_expr}, wx.shape[1], {t_expr}){dt})")
                body.insert(pos, [f"{n} = {n}.at[..., {index}].set({y})"])
                feats.append("ys:at[..., t]")
            else:
                pre.append(f"{n} = jnp.zeros(({t_expr}, {b_expr}, wx.shape[1]){dt})")
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

    # --- the construct: a must-decline one, or the stateful-pure class's calls
    construct = construct_loop = None
    outer = Target("outer", names[0], hshape, 2, index, px, rows=px, body=body, first=1 if xp == "xp" else 0)
    loops = [outer] + ([inner] if inner is not None else [])
    inner_pre: list[str] = []  # statements right before the inner loop (in the outer body)
    snippet: Optional[Snippet] = None
    target: Optional[Target] = None
    imports: list[str] = []
    if decline and klass == "basic":
        construct = c.pick(CONSTRUCTS)
        fits = [lp for lp in loops if construct != "if_index" or lp.index is not None]
        if not fits:  # no index to branch on: branch on the per-step element instead
            construct, fits = "if_element", loops
        target = c.pick(fits)
        construct_loop = target.which
        stmt = _basic_construct(c, construct, target, pre, inner_pre, returns)
        feats.append(f"construct:{construct}:{construct_loop}")
        tb = target.body
        tb.insert(c.position(len(tb)), stmt)
    elif klass in constructs.DECLINE_CLASSES or klass == "stateful-pure":
        build = constructs.stateful_pure if klass == "stateful-pure" else constructs.DECLINE_CLASSES[klass]
        target = c.pick(loops)
        ctx = constructs.Ctx(steps=T, zip_ok=it in ("elements", "enumerate") and decline, xp=xp,
                             outer_index=index if index_is_position else None)
        snippet = build(c, target, ctx)
        construct = snippet.name
        construct_loop = target.which
        pre += snippet.pre
        module_extra += snippet.module
        args += snippet.args
        returns += snippet.returns
        imports += snippet.imports
        if snippet.zip_seq is not None:
            head = _zip_head(it, snippet.zip_seq, snippet.zip_elem)
            construct_loop = "zip"
        elif any(isinstance(line, Mark) for line in snippet.stmt):
            construct_loop = "own"
        feats += [snippet.name, *snippet.tags, f"{klass}:target:{target.which}"]
        tb = target.body
        first = target.first if target.which == "outer" else 0
        tb.insert(first + c.position(len(tb) - first), snippet.stmt)

    # --- render
    # parameters with a default come last, in the order they were added
    args = [a for a in args if not (a.default or not a.passed)] + [a for a in args if a.default or not a.passed]
    lines = [f"def f({', '.join(a.signature() for a in args)}):"]
    own_loops: list[int] = []

    def emit(indent: str, stmt_lines) -> None:
        for s in stmt_lines:
            lines.append(indent + s)
            if isinstance(s, Mark):
                own_loops.append(len(lines))

    emit("    ", pre)
    lines.append("    " + head)
    loop_lines = [len(lines)]
    for stmt in body:
        if isinstance(stmt, tuple):  # the inner loop
            emit("        ", inner_pre)
            lines.append("        " + stmt[1])
            loop_lines.append(len(lines))
            for inner_stmt in inner.body:
                emit("            ", inner_stmt)
        else:
            emit("        ", stmt)
    lines.append("    return " + ", ".join(returns))

    imports_text = "".join(line + "\n" for line in dict.fromkeys(imports))
    header = HEADER.format(batch=B, imports=imports_text) + module_extra + "\n\n"
    offset = header.count("\n")
    source = header + "\n".join(lines) + "\n"
    loop_lines = [offset + n for n in loop_lines]
    own_loops = [offset + n for n in own_loops]

    must_not: list[int] = []
    if numpy:
        must_not = loop_lines + own_loops
        construct, construct_loop = f"numpy-host:{numpy_variant}", "outer"
    elif decline and snippet is None:
        if construct_loop == "outer":
            must_not = [loop_lines[0]]
        else:
            must_not = [loop_lines[1]] + ([loop_lines[0]] if construct in ESCAPING else [])
    elif decline:
        if snippet.untraceable:
            must_not = own_loops + loop_lines[:2 if target.which == "inner" else 1]
        elif own_loops:
            must_not = own_loops
        elif snippet.zip_seq is not None or target.which == "outer":
            must_not = [loop_lines[0]]
        else:
            must_not = [loop_lines[1]] + ([loop_lines[0]] if snippet.escapes else [])
    modes = ("strict", "x64") if klass == "index-arith" else ()
    if modes:
        feats.append("modes:strict,x64")
    return Program(
        source=source,
        args=tuple(args),
        label=MUST_DECLINE if decline else MUST_REWRITE,
        loops=tuple(loop_lines + own_loops),
        must_not_rewrite=tuple(sorted(must_not)),
        construct=construct,
        construct_loop=construct_loop,
        steps=T,
        features=tuple(dict.fromkeys(feats)),
        klass=klass,
        modes=modes,
    )


def _basic_construct(c, construct: str, target: Target, pre: list, inner_pre: list, returns: list) -> list[str]:
    """The statement of one of the original grammar's must-decline constructs."""
    cv = target.carry
    if construct == "break":
        return ["break"]
    if construct == "continue":
        return ["continue"]
    if construct == "return":
        return [f"return {cv}"]
    if construct == "print":
        return [f'print("step", {cv}.shape)']
    if construct == "logger":
        return [f'logger.info("step %s", {cv}.shape)']
    if construct == "if_value":
        return [f"if {cv}.sum() > 0:", f"    {cv} = -{cv}"]
    if construct == "if_element":
        return [f"if jnp.max({target.element}) > 0.5:", f"    {cv} = {cv} * 0.5"]
    if construct == "if_index":
        return [f"if {target.index} % 2 == 0:", f"    {cv} = {cv} * 0.5"]
    if construct == "subscript_write":
        pre.append(f"buf = np.zeros((16,) + {target.carry_shape}, dtype=np.float32)")
        returns.append("buf")
        return [f"buf[{target.index or 0}] = {cv}"]
    if construct == "attribute_write":
        pre.append("state = types.SimpleNamespace(x=None)")
        returns.append("state.x")
        return [f"state.x = {cv}"]
    if construct == "none_carry":
        plain = target.which == "outer" and c.flag(0.5)
        (pre if target.which == "outer" else inner_pre).append("prev = None")
        if plain:  # written first, live after the loop, bound to None before it
            returns.append("prev")
            return [f"prev = {cv}"]
        return ["if prev is not None:", f"    {cv} = {cv} + 0.5 * prev", f"prev = {cv}"]
    # list_returned
    pre.append("saved = []")
    returns.append("saved")
    return [f"saved.append({cv})"]


def _zip_head(it: str, seq: str, elem: str) -> str:
    """The outer loop's head, zipping ``seq`` in as ``elem``."""
    if it == "elements":
        return f"for x, {elem} in zip(xs, {seq}):"
    assert it == "enumerate", it
    return f"for i, (x, {elem}) in enumerate(zip(xs, {seq})):"


def _pytree_output(c, kind: str, n: str, names: list[str], xp: str, it: str, pre: list, body: list, pos: int,
                   returns: list, feats: list) -> str:
    """A per-step pytree collected in ``n`` and stacked leaf by leaf after the
    loop, or (``unread``) a list never read after the loop.  Returns the
    module-level code it needs."""
    carry = c.pick(names)
    leaves = [carry, f"{carry} * 2.0", f"jnp.tanh({xp})", f"jnp.sum({carry})"]
    if kind == "unread":
        y = c.pick(leaves + [f"({carry}, {xp})"])
        pre.append(f"{n} = []")
        body.insert(pos, [f"{n}.append({y})"])
        feats.append("ys:unread")
        return ""
    first, second = c.pick(leaves[:3]), c.pick(leaves)
    structure = c.pick(PYTREE_STRUCTURES)
    y = {"namedtuple": f"Step({first}, {second})", "namedtuple-kw": f"Step(first={first}, second={second})",
         "tuple": f"({first}, {second})", "dict": f'{{"first": {first}, "second": {second}}}'}[structure]
    scalar_leaf = second.startswith("jnp.sum")
    consumers = PYTREE_CONSUMERS[:2] if scalar_leaf else PYTREE_CONSUMERS  # a scalar leaf has no axis 1
    consumer = c.pick(consumers)
    accumulate = "tuple" if structure == "tuple" and c.flag(0.3) else "list"
    if accumulate == "tuple":
        pre.append(f"{n} = ()")
        body.insert(pos, [f"{n} += ({y},)"])
    else:
        pre.append(f"{n} = []")
        body.insert(pos, [f"{n}.append({y})"])
    returns.append(consumer.format(n=n))
    feats += [f"ys:pytree:{structure}", f"ys:pytree:{accumulate}",
              "ys:pytree:" + ("axis" if "axis" in consumer else ("tree_util" if "tree_util" in consumer else "map"))]
    return STEP_TUPLE if structure.startswith("namedtuple") else ""


def _extra_uses(c, n: str, feats: list) -> list[str]:
    """Other uses of an accumulator after the loop that the stacked array can serve."""
    extra = c.pick([None, None, None, "len", "last", "first"])
    if extra is None:
        return []
    feats.append(f"ys-use:{extra}")
    return [{"len": f"len({n})", "last": f"{n}[-1]", "first": f"{n}[0]"}[extra]]


@st.composite
def programs(draw, label: Optional[str] = None, klass: Optional[str] = None) -> Program:
    """A hypothesis strategy of labelled programs (``label`` fixes the label,
    ``klass`` the class)."""
    chooser = DrawChooser(draw)
    return _gen(_Forced(chooser, label) if label is not None else chooser, klass)


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


def generate(seed: int, label: Optional[str] = None, klass: Optional[str] = None) -> Program:
    """One program from a seed (deterministic); ``label`` fixes the label,
    ``klass`` the class (a class with one label fixes that label too)."""
    chooser = RandomChooser(random.Random(seed))
    return _gen(_Forced(chooser, label) if label is not None else chooser, klass)

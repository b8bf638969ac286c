"""Flax NNX programs (the ``nnx`` class): a model whose ``__call__`` loops over
a stack of layer modules, or over time calling a recurrent cell.

Each program is one module with the classes and ``build(rngs)``, which
returns the model; ``Program.args`` are the arguments of the model's call.
It is rewritten with the ``flax`` target and judged by
:func:`fuzz.harness.run_program`: the original and the rewritten module each
build their model from the same seed, the original's whole state (weights,
RNG keys and counts) is copied into the rewritten one's layout, and the two
models are called twice (dropout on: the masks must match, and the RNG counts
must advance alike), then differentiated with respect to every ``nnx.Param``
and the first input.

``must-rewrite`` programs vary the layer (a residual ``Linear``, with a mask,
with dropout and a ``deterministic`` flag), how the stack is built (a
comprehension in ``nnx.List``, an ``append`` loop), the number of layers
(1, 2, 5), a second carry, and where the model runs (``@nnx.jit`` on the
method, or eagerly with array annotations); cells run over the time axis of
batch-major inputs, time-major inputs, or reversed, collecting their outputs
or not.  ``must-decline`` programs add one construct a stacked module or a
carried cell cannot keep: an argument that depends on the layer index, a
different first layer, ``len(self.layers)``, a read of a layer's attribute,
a shared module of ``self`` called in the body, a method of ``self`` called
in the body, ``print``, or ``break``.
"""

from __future__ import annotations

from fuzz.program import B, D, H, MUST_DECLINE, MUST_REWRITE, ArgSpec, Program

LAYERS = (1, 2, 5)
STEPS = (1, 2, 5)
BLOCKS = ("residual", "masked", "dropout")
BUILDS = ("comprehension", "append")
CELL_ITERATIONS = ("axis1", "time-major", "reversed")
STACK_DECLINES = ("index-arg", "first-differs", "len", "layer-attr", "shared-call", "print", "break")
CELL_DECLINES = ("method-call", "print", "break")

HEADER = "import jax\nimport jax.numpy as jnp\nfrom flax import nnx\n"


def generate_nnx(c, decline: bool) -> Program:
    kind = c.pick(("stack", "cell"))
    return _stack(c, decline) if kind == "stack" else _cell(c, decline)


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _loop_lines(source: str) -> list[int]:
    import ast

    return sorted(n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.For))


def _stack(c, decline: bool) -> Program:
    block = c.pick(BLOCKS)
    build = c.pick(BUILDS)
    n = c.pick(LAYERS)
    second = c.flag(0.3)
    jit = c.flag(0.6)
    construct = c.pick(STACK_DECLINES) if decline else None
    features = ["class:nnx", f"nnx:stack-{block}", f"nnx:build-{build}", f"nnx:layers-{n}", f"nnx:{'jit' if jit else 'eager'}"]
    if second:
        features.append("nnx:two-carries")
    call_args = ["x"] + (["mask"] if block == "masked" else [])
    block_params = ", ".join(call_args) + (", *, deterministic: bool = False" if block == "dropout" else "")
    body = "        y = jnp.tanh(self.lin(x))\n"
    if block == "dropout":
        body += "        y = self.drop(y, deterministic=deterministic)\n"
    if block == "masked":
        body += "        y = y * mask\n"
    block_src = (
        "\n\nclass Block(nnx.Module):\n"
        "    def __init__(self, d, *, rngs):\n"
        "        self.lin = nnx.Linear(d, d, rngs=rngs)\n"
        + ("        self.drop = nnx.Dropout(0.3, rngs=rngs)\n" if block == "dropout" else "")
        + f"\n    def __call__(self, {block_params}):\n" + body + "        return x + y\n")
    element = "Block(d, rngs=rngs)"
    index = "_"
    if construct == "index-arg":
        element, index = "Block(d + 0 * i, rngs=rngs)", "i"
    extra_init = ""
    if construct == "shared-call":
        extra_init = "        self.norm = nnx.Dropout(0.1, rngs=rngs)\n"
    if build == "comprehension" or construct == "first-differs":
        listed = f"[{element} for {index} in range(n)]"
        if construct == "first-differs":
            listed = f"[nnx.Linear(d, d, rngs=rngs)] + {listed}"
        init = f"        self.layers = nnx.List({listed})\n"
    else:
        init = (f"        self.layers = nnx.List()\n"
                f"        for {index} in range(n):\n"
                f"            self.layers.append({element})\n")
    layer_args = ", ".join(call_args) + (", deterministic=False" if block == "dropout" else "")
    call = f"layer({layer_args})"
    if construct == "layer-attr":
        call = "layer.lin(x)"
    if construct == "shared-call":
        call = f"self.norm({call})"
    step = [f"            x = {call}"]
    if second:
        step.append("            y = y + 0.5 * x")
    if construct == "print":
        step.append("            print(x.shape)")
    if construct == "break":
        step += ["            if n > 100:", "                break"]
    sig = ", ".join(f"{a}: jax.Array" if not jit else a for a in call_args)
    returns = "x, y" if second else "x"
    if construct == "len":
        returns = "x / len(self.layers)" if not second else "x / len(self.layers), y"
    method = ("    @nnx.jit\n" if jit else "") + f"    def __call__(self, {sig}):\n"
    pre = ["        y = jnp.zeros_like(x)"] if second else []
    if construct == "break":
        pre.append(f"        n = {n}")
    model = (
        "\n\nclass Model(nnx.Module):\n"
        "    def __init__(self, d, n, *, rngs):\n" + init + extra_init + "\n" + method
        + "".join(p + "\n" for p in pre)
        + "        for layer in self.layers:\n" + "".join(s + "\n" for s in step)
        + f"        return {returns}\n")
    source = HEADER + block_src + model + f"\n\ndef build(rngs):\n    return Model({D}, {n}, rngs=rngs)\n"
    loops = _loop_lines(source)
    call_line = next(i for i, text in enumerate(source.split("\n"), 1) if text.strip() == "for layer in self.layers:")
    args = [ArgSpec("x", (B, D))] + ([ArgSpec("mask", (B, D))] if block == "masked" else [])
    return Program(source=source, args=tuple(args), label=MUST_DECLINE if decline else MUST_REWRITE,
                   loops=tuple(loops), must_not_rewrite=(call_line,) if decline else (),
                   free_loops=tuple(line for line in loops if line != call_line), construct=construct,
                   construct_loop="outer" if decline else None, steps=n,
                   features=tuple(features + ([f"nnx:decline-{construct}"] if construct else [])),
                   fn="build", klass="nnx")


def _cell(c, decline: bool) -> Program:
    it = c.pick(CELL_ITERATIONS)
    t = c.pick(STEPS)
    collect = c.flag(0.5)
    dropout = c.flag(0.5)
    construct = c.pick(CELL_DECLINES) if decline else None
    features = ["class:nnx", f"nnx:cell-{it}", f"nnx:steps-{t}"] + (["nnx:collect"] if collect else []) + \
        (["nnx:cell-dropout"] if dropout else [])
    cell_src = (
        "\n\nclass Cell(nnx.Module):\n"
        "    def __init__(self, d, h, *, rngs):\n"
        "        self.wx = nnx.Linear(d, h, rngs=rngs)\n"
        "        self.wh = nnx.Linear(h, h, rngs=rngs)\n"
        + ("        self.drop = nnx.Dropout(0.25, rngs=rngs)\n" if dropout else "")
        + "\n    def __call__(self, h, x):\n"
        + ("        return jnp.tanh(self.wx(x) + self.drop(self.wh(h)))\n" if dropout
           else "        return jnp.tanh(self.wx(x) + self.wh(h))\n"))
    if it == "axis1":
        header, read, shape, stack = "for t in range(xs.shape[1]):", "xs[:, t]", (B, t, D), "jnp.stack(outs, axis=1)"
    elif it == "time-major":
        header, read, shape, stack = "for x in xs:", "x", (t, B, D), "jnp.stack(outs)"
    else:
        header, read, shape, stack = "for x in reversed(xs):", "x", (t, B, D), "jnp.stack(outs[::-1])"
    step = [f"            h = self.cell(h, {read})"]
    if construct == "method-call":
        step.append("            h = self.squash(h)")
    if construct == "print":
        step.append("            print(h.shape)")
    if construct == "break":
        step += ["            if xs.shape[0] > 100:", "                break"]
    if collect:
        step.append("            outs.append(h)")
    method_extra = "\n    def squash(self, h):\n        return 0.5 * h\n" if construct == "method-call" else ""
    model = (
        "\n\nclass Model(nnx.Module):\n"
        "    def __init__(self, d, h, *, rngs):\n"
        "        self.cell = Cell(d, h, rngs=rngs)\n"
        + method_extra
        + "\n    @nnx.jit\n    def __call__(self, xs: jax.Array, h: jax.Array):\n"
        + ("        outs = []\n" if collect else "")
        + f"        {header}\n" + "".join(s + "\n" for s in step)
        + (f"        return h, {stack}\n" if collect else "        return h\n"))
    source = HEADER + cell_src + model + f"\n\ndef build(rngs):\n    return Model({D}, {H}, rngs=rngs)\n"
    loops = _loop_lines(source)
    return Program(source=source, args=(ArgSpec("xs", shape), ArgSpec("h", (B, H))),
                   label=MUST_DECLINE if decline else MUST_REWRITE, loops=tuple(loops),
                   must_not_rewrite=tuple(loops) if decline else (), construct=construct,
                   construct_loop="outer" if decline else None, steps=t,
                   features=tuple(features + ([f"nnx:decline-{construct}"] if construct else [])),
                   fn="build", klass="nnx")

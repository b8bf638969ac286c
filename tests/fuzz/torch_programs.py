"""PyTorch/XLA programs (the ``torch`` class): a model whose ``forward`` loops
over a list of torch layers (``scan_layers``), a model whose ``forward`` runs
a recurrent cell over the time axis of a tensor, or a function of annotated
tensors with a time loop (torch_xla's ``scan``).

Each program is one module holding its classes and ``build()``, which returns
the model (an ``nn.Module``) or the function; ``Program.args`` are the
arguments of its call (float32 tensors, boolean masks, Python values).  It is
rewritten with the ``torch_xla`` target and judged by
:func:`fuzz.harness.run_program`: the original and the rewritten module each
build their model after the same ``torch.manual_seed``, the rewritten model
loads the original's ``state_dict`` (``strict=True``: the rewrite keeps the
parameter layout), and both run on the XLA device in eval mode; the outputs,
and the gradients of a random projection of them with respect to every
floating-point input and every parameter, must agree.

``must-rewrite`` programs vary, for layer stacks: the layer (a residual
``Linear``, a LayerNorm and MLP, a float or boolean mask passed to every
layer, two carries returned as a tuple, an HF-style tuple output, an
``nn.Parameter``, a Python flag branched on inside the layer, constructor
arguments that are the same for every layer), how the list is built
(``nn.ModuleList`` of a comprehension, an ``append`` loop, ``nn.Sequential``),
the order (forwards, ``reversed``, a slice), the number of layers (1, 2, 4) and
the body (torch ops on the result, a Python float or an outside tensor read
from the method's parameters, a temporary, a second carry).  For time loops:
the cell (``nn.GRUCell``, ``nn.RNNCell``, ``nn.LSTMCell`` with two carries, a
cell class of the program, ``Linear`` layers called in the body; or a plain
function of annotated tensors), the iteration (``range(x.size(1))`` with
``x[:, t]``, ``range(x.shape[0])`` with ``x[t]``, the elements, ``x.unbind(1)``,
``torch.unbind(x, dim=1)``, ``reversed(range(...))``, ``zip`` of two tensors),
torch ops on the carry, a second carry, an outside tensor, a tensor computed
before the loop, Python flags and floats (branched on, or in arithmetic), and
per-step outputs (one or two lists, stacked on dims 0, 1, 2 or -1, reversed
back with ``[::-1]``, the last one read).  Steps are 4 or 1: with no step
torch_xla's scan raises (a documented limitation), so zero steps are not
generated.

``must-decline`` programs add one construct that would be fine in JAX but that
PyTorch semantics or torch_xla's scans cannot keep (design notes, section 2):
``h += ...`` and ``h.add_(...)`` in the body or in a layer, a per-step write
``out[t] = h``, ``.item()``, ``print``, random numbers (``torch.randn_like``,
dropout in a layer or called in the body), ``~`` on a boolean mask, a layer
or cell writing ``self.<attr>`` in ``forward``, BatchNorm in a layer (or
called in a time loop), layer constructor arguments that depend on the layer
index (a scale: the scan would silently run layer 0's; a width: the layers
cannot be stacked), a method of ``self`` called in a time loop, and a tensor
attribute of ``self`` read in a time loop.
"""

from __future__ import annotations

import ast

from fuzz.program import MUST_DECLINE, MUST_REWRITE, ArgSpec, Program

# batch, input width, hidden width: all different from each other and from every step count
B, D, H = 3, 5, 7
STEPS = (4, 1)
LAYERS = (1, 2, 4)

KINDS = ("stack", "cell", "function")
BLOCKS = ("residual", "mlp", "masked", "masked-bool", "pair", "tuple-out", "param", "flag", "ctor-args")
BUILDS = ("comprehension", "append", "sequential")
ORDERS = ("forward", "reversed", "slice")
STACK_BODIES = ("plain", "act", "scaled", "gain", "temp", "two-carries")
CELLS = ("gru", "rnn", "lstm", "elman", "linear")
ITERATIONS = ("axis1", "axis0", "elements", "unbind", "torch-unbind", "reversed", "reversed-axis1", "zip",
              "zip-unbind")
# iterations with an index (a per-step buffer write needs one)
INDEX_ITERATIONS = ("axis1", "axis0", "reversed", "reversed-axis1")
BATCH_MAJOR = ("axis1", "unbind", "torch-unbind", "reversed-axis1", "zip-unbind")
EXTRAS = ("op", "gain", "flag", "leak", "second-carry", "local-tensor")
OUTPUTS = ("none", "carry", "act", "proj", "two-lists", "reduced")

STACK_DECLINES = ("iadd", "add_", "layer-add_", "item", "layer-item", "print", "layer-print", "randn",
                  "layer-randn", "dropout", "invert", "layer-invert", "self-write", "batchnorm", "index-scale",
                  "index-width")
TIME_DECLINES = ("iadd", "add_", "subscript-write", "item", "print", "randn", "dropout", "invert", "cell-write",
                 "method-call", "tensor-attr", "batchnorm")
# the constructs a plain function can hold (no `self`)
FUNCTION_DECLINES = ("iadd", "add_", "subscript-write", "item", "print", "randn", "invert")

HEADER = ("from typing import Optional\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
          "import torch_xla\n")


def generate_torch(c, decline: bool) -> Program:
    kind = c.pick(KINDS)
    if kind == "stack":
        return _stack(c, decline)
    return _time(c, decline, kind)


def _loop_lines(source: str) -> list[int]:
    return sorted(n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.For))


def _line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.split("\n"), 1) if line.strip() == text)


def _indent(lines: list[str], n: int) -> str:
    return "".join(" " * n + line + "\n" for line in lines)


def _python_arg(c, name: str, annotation: str, default: str, values: tuple, features: list) -> ArgSpec:
    """A Python value of the call: passed (one of ``values``) or left to its default."""
    if c.flag(0.5):
        features.append("torch:python-passed")
        return ArgSpec(name, kind="python", value=c.pick(values), default=default, annotation=annotation)
    features.append("torch:python-default")
    return ArgSpec(name, kind="omitted", value=default, annotation=annotation)


# ----------------------------------------------------------------------------- layer stacks

def _stack(c, decline: bool) -> Program:
    construct = c.pick(STACK_DECLINES) if decline else None
    block = c.pick(BLOCKS)
    build = c.pick(BUILDS)
    order = c.pick(ORDERS)
    n = c.pick(LAYERS)
    body_kind = c.pick(STACK_BODIES)
    norm_after = c.flag(0.4)
    # what a construct needs of the block and the body
    if construct in ("invert", "layer-invert"):
        block = "masked-bool"
    elif construct in ("index-scale", "index-width"):
        block = "ctor-args"
    elif construct in ("layer-add_", "dropout", "batchnorm"):
        block = "residual"  # the construct replaces the residual block's `forward`
    elif construct in ("layer-item", "layer-print", "layer-randn", "self-write") and \
            block not in ("residual", "mlp", "masked", "param"):
        block = "residual"  # blocks with one `return` of one tensor
    elif construct is not None and block not in ("residual", "mlp", "masked", "param", "tuple-out"):
        block = "residual"  # the body's `h` is a sum: updating it in place leaves the gradients computable
    if construct in ("iadd", "add_", "item", "print", "randn", "invert"):
        body_kind = "plain"  # the construct's statement follows `h = layer(h)` (an addition: in place is fine)
    if block in ("pair", "tuple-out") and body_kind == "temp":
        body_kind = "plain"
    if block == "pair" and body_kind != "act":
        body_kind = "plain"  # the pair block has two carries already, and the body unpacks them
    features = ["class:torch", "torch:stack", f"torch:block-{block}", f"torch:build-{build}",
                f"torch:order-{order}", f"torch:layers-{n}", f"torch:body-{body_kind}"]

    # ------------------------------------------------------------------ the layer class
    init = ["super().__init__()"]
    ctor = "d"
    fwd_params = ["h"]
    fwd: list[str] = []
    if block == "mlp":
        init += ["self.norm = nn.LayerNorm(d)", "self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), "
                 "nn.Linear(2 * d, d))"]
        fwd.append("return h + self.mlp(self.norm(h))")
    elif block == "masked":
        init.append("self.lin = nn.Linear(d, d)")
        fwd_params.append("mask")
        fwd.append("return h + torch.tanh(self.lin(h)) * mask")
    elif block == "masked-bool":
        init.append("self.lin = nn.Linear(d, d)")
        fwd_params.append("mask")
        if construct == "layer-invert":
            fwd.append("return torch.where(~mask, h, h + torch.tanh(self.lin(h)))")
        else:
            fwd.append("return torch.where(mask, h + torch.tanh(self.lin(h)), h)")
    elif block == "pair":
        init.append("self.mix = nn.Linear(2 * d, d)")
        fwd_params.append("r")
        fwd += ["new = torch.tanh(self.mix(torch.cat([h, r], dim=-1)))", "return new, r + 0.5 * new"]
    elif block == "tuple-out":
        init.append("self.lin = nn.Linear(d, d)")
        fwd += ["out = h + torch.tanh(self.lin(h))", "return out, torch.sigmoid(out)"]
    elif block == "param":
        init += ["self.lin = nn.Linear(d, d)", "self.gain = nn.Parameter(torch.full((d,), 0.5))"]
        fwd.append("return h + self.gain * torch.tanh(self.lin(h))")
    elif block == "flag":
        init.append("self.lin = nn.Linear(d, d)")
        fwd_params.append("residual: bool = True")
        fwd += ["y = torch.tanh(self.lin(h))", "if residual:", "    return h + y", "return y"]
    elif block == "ctor-args":
        ctor = "d, hidden, scale=1.0"
        init += ["self.scale = scale", "self.up = nn.Linear(d, hidden)", "self.down = nn.Linear(hidden, d)"]
        fwd.append("return h + self.scale * self.down(F.gelu(self.up(h)))")
    else:  # residual
        init.append("self.lin = nn.Linear(d, d)")
        fwd.append("return h + torch.tanh(self.lin(h))")
    # constructs inside the layer
    if construct == "layer-add_":
        fwd = ["y = self.lin(h)", "y.add_(h)", "return h + torch.tanh(y)"]
    elif construct == "layer-item":
        fwd = ["s = h.abs().mean().item()"] + fwd[:-1] + [fwd[-1].replace("return ", "return (") + ") / (1.0 + s)"]
    elif construct == "layer-print":
        fwd = ["print(h.shape)"] + fwd
    elif construct == "layer-randn":
        fwd[-1] += " + 0.01 * torch.randn_like(h)"
    elif construct == "dropout":
        init.append("self.drop = nn.Dropout(0.1)")
        fwd = ["return h + self.drop(torch.tanh(self.lin(h)))"]
    elif construct == "self-write":
        init.append("self.calls = 0")
        fwd = ["self.calls = self.calls + 1", "self.last = h"] + fwd
    elif construct == "batchnorm":
        init.append("self.bn = nn.BatchNorm1d(d)")
        fwd = ["return h + torch.tanh(self.lin(self.bn(h)))"]
    block_src = ("\n\nclass Block(nn.Module):\n"
                 f"    def __init__(self, {ctor}):\n" + _indent(init, 8)
                 + f"\n    def forward(self, {', '.join(fwd_params)}):\n" + _indent(fwd, 8))

    # ------------------------------------------------------------------ the model
    index = "_"
    element = "Block(d)"
    if block == "ctor-args":
        element = "Block(d, 2 * d, scale=0.5)"
        if construct == "index-scale":
            element, index = "Block(d, 2 * d, scale=0.5 * (i + 1))", "i"
        elif construct == "index-width":
            element, index = "Block(d, d * (i + 1))", "i"
    model_init = ["super().__init__()"]
    if build == "comprehension":
        model_init.append(f"self.layers = nn.ModuleList([{element} for {index} in range(n)])")
    elif build == "sequential":
        model_init.append(f"self.layers = nn.Sequential(*[{element} for {index} in range(n)])")
    else:
        model_init += ["self.layers = nn.ModuleList()", f"for {index} in range(n):",
                       f"    self.layers.append({element})"]
    n_active = max(1, n - 1)
    if order == "slice":
        model_init.append(f"self.n_active = {n_active}")
        iterable = "self.layers[: self.n_active]"
    elif order == "reversed":
        iterable = "reversed(self.layers)"
    else:
        iterable = "self.layers"
    if norm_after:
        model_init.append("self.norm = nn.LayerNorm(d)")
        features.append("torch:norm-after")

    args = [ArgSpec("h", (B, D), annotation="torch.Tensor")]
    params = ["self", "h: torch.Tensor"]
    call_args = ["h"]
    if block in ("masked", "masked-bool"):
        dtype = "bool" if block == "masked-bool" else "float32"
        annotation = c.pick(("torch.Tensor", "Optional[torch.Tensor]"))
        args.append(ArgSpec("mask", (B, D), dtype=dtype, annotation=annotation))
        call_args.append("mask")
    if block == "pair":
        if c.flag(0.5):
            args.append(ArgSpec("r", (B, D), annotation="torch.Tensor"))
            pre = []
        else:
            pre = ["r = torch.zeros_like(h)"]
        call_args.append("r")
    else:
        pre = []
    if block == "flag":
        args.append(_python_arg(c, "residual", "bool", "True", ("True", "False"), features))
        call_args.append("residual=residual")
    call = f"layer({', '.join(call_args)})"
    if block == "tuple-out":
        call = f"{call}[0]"

    returns = ["h"]
    step: list[str] = []
    if block == "pair":
        step.append(f"h, r = {call}")
        returns.append("r")
        if body_kind == "act":
            step.append("h = torch.tanh(h)")
    elif body_kind == "act":
        step.append(f"h = {c.pick(('torch.tanh', 'F.gelu', 'torch.sigmoid'))}({call})")
    elif body_kind == "scaled":
        args.append(_python_arg(c, "scale", "float", "0.5", ("0.75", "-1.5"), features))
        step.append(f"h = {call} * scale")
    elif body_kind == "gain":
        args.append(ArgSpec("gain", (D,), annotation="torch.Tensor"))
        step.append(f"h = {call} * gain + h")
    elif body_kind == "temp":
        step += [f"y = {call}", "h = 0.5 * (y + h)"]
    else:
        step.append(f"h = {call}")
    if body_kind == "two-carries":
        if c.flag(0.5):
            args.append(ArgSpec("s", (B, D), annotation="torch.Tensor"))
        else:
            pre.append("s = torch.zeros_like(h)")
        step.append("s = s + 0.5 * h")
        returns.append("s")
    # constructs in the body
    if construct == "iadd":
        step.append("h += 0.5")
    elif construct == "add_":
        step.append("h.add_(0.1 * h)")
    elif construct == "item":
        step.append("h = h / (1.0 + h.abs().max().item())")
    elif construct == "print":
        step.append("print(h.shape)")
    elif construct == "randn":
        step.append("h = h + 0.01 * torch.randn_like(h)")
    elif construct == "invert":
        step.append("h = h.masked_fill(~mask, 0.0)")
    # the signature: tensors first, then Python values with their defaults
    args.sort(key=lambda spec: spec.kind != "array")
    params += [spec.signature() for spec in args[1:]]
    if norm_after:
        returns[0] = "self.norm(h)"
    model_src = ("\n\nclass Model(nn.Module):\n"
                 "    def __init__(self, d, n):\n" + _indent(model_init, 8)
                 + f"\n    def forward({', '.join(params)}):\n" + _indent(pre, 8)
                 + f"        for layer in {iterable}:\n" + _indent(step, 12)
                 + f"        return {', '.join(returns)}\n")
    source = HEADER + block_src + model_src + f"\n\ndef build():\n    return Model({D}, {n})\n"
    loops = _loop_lines(source)
    loop_line = _line_of(source, f"for layer in {iterable}:")
    if len(returns) > 1 and block != "pair":
        features.append("torch:two-carries")
    return Program(source=source, args=tuple(args), label=MUST_DECLINE if decline else MUST_REWRITE,
                   loops=tuple(loops), must_not_rewrite=(loop_line,) if decline else (),
                   free_loops=tuple(line for line in loops if line != loop_line), construct=construct,
                   construct_loop="outer" if decline else None, steps=n,
                   features=tuple(features + ([f"torch:decline-stack-{construct}"] if construct else [])),
                   fn="build", klass="torch")


# ----------------------------------------------------------------------------- time loops

def _time(c, decline: bool, kind: str) -> Program:
    module = kind == "cell"
    construct = c.pick(TIME_DECLINES if module else FUNCTION_DECLINES) if decline else None
    cell = c.pick(CELLS) if module else "function"
    it = c.pick(ITERATIONS)
    T = c.pick(STEPS)
    extras = [e for e in EXTRAS if c.flag(0.3)]
    output = c.pick(OUTPUTS)
    if construct == "cell-write":
        cell = "elman"
    if construct == "subscript-write" and it not in INDEX_ITERATIONS:
        it = c.pick(INDEX_ITERATIONS)
    if output == "proj" and not module:
        output = "act"
    if output == "two-lists" and cell != "lstm" and "second-carry" not in extras:
        output = "carry"
    features = ["class:torch", f"torch:{kind}", f"torch:cell-{cell}", f"torch:iter-{it}", f"torch:steps-{T}",
                f"torch:ys-{output}"] + [f"torch:extra-{e}" for e in extras]

    batch_major = it in BATCH_MAJOR
    x_shape = (B, T, D) if batch_major else (T, B, D)
    args = [ArgSpec("x", x_shape, annotation="torch.Tensor")]
    pre: list[str] = []
    index = None
    xs = "x"
    if not module and c.flag(0.25):
        pre.append("xs = torch.tanh(x)")  # a tensor computed before the loop is scanned
        xs = "xs"
        features.append("torch:xs-computed")
    if it == "axis1":
        head, xt, index = f"for t in range({xs}.size(1)):", f"{xs}[:, t]", "t"
    elif it == "axis0":
        head, xt, index = f"for t in range({xs}.shape[0]):", f"{xs}[t]", "t"
    elif it == "elements":
        head, xt = f"for x_t in {xs}:", "x_t"
    elif it == "unbind":
        head, xt = f"for x_t in {xs}.unbind(1):", "x_t"
    elif it == "torch-unbind":
        head, xt = f"for x_t in torch.unbind({xs}, dim=1):", "x_t"
    elif it == "reversed":
        head, xt, index = f"for t in reversed(range({xs}.size(0))):", f"{xs}[t]", "t"
    elif it == "reversed-axis1":
        head, xt, index = f"for t in reversed(range({xs}.shape[1])):", f"{xs}[:, t]", "t"
    elif it == "zip":
        head, xt = f"for x_t, u_t in zip({xs}, u):", "x_t"
        args.append(ArgSpec("u", (T, B, H), annotation="torch.Tensor"))
    else:  # zip-unbind
        head, xt = f"for x_t, u_t in zip({xs}.unbind(1), u.unbind(1)):", "x_t"
        args.append(ArgSpec("u", (B, T, H), annotation="torch.Tensor"))
    reverse = it in ("reversed", "reversed-axis1")
    args.append(ArgSpec("h", (B, H), annotation="torch.Tensor"))
    carries = ["h"]
    if cell == "lstm":
        args.append(ArgSpec("c", (B, H), annotation="torch.Tensor"))
        carries.append("c")

    # ------------------------------------------------------------------ the step
    model_init = ["super().__init__()"]
    module_src = ""
    step: list[str] = []
    if cell == "gru":
        model_init.append("self.cell = nn.GRUCell(d, k)")
        step.append(f"h = self.cell({xt}, h)")
    elif cell == "rnn":
        model_init.append("self.cell = nn.RNNCell(d, k)")
        step.append(f"h = self.cell({xt}, h)")
    elif cell == "lstm":
        model_init.append("self.cell = nn.LSTMCell(d, k)")
        step.append(f"h, c = self.cell({xt}, (h, c))")
    elif cell == "elman":
        model_init.append("self.cell = Elman(d, k)")
        cell_fwd = ["return torch.tanh(self.inp(x) + gain * self.rec(h))"]
        if construct == "cell-write":
            cell_fwd = ["self.last = h"] + cell_fwd
        module_src = ("\n\nclass Elman(nn.Module):\n"
                      "    def __init__(self, d, k):\n        super().__init__()\n"
                      "        self.inp = nn.Linear(d, k)\n        self.rec = nn.Linear(k, k, bias=False)\n"
                      "\n    def forward(self, x, h, gain: float = 1.0):\n" + _indent(cell_fwd, 8))
        step.append(f"h = self.cell({xt}, h{c.pick(('', ', gain=0.5', ', 0.8'))})")
    elif cell == "linear":
        model_init += ["self.inp = nn.Linear(d, k)", "self.rec = nn.Linear(k, k)"]
        step.append(f"h = torch.tanh(self.inp({xt}) + self.rec(h))")
    else:  # a function
        args.append(ArgSpec("w", (D, H), scale=0.5, annotation="torch.Tensor"))
        step.append(f"h = torch.tanh({xt} @ w + 0.5 * h)")
    if it in ("zip", "zip-unbind"):
        step.append("h = h + 0.1 * u_t")
    for e in extras:
        if e == "op":
            step.append(c.pick(("h = 0.9 * h + 0.1 * torch.sin(h)", "h = F.relu(h) - 0.5 * torch.sigmoid(h)",
                                "h = h * torch.sigmoid(h)", "h = torch.clamp(h, -0.9, 0.9)")))
        elif e == "gain":
            args.append(ArgSpec("gain", (H,), annotation="torch.Tensor"))
            step.append("h = h * gain")
        elif e == "flag":
            args.append(_python_arg(c, "clip", "bool", "True", ("True", "False"), features))
            step += ["if clip:", "    h = torch.clamp(h, -0.8, 0.8)"]
        elif e == "leak":
            args.append(_python_arg(c, "leak", "float", "0.9", ("0.7", "0.25"), features))
            step.append("h = leak * h + (1.0 - leak) * torch.tanh(h)")
        elif e == "second-carry":
            pre.append("s = torch.zeros_like(h)")
            step.append("s = s + 0.5 * h")
            carries.append("s")
        elif e == "local-tensor":
            pre.append("bias = torch.full_like(h, 0.1)")
            step.append("h = h + bias")

    # ------------------------------------------------------------------ per-step outputs
    returns: list[str] = []
    ys: list[tuple[str, str]] = []  # (list name, appended value)
    if output == "carry":
        ys.append(("outs", "h"))
    elif output == "act":
        ys.append(("outs", "torch.tanh(h)"))
    elif output == "proj":
        model_init.append("self.out = nn.Linear(k, d)")
        ys.append(("outs", "self.out(h)"))
    elif output == "two-lists":
        ys += [("outs", "h"), ("seconds", carries[1])]
    elif output == "reduced":
        ys.append(("outs", "h.sum(-1)"))
    for name, value in ys:
        pre.append(f"{name} = []")
        step.append(f"{name}.append({value})")
        ndim = 1 if output == "reduced" else 2
        dim = c.pick((None, 0, 1, -1) if ndim == 1 else (None, 0, 1, 2, -1))
        seq = name
        if reverse and c.flag(0.4):
            seq = f"{name}[::-1]"
            features.append("torch:ys-flipped")
        stack = f"torch.stack({seq})" if dim is None else c.pick((f"torch.stack({seq}, dim={dim})",
                                                                   f"torch.stack({seq}, {dim})"))
        features.append(f"torch:stack-dim-{dim}")
        returns.append(stack)
        if c.flag(0.2):
            returns.append(f"{name}[-1]")
            features.append("torch:ys-last")

    # ------------------------------------------------------------------ constructs in the step
    if construct == "iadd":
        step.append("h += 0.5")
    elif construct == "add_":
        step.append("h.add_(0.1 * h)")
    elif construct == "subscript-write":
        shape = "x.size(0), x.size(1), h.size(-1)"
        pre.append(f"buf = x.new_zeros({shape})")
        step.append(f"buf[{'t' if it in ('axis0', 'reversed') else ':, t'}] = h")
        returns.append("buf")
    elif construct == "item":
        step.append("h = h / (1.0 + h.abs().max().item())")
    elif construct == "print":
        step.append("print(h.shape)")
    elif construct == "randn":
        step.append("h = h + 0.01 * torch.randn_like(h)")
    elif construct == "dropout":
        model_init.append("self.drop = nn.Dropout(0.1)")
        step.append("h = self.drop(h)")
    elif construct == "invert":
        args.append(ArgSpec("mask", (B, H), dtype="bool", annotation="torch.Tensor"))
        step.append("h = torch.where(~mask, h, 0.5 * h)")
    elif construct == "method-call":
        step.append("h = self.squash(h)")
    elif construct == "tensor-attr":
        model_init.append(c.pick(("self.scale = nn.Parameter(torch.full((k,), 0.9))",
                                  "self.register_buffer(\"scale\", torch.full((k,), 0.9))")))
        step.append("h = h * self.scale")
    elif construct == "batchnorm":
        model_init.append("self.bn = nn.BatchNorm1d(k)")
        step.append("h = self.bn(h)")
    returns = carries + returns
    # the signature: tensors, then Python values (with their defaults)
    args.sort(key=lambda spec: spec.kind != "array")
    params = [spec.signature() for spec in args]
    ind = 8 if module else 4
    body = (_indent(pre, ind) + " " * ind + head + "\n" + _indent(step, ind + 4)
            + " " * ind + f"return {', '.join(returns)}\n")
    if module:
        methods = "\n    def squash(self, h):\n        return 0.5 * h\n" if construct == "method-call" else ""
        model_src = ("\n\nclass Model(nn.Module):\n"
                     "    def __init__(self, d, k):\n" + _indent(model_init, 8) + methods
                     + f"\n    def forward(self, {', '.join(params)}):\n" + body)
        build = f"\n\ndef build():\n    return Model({D}, {H})\n"
    else:
        model_src = f"\n\ndef f({', '.join(params)}):\n" + body
        build = "\n\ndef build():\n    return f\n"
    source = HEADER + module_src + model_src + build
    loops = _loop_lines(source)
    if len(carries) > 1:
        features.append("torch:two-carries")
    return Program(source=source, args=tuple(args), label=MUST_DECLINE if decline else MUST_REWRITE,
                   loops=tuple(loops), must_not_rewrite=tuple(loops) if decline else (), construct=construct,
                   construct_loop="outer" if decline else None, steps=T,
                   features=tuple(features + ([f"torch:decline-{kind}-{construct}"] if construct else [])),
                   fn="build", klass="torch")

"""The PyTorch/XLA target (``--framework torch_xla``): loops calling each layer
of a list of torch layers become ``scan_layers``.

The golden file in ``tests/golden_torch/`` (input, reviewed output) is checked
byte for byte and for idempotence; then every model of it is built from the
input and from the output, the rewritten one loads the original's
``state_dict`` (the layout does not change), and both run on the XLA device
(``PJRT_DEVICE=CPU`` here) in eval mode: outputs and gradients with respect to
the inputs and to every parameter must match, at 0, 1 and 5 layers, with
tensors of several dtypes (a boolean mask, integer positions, ``None``) passed
to every layer.  Sizes all differ (batch 3, length 4, width 8, hidden 11), and
every layer has its own weights, so a swapped axis or a reordered stack fails.

Regenerate the expected file only on purpose (``UPDATE_GOLDEN=1``) and review it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("PJRT_DEVICE", "CPU")

import torch  # noqa: E402
import torch_xla  # noqa: E402

from helpers import load  # noqa: E402
from loop2scan import rewrite_source  # noqa: E402

GOLDEN = Path(__file__).parent / "golden_torch"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")
R, D, N = "rewritten", "declined", "not-candidate"

CASES = {
    "decoder": [(65, R, "L2S000"), (90, R, "L2S000"), (99, N, "L2S001"), (103, R, "L2S000")],
    "encoder": [(32, R, "L2S000"), (60, R, "L2S000"), (74, D, "L2S332"), (89, D, "L2S501"), (102, D, "L2S332")],
    "rnn": [(20, R, "L2S000"), (49, R, "L2S000"), (58, R, "L2S000"), (65, R, "L2S000"), (71, D, "L2S310"),
            (78, R, "L2S000"), (84, D, "L2S336")],
}
B, T, W, HID, HEADS = 3, 4, 8, 11, 2


def _rewrite(text: str):
    result = rewrite_source(text, "torch_xla")
    assert result.error is None, result.error
    return result


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    src = (GOLDEN / f"{case}.py").read_text()
    result = _rewrite(src)
    assert [(r.line, r.status, r.code) for r in result.loops] == CASES[case], \
        [(r.line, r.status, r.code, r.message) for r in result.loops]
    expected_path = GOLDEN / f"{case}.expected.py"
    if UPDATE:
        expected_path.write_text(result.new_text)
    assert result.new_text == expected_path.read_text()
    again = _rewrite(result.new_text)
    assert again.new_text is None, "a second run must change nothing"
    assert "loop2scan" not in result.new_text


@pytest.fixture(scope="module")
def models():
    src = (GOLDEN / "decoder.py").read_text()
    return load(src), load(_rewrite(src).new_text)


def _device():
    return torch_xla.device()


def _pair(cls_orig, cls_new, *args):
    torch.manual_seed(0)
    a = cls_orig(*args).to(_device()).eval()
    b = cls_new(*args).to(_device()).eval()
    missing = b.load_state_dict(a.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    return a, b


def _outputs(out) -> list:
    return list(out) if isinstance(out, tuple) else [out]


def _compare(a, b, inputs: list, grad_inputs: list, rtol=1e-5, atol=1e-5):
    """``a(*inputs)`` and ``b(*inputs)`` (modules or functions): their outputs
    (a tensor or a tuple of them), and the gradients of a random projection of
    the outputs with respect to ``grad_inputs`` and every parameter."""
    out_a = _outputs(a(*inputs))
    out_b = _outputs(b(*inputs))
    assert len(out_a) == len(out_b)
    g = torch.Generator().manual_seed(1)
    cots = [torch.randn(o.shape, generator=g).to(o.device) for o in out_a]
    params_a = list(a.named_parameters()) if isinstance(a, torch.nn.Module) else []
    params_b = list(b.parameters()) if isinstance(b, torch.nn.Module) else []
    wrt_a = [*grad_inputs, *(p for _, p in params_a)]
    wrt_b = [*grad_inputs, *params_b]
    ga = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out_a, cots)), wrt_a, allow_unused=True)
    gb = torch.autograd.grad(sum((o * c).sum() for o, c in zip(out_b, cots)), wrt_b, allow_unused=True)
    torch_xla.sync()  # one graph for everything, before reading values back
    for i, (x, y) in enumerate(zip(out_a, out_b)):
        torch.testing.assert_close(y.cpu(), x.cpu(), rtol=rtol, atol=atol, msg=lambda m: f"output {i}: {m}")
    out_a = out_a[0] if len(out_a) == 1 else out_a
    names = [f"input {i}" for i in range(len(grad_inputs))] + [n for n, _ in params_a]
    assert len(ga) == len(gb) == len(names)
    for name, x, y in zip(names, ga, gb):
        assert (x is None) == (y is None), name
        if x is not None:
            torch.testing.assert_close(y.cpu(), x.cpu(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    return out_a


@pytest.mark.parametrize("n_layers", [0, 1, 5])
@pytest.mark.parametrize("mask_kind", ["bool", "none"])
def test_decoder_equivalent(models, n_layers, mask_kind):
    orig, new = models
    a, b = _pair(orig.Decoder, new.Decoder, W, HEADS, HID, n_layers)
    dev = _device()
    g = torch.Generator().manual_seed(2)
    h = torch.randn(B, T, W, generator=g).to(dev).requires_grad_(True)
    mask = None
    if mask_kind == "bool":
        mask = (torch.rand(B, T, T, generator=g) > 0.3) | torch.eye(T, dtype=torch.bool)
        mask = mask.to(dev)
    positions = (torch.arange(T)[None, :] + torch.arange(B)[:, None]).to(dev)  # int64, differs per row
    out = _compare(a, b, [h, mask, positions, 0.7], [h])
    if n_layers:
        assert not torch.allclose(out.cpu(), a.norm(h).cpu())  # the layers did something


@pytest.mark.parametrize("n_layers,n_active", [(0, 0), (1, 1), (5, 5), (5, 3)])
def test_tuple_carry_and_slice(models, n_layers, n_active):
    orig, new = models
    a, b = _pair(orig.PairStack, new.PairStack, W, n_layers, n_active)
    h = torch.randn(B, T, W, generator=torch.Generator().manual_seed(3)).to(_device()).requires_grad_(True)
    _compare(a, b, [h], [h])


@pytest.mark.parametrize("n_layers", [0, 1, 5])
def test_reversed_with_a_tensor_passed_to_every_layer(models, n_layers):
    orig, new = models
    a, b = _pair(orig.Reversed, new.Reversed, W, n_layers)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, T, W, generator=g).to(_device()).requires_grad_(True)
    gain = torch.rand(W, generator=g).to(_device()).requires_grad_(True)
    _compare(a, b, [x, gain], [x, gain])


def test_reversed_order_matters(models):
    """The check above can fail: running the stack forwards gives another result."""
    orig, _ = models
    a = orig.Reversed(W, 5).to(_device()).eval()
    x = torch.randn(B, T, W, generator=torch.Generator().manual_seed(5)).to(_device())
    gain = torch.full((W,), 0.9, device=_device())
    forwards = x
    for layer in a.layers:
        forwards = torch.tanh(layer(forwards)) * gain + forwards
    assert not torch.allclose(a(x, gain).cpu(), forwards.cpu(), atol=1e-4)


@pytest.fixture(scope="module")
def encoders():
    src = (GOLDEN / "encoder.py").read_text()
    return load(src), load(_rewrite(src).new_text)


def _flat(out) -> list:
    """The tensors of nested tuples, in order (``None`` kept, so that a missing
    tuple or item shows)."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _compare_flat(a, b, inputs: list, grad_inputs: list) -> list:
    """:func:`_compare` for modules returning nested tuples (with ``None``)."""
    flat_a, flat_b = _flat(a(*inputs)), _flat(b(*inputs))
    assert [t is None for t in flat_a] == [t is None for t in flat_b]

    def tensors(module):
        return lambda *args: tuple(t for t in _flat(module(*args)) if t is not None)

    class Wrapped(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args):
            return tensors(self.module)(*args)

    _compare(Wrapped(a), Wrapped(b), inputs, grad_inputs)
    return flat_a


@pytest.mark.parametrize("n_layers", [0, 1, 5])
@pytest.mark.parametrize("output_hidden_states", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_encoder_collects_hidden_states(encoders, n_layers, output_hidden_states, masked):
    """``if output_hidden_states: all_hidden_states += (h,)``: the same tuple of
    per-layer states (or ``None``), with gradients through every item."""
    orig, new = encoders
    a, b = _pair(orig.Encoder, new.Encoder, W, HID, n_layers)
    g = torch.Generator().manual_seed(6)
    h = torch.randn(B, T, W, generator=g).to(_device()).requires_grad_(True)
    mask = (torch.rand(B, T, generator=g) > 0.3).float().to(_device()) if masked else None
    flat = _compare_flat(a, b, [h, mask, output_hidden_states], [h])
    if output_hidden_states:
        assert len(flat) == 1 + n_layers + 1
        states = flat[1:]
        # every layer changes the state: a reordered or repeated item would fail the comparison
        assert all(not torch.allclose(x.cpu(), y.cpu()) for x, y in zip(states, states[1:]))
    else:
        assert flat[1:] == [None]


@pytest.mark.parametrize("n_layers,n_active", [(0, 0), (1, 1), (5, 5), (5, 3)])
def test_reversed_slice_with_two_carries_and_two_tuples(encoders, n_layers, n_active):
    orig, new = encoders
    a, b = _pair(orig.PairStack, new.PairStack, W, n_layers)
    g = torch.Generator().manual_seed(7)
    h = torch.randn(B, T, W, generator=g).to(_device()).requires_grad_(True)
    r = torch.randn(B, T, W, generator=g).to(_device()).requires_grad_(True)
    flat = _compare_flat(a, b, [h, r, n_active], [h, r])
    assert len(flat) == 2 + (1 + n_active) + n_active


_PURE = """\
import torch
import torch.nn as nn
import torch_xla


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h):
        return h + torch.tanh(self.lin(h))


class Stack(nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.layers = nn.ModuleList([Block(d) for _ in range(n)])

    def forward(self, h: torch.Tensor):
        for layer in reversed(self.layers):
            h = layer(h)
        return h

    def masked(self, h: torch.Tensor, mask: torch.Tensor):
        for layer in self.layers:
            h = layer(h) * mask
        return h
"""


def test_assume_pure_marks_the_list_s_own_layers_pure():
    """`--assume-pure` emits `is_layer_pure=True` only where the list's own
    layers are scanned (a reversed list is passed as a list: `scan_layers` reads
    its first layer, then iterates the layers again); the trace reused by later
    calls gives the loop's results with new inputs and changed weights."""
    from loop2scan.policy import Policy

    plain = rewrite_source(_PURE, "torch_xla")
    result = rewrite_source(_PURE, "torch_xla", policy=Policy(assume_pure=True))
    assert "scan_layers(self.layers[::-1], h, is_layer_pure=True)" in result.new_text
    assert "scan_layers(self.layers[::-1], h)\n" in plain.new_text
    assert result.new_text.count("is_layer_pure") == 1  # the step-module form is not marked
    notes = {r.line: " ".join(r.plan.notes) for r in result.loops if r.plan}
    assert any("is_layer_pure=True" in n for n in notes.values())
    assert any("does not apply" in n for n in notes.values())
    orig, new = load(_PURE), load(result.new_text)
    a, b = _pair(orig.Stack, new.Stack, W, 4)
    for seed in range(3):
        if seed == 2:
            with torch.no_grad():
                for pa, pb in zip(a.parameters(), b.parameters()):
                    pa.mul_(1.5)
                    pb.mul_(1.5)
        h = _randn(B, T, W, seed=30 + seed)
        _compare(a, b, [h], [h])


def test_assume_pure_does_not_mark_steps_defined_on_each_call():
    """A time loop's step and the step of a loop collecting per-layer outputs
    are defined on each call: torch_xla's `scan` keys its trace cache by the
    function, so `--assume-pure` sets no flag there and the explanation says why."""
    from loop2scan.policy import Policy

    for name in ("rnn", "encoder"):
        src = (GOLDEN / f"{name}.py").read_text()
        result = rewrite_source(src, "torch_xla", policy=Policy(assume_pure=True))
        assert result.new_text == _rewrite(src).new_text
        assert "is_fn_pure" not in result.new_text and "is_layer_pure" not in result.new_text
        rewritten = [r for r in result.loops if r.status == "rewritten"]
        assert rewritten and all("`--assume-pure` does not apply" in " ".join(r.plan.notes) for r in rewritten)


def test_a_tensor_built_by_a_factory_is_passed_to_every_layer():
    """A tensor built in the function by a `torch` factory from Python values
    needs no gradient: it rides with the step modules (a computed one that may
    need gradients declines, `L2S334`)."""
    src = _PURE.replace("""    def masked(self, h: torch.Tensor, mask: torch.Tensor):
        for layer in self.layers:""", """    def masked(self, h: torch.Tensor):
        mask = torch.triu(torch.full((h.shape[-2], h.shape[-1]), 0.75, device=h.device))
        for layer in self.layers:""")
    result = rewrite_source(src, "torch_xla")
    assert [r.status for r in result.loops] == [R, R], [r.message for r in result.loops]
    orig, new = load(src), load(result.new_text)
    for n in (1, 4):
        a, b = _pair(orig.Stack, new.Stack, W, n)
        h = _randn(B, T, W, seed=60 + n)
        _compare(a.masked, b.masked, [h], [h])


def test_enumerate_with_a_counter_the_body_never_reads():
    src = _PURE.replace("for layer in reversed(self.layers):", "for i, layer in enumerate(self.layers):")
    result = rewrite_source(src, "torch_xla")
    assert "scan_layers(self.layers, h)" in result.new_text, result.new_text
    orig, new = load(src), load(result.new_text)
    for n in (1, 2, 5):
        a, b = _pair(orig.Stack, new.Stack, W, n)
        h = _randn(B, T, W, seed=40 + n)
        _compare(a, b, [h], [h])
    used = src.replace("h = layer(h)\n", "h = layer(h) * (i + 1)\n", 1)
    loop = rewrite_source(used, "torch_xla").loops[-2]
    assert (loop.status, loop.code) == (D, "L2S332"), loop.message


def test_a_declined_layer_loop_lists_every_blocker(tmp_path, monkeypatch):
    """The JSON report and `explain` carry every blocker the rules find on their
    own, the first being the loop's code: here a per-layer constructor argument,
    a layer writing an attribute in `forward`, an in-place update in the body and
    a value of unknown kind passed to every layer."""
    import json

    from click.testing import CliRunner

    from loop2scan.analysis.checks.torch_layers import torch_decoder
    from loop2scan.cli import main

    src = torch_decoder("nn.ModuleList([Block(d * (i + 1)) for i in range(n)])", body="h += layer(h, mask)",
                        signature="def forward(self, h, mask):").replace(
        "return h + torch.tanh(self.lin(h)) * mask", "self.seen = h\n        return h + torch.tanh(self.lin(h)) * mask")
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    Path("model.py").write_text(src)
    r = runner.invoke(main, ["rewrite", "model.py", "--framework", "torch_xla", "--format", "json"])
    loop = next(lp for f in json.loads(r.output)["files"] for lp in f["loops"] if lp["status"] == "declined")
    codes = [b["code"] for b in loop["blockers"]]
    assert codes[0] == loop["code"] == "L2S330"
    assert set(codes) == {"L2S330", "L2S331", "L2S333", "L2S334"}, loop["blockers"]
    assert all(b["line"] for b in loop["blockers"])
    text = runner.invoke(main, ["explain", "model.py", "--framework", "torch_xla"]).output
    assert "also: L2S331" in text and "L2S333" in text and "L2S334" in text, text
    # a loop held back by one rule lists that rule alone
    Path("model.py").write_text(torch_decoder(body="h += layer(h, mask)"))
    r = runner.invoke(main, ["rewrite", "model.py", "--framework", "torch_xla", "--format", "json"])
    loop = next(lp for f in json.loads(r.output)["files"] for lp in f["loops"] if lp["status"] == "declined")
    assert [b["code"] for b in loop["blockers"]] == ["L2S333"]


def test_a_loop_at_module_level_is_declined_not_an_error():
    src = "import torch\nimport torch_xla\nfor x_t in torch.ones(3):\n    y = x_t + 1\n"
    result = rewrite_source(src, "torch_xla")
    assert result.error is None and [(r.status, r.code) for r in result.loops] == [(D, "L2S011")]


def test_messages_for_torch_code_give_torch_advice():
    from loop2scan.analysis.checks.torch_layers import torch_decoder

    cases = [torch_decoder(body="h = layer(h, mask)\n            print(h)"),
             torch_decoder(body="h = layer(h, mask)\n            layer.reset(h)"),
             torch_decoder(body="h = layer(h, mask)\n            outs[0] = h").replace(
                 "        for layer", "        outs = [h]\n        for layer")]
    for src in cases:
        loop = next(r for r in rewrite_source(src, "torch_xla").loops if r.status == D)
        assert "jax" not in loop.message and "jnp" not in loop.message, loop.message


# ---------------------------------------------------------------------------- time loops (torch_xla's scan)

@pytest.fixture(scope="module")
def rnns():
    src = (GOLDEN / "rnn.py").read_text()
    return load(src), load(_rewrite(src).new_text)


def _randn(*shape, seed=0, grad=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(_device())
    return x.requires_grad_(True) if grad else x


@pytest.mark.parametrize("steps", [1, 5])
def test_gru_over_the_time_axis(rnns, steps):
    orig, new = rnns
    a, b = _pair(orig.GRU, new.GRU, W, HID)
    x, h = _randn(B, steps, W, seed=6), _randn(B, HID, seed=7)
    out = _compare(a, b, [x, h], [x, h])
    assert out[0].shape == (B, steps, W)


@pytest.mark.parametrize("steps", [1, 5])
def test_backward_lstm_two_carries_and_a_project_cell(rnns, steps):
    orig, new = rnns
    a, b = _pair(orig.BackwardLSTM, new.BackwardLSTM, W, HID)
    x, h, c, g = _randn(steps, B, W, seed=8), _randn(B, HID, seed=9), _randn(B, HID, seed=10), _randn(HID, seed=11)
    _compare(a, b, [x, h, c, g], [x, h, c, g])


def test_backward_order_matters(rnns):
    """The check above can fail: the outputs of a forward pass differ."""
    orig, _ = rnns
    torch.manual_seed(0)
    a = orig.BackwardLSTM(W, HID).to(_device()).eval()
    x, h, c, g = _randn(5, B, W, seed=8), _randn(B, HID, seed=9), _randn(B, HID, seed=10), _randn(HID, seed=11)
    backward = a(x, h, c, g)[0]
    forward = a(x.flip(0), h, c, g)[0].flip(0)
    torch_xla.sync()
    assert not torch.allclose(backward.cpu(), forward.cpu(), atol=1e-4)


@pytest.mark.parametrize("steps", [1, 5])
def test_functions_of_tensors(rnns, steps):
    orig, new = rnns
    xs, w, h = _randn(B, steps, W, seed=12), _randn(W, HID, seed=13), _randn(B, HID, seed=14)
    out = _compare(orig.leaky, new.leaky, [xs, w, h, 0.8], [xs, w, h])
    assert out[0].shape == (B, HID, steps)
    a, b, h = _randn(steps, B, HID, seed=15), _randn(steps, B, HID, seed=16), _randn(B, HID, seed=17)
    _compare(orig.pairs, new.pairs, [a, b, h], [a, b, h])
    x = _randn(steps, B, HID, seed=18)
    _compare(orig.running_max, new.running_max, [x], [x])


_ATTRS = """\
import torch
import torch.nn as nn
import torch_xla


class Leaky(nn.Module):
    def __init__(self, d, leak: float, batch_first=True):
        super().__init__()
        self.cell = nn.RNNCell(d, d)
        self.leak = leak
        self.batch_first = batch_first
        self.gain = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        outs = []
        for t in range(x.size(1)):
            h = self.leak * h + self.cell(x[:, t], h)
            outs.append(h if self.batch_first else -h)
        return torch.stack(outs, dim=1), h

    def gained(self, x: torch.Tensor, h: torch.Tensor):
        for x_t in x:
            h = self.cell(x_t, h) * self.gain
        return h
"""


def test_python_attributes_of_self_are_closed_over(tmp_path):
    """`self.leak` is set in `__init__` from a parameter annotated `float`: a
    Python value the step closes over; `self.gain` is a parameter read directly:
    the step cannot close over it, so that loop is declined."""
    result = rewrite_source(_ATTRS, "torch_xla")
    codes = [(r.status, r.code) for r in result.loops]
    assert codes == [(R, "L2S000"), (D, "L2S335")], [r.message for r in result.loops]
    assert "`self.gain`" in result.loops[1].message
    orig, new = load(_ATTRS), load(result.new_text)
    for steps in (1, 6):
        a, b = _pair(orig.Leaky, new.Leaky, W, 0.3)
        x, h = _randn(B, steps, W, seed=50), _randn(B, W, seed=51)
        _compare(a, b, [x, h], [x, h])


def test_explain_a_time_loop():
    from click.testing import CliRunner

    from loop2scan.cli import main

    out = CliRunner().invoke(main, ["explain", f"{GOLDEN / 'rnn.py'}:49", "--framework", "torch_xla"]).output
    assert "rewritten -> torch_xla.experimental.scan.scan" in out, out
    assert "inputs flipped with `.flip(0)`" in out and "reverse=True" not in out
    assert "`g` is a floating-point tensor" in out  # carried unchanged: an assumption
    assert "`torch.func.functional_call`" in out


_UNBIND = """\
import torch
import torch as T
import torch_xla
from torch import unbind


def function_dim(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor):
    for x_t in torch.unbind(x, dim=1):
        h = torch.tanh(x_t @ w + h)
    return h


def method_last(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor):
    for x_t in x.unbind(-1):
        h = torch.tanh(w @ x_t + h)
    return h


def alias_default(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor):
    for x_t in T.unbind(x):
        h = torch.tanh(x_t @ w + h)
    return h


def imported_keyword(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor):
    for x_t in unbind(x, dim=1):
        h = torch.tanh(x_t @ w + h)
    return h


def unknown_dim(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, k: int):
    for x_t in x.unbind(k):
        h = torch.tanh(x_t @ w + h)
    return h
"""


def test_unbind_forms():
    """`x.unbind(k)` and `torch.unbind(x, k)` in every spelling (a negative `k`,
    `dim=`, no `k`, an alias of `torch`, `from torch import unbind`) step
    through `x` along `k`; a `k` that is not a literal declines (`L2S335`)."""
    result = _rewrite(_UNBIND)
    status = {r.line: (r.status, r.code) for r in result.loops}
    assert list(status.values()) == [(R, "L2S000")] * 4 + [(D, "L2S335")], status
    orig, new = load(_UNBIND), load(result.new_text)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(B, T, W, generator=g).to(_device()).requires_grad_(True)  # B=3 steps along dim 0, T=4 on 1
    h_bw = torch.randn(B, HID, generator=g).to(_device()).requires_grad_(True)
    w = torch.randn(W, HID, generator=g).to(_device()).requires_grad_(True)
    _compare(orig.function_dim, new.function_dim, [x, w, h_bw], [x, w, h_bw])
    _compare(orig.imported_keyword, new.imported_keyword, [x, w, h_bw], [x, w, h_bw])
    h_t = torch.randn(T, HID, generator=g).to(_device()).requires_grad_(True)
    _compare(orig.alias_default, new.alias_default, [x, w, h_t], [x, w, h_t])
    w_last = torch.randn(B, B, generator=g).to(_device()).requires_grad_(True)
    h_last = torch.randn(B, T, generator=g).to(_device()).requires_grad_(True)
    _compare(orig.method_last, new.method_last, [x, w_last, h_last], [x, w_last, h_last])


def test_zero_steps(rnns):
    """With no step, the loop's `torch.stack([])` raises, and so does the scan
    (it has no step to trace); a loop with no outputs returns its carry, where
    the scan raises: an error, never a different value (README, known limits)."""
    orig, new = rnns
    xs, w, h = _randn(B, 0, W, seed=12), _randn(W, HID, seed=13), _randn(B, HID, seed=14)
    with pytest.raises(RuntimeError):
        orig.leaky(xs, w, h)
    with pytest.raises((RuntimeError, IndexError)):
        new.leaky(xs, w, h)
    x = _randn(0, B, HID, seed=18)
    with pytest.raises(IndexError):
        orig.running_max(x)  # `x[0]` before the loop
    a, b, h = _randn(0, B, HID, seed=15), _randn(0, B, HID, seed=16), _randn(B, HID, seed=17)
    assert orig.pairs(a, b, h) is h
    with pytest.raises((RuntimeError, IndexError, ValueError)):
        new.pairs(a, b, h)


def test_scan_step_cannot_close_over_a_tensor():
    """Why parameters and tensors read from outside ride in the carry: a step
    that closes over a tensor fails to trace (torch_xla 2.9).  If a release
    accepts it, this fails, and the carried form can be revisited."""
    from torch_xla.experimental.scan import scan

    w = _randn(HID, seed=19)

    def step(h, x_t):
        h = torch.tanh(h * w + x_t)
        return h, h

    with pytest.raises(Exception):
        scan(step, _randn(B, HID, seed=20), _randn(4, B, HID, seed=21))
        torch_xla.sync()


def test_scan_layers_repeats_one_dropout_mask():
    """Why layers that draw random numbers are declined (L2S331): under
    ``scan_layers`` (torch_xla 2.9) the first call draws a mask per layer, but
    later calls draw one mask for every layer, where the loop draws one per
    layer on every call.  If a release draws per-layer masks on every call,
    this fails, and the rule can be revisited."""
    from torch_xla.experimental.scan_layers import scan_layers

    class Drop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)
            self.bias = torch.nn.Parameter(torch.zeros(1))

        def forward(self, h):
            return h + self.drop(torch.ones_like(h)) + self.bias

    dev = _device()
    layers = [Drop().to(dev).train() for _ in range(4)]
    h = torch.zeros(1, 256, device=dev)
    seen = []
    for seed in range(3):
        torch.manual_seed(seed)
        seen.append(set(scan_layers(layers, h).cpu().flatten().tolist()))
        looped = h
        for layer in layers:
            looped = layer(looped)
        assert len(set(looped.cpu().flatten().tolist())) > 2  # the loop: a mask per layer
    # each layer adds 0 or 2 per element: with one mask for all layers only 0 and 8 occur
    assert seen[1] <= {0.0, 8.0} and seen[2] <= {0.0, 8.0}


def test_rewrite_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys; from loop2scan import rewrite_source; from pathlib import Path; "
            f"r = rewrite_source(Path({str(GOLDEN / 'decoder.py')!r}).read_text(), 'torch_xla'); "
            "assert r.new_text; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torch_xla', 'jax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_auto_picks_the_target_from_the_imports():
    src = (GOLDEN / "decoder.py").read_text()
    result = rewrite_source(src, "auto")
    assert result.framework == "torch_xla"
    assert result.new_text == (GOLDEN / "decoder.expected.py").read_text()
    plain = src.replace("import torch_xla\n", "")
    result = rewrite_source(plain, "auto")
    assert result.framework == "torch" and result.new_text is None
    assert {r.code for r in result.loops if r.status == D} == {"L2S602"}


def test_scan_miscomputes_invert_of_scanned_booleans():
    """Why `~` declines (L2S331): torch_xla 2.9's scan computes `~` on a boolean
    tensor it scans (here a buffer) as an integer bitwise not.  If a release
    fixes it, this fails, and the rule can be revisited."""
    from torch_xla.experimental.scan_layers import scan_layers

    class Masked(torch.nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.register_buffer("mask", mask)

        def forward(self, h):
            return h * self.w + (~self.mask).float()

    dev = _device()
    layer = Masked(torch.tensor([True, False, True]).to(dev)).to(dev)
    h = torch.zeros(3, device=dev)
    assert layer(h).cpu().tolist() == [0.0, 1.0, 0.0]
    assert scan_layers([layer], h).cpu().tolist() == [-2.0, -1.0, -2.0]


def test_check_reports_a_missing_factory(tmp_path):
    from click.testing import CliRunner

    from loop2scan.cli import main

    path = tmp_path / "decoder.py"
    path.write_text((GOLDEN / "decoder.py").read_text())
    (tmp_path / "pyproject.toml").write_text(
        '[tool.loop2scan.examples]\n"decoder.py::Decoder.forward" = "decoder.py::nothing"\n')
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(main, ["rewrite", "decoder.py", "--check", "--no-diff"])
    finally:
        os.chdir(old)
    assert "unverified: the example factory decoder.py::nothing cannot be loaded: AttributeError" in r.output, \
        r.output
    assert "0 verified" in r.output and "3 unverified" in r.output
    assert path.read_text() == (GOLDEN / "decoder.py").read_text()


_JAX_WORDS = ("jnp", "jax.", "`.at[")


def test_explain_gives_pytorch_advice_for_pytorch_code(tmp_path):
    """The `fix:` line speaks the file's framework: a PyTorch loop declined for a
    reason JAX code also meets is not told to use `jnp` or `jax.lax`."""
    from click.testing import CliRunner

    from loop2scan.cli import main
    from loop2scan.codes import CODES

    src = tmp_path / "model.py"
    src.write_text(textwrap.dedent("""\
        import torch
        import torch_xla
        from torch import nn


        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.lin = nn.Linear(d, d)

            def forward(self, h):
                return torch.tanh(self.lin(h))


        class Net(nn.Module):
            def __init__(self, d, n):
                super().__init__()
                self.layers = nn.ModuleList([Block(d) for _ in range(n)])

            def forward(self, h):
                outs = []
                for layer in self.layers:
                    h = layer(h)
                    outs.append(h)
                return h, outs


        def rnn(cell, xs: torch.Tensor, h: torch.Tensor):
            for t in range(xs.size(0)):
                h = cell(xs[t], h)
                if t > 3:
                    break
            return h
        """))
    out = CliRunner().invoke(main, ["explain", str(src)]).output
    assert "declined L2S501" in out and "declined L2S101" in out, out
    fix_lines = [line.strip() for line in out.splitlines() if line.strip().startswith("fix:")]
    assert fix_lines == [f"fix: {CODES['L2S501'].torch_fix}", f"fix: {CODES['L2S101'].torch_fix}"], out
    for line in fix_lines:
        assert not any(word in line for word in _JAX_WORDS), line
    assert "torch.stack" in fix_lines[0] and "torch.where" in fix_lines[1]
    # the list is the accumulator rule's: not also reported as a value passed to every layer
    assert "L2S334" not in out, out


def test_every_pytorch_advice_is_in_pytorch_words():
    from loop2scan.codes import CODES

    advised = [c for c in CODES.values() if c.torch_fix]
    assert len(advised) >= 10
    for c in advised:
        assert not any(word in c.torch_fix for word in _JAX_WORDS), c.code
        assert c.fix_for("torch_xla") == c.torch_fix == c.fix_for("torch") and c.fix_for("jax") == c.fix
        assert c.fix in c.fix_text() and c.torch_fix in c.fix_text()


@pytest.mark.parametrize("framework, word", [("torch_xla", "tensor"), ("jax", "array")])
def test_list_accumulator_messages_name_the_frameworks_values(framework, word):
    """A list used as a Python sequence after a time loop, or appended to twice a
    step, would become one stacked tensor under PyTorch, one stacked array under JAX."""
    lib = "torch" if framework == "torch_xla" else "jax.numpy as jnp"
    src = textwrap.dedent(f"""\
        import {lib}


        def twice(cell, xs, h):
            outs = []
            for t in range(xs.shape[0]):
                h = cell(xs[t], h)
                outs.append(h)
                outs.append(h * 2)
            return outs[::2], h


        def as_list(cell, xs, h):
            outs = []
            for t in range(xs.shape[0]):
                h = cell(xs[t], h)
                outs.append(h)
            return list(outs), h
        """)
    loops = rewrite_source(src, framework).loops
    assert [loop.code for loop in loops] == ["L2S501", "L2S501"], [loop.message for loop in loops]
    assert f"(a tuple or a stacked {word}) once per step" in loops[0].message
    assert loops[1].message.endswith(f"after the rewrite it would be one stacked {word}")

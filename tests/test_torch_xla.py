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

CASES = {"decoder": [(65, R, "L2S000"), (90, R, "L2S000"), (99, N, "L2S001"), (103, R, "L2S000")]}
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


def _compare(a, b, inputs: list, grad_inputs: list, rtol=1e-5, atol=1e-5):
    out_a = a(*inputs)
    out_b = b(*inputs)
    cot = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(1)).to(out_a.device)
    wrt_a = [*grad_inputs, *a.parameters()]
    wrt_b = [*grad_inputs, *b.parameters()]
    ga = torch.autograd.grad((out_a * cot).sum(), wrt_a, allow_unused=True)
    gb = torch.autograd.grad((out_b * cot).sum(), wrt_b, allow_unused=True)
    torch_xla.sync()  # one graph for everything, before reading values back
    torch.testing.assert_close(out_b.cpu(), out_a.cpu(), rtol=rtol, atol=atol)
    names = [f"input {i}" for i in range(len(grad_inputs))] + [n for n, _ in a.named_parameters()]
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


def test_check_says_the_rewrite_is_not_run(tmp_path):
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
    assert "no torch_xla backend" in r.output, r.output
    assert "0 verified" in r.output and "3 unverified" in r.output
    assert path.read_text() == (GOLDEN / "decoder.py").read_text()

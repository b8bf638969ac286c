"""``--check`` for the torch_xla target: both models built from the example
factory with one set of weights, run on the XLA device (``PJRT_DEVICE=CPU``
here) in eval mode, outputs, gradients (inputs and every parameter) and
buffers compared, and the layers of a ``scan_layers`` loop compared attribute
by attribute against layer 0.

The model is small (3 layers, width 8, hidden 11, batch 2, length 5: sizes
that all differ) and every layer has its own weights, so a reordered stack
changes the outputs."""

from __future__ import annotations

import json
import os
import sys

from click.testing import CliRunner

os.environ.setdefault("PJRT_DEVICE", "CPU")

from loop2scan import rewrite_source  # noqa: E402
from loop2scan.check import describe  # noqa: E402
from loop2scan.cli import main  # noqa: E402

MODEL = '''\
import torch
import torch.nn as nn
import torch_xla


class Block(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.scale = 0.5

    def forward(self, h, mask, positions):
        x = self.norm(h) + torch.sin(positions.to(h.dtype))[:, None]
        scores = (x @ x.transpose(-1, -2)).masked_fill(mask.logical_not(), float("-inf"))
        h = h + self.scale * (torch.softmax(scores, dim=-1) @ x)
        return h + self.down(torch.tanh(self.up(h)))


class Decoder(nn.Module):
    def __init__(self, d, hidden, n_layers):
        super().__init__()
        self.layers = nn.ModuleList([Block(d, hidden) for _ in range(n_layers)])
        self.register_buffer("gain", torch.linspace(0.5, 1.5, d))

    def forward(self, h: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
        for layer in self.layers:
            h = layer(h, mask, positions)
        return h * self.gain, h.mean()


def example(module):
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(5, 5, generator=g) > 0.4
    mask |= torch.eye(5, dtype=torch.bool)
    args = (torch.randn(2, 5, 8, generator=g), mask, torch.arange(5) + 2)
    return {"self": module.Decoder(8, 11, 3), "args": args}


class Uneven(nn.Module):
    """The same model, and layer 2 gets another `scale` after it is built:
    invisible to the analysis, which rewrites the loop; `scan_layers` would
    run layer 0's code, with its `scale`, for every layer."""

    def __init__(self, d, hidden, n_layers):
        super().__init__()
        self.layers = nn.ModuleList([Block(d, hidden) for _ in range(n_layers)])
        self.register_buffer("gain", torch.linspace(0.5, 1.5, d))

    def forward(self, h: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor):
        for layer in self.layers:
            h = layer(h, mask, positions)
        return h * self.gain, h.mean()


def uneven(module):
    made = example(module)
    made["self"] = module.Uneven(8, 11, 3)
    made["self"].layers[2].scale = 2.0
    return made
'''

PYPROJECT = """\
[tool.loop2scan.examples]
"model.py::Decoder.forward" = "model.py::example"
"model.py::Uneven.forward" = "model.py::uneven"
"""

N_PARAMETERS = 3 * 6  # per layer: norm, up and down, weight and bias


def _lines():
    lines = MODEL.splitlines()
    loops = [i + 1 for i, text in enumerate(lines) if text == "        for layer in self.layers:"]
    assert len(loops) == 2
    return loops


def test_check_verifies_the_decoder_and_catches_uneven_layers(tmp_path, monkeypatch):
    """The decoder verifies (outputs, gradients of the input and of every
    parameter, the buffer); the model whose layer 2 has its own `scale`
    DIFFERS, naming the attribute and the layers' values: exit 1, and the file
    is not written."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "model.py").write_text(MODEL)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["rewrite", "model.py", "--check", "--write", "--format", "json", "--device", "cpu"])
    assert r.exit_code == 1, r.output
    data = json.loads(r.stdout)
    checks = {loop["line"]: loop["check"] for f in data["files"] for loop in f["loops"]
              if loop["status"] == "rewritten"}
    decoder_line, uneven_line = _lines()
    good = checks[decoder_line]
    assert good["verdict"] == "verified", good
    assert good["device"].startswith("xla:") and good["mode"] == "eval"
    assert good["gradients"]["inputs"] == 1 and good["gradients"]["parameters"] == N_PARAMETERS
    assert good["outputs"]["max_abs"] < 1e-5 and good["gradients"]["max_abs"] < 1e-4
    for timing in ("first_call_s", "compile_s", "run_s"):
        assert good[timing]["before"] > 0 and good[timing]["after"] > 0, timing
    line = describe(good)
    assert line.startswith("verified on xla:0 (") and "in eval mode" in line and "first call" in line
    bad = checks[uneven_line]
    assert bad["verdict"] == "differs", bad
    assert bad["differences"][0].startswith("layer attribute `layers[i].scale`: 0.5 on layers 0-1, 2.0 on layer 2")
    assert any(d.startswith("output [0]") for d in bad["differences"]), bad["differences"]
    assert describe(bad).startswith("DIFFERS: layer attribute `layers[i].scale`")
    assert (tmp_path / "model.py").read_text() == MODEL


def test_a_reordered_stack_differs(tmp_path, monkeypatch):
    """A rewrite edited to run the layers in reverse order is caught by the
    outputs and the gradients (the backend run in this process, as the worker
    runs it; the timings, tested above, left out)."""
    from loop2scan.check.torch_xla_backend import TorchXlaBackend
    from loop2scan.check.worker import load_original, load_rewritten, run_example

    path = tmp_path / "l2s_reordered_model.py"
    path.write_text(MODEL)
    result = rewrite_source(MODEL, "auto")
    assert result.framework == "torch_xla"
    wrong = result.new_text.replace("for layer in self.layers]", "for layer in reversed(self.layers)]", 1)
    assert wrong != result.new_text
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(TorchXlaBackend, "_steady", lambda *args: None)
    original = load_original(str(path))
    job = {"target": "Decoder.forward", "factory": "l2s_reordered_model.py::example",
           "loops": [{"line": _lines()[0], "carries": ["h"], "torch_layers": "layers"}]}
    spec = {"root": str(tmp_path), "path": str(path)}
    try:
        bad = run_example(job, spec, TorchXlaBackend(), original, load_rewritten(original, wrong))
    finally:
        sys.modules.pop(original.__name__, None)
        sys.modules.pop(f"{original.__name__}__loop2scan_rewritten", None)
    assert bad["verdict"] == "differs", bad
    assert any(d.startswith("output [0]") for d in bad["differences"]), bad["differences"]
    assert any(d.startswith("gradient parameter layers.") for d in bad["differences"]), bad["differences"]
    assert not any(d.startswith("layer attribute") for d in bad["differences"])
    assert describe(bad).startswith("DIFFERS: output [0]")


def test_layer_attributes_are_compared_with_layer_0():
    """What `scan_layers` takes from layer 0 only: plain attributes, through
    submodules, the class of a parameterless submodule, tensors that are not
    buffers, hooks.  Layers built alike (their own bound methods, closures of
    one function, one shared config object) do not differ."""
    import torch
    from torch import nn

    from loop2scan.check.torch_xla_backend import layer_attribute_differences

    config = {"window": 4}

    class Block(nn.Module):
        def __init__(self, i=0):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.act = nn.GELU()
            self.config = config
            self.rope = torch.arange(4.0)
            self.project = self.forward
            self.gate = (lambda x: x * 2) if i >= 0 else None
            self.shape = (3, 3)

        def forward(self, x):
            return self.act(self.lin(x))

    alike = [Block(i) for i in range(4)]
    assert layer_attribute_differences(alike, "layers") == []
    assert layer_attribute_differences(alike[:1], "layers") == []

    uneven = [Block() for _ in range(5)]
    uneven[1].lin.window = 8  # a submodule's attribute, set on one layer only
    uneven[3].act = nn.ReLU()
    uneven[4].rope = torch.arange(4.0) * 2
    uneven[2].register_forward_hook(lambda *a: None)
    uneven[0].shape = (3, 4)
    diffs = layer_attribute_differences(uneven, "blocks")
    text = "\n".join(diffs)
    assert len(diffs) == 5, text
    assert "layer attribute `blocks[i].lin.window`: missing on layers 0, 2-4, 8 on layer 1" in text
    assert "layer class `blocks[i].act`: GELU on layers 0-2, 4, ReLU on layer 3" in text  # not its attributes
    assert "layer attribute `blocks[i].rope`: tensor([0., 1., 2., 3.]) on layers 0-3, tensor([0., 2., 4., 6.]) " \
        "on layer 4" in text
    assert "layer attribute `blocks[i].<forward hooks>`: 0 on layers 0-1, 3-4, 1 on layer 2" in text
    assert "layer attribute `blocks[i].shape`: (3, 4) on layer 0, (3, 3) on layers 1-4" in text
    assert all(d.endswith("(`scan_layers` runs layer 0's code with every layer's weights)") for d in diffs)

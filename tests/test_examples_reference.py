"""Looped example programs agree with their hand-written ``jax.lax.scan`` twins.

Each example in ``examples/`` is loaded by file path together with its twin in
``examples/handwritten/``; outputs are compared eagerly and under ``jax.jit``,
and the vector-Jacobian product with a random cotangent is compared with
respect to every float input and parameter.  The PyTorch/XLA decoder and its
``scan_layers`` twin share one ``state_dict`` and are compared on the XLA
device (``PJRT_DEVICE=CPU`` unless set): outputs and the gradients of every
parameter.
"""

import ast
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RTOL, ATOL = 1e-5, 1e-6


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pair(stem):
    looped = _load(EXAMPLES / f"{stem}.py", f"_looped_{stem}")
    scanned = _load(EXAMPLES / "handwritten" / f"{stem}.py", f"_handwritten_{stem}")
    return looped, scanned


def _assert_trees_close(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = jnp.asarray(a), jnp.asarray(e)
        assert a.shape == e.shape, (a.shape, e.shape)
        assert a.dtype == e.dtype, (a.dtype, e.dtype)
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=RTOL, atol=ATOL)


def _random_like(tree, seed):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    )


def _check_agree(original, handwritten, args):
    # Eager.
    expected = original(*args)
    _assert_trees_close(handwritten(*args), expected)
    # Under jit.
    _assert_trees_close(jax.jit(handwritten)(*args), jax.jit(original)(*args))
    _assert_trees_close(jax.jit(original)(*args), expected)
    # VJP w.r.t. every argument (all arguments are float arrays / pytrees of them).
    out, vjp_orig = jax.vjp(original, *args)
    cotangent = _random_like(out, seed=1234)
    _, vjp_hand = jax.vjp(handwritten, *args)
    _assert_trees_close(vjp_hand(cotangent), vjp_orig(cotangent))


def _check_empty_stack_raises(original, handwritten, args, expected_out_shapes):
    # With zero steps the looped version ends in ``jnp.stack([])``, which raises,
    # so only that comparison is left out: assert the original raises (eagerly
    # and under jit) and that the scan version returns correctly shaped empties.
    with pytest.raises(ValueError):
        original(*args)
    with pytest.raises(ValueError):
        jax.jit(original)(*args)
    shapes = [x.shape for x in jax.tree.leaves(handwritten(*args))]
    assert shapes == expected_out_shapes


# Distinct sizes everywhere so that an axis mix-up cannot go unnoticed.
RNN_CASES = [
    dict(seed=0),  # defaults: steps=7, batch=3, d_in=5, hidden=4
    dict(seed=1, steps=9, batch=2, d_in=6, hidden=5),
    dict(seed=2, steps=1, batch=3, d_in=5, hidden=4),
]


@pytest.mark.parametrize("sizes", RNN_CASES)
def test_rnn(sizes):
    looped, scanned = _pair("jax_rnn")
    _check_agree(looped.rnn, scanned.rnn, looped.example_inputs(**sizes))
    args = looped.example_inputs(**sizes)
    _assert_trees_close(jax.grad(scanned.loss)(*args), jax.grad(looped.loss)(*args))


def test_rnn_zero_steps():
    looped, scanned = _pair("jax_rnn")
    args = looped.example_inputs(seed=3, steps=0, batch=3, d_in=5, hidden=4)
    _check_empty_stack_raises(looped.rnn, scanned.rnn, args, [(3, 4), (0, 3, 4)])


LSTM_CASES = [
    dict(seed=0),  # defaults: steps=6, batch=3, d_in=5, hidden=4
    dict(seed=1, steps=8, batch=2, d_in=7, hidden=3),
    dict(seed=2, steps=1, batch=3, d_in=5, hidden=4),
]


@pytest.mark.parametrize("sizes", LSTM_CASES)
def test_lstm(sizes):
    looped, scanned = _pair("jax_lstm")
    args = looped.example_inputs(**sizes)
    _check_agree(looped.lstm, scanned.lstm, args)
    _assert_trees_close(jax.grad(scanned.loss)(*args), jax.grad(looped.loss)(*args))


def test_lstm_zero_steps():
    looped, scanned = _pair("jax_lstm")
    args = looped.example_inputs(seed=3, steps=0, batch=3, d_in=5, hidden=4)
    _check_empty_stack_raises(looped.lstm, scanned.lstm, args, [(3, 0, 4), (3, 4), (3, 4)])


@pytest.mark.parametrize(
    "sizes", [dict(seed=0), dict(seed=1, steps=11, batch=4), dict(seed=2, steps=1, batch=3)]
)
def test_discounted_returns(sizes):
    looped, scanned = _pair("jax_cumulative")
    args = looped.discounted_returns_inputs(**sizes)
    _check_agree(looped.discounted_returns, scanned.discounted_returns, args)


def test_discounted_returns_zero_steps():
    looped, scanned = _pair("jax_cumulative")
    args = looped.discounted_returns_inputs(seed=3, steps=0, batch=3)
    _check_empty_stack_raises(
        looped.discounted_returns, scanned.discounted_returns, args, [(0, 3)]
    )


@pytest.mark.parametrize(
    "sizes",
    [
        dict(seed=0),  # defaults: steps=6, batch=3, dim=5
        dict(seed=1, steps=9, batch=2, dim=4),
        dict(seed=2, steps=1, batch=3, dim=5),
        # ``jnp.array([])`` is fine, so the zero-step case is compared in full.
        dict(seed=3, steps=0, batch=3, dim=5),
    ],
)
def test_running_energy(sizes):
    looped, scanned = _pair("jax_cumulative")
    args = looped.running_energy_inputs(**sizes)
    _check_agree(looped.running_energy, scanned.running_energy, args)


@pytest.mark.parametrize("stem", ["jax_rnn", "jax_lstm", "jax_cumulative", "torch_decoder", "torch_gru"])
def test_loop_only_in_looped_version(stem):
    def has_for(path):
        return any(isinstance(n, ast.For) for n in ast.walk(ast.parse(path.read_text())))

    assert has_for(EXAMPLES / f"{stem}.py")
    assert not has_for(EXAMPLES / "handwritten" / f"{stem}.py")


# ---------------------------------------------------------------------------
# Parameter-list MLP: the hand-written twin keeps the parameters stacked.

MLP_CASES = [dict(seed=0), dict(seed=3, n_layers=2, width=6, batch=2), dict(seed=4, n_layers=1)]


@pytest.mark.parametrize("case", MLP_CASES)
def test_mlp_matches_handwritten_stacked_scan(case):
    looped, scanned = _pair("jax_mlp")
    params, x = looped.example_inputs(**case)
    key = jax.random.split(jax.random.PRNGKey(case["seed"]))[0]
    stacked = scanned.init_mlp(key, case.get("n_layers", 5), case.get("width", 4))
    # the stacked initialisation holds exactly the list's values, layer by layer
    for i, (w, b) in enumerate(params):
        np.testing.assert_array_equal(np.asarray(stacked[0][i]), np.asarray(w))
        np.testing.assert_array_equal(np.asarray(stacked[1][i]), np.asarray(b))
    _assert_trees_close(scanned.mlp(stacked, x), looped.mlp(params, x))
    _assert_trees_close(jax.jit(scanned.loss)(stacked, x), jax.jit(looped.loss)(params, x))
    g_list = jax.grad(looped.loss, argnums=(0, 1))(params, x)
    g_stacked = jax.grad(scanned.loss, argnums=(0, 1))(stacked, x)
    _assert_trees_close(g_stacked[0], jax.tree.map(lambda *leaves: jnp.stack(leaves), *g_list[0]))
    _assert_trees_close(g_stacked[1], g_list[1])
    assert "for " in (EXAMPLES / "jax_mlp.py").read_text()


# ---------------------------------------------------------------------------
# PyTorch/XLA decoder: the hand-written twin runs the same blocks with
# ``scan_layers``, the mask and the positions in a tuple carry.


def _torch_twins_agree(stem: str, cls: str, **sizes):
    """The example and its hand-written twin, one ``state_dict``: outputs and the
    gradients of every parameter (and floating-point input) agree."""
    import os

    os.environ.setdefault("PJRT_DEVICE", "CPU")
    import torch
    import torch_xla

    looped, scanned = _pair(stem)
    a = looped.example_inputs(looped, seed=3, **sizes)
    b = scanned.example_inputs(scanned, seed=4, **sizes)  # other weights, replaced by the original's
    assert type(b["self"]).__name__ == cls
    b["self"].load_state_dict(a["self"].state_dict(), strict=True)
    args = [x.requires_grad_(True) if x.is_floating_point() else x for x in a["args"]]
    outs_a, outs_b = a["self"](*args), b["self"](*args)
    outs_a = outs_a if isinstance(outs_a, tuple) else (outs_a,)
    outs_b = outs_b if isinstance(outs_b, tuple) else (outs_b,)
    g = torch.Generator().manual_seed(5)
    cotangents = [torch.randn(o.shape, generator=g).to(o.device) for o in outs_a]
    floats = [x for x in args if x.is_floating_point()]
    wrt_a, wrt_b = [*floats, *a["self"].parameters()], [*floats, *b["self"].parameters()]
    grads_a = torch.autograd.grad(sum((o * c).sum() for o, c in zip(outs_a, cotangents)), wrt_a)
    grads_b = torch.autograd.grad(sum((o * c).sum() for o, c in zip(outs_b, cotangents)), wrt_b)
    torch_xla.sync()  # one graph, before reading values back
    for x, y in zip(outs_a, outs_b):
        np.testing.assert_allclose(y.detach().cpu().numpy(), x.detach().cpu().numpy(), rtol=1e-5, atol=1e-5)
    names = [f"input {i}" for i in range(len(floats))] + [name for name, _ in a["self"].named_parameters()]
    for name, ga, gb in zip(names, grads_a, grads_b):
        np.testing.assert_allclose(gb.cpu().numpy(), ga.cpu().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert "for " in (EXAMPLES / f"{stem}.py").read_text()


def test_torch_decoder_matches_handwritten_scan_layers():
    _torch_twins_agree("torch_decoder", "Decoder", n_layers=2)


# ---------------------------------------------------------------------------
# PyTorch/XLA GRU: the hand-written twin runs the cell with ``scan``, its
# parameters in the carry.


@pytest.mark.parametrize("steps", [1, 7])
def test_torch_gru_matches_handwritten_scan(steps):
    _torch_twins_agree("torch_gru", "GRU", steps=steps)

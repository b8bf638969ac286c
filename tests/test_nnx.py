"""The Flax NNX target (``--framework flax``): loops over stacks of NNX modules
become ``nnx.scan`` over one stacked module.

Golden files in ``tests/golden_nnx/`` (input, reviewed output) are checked byte
for byte and for idempotence; then every model of a case's ``example_inputs()``
is built from the input and from the output, the original's state (weights,
RNG keys and counts, the other submodules) is copied into the stacked layout
with :func:`loop2scan.layout.stack_nnx_state`, and both are called: outputs,
the state after the call (RNG counts advance per layer as in the loop),
gradients with respect to the inputs and to every ``nnx.Param`` (compared in
the stacked layout) must match, in eval mode and in train mode with dropout,
eagerly and under ``nnx.jit``.

Regenerate an expected file only on purpose (``UPDATE_GOLDEN=1``) and review it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import assert_tree_close, load
from loop2scan import rewrite_source
from loop2scan.check.flax_backend import numeric
from loop2scan.layout import LayoutError, stack_nnx_state, unstack_nnx_state

GOLDEN = Path(__file__).parent / "golden_nnx"
UPDATE = os.environ.get("UPDATE_GOLDEN", "") not in ("", "0")
R, D, N = "rewritten", "declined", "not-candidate"

# case -> every loop of the input, in source order: (line of the `for`, status, code)
CASES = {
    "decoder": [(29, R, "L2S000"), (40, N, "L2S001"), (45, R, "L2S000"), (58, R, "L2S000"), (80, R, "L2S000"),
                (93, N, "L2S001")],
    "rnn_cell": [(31, R, "L2S000"), (48, R, "L2S000"), (50, R, "L2S000"), (62, R, "L2S000")],
}


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _rewrite(text: str, framework: str = "flax", layout: str = "stacked"):
    result = rewrite_source(text, framework, layout)
    assert result.error is None, result.error
    return result


# `--layout keep`: the construction stays (the append loop is a loop of Python values again), and a
# layer loop collecting per-layer outputs is declined (an empty list would leave them unset)
KEEP_CASES = {
    "decoder": [(29, R, "L2S000"), (40, N, "L2S001"), (45, R, "L2S000"), (58, R, "L2S000"), (80, D, "L2S322"),
                (93, N, "L2S001")],
}
# (case, layout): the expected file of each; `--layout keep` leaves the construction alone
LAYOUTS = {"stacked": "expected", "keep": "keep.expected"}
GOLDEN_RUNS = [(case, layout) for case in sorted(CASES) for layout in LAYOUTS
               if layout == "stacked" or case == "decoder"]


@pytest.mark.parametrize("case,layout", GOLDEN_RUNS)
def test_golden_output(case, layout):
    src = _read(GOLDEN / f"{case}.py")
    result = _rewrite(src, layout=layout)
    got = result.new_text if result.new_text is not None else src
    expected = GOLDEN / f"{case}.{LAYOUTS[layout]}.py"
    if UPDATE:
        expected.write_bytes(got.encode("utf-8"))
    assert got == _read(expected)
    statuses = [(r.line, r.status, r.code) for r in sorted(result.loops, key=lambda r: r.line)]
    assert statuses == (CASES[case] if layout == "stacked" else KEEP_CASES[case])
    assert all(r.target == "flax.nnx.scan" for r in result.loops if r.status == R)
    again = _rewrite(got, layout=layout)
    assert again.new_text is None, "a second rewrite changed the output"


def test_auto_picks_flax_for_files_importing_nnx():
    src = _read(GOLDEN / "decoder.py")
    assert rewrite_source(src, "auto").framework == "flax"
    assert rewrite_source(src, "auto").new_text == _rewrite(src).new_text


@pytest.mark.parametrize("case", sorted(CASES))
def test_jax_target_declines_module_loops(case):
    """Under the JAX target a scan step cannot carry a module: every loop that
    calls one stays a loop."""
    result = _rewrite(_read(GOLDEN / f"{case}.py"), "jax")
    assert result.new_text is None
    assert {r.status for r in result.loops} <= {D, N}


# ----------------------------------------------------------------------------- equivalence
def _examples(case: str, layout: str):
    mod = load(_read(GOLDEN / f"{case}.py"))
    return [(case, layout, i) for i in range(len(mod.example_inputs()))]


EXAMPLES = [e for case, layout in GOLDEN_RUNS for e in _examples(case, layout)]


def copy_into_stacked(original: nnx.Module, stacked: nnx.Module, keys: list[str]) -> None:
    """Put the original model's whole state into the stacked model."""
    pure = nnx.to_pure_dict(nnx.state(original))
    for key in keys:
        pure = stack_nnx_state(pure, key)
    state = nnx.state(stacked)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(stacked, state)


def stacked_view(state, keys: list[str]):
    pure = nnx.to_pure_dict(state) if not isinstance(state, dict) else state
    for key in keys:
        pure = stack_nnx_state(pure, key)
    return pure


def _loss(out):
    return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(out))


@pytest.mark.parametrize("case,layout,index", EXAMPLES)
def test_golden_equivalence(case, layout, index):
    before = load(_read(GOLDEN / f"{case}.py"))
    after = load(_read(GOLDEN / f"{case}.{LAYOUTS[layout]}.py"))
    cls, kwargs, args, call_kwargs, *rest = before.example_inputs()[index]
    # the layer stacks of the model (none for recurrent cells, nor where the layout is kept)
    keys = rest[0] if rest and layout == "stacked" else []
    original = getattr(before, cls)(**kwargs, rngs=nnx.Rngs(0))
    stacked = getattr(after, cls)(**kwargs, rngs=nnx.Rngs(1))
    # the models are built with different seeds: the copy is what makes them comparable
    assert not np.allclose(np.asarray(jax.tree.leaves(numeric(stacked_view(nnx.state(original), keys)))[-1]),
                           np.asarray(jax.tree.leaves(numeric(nnx.to_pure_dict(nnx.state(stacked))))[-1]))
    copy_into_stacked(original, stacked, keys)

    # eager (or as decorated), twice: RNG counts advance between calls
    for _ in range(2):
        a = original(*args, **call_kwargs)
        b = stacked(*args, **call_kwargs)
        assert_tree_close(a, b, rtol=2e-5, atol=2e-6)
        assert_tree_close(numeric(stacked_view(nnx.state(original), keys)),
                          numeric(nnx.to_pure_dict(nnx.state(stacked))), what="state after the call")

    # under nnx.jit
    call = nnx.jit(lambda m, *a: m(*a, **call_kwargs))
    assert_tree_close(call(original, *args), call(stacked, *args), rtol=2e-5, atol=2e-6, what="jitted output")

    # gradients with respect to every parameter and the first input
    def loss(model, x, *rest):
        return _loss(model(x, *rest, **call_kwargs))

    grad = nnx.grad(loss, argnums=(0, 1))
    (g_model_a, g_x_a), (g_model_b, g_x_b) = grad(original, *args), grad(stacked, *args)
    assert_tree_close(g_x_a, g_x_b, rtol=1e-4, atol=1e-5, what="input gradient")
    assert_tree_close(stacked_view(g_model_a, keys), nnx.to_pure_dict(g_model_b), rtol=1e-4, atol=1e-5,
                      what="parameter gradients")
    assert_tree_close(numeric(stacked_view(nnx.state(original), keys)),
                      numeric(nnx.to_pure_dict(nnx.state(stacked))), what="state after the gradient")


def test_dropout_masks_differ_across_layers():
    """In train mode each layer draws its own mask, as in the loop (which the
    equivalence tests compare exactly): the stacked model's layers hold distinct
    RNG keys, and their counts advance from call to call."""
    after = load(_read(GOLDEN / "decoder.expected.py"))
    model = after.Decoder(d=8, hidden=12, n_layers=4, rngs=nnx.Rngs(0))
    keys = jax.random.key_data(nnx.to_pure_dict(nnx.state(model))["layers"]["drop"]["rngs"]["key"])
    assert len({tuple(np.asarray(k).ravel()) for k in keys}) == 4
    x = jax.random.normal(jax.random.key(5), (2, 3, 8))
    mask = jnp.ones((2, 3))
    first = model(x, mask, deterministic=False)
    second = model(x, mask, deterministic=False)
    assert not np.allclose(first, second), "the RNG counts did not advance between calls"


def test_zero_layers():
    before = load(_read(GOLDEN / "decoder.py"))
    after = load(_read(GOLDEN / "decoder.expected.py"))
    x = jax.random.normal(jax.random.key(4), (2, 3, 8))
    mask = jnp.ones((2, 3))
    a = before.Decoder(d=8, hidden=12, n_layers=0, rngs=nnx.Rngs(0))
    b = after.Decoder(d=8, hidden=12, n_layers=0, rngs=nnx.Rngs(0))
    state = nnx.state(b)
    pure = nnx.to_pure_dict(nnx.state(a))
    pure["layers"] = nnx.to_pure_dict(state)["layers"]
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(b, state)
    assert_tree_close(a(x, mask, deterministic=True), b(x, mask, deterministic=True))
    for cls in ("Encoder",):
        e0, e1 = getattr(before, cls)(d=8, n_layers=0, rngs=nnx.Rngs(0)), getattr(after, cls)(d=8, n_layers=0,
                                                                                            rngs=nnx.Rngs(0))
        assert_tree_close(e0(x, mask), e1(x, mask))
    # `--layout keep`: an empty list runs no scan at all
    kept = load(_read(GOLDEN / "decoder.keep.expected.py"))
    for cls, kwargs, call in (("Decoder", {"hidden": 12}, {"deterministic": False}), ("Encoder", {}, {})):
        k0 = getattr(before, cls)(d=8, n_layers=0, rngs=nnx.Rngs(0), **kwargs)
        k1 = getattr(kept, cls)(d=8, n_layers=0, rngs=nnx.Rngs(0), **kwargs)
        assert_tree_close(k0(x, mask, **call), k1(x, mask, **call))


# ----------------------------------------------------------------------------- the converter
def test_converter_round_trip_is_exact_and_keeps_layer_order():
    before = load(_read(GOLDEN / "decoder.py"))
    model = before.Decoder(d=8, hidden=12, n_layers=3, rngs=nnx.Rngs(0))
    pure = nnx.to_pure_dict(nnx.state(model))
    stacked = stack_nnx_state(nnx.state(model), "layers")
    kernel = stacked["layers"]["up"]["kernel"]
    assert kernel.shape == (3, 8, 12)
    for i in range(3):
        np.testing.assert_array_equal(kernel[i], pure["layers"][i]["up"]["kernel"])
    back = unstack_nnx_state(stacked, "layers")
    assert sorted(back["layers"]) == [0, 1, 2]
    assert jax.tree.structure(numeric(back)) == jax.tree.structure(numeric(pure))
    for x, y in zip(jax.tree.leaves(numeric(back)), jax.tree.leaves(numeric(pure))):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    # a nested path, through an nnx.List index
    nested = {"towers": {0: {"layers": pure["layers"]}}}
    assert stack_nnx_state(nested, "towers/0/layers")["towers"][0]["layers"]["up"]["kernel"].shape == (3, 8, 12)


def test_converter_refuses_layers_that_differ():
    pure = {"layers": {0: {"w": jnp.ones((2, 3))}, 1: {"w": jnp.ones((3, 3))}}}
    with pytest.raises(LayoutError, match="layer 1"):
        stack_nnx_state(pure, "layers")
    with pytest.raises(LayoutError, match="no entry"):
        stack_nnx_state(pure, "blocks")


# ----------------------------------------------------------------------------- the example
def test_examples_match_their_handwritten_scans():
    """examples/nnx_decoder.py and examples/nnx_gru.py (loops) compute what their
    twins in examples/handwritten/ (nnx.scan written by hand) compute, given the
    same weights, RNG keys and counts (train mode: dropout on)."""
    root = Path(__file__).resolve().parents[1] / "examples"
    for stem, make, keys in (("nnx_decoder", lambda m: m.example_inputs(m, n_layers=3), ["layers"]),
                             ("nnx_gru", lambda m: m.example_inputs(m, steps=4), [])):
        looped = load((root / f"{stem}.py").read_text())
        scanned = load((root / "handwritten" / f"{stem}.py").read_text())
        a, b = make(looped), make(scanned)
        copy_into_stacked(a["self"], b["self"], keys)
        for _ in range(2):  # RNG counts advance alike
            assert_tree_close(a["self"](*a["args"], **a.get("kwargs", {})),
                              b["self"](*b["args"], **b.get("kwargs", {})), rtol=2e-5, atol=2e-6, what=stem)


def _stack_source(kernel_init: str = "", call: str = "for layer in self.layers:\n            x = layer(x)\n        return x") -> str:
    """A module of residual `Block`s stacked in `Model` (``kernel_init``: extra
    argument of the block's Linear; ``call``: the body of `Model.__call__`)."""
    return f"""\
import jax
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
    def __init__(self, d, *, rngs):
        self.lin = nnx.Linear(d, d{kernel_init}, rngs=rngs)

    def __call__(self, x):
        return x + jnp.tanh(self.lin(x))


class Model(nnx.Module):
    def __init__(self, d, n, *, rngs):
        self.layers = nnx.List([Block(d, rngs=rngs) for _ in range(n)])

    @nnx.jit
    def __call__(self, x):
        {call}
"""


REVERSED = _stack_source(call="states = []\n        for layer in reversed(self.layers):\n            x = layer(x)\n"
                              "            states.append(x)\n        return x, jnp.stack(states)")


@pytest.mark.parametrize("n", [1, 2, 5])
def test_reversed_layers_scan_in_reverse(n):
    """`reversed(self.layers)` runs the last layer first: `reverse=True`, and the
    per-layer outputs come in the order the loop appended them."""
    result = _rewrite(REVERSED)
    assert [r.status for r in result.loops] == [R]
    assert "reverse=True" in result.new_text
    before, after = load(REVERSED), load(result.new_text)
    a = before.Model(4, n, rngs=nnx.Rngs(0))
    b = after.Model(4, n, rngs=nnx.Rngs(1))
    copy_into_stacked(a, b, ["layers"])
    x = jax.random.normal(jax.random.key(2), (3, 4))
    assert_tree_close(a(x), b(x))


SHARDED = _stack_source(kernel_init=", kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), "
                                   "(\"embed\", \"mlp\"))")


def test_sharding_metadata_gets_the_layer_axis():
    """Layers whose variables carry partition names: the stacked variables get
    the layer axis's name in front (`transform_metadata`), configurable."""
    from loop2scan.policy import Style

    result = _rewrite(SHARDED)
    assert result.new_text.count('transform_metadata={nnx.PARTITION_NAME: "layers"}') == 2
    named = rewrite_source(SHARDED, "flax", style=Style(layer_axis_name="stage")).new_text
    assert named.count('transform_metadata={nnx.PARTITION_NAME: "stage"}') == 2
    assert "transform_metadata" not in _rewrite(REVERSED).new_text  # nothing there carries metadata
    before, after = load(SHARDED), load(result.new_text)
    mesh = jax.make_mesh((1, 1, 1), ("layers", "embed", "mlp"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    with jax.set_mesh(mesh):
        a = before.Model(4, 3, rngs=nnx.Rngs(0))
        b = after.Model(4, 3, rngs=nnx.Rngs(1))
        assert b.layers.lin.kernel.get_metadata()["out_sharding"] == ("layers", "embed", "mlp")
        copy_into_stacked(a, b, ["layers"])
        x = jax.random.normal(jax.random.key(3), (2, 4))
        assert_tree_close(a(x), b(x))


def test_convert_state_orbax_checkpoint(tmp_path):
    """An Orbax checkpoint of an NNX model's pure-dict state (keys of the layer
    list are "0".."L-1" there) converts to the stacked layout and back, exactly."""
    import subprocess
    import sys

    import orbax.checkpoint as ocp

    before = load(_read(GOLDEN / "decoder.py"))
    model = before.Decoder(d=8, hidden=12, n_layers=3, rngs=nnx.Rngs(0))
    pure = numeric(nnx.to_pure_dict(nnx.state(model)))  # Orbax saves RNG keys as their raw data
    src = tmp_path / "ckpt"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(str(src), pure)
    checkpointer.wait_until_finished()
    for to, dst in (("stacked", tmp_path / "stacked"), ("list", tmp_path / "back")):
        source = src if to == "stacked" else tmp_path / "stacked"
        proc = subprocess.run([sys.executable, "-m", "loop2scan", "convert-state", str(source), str(dst), "--to", to,
                               "--key", "layers"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    stacked = ocp.StandardCheckpointer().restore(str(tmp_path / "stacked"))
    kernel = np.asarray(stacked["layers"]["up"]["kernel"])
    assert kernel.shape == (3, 8, 12)
    for i in range(3):
        np.testing.assert_array_equal(kernel[i], np.asarray(pure["layers"][i]["up"]["kernel"]))
    back = ocp.StandardCheckpointer().restore(str(tmp_path / "back"))
    assert sorted(back["layers"]) == ["0", "1", "2"]
    for i in range(3):
        for a, b in zip(jax.tree.leaves(back["layers"][str(i)]), jax.tree.leaves(pure["layers"][i])):
            assert np.asarray(a).dtype == np.asarray(b).dtype
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


NAMES_FROM_NNX = """\
import jax.numpy as jnp
from flax.nnx import Linear, List, Module, jit


class Block(Module):
    def __init__(self, d, *, rngs):
        self.lin = Linear(d, d, rngs=rngs)

    def __call__(self, x):
        return x + jnp.tanh(self.lin(x))


class Model(Module):
    def __init__(self, d, n, *, rngs):
        self.layers = List([Block(d, rngs=rngs) for _ in range(n)])

    @jit
    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
"""


def test_a_module_importing_names_from_nnx_gets_nnx_and_nothing_else():
    """`from flax import nnx` is added for the emitted `nnx.*` calls; no `import jax`
    (nothing emitted uses it)."""
    result = _rewrite(NAMES_FROM_NNX)
    new = result.new_text
    assert new.splitlines()[:3] == ["import jax.numpy as jnp", "from flax import nnx",
                                    "from flax.nnx import Linear, List, Module, jit"]
    assert "import jax\n" not in new
    before, after = load(NAMES_FROM_NNX), load(new)
    a, b = before.Model(4, 3, rngs=nnx.Rngs(0)), after.Model(4, 3, rngs=nnx.Rngs(1))
    copy_into_stacked(a, b, ["layers"])
    x = jax.random.normal(jax.random.key(5), (2, 4))
    assert_tree_close(a(x), b(x))

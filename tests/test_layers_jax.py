"""Loops over per-layer parameter lists (JAX), executed.

With the stacked layout the builder returns one pytree with a leading layer
axis: its values must be bit-identical to stacking the old list, in layer
order, and every function using it must give the outputs and gradients of the
original (gradients of the stacked layout compared with the stacked gradients
of the list).  Layer counts 1, 2 and 5, distinct weights per layer, sizes
B=3 != D=4.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_tree_close, load, rewrite, statuses
from loop2scan.layout import LayoutError, stack_layers, unstack_layers

B, D = 3, 4
HEADER = "import functools\n\nimport jax\nimport jax.numpy as jnp\n\n"


def src(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def bitwise_equal(a, b) -> None:
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb, f"{ta} != {tb}"
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def check_layout(code: str, builder: str, build_args, fns: dict, *, rewritten: int, layout: str = "stacked"):
    """Rewrite ``code``; compare builder results and every ``fns[name](params, x)``."""
    result = rewrite(code, layout=layout)
    got = [s for _, s, _ in statuses(result)].count("rewritten")
    assert got == rewritten, statuses(result)
    a, b = load(code), load(result.new_text)
    params_a = getattr(a, builder)(*build_args)
    params_b = getattr(b, builder)(*build_args)
    if layout == "stacked":
        assert isinstance(params_a, list)
        bitwise_equal(stack_layers(params_a), params_b)  # values bit-identical, layer order kept
    else:
        bitwise_equal(params_a, params_b)
    x = jax.random.normal(jax.random.PRNGKey(42), (B, D))
    for name, reduce in fns.items():
        fa, fb = getattr(a, name), getattr(b, name)
        assert_tree_close(fa(params_a, x), fb(params_b, x))
        assert_tree_close(jax.jit(fa)(params_a, x), jax.jit(fb)(params_b, x))
        ga = jax.grad(lambda p, x: reduce(fa(p, x)), argnums=(0, 1))(params_a, x)
        gb = jax.grad(lambda p, x: reduce(fb(p, x)), argnums=(0, 1))(params_b, x)
        gp_a = stack_layers(ga[0]) if layout == "stacked" else ga[0]
        assert_tree_close(gp_a, gb[0], 1e-4, 1e-5, "parameter gradients")
        assert_tree_close(ga[1], gb[1], 1e-4, 1e-5, "input gradients")
    return result


def total(y):
    return jnp.sum(jnp.sin(y) * jnp.arange(y.size).reshape(y.shape))


TUPLES = src("""
    def init_mlp(key, n_layers, width):
        params = []
        for k in jax.random.split(key, n_layers):
            kw, kb = jax.random.split(k)
            w = jax.random.normal(kw, (width, width)) / jnp.sqrt(width)
            params.append((w, 0.1 * jax.random.normal(kb, (width,))))
        return params


    def mlp(params, x):
        for w, b in params:
            x = jnp.tanh(x @ w + b)
        return x
""")


@pytest.mark.parametrize("n_layers", [1, 2, 5])
def test_tuple_layers_built_by_an_append_loop(n_layers):
    code = TUPLES + textwrap.dedent("""

        def run(key, x):
            params = init_mlp(key, 5, 4)
            return mlp(params, x)
    """)
    r = check_layout(code, "init_mlp", (jax.random.PRNGKey(n_layers), n_layers, D), {"mlp": total}, rewritten=1)
    assert "return jax.tree.map(lambda *layer: jnp.stack(layer), *params)" in r.new_text
    assert "jax.lax.scan(_layer_step, x, params)" in r.new_text
    (mlp_loop,) = [loop for loop in r.loops if loop.status == "rewritten"]
    assert mlp_loop.plan.layout.builder == "init_mlp"


DICTS = src("""
    def init(key, n, d):
        keys = jax.random.split(key, n)
        return [{"w": jax.random.normal(k, (d, d)), "b": jax.random.normal(jax.random.fold_in(k, 1), (d,))}
                for k in keys]


    def hidden(params, x):
        for p in params[:-1]:
            x = jax.nn.relu(x @ p["w"] + p["b"])
        last = params[-1]
        return x @ last["w"] + last["b"]


    def by_index(params, x):
        for i in range(len(params)):
            x = jnp.tanh(x @ params[i]["w"]) + params[i]["b"]
        return x


    def loss(params, x):
        return jnp.sum(hidden(params, x) ** 2) + jnp.sum(by_index(params, x))


    def train(key, x, steps):
        params = init(key, 5, x.shape[-1])
        for _ in range(steps):
            grads = jax.grad(loss)(params, x)
            params = jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)
        print(len(params))
        return params
""")


@pytest.mark.parametrize("n_layers", [2, 5])
def test_dict_layers_slices_indices_and_a_training_loop(n_layers):
    r = check_layout(DICTS, "init", (jax.random.PRNGKey(3), n_layers, D),
                     {"hidden": total, "by_index": total, "loss": lambda y: y}, rewritten=3)
    assert "jax.tree.map(lambda leaf: leaf[:-1], params)" in r.new_text
    assert "last = jax.tree.map(lambda leaf: leaf[-1], params)" in r.new_text
    assert "print(len(jax.tree.leaves(params)[0]))" in r.new_text
    a, b = load(DICTS), load(r.new_text)
    x = jax.random.normal(jax.random.PRNGKey(0), (B, D))
    # the module's API now returns the stacked layout: equal to stacking the list result
    assert_tree_close(stack_layers(a.train(jax.random.PRNGKey(1), x, 3)), b.train(jax.random.PRNGKey(1), x, 3),
                      1e-5, 1e-6)


def test_one_layer_through_jit_and_partial():
    code = src("""
        def init(key, n, d):
            return [(jax.random.normal(k, (d, d)), jnp.zeros(d)) for k in jax.random.split(key, n)]


        def mlp(scale, params, x):
            for w, b in params:
                x = jnp.tanh(scale * (x @ w) + b)
            return x


        def run(key, x):
            params = init(key, 1, x.shape[-1])
            f = jax.jit(functools.partial(mlp, 0.5))
            return f(params, x)
    """)
    r = rewrite(code)
    assert [s for _, s, _ in statuses(r)] == ["rewritten"]
    a, b = load(code), load(r.new_text)
    x = jax.random.normal(jax.random.PRNGKey(5), (B, D))
    assert_tree_close(a.run(jax.random.PRNGKey(2), x), b.run(jax.random.PRNGKey(2), x))


@pytest.mark.parametrize("n_layers", [1, 5])
def test_keep_layout_stacks_at_the_call(n_layers):
    code = src("""
        def mlp(params, x):
            for w, b in params:
                x = jnp.tanh(x @ w + b)
            return x
    """)
    assert statuses(rewrite(code))[0][2] == "L2S304"  # the builder is not visible: stacked layout refused
    r = rewrite(code, layout="keep")
    assert "jax.tree.map(lambda *layer: jnp.stack(layer), *params)" in r.new_text
    a, b = load(code), load(r.new_text)
    keys = jax.random.split(jax.random.PRNGKey(9), n_layers)
    params = [(jax.random.normal(k, (D, D)), jax.random.normal(jax.random.fold_in(k, 7), (D,))) for k in keys]
    x = jax.random.normal(jax.random.PRNGKey(4), (B, D))
    assert_tree_close(a.mlp(params, x), b.mlp(params, x))
    ga = jax.grad(lambda p: total(a.mlp(p, x)))(params)
    gb = jax.grad(lambda p: total(b.mlp(p, x)))(params)
    assert_tree_close(ga, gb, 1e-4, 1e-5)  # same (list) layout on both sides


def test_all_loops_over_one_list_change_together():
    code = TUPLES + textwrap.dedent("""

        def noisy(params, x):
            for w, b in params:
                print(w.shape)
                x = x @ w + b
            return x


        def run(key, x):
            params = init_mlp(key, 3, x.shape[-1])
            return mlp(params, x) + noisy(params, x)
    """)
    r = rewrite(code)
    lines = code.splitlines()
    mlp_line = lines.index("    for w, b in params:") + 1
    noisy_line = lines.index("    for w, b in params:", mlp_line) + 1
    codes = {line: code for line, _, code in statuses(r)}
    assert codes[mlp_line] == "L2S309" and codes[noisy_line] == "L2S201"
    assert r.new_text is None


def test_method_loop_is_not_followed():
    code = TUPLES + textwrap.dedent("""

        class Model:
            def __call__(self, params, x):
                for w, b in params:
                    x = jnp.tanh(x @ w + b)
                return x
    """)
    r = rewrite(code)
    assert statuses(r)[-1][2] == "L2S304"


# ----------------------------------------------------------------------------- the converter
def test_stack_and_unstack_round_trip_bitwise_in_order():
    layers = [{"w": np.random.RandomState(i).randn(3, 2).astype(np.float32), "b": np.full(2, i, np.int32),
               "t": (np.float16(i) * np.ones(4, np.float16), np.arange(i, i + 2))} for i in range(5)]
    stacked = stack_layers(layers)
    assert stacked["w"].shape == (5, 3, 2) and stacked["t"][0].dtype == np.float16
    np.testing.assert_array_equal(stacked["b"][:, 0], np.arange(5))  # layer order kept
    back = unstack_layers(stacked)
    assert len(back) == 5
    for x, y in zip(layers, back):
        bitwise_equal(x, y)
    # jax arrays are converted too, with their exact values
    jl = [(jax.random.normal(k, (2,)),) for k in jax.random.split(jax.random.PRNGKey(0), 3)]
    np.testing.assert_array_equal(stack_layers(jl)[0], np.stack([np.asarray(t[0]) for t in jl]))


def test_converter_refuses_layers_that_differ():
    with pytest.raises(LayoutError, match="layer 1"):
        stack_layers([{"w": np.zeros((2, 2))}, {"w": np.zeros((3, 2))}])
    with pytest.raises(LayoutError, match="structure"):
        stack_layers([{"w": np.zeros(2)}, {"v": np.zeros(2)}])
    with pytest.raises(LayoutError):
        stack_layers([])
    with pytest.raises(LayoutError, match="leading"):
        unstack_layers({"w": np.zeros((2, 2)), "b": np.zeros(3)})


@pytest.mark.parametrize("ext", [".npz", ".pkl", ".msgpack"])
def test_convert_state_command_round_trip(tmp_path, ext):
    import pickle

    from click.testing import CliRunner

    from loop2scan.cli import main
    from loop2scan.layout import load_checkpoint, save_checkpoint

    layers = [{"w": np.random.RandomState(i).randn(3, 3).astype(np.float32), "b": np.full(3, i, np.float32)}
              for i in range(4)]
    tree = {"params": layers, "step": np.int32(7)} if ext != ".npz" else {"params": {str(i): l for i, l in
                                                                                   enumerate(layers)}}
    src_path = tmp_path / f"ck{ext}"
    save_checkpoint(tree, str(src_path))
    stacked_path, back_path = tmp_path / f"st{ext}", tmp_path / f"back{ext}"
    runner = CliRunner()
    r1 = runner.invoke(main, ["convert-state", str(src_path), str(stacked_path), "--to", "stacked", "--key", "params"])
    assert r1.exit_code == 0, r1.output
    stacked = load_checkpoint(str(stacked_path))["params"]
    np.testing.assert_array_equal(np.asarray(stacked["w"]), np.stack([layer["w"] for layer in layers]))
    r2 = runner.invoke(main, ["convert-state", str(stacked_path), str(back_path), "--to", "list", "--key", "params"])
    assert r2.exit_code == 0, r2.output
    back = load_checkpoint(str(back_path))["params"]
    back_list = [back[k] for k in sorted(back, key=int)] if isinstance(back, dict) else back
    for x, y in zip(layers, back_list):
        bitwise_equal(x, {k: np.asarray(v) for k, v in y.items()})
    # an existing output is not overwritten without --force; a bad key is one clear error
    r3 = runner.invoke(main, ["convert-state", str(src_path), str(back_path), "--to", "stacked", "--key", "params"])
    assert r3.exit_code == 2 and "exists" in r3.output
    r4 = runner.invoke(main, ["convert-state", str(src_path), str(tmp_path / f"x{ext}"), "--to", "stacked",
                              "--key", "nope"])
    assert r4.exit_code == 2
    del pickle

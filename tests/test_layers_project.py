"""Parameter lists across the modules of a project.

A builder's stacked layout is seen by every module that calls it, passes its
result on, or receives it: those modules are followed (through imports and
relative imports), their uses rewritten with the same rules as local ones,
and the rewritten project is run against the original: the original's
parameters, stacked with :func:`loop2scan.layout.stack_layers`, equal the
rewritten project's.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
from pathlib import Path

import jax

from helpers import assert_tree_close
from loop2scan.api import Options, run
from loop2scan.layout import stack_layers

D, L, B = 5, 4, 3


def write_project(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def load(root: Path, module: str, package: str):
    """Import ``package.module`` from ``root`` afresh."""
    for name in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(f"{package}.{module}")
    finally:
        sys.path.remove(str(root))
        for name in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
            del sys.modules[name]


def rewrite_copy(tmp_path: Path, files: dict[str, str]) -> tuple[Path, Path, object]:
    before, after = tmp_path / "before", tmp_path / "after"
    write_project(before, files)
    shutil.copytree(before, after)
    report = run([str(after)], Options(write=True, jobs=1))
    assert not report.errors, [f.error for f in report.errors]
    return before, after, report


def statuses(report) -> dict[str, list[tuple[int, str]]]:
    return {Path(f.path).name: [(lp.line, lp.code) for lp in f.loops] for f in report.files if f.loops}


TRAINING = {
    "trainpkg/__init__.py": "",
    "trainpkg/model.py": """
        import jax
        import jax.numpy as jnp


        def init_params(key, n, d):
            return [{"w": jax.random.normal(k, (d, d)) / d, "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (d,))}
                    for k in jax.random.split(key, n)]


        def apply(params, x):
            for p in params:
                x = jnp.tanh(x @ p["w"] + p["b"])
            return x


        def loss(params, x):
            return jnp.mean(apply(params, x) ** 2)
        """,
    "trainpkg/train.py": """
        import jax
        import optax

        from . import model
        from .model import init_params

        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))


        def train_step(params, opt_state, x):
            loss, grads = jax.value_and_grad(model.loss)(params, x)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return params, opt_state, loss


        def train(key, x, steps):
            params = init_params(key, 4, x.shape[-1])
            opt_state = tx.init(params)
            first = params[0]["w"]
            for _ in range(steps):
                params, opt_state, loss = train_step(params, opt_state, x)
            return params, first, len(params)
        """,
}


def test_training_loop_across_modules_with_an_optimizer(tmp_path):
    before, after, report = rewrite_copy(tmp_path, TRAINING)
    st = statuses(report)
    assert st["model.py"] == [(11, "L2S000")], st
    text = (after / "trainpkg" / "train.py").read_text()
    # the importer's uses of the list are rewritten for the stacked layout
    assert 'jax.tree.map(lambda leaf: leaf[0], params)["w"]' in text
    assert "len(jax.tree.leaves(params)[0])" in text
    a, b = load(before, "train", "trainpkg"), load(after, "train", "trainpkg")
    x = jax.random.normal(jax.random.PRNGKey(1), (B, D))
    for steps in (0, 1, 3):
        pa, first_a, n_a = a.train(jax.random.PRNGKey(0), x, steps)
        pb, first_b, n_b = b.train(jax.random.PRNGKey(0), x, steps)
        assert n_a == n_b == 4
        assert_tree_close(first_a, first_b, 1e-6, 1e-7)
        assert_tree_close(stack_layers(pa), pb, 1e-5, 1e-6)


def test_builder_and_loop_in_modules_joined_by_a_third(tmp_path):
    files = {
        "split/__init__.py": "",
        "split/params.py": """
            import jax


            def init_layers(key, n, d):
                return [(jax.random.normal(k, (d, d)) / d, jax.random.normal(jax.random.fold_in(k, 7), (d,)))
                        for k in jax.random.split(key, n)]
            """,
        "split/net.py": """
            import jax.numpy as jnp


            def forward(layers, x):
                for w, b in layers:
                    x = jnp.tanh(x @ w + b)
                return x
            """,
        "split/main.py": """
            from .net import forward
            from .params import init_layers


            def predict(key, x, n):
                layers = init_layers(key, n, x.shape[-1])
                return forward(layers, x), layers
            """,
    }
    before, after, report = rewrite_copy(tmp_path, files)
    assert statuses(report)["net.py"] == [(5, "L2S000")]
    assert "jnp.stack(layer)" in (after / "split" / "params.py").read_text()
    a, b = load(before, "main", "split"), load(after, "main", "split")
    x = jax.random.normal(jax.random.PRNGKey(1), (B, D))
    for n in (1, L):
        ya, la = a.predict(jax.random.PRNGKey(2), x, n)
        yb, lb = b.predict(jax.random.PRNGKey(2), x, n)
        assert_tree_close(ya, yb, 1e-5, 1e-6)
        assert_tree_close(stack_layers(la), lb, 0, 0)


def test_per_layer_dicts_handed_to_a_helper_are_a_parameter_list(tmp_path):
    files = {
        "helper/__init__.py": "",
        "helper/mlp.py": """
            import jax
            import jax.numpy as jnp


            def init(key, n, d):
                return [{"w": jax.random.normal(k, (d, d)) / d, "b": jnp.full((d,), 0.1)}
                        for k in jax.random.split(key, n)]


            def block(p, x):
                return jax.nn.relu(x @ p["w"] + p["b"])


            def forward(params, x):
                for p in params:
                    x = block(p, x)
                return x


            def run(key, x, n):
                return forward(init(key, n, x.shape[-1]), x)
            """,
    }
    before, after, report = rewrite_copy(tmp_path, files)
    assert statuses(report)["mlp.py"] == [(15, "L2S000")]
    a, b = load(before, "mlp", "helper"), load(after, "mlp", "helper")
    x = jax.random.normal(jax.random.PRNGKey(1), (B, D))
    for n in (1, L):
        assert_tree_close(a.run(jax.random.PRNGKey(3), x, n), b.run(jax.random.PRNGKey(3), x, n), 1e-5, 1e-6)


def test_a_second_write_changes_nothing(tmp_path):
    _, after, _ = rewrite_copy(tmp_path, TRAINING)
    texts = {p: p.read_text() for p in after.rglob("*.py")}
    second = run([str(after)], Options(write=True, jobs=1))
    assert not any(f.changed for f in second.files), [f.path for f in second.files if f.changed]
    assert texts == {p: p.read_text() for p in after.rglob("*.py")}


def test_parallel_run_gives_the_same_project_rewrite(tmp_path):
    files = dict(TRAINING)
    for i in range(8):  # enough files for worker processes
        files[f"trainpkg/extra_{i}.py"] = f"VALUE_{i} = {i}\n"
    write_project(tmp_path / "a", files)
    write_project(tmp_path / "b", files)
    serial = run([str(tmp_path / "a")], Options(write=True, jobs=1))
    parallel = run([str(tmp_path / "b")], Options(write=True, jobs=2))
    assert [(Path(f.path).name, f.changed) for f in serial.files] == \
        [(Path(f.path).name, f.changed) for f in parallel.files]
    for rel in ("trainpkg/model.py", "trainpkg/train.py"):
        assert (tmp_path / "a" / rel).read_text() == (tmp_path / "b" / rel).read_text()

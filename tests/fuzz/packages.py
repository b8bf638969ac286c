"""Packages of several modules: a per-layer parameter list built in one
module, looped over in another, used by importers.

The package (``fzpkg``) holds

* ``params.py``: the builder ``init_params(key, n, d)``, a comprehension or
  an ``append`` loop over ``jax.random.split(key, n)`` keys (or over
  ``range(n)`` picking keys) returning a list of per-layer dicts, tuples or
  weight matrices;
* ``net.py``: ``apply(params, x)``, the loop over the list (over its
  elements, through a helper of the module, by index, or over ``params[1:]``
  after the first layer);
* the importer, ``run(key, x)``: in ``net.py`` itself (two files) or in
  ``main.py`` (three files), importing the builder relatively, as a module,
  or absolutely; it builds the list and uses it: indexes it, takes its
  ``len``, slices it, maps it leaf-wise, trains it with an element-wise optax
  optimizer, and returns the list (compared in the stacked layout).

``must-rewrite`` packages only use the list in ways the stacked layout
keeps.  ``must-decline`` ones do one thing the stacked layout would change,
so the loop over the list must stay a loop (its rewrite needs the layout
change): an importer reading per-layer shapes by iterating the list, an
importer extending the list with another layer, a per-leaf optimizer
(``optax.lamb``: its trust ratio is per leaf), a weight-decay mask reading
``ndim``, or layers of different widths (nothing to stack).
"""

from __future__ import annotations

import ast

from fuzz.program import B, D, MUST_DECLINE, MUST_REWRITE, ArgSpec, Program

PKG = "fzpkg"
STRUCTURES = ("dicts", "tuples", "arrays")
BUILDERS = ("comprehension", "append", "range-keys")
LOOPS = ("elements", "helper", "index", "skip-first")
USES = ("index", "len", "slice", "tree-map", "optax")
OPTIMIZERS = ("optax.sgd(0.1)", "optax.adam(1e-2)", "optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))",
              "optax.adamw(1e-2)")
DECLINES = ("count-sizes", "extend", "lamb", "mask-ndim", "widths")


def _layer(structure: str, k1: str, k2: str, shape_in: str = "d", shape_out: str = "d") -> str:
    w = f"jax.random.normal({k1}, ({shape_in}, {shape_out})) / {shape_in}"
    b = f"0.1 * jax.random.normal({k2}, ({shape_out},))"
    return {"dicts": f'{{"w": {w}, "b": {b}}}', "tuples": f"({w}, {b})", "arrays": w}[structure]


def _builder(c, structure: str, widths: bool) -> tuple[str, str]:
    """The source of ``params.py`` and the builder's form."""
    form = c.pick(BUILDERS)
    if widths:  # layers d -> d + 2 -> ... -> d: they cannot be stacked
        layer = _layer(structure, "k", "jax.random.fold_in(k, 1)", "m", "n_out")
        body = ("    sizes = [d] + [d + 2] * (n - 1) + [d]\n"
                "    return [" + layer + "\n"
                "            for (m, n_out), k in zip(zip(sizes[:-1], sizes[1:]), jax.random.split(key, n))]\n")
        form = "widths"
    elif form == "comprehension":
        layer = _layer(structure, "k", "jax.random.fold_in(k, 1)")
        body = f"    return [{layer}\n            for k in jax.random.split(key, n)]\n"
    elif form == "append":
        layer = _layer(structure, "kw", "kb")
        body = ("    params = []\n"
                "    for k in jax.random.split(key, n):\n"
                "        kw, kb = jax.random.split(k)\n"
                f"        params.append({layer})\n"
                "    return params\n")
    else:
        layer = _layer(structure, "keys[i]", "jax.random.fold_in(keys[i], 1)")
        body = ("    keys = jax.random.split(key, n)\n"
                f"    return [{layer}\n            for i in range(n)]\n")
    text = "import jax\nimport jax.numpy as jnp\n\n\ndef init_params(key, n, d):\n" + body
    return text, form


def _apply(c, structure: str, act: str) -> tuple[str, str]:
    """The source of ``apply`` (and its helper) and the loop's form."""
    form = c.pick(LOOPS)
    if structure == "dicts":
        layer = f'{act}(x @ {{p}}["w"] + {{p}}["b"])'
    elif structure == "tuples":
        layer = f"{act}(x @ {{p}}[0] + {{p}}[1])"
    else:
        layer = f"{act}(x @ {{p}})"
    helper = ""
    if form == "elements":
        if structure == "tuples":
            loop = f"    for w, b in params:\n        x = {act}(x @ w + b)\n"
        else:
            loop = f"    for p in params:\n        x = {layer.format(p='p')}\n"
    elif form == "helper":
        helper = f"def block(p, x):\n    return {layer.format(p='p')}\n\n\n"
        loop = "    for p in params:\n        x = block(p, x)\n"
    elif form == "index":
        loop = f"    for i in range(len(params)):\n        x = {layer.format(p='params[i]')}\n"
    else:  # skip-first
        loop = (f"    x = {layer.format(p='params[0]')}\n"
                f"    for p in params[1:]:\n        x = {layer.format(p='p')}\n")
    return helper + "def apply(params, x):\n" + loop + "    return x\n", form


def generate_package(c, decline: bool) -> Program:
    structure = c.pick(STRUCTURES)
    kind = None
    if decline:
        kinds = [k for k in DECLINES if structure != "arrays" or k not in ("count-sizes", "mask-ndim")]
        kind = c.pick(kinds)
    params_text, builder = _builder(c, structure, widths=kind == "widths")
    act = c.pick(["jnp.tanh", "jax.nn.relu", "jax.nn.gelu"])
    apply_text, loop = _apply(c, structure, act)
    # every loop over the list runs a step: over `params[1:]` a list of one layer would leave an
    # empty Python list, scanned as `jnp.asarray([])` (the documented zero-step limitation)
    n_layers = c.pick([2, 4] if kind in ("lamb", "widths") or loop == "skip-first" else [1, 2, 4])
    feats = ["class:package", f"package:structure:{structure}", f"package:layers:{n_layers}"]
    if kind:
        feats.append(f"package:decline:{kind}")
    three = c.pick([False, True])
    feats += [f"package:builder:{builder}", f"package:loop:{loop}", f"package:files:{3 if three else 2}"]

    # --- the importer
    imp = c.pick(["relative", "module", "absolute"])
    feats.append(f"package:import:{imp}")
    builder_call = {"relative": "init_params", "module": "params_mod.init_params", "absolute": "init_params"}[imp]
    import_lines = {"relative": ["from .params import init_params"],
                    "module": ["from . import params as params_mod"],
                    "absolute": [f"from {PKG}.params import init_params"]}[imp]
    if three:
        import_lines.append(c.pick(["from .net import apply", f"from {PKG}.net import apply"]))
    uses = [u for u in USES if c.flag(0.4)]
    if kind in ("lamb", "mask-ndim") and "optax" not in uses:
        uses.append("optax")
    feats += [f"package:use:{u}" for u in uses]
    body = [f"params = {builder_call}(key, N_LAYERS, x.shape[-1])"]
    extras: list[str] = []
    if "tree-map" in uses:
        body.append("params = jax.tree.map(lambda a: 0.9 * a, params)")
    module_code = ""
    if "optax" in uses:
        if kind == "lamb":
            tx = "optax.lamb(1e-2)"
        elif kind == "mask-ndim":
            tx = "optax.adamw(1e-2, mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p))"
        else:
            tx = c.pick(OPTIMIZERS)
            feats.append(f"package:optimizer:{tx.split('(')[0] if 'chain' not in tx else 'chain'}")
        module_code += (f"\nTX = {tx}\n\n\n"
                        "def loss(params, x):\n    return jnp.mean(apply(params, x) ** 2)\n\n\n"
                        "def train_step(params, opt_state, x):\n"
                        "    value, grads = jax.value_and_grad(loss)(params, x)\n"
                        "    updates, opt_state = TX.update(grads, opt_state, params)\n")
        if c.flag(0.5):
            module_code += "    return optax.apply_updates(params, updates), opt_state, value\n"
            feats.append("package:update:returned")
        else:
            module_code += ("    params = optax.apply_updates(params, updates)\n"
                            "    return params, opt_state, value\n")
            feats.append("package:update:assigned")
        body.append("opt_state = TX.init(params)")
        if c.flag(0.5):
            body += ["for _ in range(2):", "    params, opt_state, value = train_step(params, opt_state, x)"]
            feats.append("package:train:loop")
        else:
            body.append("params, opt_state, value = train_step(params, opt_state, x)")
        extras.append("value")
    if "index" in uses:
        pick = c.pick(["params[0]", "params[-1]"])
        body.append(f"first = {pick}")
        extras.append("first")
    if "len" in uses:
        body.append("count = len(params)")
        extras.append("count")
    if kind == "count-sizes":
        shape = 'p["w"].shape' if structure == "dicts" else "p[0].shape"
        body.append(f"shapes = [{shape} for p in params]")
        extras.append("jnp.asarray(shapes)")
    if kind == "extend":
        layer = _layer(structure, "jax.random.fold_in(key, 99)", "jax.random.fold_in(key, 98)", "x.shape[-1]",
                       "x.shape[-1]")
        body.append(f"params = params + [{layer}]")
    body.append("y = apply(params, x)")
    if "slice" in uses:
        body.append(f"y_head = apply(params[:{2 if loop == 'skip-first' else 1}], x)")
        extras.append("y_head")
    run = "def run(key, x):\n" + "".join(f"    {line}\n" for line in body)
    run += "    return " + ", ".join(["y", "params"] + extras) + "\n"

    head = ["import jax", "import jax.numpy as jnp"] + (["import optax"] if "optax" in uses else []) + [""]
    consts = f"\nN_LAYERS = {n_layers}\n"
    if three:
        main = "\n".join(head + import_lines) + "\n" + consts + module_code + "\n\n" + run
        net = "import jax\nimport jax.numpy as jnp\n\n\n" + apply_text
        files = {f"{PKG}/__init__.py": "", f"{PKG}/params.py": params_text, f"{PKG}/net.py": net,
                 f"{PKG}/main.py": main}
        entry = f"{PKG}/main.py"
    else:
        net = ("\n".join(head + import_lines) + "\n" + consts + "\n\n" + apply_text + module_code + "\n\n" + run)
        files = {f"{PKG}/__init__.py": "", f"{PKG}/params.py": params_text, f"{PKG}/net.py": net}
        entry = f"{PKG}/net.py"

    # the loops over the list (in `apply`) carry the label; the builder's and the training loop are free
    loops, layer_loops, free = [], [], []
    for path, text in files.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.For):
                loops.append((path, node.lineno))
                over_list = path == f"{PKG}/net.py" and "params" in ast.unparse(node.iter)
                (layer_loops if over_list else free).append((path, node.lineno))
    assert layer_loops, files
    return Program(
        source=files[entry],
        args=(ArgSpec("key", kind="key"), ArgSpec("x", (B, D))),
        label=MUST_DECLINE if decline else MUST_REWRITE,
        loops=tuple(sorted(loops)),
        must_not_rewrite=tuple(sorted(layer_loops)) if decline else (),
        free_loops=tuple(sorted(free)),
        construct=f"package:{kind}" if kind else None,
        construct_loop="net.py" if kind else None,
        steps=n_layers,
        features=tuple(dict.fromkeys(feats)),
        fn="run",
        klass="package",
        files=tuple(files.items()),
        entry=entry,
        stacked_outputs=(1,),
    )

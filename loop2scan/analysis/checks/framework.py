"""The framework of the loop against the chosen target (``L2S6xx``)."""

from __future__ import annotations

import ast

from ..activity import walk_body
from ..decline import Code, Decline
from ..examples import Invalid
from ..imports import is_under
from ..nodes import walk

CODES = (
    Code("L2S601", "framework-mismatch", "the loop uses a framework the chosen target does not handle",
        "Nothing to change: this version rewrites loops over JAX arrays, and the loop is left as it is."),
    Code("L2S602", "framework-unavailable", "no scan target is available for this file's framework",
        "Nothing to change: plain PyTorch has no scan that runs eagerly on CUDA; files that import `torch_xla` "
        "get the torch_xla target (`scan_layers` and `scan`). The loop is left as it is."),
    Code("L2S603", "framework-version", "the framework version the code must run on lacks what the rewrite needs",
         "Nothing to change if that version is right; otherwise say which version the code runs on "
         "(`target-versions` in [tool.loop2scan], or the project's declared dependencies)."),
)


def check_framework(la) -> None:
    fw = la.mctx.framework
    imports = la.fctx.imports if la.fctx else la.mctx.imports
    shadow = frozenset(la.fctx.shadowing) if la.fctx else frozenset()
    if fw in ("torch", "torch_xla"):
        if fw == "torch":
            raise Decline("L2S602", "plain PyTorch file (no `torch_xla` import): there is no scan that keeps "
                          "eager CUDA code working, so the loop is left unchanged", la.loop)
        from .torch_time import check_time_loop

        check_time_loop(la)  # L2S331, L2S333, L2S335, L2S336: the torch rules for a time loop
        return
    if la.func is not None and _pallas_kernel(la):
        raise Decline("L2S601", "the loop is in Pallas kernel code (the function uses `jax.experimental."
                      "pallas`); kernel loops are unrolled on purpose and a scan may not lower there",
                      la.loop)
    for node in walk(la.loop):
        if isinstance(node, ast.Call):
            q = imports.qualname(node.func, shadow)
            if is_under(q, "torch", "torch_xla"):
                raise Decline("L2S601", f"the loop calls PyTorch (`{ast.unparse(node.func)}`); "
                              "the JAX target cannot rewrite it", node)
            if is_under(q, "flax.linen", "flax.nnx", "flax", "haiku", "equinox"):
                raise Decline("L2S601", f"the loop builds or calls Flax/Haiku/Equinox modules "
                              f"(`{ast.unparse(node.func)}`): module state and parameter names would change under a "
                              f"scan, and {_TARGET_SCOPE[fw == 'flax']}", node)
    if fw == "flax":
        from .module_stacks import carried_cells

        la.cells = carried_cells(la)  # recurrent cells: carried by an `nnx.scan` over the steps
        if la.cells:
            return
    cls = la.mctx.enclosing_class(la.func) if la.func is not None else None
    if cls is not None and _is_module_class(la, cls):
        for node in walk(la.loop):
            if isinstance(node, ast.Call):
                f = node.func
                while isinstance(f, (ast.Attribute, ast.Subscript)):
                    f = f.value
                if isinstance(f, ast.Name) and f.id == "self" and isinstance(node.func, (ast.Attribute, ast.Subscript)):
                    raise Decline("L2S601", f"the loop calls a submodule (`{ast.unparse(node.func)}`) of a "
                                  f"Flax/Haiku/PyTorch module; {_TARGET_SCOPE[fw == 'flax']}", node)


#: What the target rewrites, for the messages of loops that use modules (by "the target is flax").
_TARGET_SCOPE = {
    False: "the JAX target rewrites only loops over arrays (`--framework flax` scans NNX layer stacks and "
           "recurrent cells)",
    True: "the Flax target scans only NNX layer stacks (`for layer in self.layers`) and recurrent cells (a "
          "submodule of `self` called every step) besides loops over arrays",
}


def _pallas_kernel(la) -> bool:
    imports = la.fctx.imports
    for func in [la.func, *[a for a in la.mctx.ancestors(la.func)
                              if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))]]:
        for node in walk_body(func):
            if isinstance(node, (ast.Attribute, ast.Name)):
                q = imports.qualname(node)
                if is_under(q, "jax.experimental.pallas", "jax._src.pallas"):
                    return True
    return False


def _is_module_class(la, cls: ast.ClassDef) -> bool:
    for base in cls.bases:
        q = la.mctx.imports.qualname(base)
        if is_under(q, "flax", "torch", "haiku", "equinox"):
            return True
    return False


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S603", "dependencies-allow-a-jax-without-scan", """
        @jax.jit
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            return h
        """, says=("jax 0.1.70", "jax 0.2.0"),
        project=(("pyproject.toml", '[project]\nname = "pkg"\ndependencies = ["jax>=0.1.70"]\n'),
                 ("pkg/__init__.py", ""))),
    Invalid("L2S601", "torch-call-in-jax-file", """
        import jax.numpy as jnp
        import torch

        def mixed(xs, h):
            for x in xs:
                h = jnp.tanh(h + torch.as_tensor(x).numpy())  # <-
            return h
        """, says=("torch.as_tensor",), framework="auto", header=False),
    Invalid("L2S601", "flax-linen-module-built-in-loop", """
        import flax.linen as nn

        def tower(x):
            for _ in range(3):
                x = jnp.tanh(nn.Dense(4)(x))  # <-
            return x
        """, says=("nn.Dense", "Flax")),
    Invalid("L2S602", "plain-torch-file", """
        import torch

        def rnn(xs, h):
            for x in xs:
                h = torch.tanh(h + x)
            return h
        """, says=("torch_xla",), framework="auto", header=False),
)

"""Import tables: which local names refer to which modules or objects.

``qualname(expr)`` turns ``jnp.stack`` into ``jax.numpy.stack`` when the module
did ``import jax.numpy as jnp``; everything the analysis says about framework
calls goes through it, so aliases never confuse it.
"""

from __future__ import annotations

import ast
from typing import Iterable, Optional

from .activity import statements, walk_scope

# Namespaces whose calls compute arrays (evidence that a loop is an array loop).
ARRAY_NAMESPACES = (
    "jax.numpy", "jax.lax", "jax.nn", "jax.random", "jax.scipy", "jax.image", "jax.ops",
    "jax._src.numpy", "jax._src.lax", "jax._src.nn", "jax._src.random", "jax._src.scipy",
    "jax.experimental.sparse",
    "flax.linen", "flax.nnx", "optax", "equinox.nn", "haiku",
    "torch", "torch_xla",
)
# Qualified names that are not array computations even inside those namespaces.
NOT_ARRAY_CALLS = (
    "torch.utils", "torch.distributed", "torch.cuda", "torch.backends", "torch.jit", "torch.compile",
    "torch.manual_seed", "torch.no_grad", "torch.enable_grad", "torch.set_grad_enabled", "torch.device",
    "torch.Size", "torch.is_tensor", "torch.is_grad_enabled", "torch.get_default_dtype",
    "jax.numpy.dtype", "jax.numpy.issubdtype", "jax.numpy.result_type", "jax.numpy.iinfo", "jax.numpy.finfo",
    "jax.numpy.shape", "jax.numpy.ndim", "jax.numpy.size", "jax.numpy.promote_types", "jax.numpy.can_cast",
    "jax.numpy.isdtype",
)

TORCH_ROOTS = ("torch", "torch_xla")
FLAX_MODULE_ROOTS = ("flax.linen", "flax.nnx", "flax")


def _is_under(qual: str, prefixes: Iterable[str]) -> bool:
    return any(qual == p or qual.startswith(p + ".") for p in prefixes)


def is_array_call(qual: Optional[str]) -> bool:
    return bool(qual) and _is_under(qual, ARRAY_NAMESPACES) and not _is_under(qual, NOT_ARRAY_CALLS)


def is_under(qual: Optional[str], *prefixes: str) -> bool:
    return bool(qual) and _is_under(qual, prefixes)


class ImportTable:
    """Local name -> fully qualified name, for the imports of one scope (and
    its parents)."""

    def __init__(self, aliases: dict[str, str], parent: Optional["ImportTable"] = None, relative=None) -> None:
        self.aliases = aliases
        self.parent = parent
        # ``relative(level, module)``: the absolute module of a relative import (``None``: unknown)
        self.relative = relative if relative is not None else (parent.relative if parent is not None else None)

    @classmethod
    def from_nodes(cls, nodes, relative=None) -> "ImportTable":
        aliases: dict[str, str] = {}
        for node in nodes:
            _add(aliases, node, relative)
        return cls(aliases, relative=relative)

    @classmethod
    def for_module(cls, module: ast.Module) -> "ImportTable":
        aliases: dict[str, str] = {}
        for stmt in module.body:
            for node in walk_scope(stmt):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    _add(aliases, node)
        return cls(aliases)

    def for_function(self, func: ast.AST) -> "ImportTable":
        aliases: dict[str, str] = {}
        for stmt in statements(getattr(func, "body", [])):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                _add(aliases, stmt, self.relative)
        if not aliases:
            return self
        return ImportTable(aliases, self)

    def lookup(self, name: str) -> Optional[str]:
        table: Optional[ImportTable] = self
        while table is not None:
            if name in table.aliases:
                return table.aliases[name]
            table = table.parent
        return None

    def all_aliases(self) -> dict[str, str]:
        out: dict[str, str] = {}
        chain = []
        table: Optional[ImportTable] = self
        while table is not None:
            chain.append(table)
            table = table.parent
        for t in reversed(chain):
            out.update(t.aliases)
        return out

    def qualname(self, expr: ast.AST, shadowed: frozenset[str] | set[str] = frozenset()) -> Optional[str]:
        """``jnp.stack`` -> ``jax.numpy.stack``; ``None`` when the root is not an
        imported name (or is shadowed by a local binding)."""
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name) or expr.id in shadowed:
            return None
        root = self.lookup(expr.id)
        if root is None:
            return None
        return ".".join([root, *reversed(parts)])

    def names_for(self, qual: str) -> list[str]:
        """Local names bound to exactly ``qual`` (e.g. all aliases of jax.numpy)."""
        return sorted(k for k, v in self.all_aliases().items() if v == qual)

    @staticmethod
    def _frameworks_of(node: ast.AST) -> set[str]:
        """Frameworks named by one import statement."""
        aliases: dict[str, str] = {}
        _add(aliases, node)
        if isinstance(node, ast.ImportFrom) and not node.level and node.module:
            aliases.setdefault("", node.module)
        return ImportTable(aliases).frameworks()

    def frameworks(self) -> set[str]:
        """The frameworks this scope imports: jax, flax.linen, flax.nnx, torch, torch_xla."""
        out: set[str] = set()
        for qual in self.all_aliases().values():
            root = qual.split(".")[0]
            if root == "torch_xla":
                out.add("torch_xla")
            elif root == "torch":
                out.add("torch")
            elif root == "flax":
                if qual.startswith("flax.linen"):
                    out.add("flax.linen")
                elif qual.startswith("flax.nnx"):
                    out.add("flax.nnx")
                else:
                    out.add("flax")
            elif root in ("jax", "jaxlib", "optax", "equinox", "haiku", "chex"):
                out.add("jax")
        return out


def _add(aliases: dict[str, str], node: ast.AST, relative=None) -> None:
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.asname:
                aliases[a.asname] = a.name
            else:
                root = a.name.split(".")[0]
                aliases.setdefault(root, root)
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative import: known only within a project
            mod = relative(node.level, node.module) if relative is not None else None
            if mod is None:
                return
        else:
            mod = node.module or ""
        for a in node.names:
            if a.name == "*":
                continue
            aliases[a.asname or a.name] = f"{mod}.{a.name}" if mod else a.name

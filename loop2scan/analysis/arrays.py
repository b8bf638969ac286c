"""Which expressions are certainly arrays (not Python lists, tuples or scalars).

The analysis has no types, so it asks this small, conservative inference: a
value is an array when it comes from an array operation, when the function
reads array-only attributes of it (``x.shape``, ``x.at``...), or when it is
annotated as one.  "Unknown" is always a safe answer: the emitter then adds a
``jnp.asarray`` where a Python list would otherwise be scanned as a pytree.
"""

from __future__ import annotations

import ast
from typing import Optional

from .imports import is_array_call, is_under

# Array-returning callables under jax.numpy / jax.nn / jax.random whose result is
# *not* one array.
TUPLE_RETURNING = {
    "split", "array_split", "hsplit", "vsplit", "dsplit", "meshgrid", "unique", "unique_all", "unique_counts",
    "unique_inverse", "divmod", "frexp", "modf", "eig", "eigh", "svd", "qr", "slogdet", "lstsq", "nonzero",
    "broadcast_arrays", "ix_", "unravel_index", "tril_indices", "triu_indices", "diag_indices", "mask_indices",
    "histogram", "histogram2d", "histogramdd", "polyfit", "where", "atleast_1d", "atleast_2d", "atleast_3d",
    "shape", "dtype", "tree_map", "vectorize", "vmap", "indices", "lu", "lu_factor", "schur", "hessenberg",
}
LAX_ARRAY_OPS = {
    "dot", "dot_general", "conv", "conv_general_dilated", "conv_transpose", "add", "sub", "mul", "div", "exp",
    "log", "log1p", "expm1", "tanh", "logistic", "max", "min", "select", "select_n", "dynamic_slice",
    "dynamic_update_slice", "dynamic_slice_in_dim", "dynamic_update_slice_in_dim", "dynamic_index_in_dim",
    "broadcast", "broadcast_in_dim", "reshape", "transpose", "rsqrt", "sqrt", "pow", "integer_pow", "erf",
    "abs", "neg", "sign", "floor", "ceil", "round", "clamp", "concatenate", "pad", "rev", "squeeze",
    "expand_dims", "iota", "full", "full_like", "convert_element_type", "cumsum", "cumprod", "cummax",
    "cummin", "cumlogsumexp", "batch_matmul", "cos", "sin", "slice", "slice_in_dim", "index_in_dim", "gather",
    "scatter", "scatter_add", "argmax", "argmin", "square", "exp2", "atan2", "bitcast_convert_type",
    "reduce_precision", "erf_inv", "lgamma", "digamma", "igamma", "population_count", "clz", "collapse",
}
ARRAY_METHODS = {
    "reshape", "astype", "sum", "mean", "max", "min", "prod", "transpose", "squeeze", "swapaxes", "ravel",
    "flatten", "std", "var", "cumsum", "cumprod", "clip", "round", "conj", "dot", "argmax", "argmin", "any",
    "all", "repeat", "take", "set", "add", "multiply", "divide", "power", "get", "apply", "min", "max",
    "view", "T", "real", "imag", "mT", "softmax", "exp", "log", "tanh", "sigmoid", "relu", "matmul",
    "contiguous", "float", "half", "bfloat16", "double", "to", "detach", "clone", "unsqueeze", "permute",
    "expand", "expand_as", "masked_fill", "norm", "abs", "sqrt", "pow", "neg", "logsumexp",
}
ARRAY_ONLY_ATTRIBUTES = {"shape", "ndim", "dtype", "at", "T", "mT", "astype", "reshape", "size", "itemsize"}


class ArrayFacts:
    """Answers ``is_array(expr)`` inside one function."""

    def __init__(self, fctx) -> None:
        self.fctx = fctx
        self.module = fctx.module
        self.imports = fctx.imports
        # inside a scan step: reads replaced by per-step slices, and names bound
        # directly to per-step inputs, are arrays whatever they were outside
        self.known_nodes: set[int] = set()
        self.known_names: set[str] = set()

    def qual(self, expr: ast.AST) -> Optional[str]:
        return self.imports.qualname(expr, self.fctx.shadowing)

    def call_is_array(self, call: ast.Call) -> bool:
        q = self.qual(call.func)
        if q is not None:
            if not is_array_call(q):
                return False
            last = q.rsplit(".", 1)[-1]
            if is_under(q, "jax.lax", "jax._src.lax"):
                return last in LAX_ARRAY_OPS
            if is_under(q, "jax.numpy", "jax.nn", "jax.random", "jax.scipy.special", "jax._src.numpy"):
                if last == "where" and len(call.args) == 3:
                    return True
                return last not in TUPLE_RETURNING and not last[:1].isupper()
            return False
        if isinstance(call.func, ast.Attribute):
            recv = call.func.value
            if call.func.attr in ARRAY_METHODS and self.is_array(recv, depth=1):
                return True
            if (call.func.attr in ("set", "add", "multiply", "divide", "power", "min", "max", "get", "apply")
                    and isinstance(recv, ast.Subscript) and isinstance(recv.value, ast.Attribute)
                    and recv.value.attr == "at"):
                return True
        return False

    def name_is_array(self, name: str, defs=None, depth: int = 0) -> bool:
        if name in self.fctx.params and self.module.annotation_is_array(self.fctx.param_annotations.get(name)):
            return True
        attrs = self.fctx.attribute_roots.get(name, set())
        if attrs & ARRAY_ONLY_ATTRIBUTES:
            return True
        if defs:
            values = []
            for d in defs:
                if d.kind == "for" and name in self.known_names:
                    values.append(True)
                    continue
                if d.kind == "for" and isinstance(d.node, (ast.For, ast.AsyncFor)) \
                        and isinstance(d.node.target, ast.Name) and d.node.target.id == name:
                    # an element of an array: `for row in grid` with `grid` an array
                    values.append(self.is_array(d.node.iter, depth=depth + 1))
                    continue
                if d.kind == "param" and self.module.annotation_is_array(self.fctx.param_annotations.get(name)):
                    values.append(True)
                    continue
                node = d.node
                if d.kind in ("assign", "aug") and isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    if isinstance(node, ast.Assign) and (len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name)):
                        values.append(False)
                        continue
                    if isinstance(node, ast.AugAssign):
                        values.append(self.is_array(node.value, depth=depth + 1) or isinstance(node.op, ast.MatMult))
                        continue
                    values.append(node.value is not None and self.is_array(node.value, depth=depth + 1))
                else:
                    values.append(False)
            return bool(values) and all(values)
        return False

    def is_array(self, expr: ast.AST, defs_of=None, depth: int = 0) -> bool:
        """``defs_of(name)`` gives the reaching definitions of a name at the
        point of ``expr`` (or ``None`` when unknown)."""
        if depth > 6:
            return False
        if id(expr) in self.known_nodes:
            return True
        if isinstance(expr, ast.Call):
            if self.call_is_array(expr):
                return True
            if isinstance(expr.func, ast.Name) and expr.func.id in self.module.module_functions \
                    and expr.func.id not in self.fctx.shadowing:
                return self.function_returns_array(expr.func.id, depth + 1)
            return False
        if isinstance(expr, ast.BinOp):
            if isinstance(expr.op, ast.MatMult):
                return True
            sides = (expr.left, expr.right)
            if any(isinstance(e, (ast.Tuple, ast.List, ast.JoinedStr)) for e in sides):
                return False
            if isinstance(expr.left, ast.Constant) and isinstance(expr.left.value, (str, bytes)):
                return False
            return any(self.is_array(e, defs_of, depth + 1) for e in sides)
        if isinstance(expr, ast.UnaryOp) and not isinstance(expr.op, ast.Not):
            return self.is_array(expr.operand, defs_of, depth + 1)
        if isinstance(expr, ast.Compare):
            return any(self.is_array(e, defs_of, depth + 1) for e in [expr.left, *expr.comparators]) and len(expr.ops) == 1
        if isinstance(expr, ast.Subscript):
            if isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape":
                return False
            return self.is_array(expr.value, defs_of, depth + 1)
        if isinstance(expr, ast.Attribute):
            if expr.attr in ("T", "mT", "real", "imag"):
                return self.is_array(expr.value, defs_of, depth + 1)
            return False
        if isinstance(expr, ast.IfExp):
            return self.is_array(expr.body, defs_of, depth + 1) and self.is_array(expr.orelse, defs_of, depth + 1)
        if isinstance(expr, ast.Name):
            defs = defs_of(expr.id) if defs_of is not None else None
            return self.name_is_array(expr.id, defs, depth)
        return False

    def function_returns_array(self, name: str, depth: int) -> bool:
        fn = self.module.module_functions.get(name)
        if fn is None or depth > 4:
            return False
        facts = ArrayFacts(self.module.function(fn))
        returns = [n for n in ast.walk(fn) if isinstance(n, ast.Return)]
        if not returns or any(r.value is None for r in returns):
            return False
        rd = facts.fctx.reaching

        def defs_at(stmt):
            def lookup(n):
                state = rd.before.get(id(stmt))
                return state.get(n) if state else None
            return lookup

        return all(facts.is_array(r.value, defs_at(r), depth + 1) for r in returns)

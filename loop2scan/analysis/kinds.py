"""What kind of value an expression holds, and its dtype where it is visible.

A scan can only carry, slice and stack JAX arrays (and pytrees of them), so the
analysis gives every value a *kind* from its definition: a JAX array, a NumPy
array, an array of either framework (known only from array-only attributes or
``@``), a Python number, a string, ``None``, a container (tuple, list, dict,
set), an object (a module, a dataclass instance, a function), or unknown.
Dtypes are followed where the code shows them (``dtype=`` arguments,
``astype``, literals, ``zeros_like``), with the expressions they come from, so
that two dtype sources meeting in a carry can be seen.

"Unknown" is always a safe answer: the rules then either decline or rely on the
documented assumption (``docs/assumptions.md``) that a value of unknown kind
which the loop only uses in array operations is a JAX array of the body's dtype.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from .imports import is_array_call, is_under

# ---------------------------------------------------------------------------- dtypes

_CATEGORIES = ("bool", "int", "float", "complex")
_NAMES = {
    "bool": "bool", "bool_": "bool",
    "int8": "int8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64",
    "float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "float64": "float64",
    "complex64": "complex64", "complex128": "complex128",
    "float_": "float32", "int_": "int32", "complex_": "complex64",
}
_CATEGORY_OF = {n: ("bool" if n == "bool" else "int" if "int" in n else "complex" if "complex" in n else "float")
                for n in _NAMES.values()}
_BITS = {"bool": 1, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "float16": 16, "bfloat16": 16, "int32": 32,
         "uint32": 32, "float32": 32, "int64": 64, "uint64": 64, "float64": 64, "complex64": 64,
         "complex128": 128}
DEFAULT_OF = {"bool": "bool", "int": "int32", "float": "float32", "complex": "complex64"}


@dataclass(frozen=True)
class DType:
    """A dtype as far as the code shows it.

    ``name`` is set for a concrete dtype (``"float32"``); ``category`` (``bool``,
    ``int``, ``float``, ``complex``) may be known without it, and ``at_least`` is
    a lower bound when an unknown dtype meets a Python number (``x * 0.5`` is at
    least floating).  ``weak`` marks Python numbers (JAX's weak types).
    ``sources`` are the expressions the dtype visibly comes from (``float32``,
    ``self.param_dtype``, ``x.dtype``)."""

    name: Optional[str] = None
    category: Optional[str] = None
    weak: bool = False
    at_least: Optional[str] = None
    sources: frozenset = frozenset()
    unseen: frozenset = frozenset()  # names of operands whose dtype the code does not show

    @property
    def known(self) -> bool:
        return self.name is not None or self.category is not None

    def describe(self) -> str:
        if self.name:
            return ("weakly typed " if self.weak else "") + self.name
        if self.sources:
            return " / ".join(sorted(self.sources))
        if self.category:
            return self.category
        return "unknown dtype"


UNKNOWN_DTYPE = DType()
WEAK_INT = DType("int32", "int", weak=True)
WEAK_FLOAT = DType("float32", "float", weak=True)
WEAK_BOOL = DType("bool", "bool", weak=True)


def concrete(name: str, source: Optional[str] = None) -> DType:
    name = _NAMES.get(name, name)
    return DType(name, _CATEGORY_OF.get(name), sources=frozenset({source or name}))


def symbolic(text: str) -> DType:
    """A dtype named by an expression whose value is not known (``self.dtype``)."""
    return DType(sources=frozenset({text}))


def _rank(category: Optional[str]) -> int:
    return _CATEGORIES.index(category) if category in _CATEGORIES else -1


def promote(a: DType, b: DType) -> DType:
    """JAX's promotion of two operand dtypes, as far as they are known."""
    out = _promote(a, b)
    unseen = a.unseen | b.unseen
    return replace(out, unseen=unseen) if unseen != out.unseen else out


def _promote(a: DType, b: DType) -> DType:
    sources = a.sources | b.sources
    if a.weak and b.weak:
        cat = max(a.category, b.category, key=_rank)
        return DType(DEFAULT_OF.get(cat), cat, weak=True)
    if a.weak or b.weak:
        weak, strong = (a, b) if a.weak else (b, a)
        if strong.category is None:
            # an unknown dtype meeting a Python float is at least floating
            raised = weak.category if weak.category in ("float", "complex") else None
            return DType(None, None, at_least=max(raised, strong.at_least, key=_rank), sources=strong.sources)
        if _rank(weak.category) > _rank(strong.category):
            return DType(DEFAULT_OF.get(weak.category), weak.category, sources=strong.sources)
        return strong
    if a.name and b.name:
        if a.name == b.name:
            return DType(a.name, a.category, sources=sources)
        if a.category == b.category:
            if {a.name, b.name} == {"float16", "bfloat16"}:
                return DType("float32", "float", sources=sources)
            name = a.name if _BITS.get(a.name, 0) >= _BITS.get(b.name, 0) else b.name
            return DType(name, a.category, sources=sources)
        winner = a if _rank(a.category) > _rank(b.category) else b
        return DType(winner.name, winner.category, sources=sources)
    cat = max(a.category, b.category, key=_rank) if a.category and b.category else None
    at_least = max(a.at_least, b.at_least, a.category, b.category, key=_rank) if cat is None else None
    return DType(None, cat, at_least=at_least if _rank(at_least) >= 0 else None, sources=sources)


def changes(before: DType, after: DType) -> Optional[str]:
    """Why a carry whose value has dtype ``before`` may have dtype ``after`` after a
    step (``None`` when nothing visible says so)."""
    if before.weak:
        return None  # a scan promotes a weakly typed initial value to the carry's dtype
    if before.name and after.name and before.name != after.name and not after.weak:
        return f"{before.name} before, {after.name} after"
    if before.category and after.category and before.category != after.category:
        return f"{before.describe()} before, {after.describe()} after"
    if before.category and after.at_least and _rank(after.at_least) > _rank(before.category):
        return f"{before.describe()} before, at least {after.at_least} after"
    named = {s for s in after.sources | before.sources}
    if len(named) > 1:
        return f"two dtype sources meet: {' and '.join(f'`{s}`' for s in sorted(named))}"
    chosen = sorted(s for s in before.sources if s not in _NAMES and not s.startswith("'"))
    tied = {s[:-len(".dtype")] for s in before.sources if s.endswith(".dtype")}
    mixed = sorted(after.unseen - tied)
    if chosen and mixed and not tied:
        return (f"it starts in the dtype `{chosen[0]}`, and its update mixes in `{mixed[0]}`, whose dtype the code "
                f"does not tie to `{chosen[0]}`")
    return None


# ---------------------------------------------------------------------------- kinds

JAX = "jax array"
NUMPY = "NumPy array"
ARRAY = "array"  # JAX or NumPy: known only from array-only attributes or operators
NUMBER = "Python number"
STRING = "string"
NONE = "None"
CONTAINER = "container"
OBJECT = "object"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Kind:
    """The kind of a value (see the module docstring)."""

    tag: str = UNKNOWN
    dtype: DType = UNKNOWN_DTYPE
    container: Optional[str] = None  # "tuple" | "list" | "dict" | "set" | "range" for CONTAINER
    items: Optional[tuple] = None  # kinds of the items of a literal tuple/list/dict (fixed structure)
    elem: Optional["Kind"] = None  # the kind of every element (a comprehension, `list(array)`)
    pytree: Optional[bool] = None  # for OBJECT: its class is (True) / is not (False) a registered pytree
    why: str = ""  # where the kind comes from, for messages
    numpy_possible: bool = False  # an ARRAY the code says may be a NumPy array (``chex.Array``, ``ArrayLike``)

    @property
    def is_array(self) -> bool:
        return self.tag in (JAX, NUMPY, ARRAY)

    @property
    def is_jax(self) -> bool:
        return self.tag == JAX

    def is_array_tree(self) -> Optional[bool]:
        """``True``: a JAX array or a pytree of them; ``False``: certainly not
        (NumPy, Python scalars, strings, None, sets, non-pytree objects);
        ``None``: not known."""
        if self.tag in (JAX, ARRAY):
            return True
        if self.tag in (NUMPY, STRING, NONE):
            return False
        if self.tag == NUMBER:
            return False
        if self.tag == CONTAINER:
            if self.container in ("set", "range"):
                return False
            parts = list(self.items or ()) + ([self.elem] if self.elem is not None else [])
            if not parts:
                return None
            verdicts = [p.is_array_tree() for p in parts]
            if any(v is False for v in verdicts):
                return False
            return True if all(verdicts) else None
        if self.tag == OBJECT:
            return self.pytree
        return None

    def describe(self) -> str:
        text = self.tag
        if self.tag == CONTAINER and self.container:
            text = f"a Python {self.container}"
        elif self.tag in (JAX, NUMPY, ARRAY):
            text = f"a {self.tag}" if self.tag != ARRAY else "an array"
            if self.dtype.name:
                text += f" of {self.dtype.describe()}"
        elif self.tag in (NUMBER, STRING, OBJECT):
            text = f"a {self.tag}" if self.tag != OBJECT else "an object"
        return text


UNKNOWN_KIND = Kind()


def join(kinds: list[Kind]) -> Kind:
    """The kind of a value that may come from any of several definitions."""
    if not kinds:
        return UNKNOWN_KIND
    first = kinds[0]
    if all(k == first for k in kinds):
        return first
    tags = {k.tag for k in kinds}
    dtype = kinds[0].dtype if all(k.dtype == kinds[0].dtype for k in kinds) else UNKNOWN_DTYPE
    if tags <= {JAX, NUMPY, ARRAY}:
        return Kind(JAX if tags == {JAX} else NUMPY if tags == {NUMPY} else ARRAY, dtype,
                    numpy_possible=any(k.numpy_possible or k.tag == NUMPY for k in kinds))
    if len(tags) == 1:
        tag = first.tag
        containers = {k.container for k in kinds}
        return Kind(tag, dtype, container=containers.pop() if len(containers) == 1 else None)
    if NONE in tags or any(k.why.startswith("may be None") for k in kinds):
        others = [k for k in kinds if k.tag != NONE]
        inner = join([k for k in others if not k.why.startswith("may be None")]) if others else UNKNOWN_KIND
        return Kind(UNKNOWN, why=f"may be None (or {inner.describe()})")
    return Kind(UNKNOWN, why=" or ".join(sorted(tags)))


# ------------------------------------------------------------------ call tables

# Array-returning callables under jax.numpy / jax.nn / jax.random whose result is *not* one array.
TUPLE_RETURNING = {
    "split", "array_split", "hsplit", "vsplit", "dsplit", "meshgrid", "unique", "unique_all", "unique_counts",
    "unique_inverse", "divmod", "frexp", "modf", "eig", "eigh", "svd", "qr", "slogdet", "lstsq", "nonzero",
    "broadcast_arrays", "ix_", "unravel_index", "tril_indices", "triu_indices", "diag_indices", "mask_indices",
    "histogram", "histogram2d", "histogramdd", "polyfit", "where", "atleast_1d", "atleast_2d", "atleast_3d",
    "shape", "dtype", "tree_map", "vectorize", "vmap", "indices", "lu", "lu_factor", "schur", "hessenberg",
}
NOT_ARRAY_RESULTS = {"shape", "ndim", "size", "dtype", "result_type", "iinfo", "finfo", "issubdtype", "isdtype",
                     "promote_types", "can_cast", "isscalar", "iterable", "get_printoptions"}
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
    "stop_gradient", "psum", "pmean", "pmax", "pmin", "all_gather", "ppermute", "pcast", "pvary",
    "reduce_sum", "reduce_max", "reduce_min", "axis_index",
}
#: Methods of arrays (JAX, NumPy, torch).  Not ``set``/``add``/``get``/``apply``: those are
#: methods of ``x.at[i]``, and on anything else show an object (``tx.apply(x)``).
ARRAY_METHODS = {
    "reshape", "astype", "sum", "mean", "max", "min", "prod", "transpose", "squeeze", "swapaxes", "ravel",
    "flatten", "std", "var", "cumsum", "cumprod", "clip", "round", "conj", "dot", "argmax", "argmin", "any",
    "all", "repeat", "take", "min", "max",
    "view", "T", "real", "imag", "mT", "softmax", "exp", "log", "tanh", "sigmoid", "relu", "matmul",
    "contiguous", "float", "half", "bfloat16", "double", "to", "detach", "clone", "unsqueeze", "permute",
    "expand", "expand_as", "masked_fill", "norm", "abs", "sqrt", "pow", "neg", "logsumexp", "argsort",
    "sort", "nonzero", "conjugate", "diagonal", "trace", "item", "tolist",
}
#: Attributes only arrays have: reading them shows an array (of JAX or NumPy).
ARRAY_ONLY_ATTRIBUTES = {"shape", "ndim", "dtype", "at", "T", "mT", "astype", "reshape", "size", "itemsize"}
#: Classes whose instances are pytrees (a scan can carry and stack them).
PYTREE_BASES = {"typing.NamedTuple", "equinox.Module", "flax.struct.PyTreeNode", "flax.nnx.Pytree",
                "chex.dataclass", "flax.struct.dataclass", "jax.tree_util.register_dataclass",
                "jax.tree_util.register_pytree_node_class", "jax.tree_util.register_static"}
#: Module classes whose instances hold state that calls may change.
STATEFUL_BASES = ("flax.nnx.Module", "flax.nnx.Object", "flax.nnx.Variable", "flax.nnx.Param",
                  "flax.nnx.BatchStat", "flax.nnx.Rngs", "flax.nnx.Optimizer", "haiku.Module", "torch.nn.Module",
                  "flax.linen.Module")

#: Annotations that admit NumPy arrays as well as JAX ones.
EITHER_ARRAY_ANNOTATIONS = {"chex.Array", "chex.ArrayNumpy", "jax.typing.ArrayLike", "numpy.typing.ArrayLike",
                            "chex.ArrayBatched"}

#: Namespaces whose classes are modules or objects with state that calls change.
STATEFUL_NAMESPACES = ("flax.nnx", "haiku", "torch.nn", "flax.linen")
#: Calls that create mutable references.
MUTABLE_REFS = {"jax.new_ref", "jax.ref.new_ref", "jax.experimental.mutable_array", "jax.experimental.new_ref"}

DTYPE_FACTORIES = {"zeros", "ones", "empty", "full", "eye", "identity", "arange", "linspace", "zeros_like",
                   "ones_like", "full_like", "empty_like", "asarray", "array", "normal", "uniform", "bernoulli",
                   "randint", "truncated_normal", "tri"}


def dtype_expression(expr: ast.AST, qual: Callable[[ast.AST], Optional[str]],
                     dtype_of: Optional[Callable[[ast.AST], DType]] = None) -> DType:
    """The dtype an expression names (``jnp.float32``, ``"bfloat16"``,
    ``x.dtype``, ``self.param_dtype``); ``dtype_of`` resolves ``x.dtype``."""
    if isinstance(expr, ast.Attribute) and expr.attr == "dtype" and dtype_of is not None:
        inner = dtype_of(expr.value)
        if inner.known or inner.sources:
            return inner
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return concrete(expr.value) if expr.value in _NAMES else symbolic(repr(expr.value))
    if isinstance(expr, ast.Constant) and expr.value is None:
        return UNKNOWN_DTYPE
    if isinstance(expr, ast.Name) and expr.id in ("float", "int", "bool", "complex"):
        return concrete({"float": "float32", "int": "int32", "bool": "bool", "complex": "complex64"}[expr.id],
                        expr.id)
    q = qual(expr)
    if q:
        last = q.rsplit(".", 1)[-1]
        if last in _NAMES and (is_under(q, "jax.numpy", "numpy", "jax._src.numpy", "ml_dtypes")):
            return concrete(last)
    try:
        text = ast.unparse(expr)
    except Exception:  # pragma: no cover
        return UNKNOWN_DTYPE
    return symbolic(text)


def cast_dtype(call: ast.Call, qual: Callable[[ast.AST], Optional[str]],
               dtype_of: Optional[Callable[[ast.AST], DType]] = None) -> Optional[DType]:
    """The dtype a cast pins its result to (``x.astype(d)``, ``jnp.asarray(x, d)``,
    ``lax.convert_element_type(x, d)``, ``jnp.float32(x)``), or ``None``."""
    f = call.func
    kw = {k.arg: k.value for k in call.keywords}
    if isinstance(f, ast.Attribute) and f.attr == "astype":
        arg = call.args[0] if call.args else kw.get("dtype")
        return dtype_expression(arg, qual, dtype_of) if arg is not None else None
    q = qual(f) or ""
    last = q.rsplit(".", 1)[-1]
    if is_under(q, "jax.numpy", "jax._src.numpy") and last in ("asarray", "array"):
        arg = call.args[1] if len(call.args) > 1 else kw.get("dtype")
        return dtype_expression(arg, qual, dtype_of) if arg is not None else None
    if is_under(q, "jax.lax") and last == "convert_element_type":
        arg = call.args[1] if len(call.args) > 1 else kw.get("new_dtype")
        return dtype_expression(arg, qual, dtype_of) if arg is not None else None
    if is_under(q, "jax.numpy") and last in _NAMES:
        return concrete(last)
    return None


def _dtype_argument(call: ast.Call, last: str) -> Optional[ast.AST]:
    """The ``dtype`` argument of an array factory, by keyword or position."""
    for k in call.keywords:
        if k.arg == "dtype":
            return k.value
    positions = {"zeros": 1, "ones": 1, "empty": 1, "full": 2, "zeros_like": 1, "ones_like": 1, "full_like": 2,
                 "empty_like": 1, "asarray": 1, "array": 1, "eye": 3, "identity": 1, "arange": 3, "normal": 2,
                 "uniform": 2, "truncated_normal": 4}
    pos = positions.get(last)
    if pos is not None and len(call.args) > pos:
        return call.args[pos]
    return None


@dataclass
class ValueFacts:
    """Kinds and dtypes of values inside one function (``fctx``)."""

    fctx: object
    # inside a scan step: reads replaced by per-step slices, and names bound
    # directly to per-step inputs, are arrays whatever they were outside
    known_nodes: set = field(default_factory=set)
    known_names: set = field(default_factory=set)
    # the kinds of the arguments a call passes, when what a function returns for them is asked
    param_kinds: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.module = self.fctx.module
        self.imports = self.fctx.imports

    def qual(self, expr: ast.AST) -> Optional[str]:
        return self.imports.qualname(expr, self.fctx.shadowing)

    # ------------------------------------------------------------------ kinds
    def kind(self, expr: Optional[ast.AST], defs_of=None, depth: int = 0) -> Kind:
        """``defs_of(name)`` gives the reaching definitions of a name at the point
        of ``expr`` (or ``None`` when unknown)."""
        if expr is None or depth > 8:
            return UNKNOWN_KIND
        if id(expr) in self.known_nodes:
            return Kind(JAX, why="a per-step slice")
        if isinstance(expr, ast.Constant):
            v = expr.value
            if v is None:
                return Kind(NONE)
            if isinstance(v, bool):
                return Kind(NUMBER, WEAK_BOOL)
            if isinstance(v, int):
                return Kind(NUMBER, WEAK_INT)
            if isinstance(v, float):
                return Kind(NUMBER, WEAK_FLOAT)
            if isinstance(v, complex):
                return Kind(NUMBER, DType("complex64", "complex", weak=True))
            if isinstance(v, (str, bytes)):
                return Kind(STRING)
            if v is Ellipsis:
                return Kind(OBJECT, why="`...`")
            return UNKNOWN_KIND
        if isinstance(expr, ast.JoinedStr):
            return Kind(STRING)
        if isinstance(expr, (ast.Tuple, ast.List)):
            if any(isinstance(e, ast.Starred) for e in expr.elts):
                return Kind(CONTAINER, container="tuple" if isinstance(expr, ast.Tuple) else "list")
            items = tuple(self.kind(e, defs_of, depth + 1) for e in expr.elts)
            return Kind(CONTAINER, container="tuple" if isinstance(expr, ast.Tuple) else "list", items=items)
        if isinstance(expr, ast.Dict):
            items = tuple(self.kind(v, defs_of, depth + 1) for v in expr.values)
            return Kind(CONTAINER, container="dict", items=items)
        if isinstance(expr, (ast.Set, ast.SetComp)):
            return Kind(CONTAINER, container="set")
        if isinstance(expr, ast.DictComp):
            return Kind(CONTAINER, container="dict", elem=self.kind(expr.value, None, depth + 1))
        if isinstance(expr, (ast.ListComp, ast.GeneratorExp)):
            return Kind(CONTAINER, container="list", elem=self.kind(expr.elt, None, depth + 1))
        if isinstance(expr, ast.Lambda):
            return Kind(OBJECT, why="a function")
        if isinstance(expr, ast.Call):
            return self.call_kind(expr, defs_of, depth)
        if isinstance(expr, ast.BinOp):
            if isinstance(expr.op, ast.MatMult):
                left, right = self.kind(expr.left, defs_of, depth + 1), self.kind(expr.right, defs_of, depth + 1)
                tag = JAX if JAX in (left.tag, right.tag) else NUMPY if NUMPY in (left.tag, right.tag) else ARRAY
                return Kind(tag, promote(left.dtype, right.dtype))
            left, right = self.kind(expr.left, defs_of, depth + 1), self.kind(expr.right, defs_of, depth + 1)
            return _arith(left, right, expr.op)
        if isinstance(expr, ast.UnaryOp):
            inner = self.kind(expr.operand, defs_of, depth + 1)
            if isinstance(expr.op, ast.Not):
                return Kind(NUMBER, WEAK_BOOL) if inner.tag == NUMBER else UNKNOWN_KIND
            return inner
        if isinstance(expr, ast.Compare):
            sides = [self.kind(e, defs_of, depth + 1) for e in [expr.left, *expr.comparators]]
            if len(expr.ops) == 1 and any(s.is_array for s in sides) and not isinstance(
                    expr.ops[0], (ast.Is, ast.IsNot, ast.In, ast.NotIn)):
                tag = JAX if any(s.tag == JAX for s in sides) else ARRAY
                return Kind(tag, DType("bool", "bool"))
            if all(s.tag in (NUMBER, STRING, NONE) for s in sides):
                return Kind(NUMBER, WEAK_BOOL)
            return UNKNOWN_KIND
        if isinstance(expr, ast.Subscript):
            if isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape":
                return Kind(NUMBER, WEAK_INT) if not isinstance(expr.slice, ast.Slice) else \
                    Kind(CONTAINER, container="tuple")
            base = self.kind(expr.value, defs_of, depth + 1)
            if base.is_array:
                return Kind(base.tag, base.dtype)
            if base.tag == CONTAINER and isinstance(expr.slice, ast.Slice):
                return replace(base, items=None)
            if base.tag == CONTAINER:
                if base.elem is not None:
                    return base.elem
                if base.items is not None:
                    i = _int_constant(expr.slice)
                    if i is not None and -len(base.items) <= i < len(base.items):
                        return base.items[i]
                    if base.items and all(k == base.items[0] for k in base.items):
                        return base.items[0]
            return UNKNOWN_KIND
        if isinstance(expr, ast.Attribute):
            if expr.attr in ("T", "mT", "real", "imag"):
                inner = self.kind(expr.value, defs_of, depth + 1)
                return inner if inner.is_array else UNKNOWN_KIND
            if expr.attr in ("shape",):
                return Kind(CONTAINER, container="tuple", elem=Kind(NUMBER, WEAK_INT))
            if expr.attr in ("ndim", "size", "itemsize", "nbytes"):
                return Kind(NUMBER, WEAK_INT)
            if expr.attr == "dtype":
                return Kind(OBJECT, why="a dtype")
            q = self.qual(expr)
            if q and q.rsplit(".", 1)[-1] in _NAMES and is_under(q, "jax.numpy", "numpy"):
                return Kind(OBJECT, why="a dtype")
            return UNKNOWN_KIND
        if isinstance(expr, ast.IfExp):
            return join([self.kind(expr.body, defs_of, depth + 1), self.kind(expr.orelse, defs_of, depth + 1)])
        if isinstance(expr, ast.Name):
            defs = defs_of(expr.id) if defs_of is not None else None
            return self.name_kind(expr.id, defs, depth)
        if isinstance(expr, ast.NamedExpr):
            return self.kind(expr.value, defs_of, depth + 1)
        return UNKNOWN_KIND

    def call_kind(self, call: ast.Call, defs_of=None, depth: int = 0) -> Kind:
        f = call.func
        q = self.qual(f)
        if q is not None:
            last = q.rsplit(".", 1)[-1]
            if is_under(q, "jax.numpy", "jax.nn", "jax.random", "jax.scipy", "jax._src.numpy", "jax.lax",
                        "jax._src.lax", "jax.image", "jax.experimental.sparse", "optax", "jax.ops"):
                if last in NOT_ARRAY_RESULTS:
                    return Kind(NUMBER, WEAK_INT) if last in ("ndim", "size") else UNKNOWN_KIND
                if last == "where" and len(call.args) != 3:
                    return Kind(CONTAINER, container="tuple")
                if last in TUPLE_RETURNING:
                    return Kind(CONTAINER, container="tuple" if last != "split" else "list")
                if is_under(q, "jax.lax", "jax._src.lax") and last not in LAX_ARRAY_OPS:
                    return UNKNOWN_KIND
                if last[:1].isupper() or is_under(q, "optax") and not is_array_call(q):
                    return Kind(OBJECT, why=f"`{q}`")
                if is_under(q, "optax"):
                    return UNKNOWN_KIND
                return Kind(JAX, self.call_dtype(call, q, last, defs_of, depth), why=f"`{q}`")
            if is_under(q, "numpy"):
                if last in NOT_ARRAY_RESULTS or last in ("isscalar",):
                    return UNKNOWN_KIND
                if last in _NAMES:
                    return Kind(NUMPY, concrete(last), why=f"`{q}`")
                if last[:1].isupper() or last in ("default_rng", "RandomState", "seterr", "errstate"):
                    return Kind(OBJECT, why=f"`{q}`")
                return Kind(NUMPY, self.call_dtype(call, q, last, defs_of, depth), why=f"`{q}`")
            if is_under(q, "math"):
                return Kind(NUMBER, WEAK_FLOAT if last not in ("floor", "ceil", "prod", "comb", "factorial",
                                                               "gcd", "isqrt", "perm") else WEAK_INT)
            if q in ("dataclasses.replace", "copy.copy", "copy.deepcopy") and call.args:
                return self.kind(call.args[0], defs_of, depth + 1)
            if q in MUTABLE_REFS or is_under(q, "jax.experimental.state", "jax._src.state"):
                return Kind(OBJECT, pytree=False, why=f"a mutable reference (`{q}`)")
            if is_under(q, *STATEFUL_NAMESPACES) and last[:1].isupper():
                return Kind(OBJECT, pytree=False, why=f"`{q}`, a module that holds state")
            if is_under(q, *STATEFUL_BASES):
                return Kind(OBJECT, pytree=False, why=f"`{q}` (holds state)")
            if self.module.project is not None and depth < 4:
                found = self.module.project.function(q)
                if found is not None:
                    result = function_result_kind(found[1], found[0], depth + 1)
                    if result.tag != UNKNOWN:
                        return replace(result, why=f"what `{q}` returns")
            if last[:1].isupper():
                return Kind(OBJECT, pytree=self._pytree_class(q), why=f"`{q}`")
            return UNKNOWN_KIND
        if isinstance(f, ast.Name) and f.id not in self.fctx.shadowing:
            name = f.id
            if name in ("len", "int", "round", "hash", "ord", "sum", "min", "max", "abs") and \
                    not self.module.module_names & {name}:
                if name in ("min", "max", "abs", "sum") and any(self.kind(a, defs_of, depth + 1).is_array
                                                                for a in call.args):
                    return UNKNOWN_KIND
                return Kind(NUMBER, WEAK_INT if name != "abs" else UNKNOWN_DTYPE)
            if name in ("float", "complex", "bool"):
                return Kind(NUMBER, {"float": WEAK_FLOAT, "bool": WEAK_BOOL}.get(name, UNKNOWN_DTYPE))
            if name in ("str", "repr", "format", "chr"):
                return Kind(STRING)
            if name in ("list", "tuple", "sorted", "reversed"):
                elem = None
                if call.args:
                    inner = self.kind(call.args[0], defs_of, depth + 1)
                    elem = inner.elem if inner.tag == CONTAINER else \
                        Kind(inner.tag, inner.dtype) if inner.is_array else None
                return Kind(CONTAINER, container="tuple" if name == "tuple" else "list", elem=elem)
            if name in ("dict", "set", "frozenset", "range", "zip", "enumerate", "map", "filter"):
                return Kind(CONTAINER, container={"frozenset": "set", "zip": "list", "enumerate": "list",
                                                  "map": "list", "filter": "list"}.get(name, name))
            if name in ("slice",):
                return Kind(OBJECT, pytree=False, why="a slice")
            if name in self.module.module_functions:
                fn = self.module.module_functions[name]
                result = function_result_kind(self.module, fn, depth + 1)
                if result.tag == UNKNOWN and depth < 4:
                    # what it returns for these arguments (`td(rewards, jnp.concatenate(...))`)
                    args = self._argument_kinds(fn, call, defs_of, depth)
                    if args:
                        result = function_result_kind(self.module, fn, depth + 1, args)
                return replace(result, why=f"what `{name}` returns") if result.tag != UNKNOWN else UNKNOWN_KIND
            cls = self.module.module_classes.get(name)
            if cls is not None:
                if self.module.class_holds_state(cls):
                    return Kind(OBJECT, pytree=False, why=f"an instance of `{name}`, a module that holds state")
                return Kind(OBJECT, pytree=self.module.class_is_pytree(cls),
                            why=f"an instance of `{name}`")
            return UNKNOWN_KIND
        if isinstance(f, ast.Attribute):
            recv = self.kind(f.value, defs_of, depth + 1)
            if recv.is_array and f.attr in ARRAY_METHODS:
                if f.attr in ("item", "tolist"):
                    return Kind(NUMBER) if f.attr == "item" else Kind(CONTAINER, container="list")
                dtype = recv.dtype
                if f.attr == "astype":
                    dtype = cast_dtype(call, self.qual, lambda e: self.dtype(e, defs_of, depth + 1)) \
                        or UNKNOWN_DTYPE
                elif f.attr in ("argmax", "argmin", "argsort", "nonzero"):
                    dtype = concrete("int32")
                elif f.attr in ("any", "all"):
                    dtype = concrete("bool")
                return Kind(recv.tag, dtype)
            if (f.attr in ("set", "add", "multiply", "divide", "power", "min", "max", "get", "apply")
                    and isinstance(f.value, ast.Subscript) and isinstance(f.value.value, ast.Attribute)
                    and f.value.value.attr == "at"):
                base = self.kind(f.value.value.value, defs_of, depth + 1)
                return Kind(JAX, base.dtype)
            if f.attr == "copy" and recv.tag in (NUMPY, JAX, ARRAY, CONTAINER):
                return recv
        return UNKNOWN_KIND

    def call_dtype(self, call: ast.Call, q: str, last: str, defs_of, depth: int) -> DType:
        """The dtype of an array-making call, where the code shows it."""
        resolve = lambda e: self.dtype(e, defs_of, depth + 1)  # noqa: E731
        cast = cast_dtype(call, self.qual, resolve)
        if cast is not None:
            return cast
        if last in DTYPE_FACTORIES:
            arg = _dtype_argument(call, last)
            if arg is not None:
                return dtype_expression(arg, self.qual, resolve)
            if last.endswith("_like") and call.args:
                return self.dtype(call.args[0], defs_of, depth + 1)
            if last in ("zeros", "ones", "empty", "eye", "identity", "linspace", "normal", "uniform",
                        "truncated_normal"):
                return DType("float32", "float")  # the default float (float64 under x64)
            if last in ("full", "asarray", "array") and len(call.args) >= 1:
                value = call.args[1] if last == "full" and len(call.args) > 1 else call.args[0]
                inner = self.dtype(value, defs_of, depth + 1)
                if inner.weak:
                    return DType(inner.name, inner.category)
                return inner
            if last == "arange":
                return DType("int32", "int") if all(_is_int_like(a) for a in call.args) else UNKNOWN_DTYPE
            return UNKNOWN_DTYPE
        if last in ("argmax", "argmin", "argsort", "searchsorted", "count_nonzero", "bincount", "digitize"):
            return DType("int32", "int")
        if last in ("isnan", "isinf", "isfinite", "logical_and", "logical_or", "logical_not", "any", "all",
                    "equal", "not_equal", "less", "greater", "less_equal", "greater_equal", "isclose",
                    "bernoulli", "signbit", "array_equal"):
            return DType("bool", "bool")
        if last in ("randint", "randint"):
            return DType("int32", "int")
        elementwise_first = {"tanh", "exp", "log", "sin", "cos", "sqrt", "abs", "square", "negative", "sigmoid",
                             "relu", "gelu", "softplus", "silu", "softmax", "log_softmax", "logsumexp", "sum",
                             "mean", "max", "min", "prod", "cumsum", "reshape", "transpose", "squeeze",
                             "expand_dims", "moveaxis", "swapaxes", "flip", "roll", "tile", "repeat", "clip",
                             "sign", "floor", "ceil", "round", "stop_gradient", "maximum", "minimum", "where",
                             "matmul", "dot", "einsum", "concatenate", "stack", "logistic", "tensordot", "outer",
                             "take", "take_along_axis", "pad", "broadcast_to", "diag", "tril", "triu", "norm",
                             "exp2", "log1p", "expm1", "power", "add", "subtract", "multiply", "divide",
                             "true_divide", "dynamic_slice", "dynamic_update_slice", "select", "one_hot"}
        if last in elementwise_first:
            if last == "one_hot":
                arg = _dtype_argument(call, "one_hot") or next((k.value for k in call.keywords
                                                                 if k.arg == "dtype"), None)
                return dtype_expression(arg, self.qual, lambda e: self.dtype(e, defs_of, depth + 1)) \
                    if arg is not None else DType("float32", "float")
            args = call.args[1:] if last in ("where", "select") else call.args
            if last == "einsum":
                args = call.args[1:]
            if last in ("concatenate", "stack") and call.args and isinstance(call.args[0], (ast.List, ast.Tuple)):
                args = call.args[0].elts
            if last in ("concatenate", "stack", "reshape", "transpose", "squeeze", "expand_dims", "moveaxis",
                        "swapaxes", "flip", "roll", "tile", "repeat", "take", "take_along_axis", "pad",
                        "broadcast_to", "diag", "tril", "triu", "sum", "mean", "max", "min", "prod", "cumsum",
                        "dynamic_slice") and last not in ("concatenate", "stack"):
                args = call.args[:1]
            dtypes = [self.dtype(a, defs_of, depth + 1) for a in args if not isinstance(a, ast.Starred)]
            if not dtypes:
                return UNKNOWN_DTYPE
            out = dtypes[0]
            for d in dtypes[1:]:
                out = promote(out, d)
            if last in ("tanh", "exp", "log", "sin", "cos", "sqrt", "sigmoid", "gelu", "softplus", "silu",
                        "softmax", "log_softmax", "logsumexp", "mean", "logistic", "log1p", "expm1", "exp2",
                        "norm", "true_divide", "divide"):
                if out.category in ("int", "bool"):
                    return DType("float32", "float", sources=out.sources, unseen=out.unseen)
                if out.category is None:  # whatever its argument, the result is inexact
                    return DType(None, None, at_least=max(out.at_least, "float", key=_rank), sources=out.sources,
                                 unseen=out.unseen)
            if out.weak:
                return DType(out.name, out.category, unseen=out.unseen)
            return out
        return UNKNOWN_DTYPE

    def dtype(self, expr: ast.AST, defs_of=None, depth: int = 0) -> DType:
        return self.kind(expr, defs_of, depth).dtype

    def _argument_kinds(self, fn: ast.AST, call: ast.Call, defs_of, depth: int) -> Optional[tuple]:
        """The kinds of the arguments of ``call`` by parameter of ``fn``, where
        some argument's kind is known: ``((name, kind), ...)``, or ``None``."""
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            return None
        a = fn.args
        positional = [x.arg for x in a.posonlyargs + a.args]
        if len(call.args) > len(positional):
            return None
        out = {}
        for param, arg in zip(positional, call.args):
            out[param] = self.kind(arg, defs_of, depth + 1)
        names = set(positional) | {x.arg for x in a.kwonlyargs}
        for k in call.keywords:
            if k.arg not in names:
                return None
            out[k.arg] = self.kind(k.value, defs_of, depth + 1)
        known = {k: v for k, v in out.items() if v.tag != UNKNOWN}
        return tuple(sorted(known.items(), key=lambda kv: kv[0])) if known else None

    def name_kind(self, name: str, defs=None, depth: int = 0) -> Kind:
        fctx = self.fctx
        if name in self.known_names:
            return Kind(JAX, why="a per-step input")
        if defs:
            kinds = []
            for d in defs:
                if d.kind == "for" and name in self.known_names:
                    kinds.append(Kind(JAX))
                    continue
                if d.kind == "for" and isinstance(d.node, (ast.For, ast.AsyncFor)) \
                        and isinstance(d.node.target, ast.Name) and d.node.target.id == name:
                    it = d.node.iter
                    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "reversed" \
                            and it.args:
                        it = it.args[0]
                    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" \
                            and "range" not in fctx.shadowing:
                        kinds.append(Kind(NUMBER, WEAK_INT, why="a `range` index"))
                        continue
                    seq = self.kind(d.node.iter, None, depth + 1)
                    kinds.append(Kind(seq.tag, seq.dtype) if seq.is_array else
                                 seq.elem if seq.tag == CONTAINER and seq.elem is not None else UNKNOWN_KIND)
                    continue
                if d.kind == "param":
                    kinds.append(self.param_kind(name))
                    continue
                node = d.node
                if d.kind in ("assign", "aug") and isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    if isinstance(node, ast.Assign) and (len(node.targets) != 1
                                                         or not isinstance(node.targets[0], ast.Name)):
                        kinds.append(self._unpacked_kind(node, name, depth))
                        continue
                    if isinstance(node, ast.AugAssign):
                        value = self.kind(node.value, None, depth + 1)
                        if isinstance(node.op, ast.MatMult):
                            kinds.append(Kind(value.tag if value.is_array else ARRAY, value.dtype))
                        elif value.is_array:
                            kinds.append(Kind(value.tag, value.dtype))
                        elif value.tag == CONTAINER:
                            kinds.append(Kind(CONTAINER, container=value.container))
                        else:
                            kinds.append(UNKNOWN_KIND)
                        continue
                    if isinstance(node, ast.AnnAssign) and node.value is None:
                        kinds.append(UNKNOWN_KIND)
                        continue
                    value_kind = self.kind(node.value, None, depth + 1)
                    if value_kind.tag == UNKNOWN and isinstance(node, ast.AnnAssign):
                        value_kind = self.annotation_kind(node.annotation) or value_kind
                    kinds.append(value_kind)
                else:
                    kinds.append(UNKNOWN_KIND)
            out = join(kinds)
        elif name in fctx.params:
            out = self.param_kind(name)
        else:
            out = UNKNOWN_KIND
        if out.tag == UNKNOWN and fctx.attribute_roots.get(name, set()) & ARRAY_ONLY_ATTRIBUTES \
                and "may be None" not in out.why:
            out = Kind(ARRAY, out.dtype, why=f"`{name}.{sorted(fctx.attribute_roots[name] & ARRAY_ONLY_ATTRIBUTES)[0]}` "
                       "is read")
        d = out.dtype
        if out.tag in (JAX, ARRAY, UNKNOWN) and not d.known and not d.sources and not d.weak and not d.at_least:
            out = replace(out, dtype=replace(d, unseen=d.unseen | {name}))
        return out

    def _unpacked_kind(self, node: ast.Assign, name: str, depth: int) -> Kind:
        """The kind of ``name`` bound by ``a, b = value``."""
        if len(node.targets) != 1:
            return UNKNOWN_KIND
        target = node.targets[0]
        if not isinstance(target, (ast.Tuple, ast.List)):
            return UNKNOWN_KIND
        names = [e.id if isinstance(e, ast.Name) else None for e in target.elts]
        if name not in names or any(isinstance(e, ast.Starred) for e in target.elts):
            return UNKNOWN_KIND
        i = names.index(name)
        value = node.value
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(names):
            return self.kind(value.elts[i], None, depth + 1)
        whole = self.kind(value, None, depth + 1)
        if whole.tag == CONTAINER:
            if whole.items is not None and len(whole.items) == len(names):
                return whole.items[i]
            if whole.elem is not None:
                return whole.elem
        if whole.is_array:
            return Kind(whole.tag, whole.dtype)  # unpacking the rows of an array
        return UNKNOWN_KIND

    def param_kind(self, name: str) -> Kind:
        """A parameter's kind from its annotation and default (or from the
        argument of the call being followed, ``param_kinds``)."""
        fctx = self.fctx
        if name in self.param_kinds:
            return self.param_kinds[name]
        ann = fctx.param_annotations.get(name)
        default = fctx.param_defaults.get(name)
        kind = self.annotation_kind(ann) if ann is not None else None
        if default is not None and isinstance(default, ast.Constant) and default.value is None:
            if kind is not None and kind.tag != UNKNOWN:
                return Kind(UNKNOWN, why=f"may be None (or {kind.describe()})")
            if not self._none_replaced_before_use(name):
                return Kind(UNKNOWN, why="may be None (its default)")
        if kind is not None:
            return kind
        if default is not None and isinstance(default, (ast.Constant, ast.Tuple, ast.List, ast.UnaryOp)):
            dk = self.kind(default, None, 6)
            if dk.tag in (NUMBER, STRING) or (dk.tag == CONTAINER and dk.container in ("tuple", "list")):
                return Kind(dk.tag, dk.dtype, container=dk.container, why="from its default")
        if name in ("self", "cls") and fctx.func.args.args and fctx.func.args.args[0].arg == name:
            return Kind(OBJECT, why=f"`{name}`")
        return UNKNOWN_KIND

    def _none_replaced_before_use(self, name: str) -> bool:
        """``if name is None: name = ...`` is the function's way of filling a default."""
        for stmt in self.fctx.func.body:
            if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare) and len(stmt.test.ops) == 1 \
                    and isinstance(stmt.test.ops[0], ast.Is) and isinstance(stmt.test.left, ast.Name) \
                    and stmt.test.left.id == name and isinstance(stmt.test.comparators[0], ast.Constant) \
                    and stmt.test.comparators[0].value is None:
                return any(isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name
                                                             for t in s.targets) for s in stmt.body)
        return False

    def annotation_kind(self, ann: Optional[ast.AST]) -> Optional[Kind]:
        """The kind an annotation says (``jax.Array``, ``np.ndarray``, ``int``,
        ``Sequence[str]``...); ``None`` for annotations that say nothing usable."""
        if ann is None:
            return None
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return None
        if self.module.annotation_is_array(ann):
            q = self.module.imports.qualname(ann) or ""
            if is_under(q, "numpy"):
                return Kind(NUMPY, why=f"annotated `{ast.unparse(ann)}`")
            if q in EITHER_ARRAY_ANNOTATIONS:
                return Kind(ARRAY, why=f"annotated `{ast.unparse(ann)}` (a JAX or NumPy array)", numpy_possible=True)
            return Kind(JAX, why=f"annotated `{ast.unparse(ann)}`")
        if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
            parts = [self.annotation_kind(ann.left), self.annotation_kind(ann.right)]
            if any(p is None for p in parts):
                return None
            return join(parts)
        name = ann.attr if isinstance(ann, ast.Attribute) else getattr(ann, "id", None)
        if isinstance(ann, ast.Constant) and ann.value is None:
            return Kind(NONE)
        if name in ("int", "float", "bool", "complex"):
            return Kind(NUMBER, {"int": WEAK_INT, "float": WEAK_FLOAT, "bool": WEAK_BOOL}.get(name, UNKNOWN_DTYPE),
                        why=f"annotated `{name}`")
        if name in ("str", "bytes"):
            return Kind(STRING, why=f"annotated `{name}`")
        if isinstance(ann, ast.Subscript):
            base = ann.value.attr if isinstance(ann.value, ast.Attribute) else getattr(ann.value, "id", None)
            if base == "Optional":
                inner = self.annotation_kind(ann.slice)
                return Kind(UNKNOWN, why=f"may be None (annotated `{ast.unparse(ann)}`)") if inner else None
            if base in ("Sequence", "List", "list", "Tuple", "tuple", "Iterable", "Collection", "MutableSequence"):
                items = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
                items = [i for i in items if not (isinstance(i, ast.Constant) and i.value is Ellipsis)]
                elems = [self.annotation_kind(i) for i in items]
                elem = join([e for e in elems if e is not None]) if elems and all(elems) else None
                return Kind(CONTAINER, container="tuple" if base in ("Tuple", "tuple") else "list", elem=elem,
                            why=f"annotated `{ast.unparse(ann)}`")
            if base in ("Dict", "dict", "Mapping", "MutableMapping"):
                return Kind(CONTAINER, container="dict", why=f"annotated `{ast.unparse(ann)}`")
            if base in ("Set", "set", "FrozenSet", "frozenset", "AbstractSet"):
                return Kind(CONTAINER, container="set", why=f"annotated `{ast.unparse(ann)}`")
            if base == "Callable":
                return Kind(OBJECT, why="a function")
            return None
        if name in ("list", "List", "Sequence", "tuple", "Tuple"):
            return Kind(CONTAINER, container="tuple" if name in ("tuple", "Tuple") else "list")
        if name in ("dict", "Dict", "Mapping"):
            return Kind(CONTAINER, container="dict")
        if name in ("set", "Set", "frozenset", "FrozenSet"):
            return Kind(CONTAINER, container="set")
        if name == "Callable":
            return Kind(OBJECT, why="a function")
        q = self.module.imports.qualname(ann)
        if q and is_under(q, *STATEFUL_BASES):
            return Kind(OBJECT, pytree=False, why=f"annotated `{ast.unparse(ann)}` (holds state)")
        if isinstance(ann, ast.Name) and ann.id in self.module.module_classes:
            cls = self.module.module_classes[ann.id]
            return Kind(OBJECT, pytree=self.module.class_is_pytree(cls), why=f"annotated `{ann.id}`")
        return None

    def _pytree_class(self, qual: str) -> Optional[bool]:
        if is_under(qual, *STATEFUL_BASES):
            return False
        return None

    # ------------------------------------------------------- compatibility
    def is_array(self, expr: ast.AST, defs_of=None, depth: int = 0) -> bool:
        """Certainly an array (of JAX, or of a framework not known)."""
        return self.kind(expr, defs_of, depth).is_array

    def name_is_array(self, name: str, defs=None, depth: int = 0) -> bool:
        return self.name_kind(name, defs, depth).is_array

    def call_is_array(self, call: ast.Call) -> bool:
        return self.call_kind(call).is_array

    def function_returns_array(self, name: str, depth: int) -> bool:
        fn = self.module.module_functions.get(name)
        return fn is not None and function_result_kind(self.module, fn, depth).is_array


def function_result_kind(mctx, fn: ast.AST, depth: int = 0, args: Optional[tuple] = None) -> Kind:
    """The kind of what a visible function returns (the join over its
    ``return``s); ``args`` (``((param, kind), ...)``) are the kinds of the
    arguments of one call, where they are known."""
    if depth > 4:
        return UNKNOWN_KIND
    cache = mctx.__dict__.setdefault("_result_kinds", {})
    key = id(fn) if args is None else (id(fn), args)
    if key in cache:
        return cache[key]
    cache[key] = UNKNOWN_KIND  # recursion
    returns = [n for n in walk_body_returns(fn)]
    if not returns or any(r.value is None for r in returns):
        return UNKNOWN_KIND
    facts = ValueFacts(mctx.function(fn), param_kinds=dict(args or ()))
    rd = facts.fctx.reaching

    def defs_at(stmt):
        def lookup(n):
            state = rd.before.get(id(stmt))
            return state.get(n) if state else None
        return lookup

    kind = join([facts.kind(r.value, defs_at(r), depth + 1) for r in returns])
    cache[key] = kind
    return kind


def walk_body_returns(fn: ast.AST):
    """The ``return`` statements of a function (not of functions nested in it)."""
    from .activity import walk_body

    return (n for n in walk_body(fn) if isinstance(n, ast.Return))


def _arith(left: Kind, right: Kind, op: ast.operator) -> Kind:
    """The kind of ``left <op> right``."""
    if left.tag == CONTAINER or right.tag == CONTAINER:
        if isinstance(op, ast.Add) and left.tag == right.tag == CONTAINER:
            return Kind(CONTAINER, container=left.container)
        if isinstance(op, ast.Mult) and CONTAINER in (left.tag, right.tag) and NUMBER in (left.tag, right.tag):
            return left if left.tag == CONTAINER else right
        if not (left.is_array or right.is_array):
            return UNKNOWN_KIND
    if left.tag == STRING or right.tag == STRING:
        return Kind(STRING) if isinstance(op, (ast.Add, ast.Mod, ast.Mult)) else UNKNOWN_KIND
    dtype = promote(left.dtype, right.dtype)
    if isinstance(op, ast.Div) and dtype.category in ("int", "bool"):
        dtype = DType("float32", "float", weak=dtype.weak, sources=dtype.sources, unseen=dtype.unseen)
    elif isinstance(op, ast.Div) and dtype.category is None and (left.is_array or right.is_array):
        # true division of arrays is inexact, whatever the operands' dtypes
        dtype = DType(None, None, at_least=max(dtype.at_least, "float", key=_rank), sources=dtype.sources,
                      unseen=dtype.unseen)
    if left.tag == JAX or right.tag == JAX:
        return Kind(JAX, dtype)
    if left.tag == NUMPY or right.tag == NUMPY:
        return Kind(NUMPY, dtype) if not (left.tag == ARRAY or right.tag == ARRAY) else Kind(ARRAY, dtype)
    if left.tag == ARRAY or right.tag == ARRAY:
        return Kind(ARRAY, dtype)
    if left.tag == NUMBER and right.tag == NUMBER:
        return Kind(NUMBER, dtype)
    if NUMBER in (left.tag, right.tag):
        return Kind(UNKNOWN, DType(None, None, at_least=dtype.at_least, sources=dtype.sources, unseen=dtype.unseen))
    return Kind(UNKNOWN, dtype if dtype.sources or dtype.at_least or dtype.unseen else UNKNOWN_DTYPE)


def _int_constant(node: ast.AST) -> Optional[int]:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) is int:
        return -node.operand.value
    return None


def _is_int_like(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.Attribute) and node.attr in ("ndim", "size"):
        return True
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "shape":
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return True
    if isinstance(node, ast.BinOp):
        return _is_int_like(node.left) and _is_int_like(node.right)
    return isinstance(node, ast.Name)

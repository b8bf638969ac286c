"""The scan analysis of one ``for`` loop: a :class:`ScanPlan` or a decline.

The phases run in a fixed order, and the first one that fails decides the
decline code, so every loop gets exactly one, stable explanation:

1. suppression comment, array evidence (else *not a candidate*), framework;
2. structure: ``async``, module level, ``for``/``else``, ``locals()``...;
3. what is iterated (``range``/``zip``/``enumerate``/``reversed``/arrays);
4. the body: control flow, side effects, attribute/item writes, mutation;
5. dataflow: loop-variable use, closures, accumulators, carries;
6. per-step values in Python control flow or host conversions;
7. trip count and per-step inputs (index reads become slices where that is
   provably exact).

Design notes section 2 is the contract each phase implements.
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Optional

from ..codes import CODES, NOT_CANDIDATE, REWRITTEN, SKIPPED
from ..naming import fresh_name
from ..plan import Bound, Consumer, LayoutChange, LayoutEdit, LoopResult, ScanPlan, Span, XsItem, YsItem
from .activity import (
    full_slice,
    int_literal,
    walk_body,
    all_read_names,
    all_written_names,
    collect,
    header_effects,
    reads,
    target_names,
    target_side_effects,
    walk_scope,
)
from .arrays import ARRAY_METHODS, ArrayFacts
from .context import FunctionContext, ModuleContext
from .decline import Decline, short
from .flow import Def, ReachingDefinitions
from .imports import is_array_call, is_under
from .iteration import (
    ElementSource,
    EnumerateIndex,
    Iteration,
    RangeSource,
    TupleSource,
    invariant_simple_expr,
    parse_iteration,
    static_int,
)
from .outputs import Accumulator, OutputAnalysis, index_offset
from .symbolic import Lin, length_atom, to_lin

SKIP_RE = re.compile(r"#\s*loop2scan:\s*skip\b(?!-)")
SKIP_FILE_RE = re.compile(r"^\s*#\s*loop2scan:\s*skip-file\b", re.MULTILINE)

DIFFERENTIATE = {"jax.grad", "jax.value_and_grad", "jax.vjp", "jax.jvp", "jax.hessian", "jax.jacfwd",
                 "jax.jacrev", "jax.linearize"}
PURE_CONTEXT_MANAGERS = {
    "jax.named_scope", "jax.default_matmul_precision", "jax.numpy_dtype_promotion", "jax.numpy_rank_promotion",
    "jax.default_device", "jax.checking_leaks", "contextlib.nullcontext",
}
HOST_CALL_ROOTS = (
    "logging", "warnings", "time", "random", "os", "sys", "subprocess", "shutil", "tqdm", "wandb", "mlflow",
    "tensorboard", "tensorboardX", "absl.logging", "pdb", "pickle", "numpy.random", "numpy.save", "numpy.savez",
    "numpy.savetxt", "torch.save", "matplotlib", "rich", "IPython", "socket", "requests", "threading",
    "multiprocessing", "json.dump", "csv", "builtins.print", "timeit",
)
HOST_BUILTINS = {"print", "input", "open", "breakpoint", "exit", "quit", "help", "next", "iter", "globals"}
ATTR_BUILTINS = {"setattr", "delattr"}
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
IO_METHODS = {"write", "writelines", "flush", "set_description", "set_postfix", "set_postfix_str", "refresh",
              "display", "savefig", "show"}
MUTATING_METHODS = {
    "append", "extend", "insert", "pop", "remove", "clear", "update", "setdefault", "popitem", "discard",
    "sort", "reverse", "add", "__setitem__", "__delitem__", "put", "put_nowait", "send",
}
AT_METHODS = {"set", "add", "multiply", "mul", "divide", "power", "min", "max", "get", "apply"}
CONVERSION_BUILTINS = {"float", "int", "bool", "complex"}
CONVERSION_METHODS = {"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "to_py"}
STATIC_ATTRS = {"shape", "ndim", "dtype", "size", "itemsize", "nbytes"}
STATIC_KEYWORDS = {"axis", "axes", "dim", "dimension", "dimensions", "shape", "size", "num", "k", "ord",
                   "repeats", "length", "num_segments", "total_repeat_length", "new_sizes", "window_dimensions",
                   "window_strides", "precision", "dtype", "unroll", "split_rngs", "in_axes", "out_axes"}
# Calls returning several arrays of different shapes: iterating them cannot be stacked.
HETEROGENEOUS_CALLS = {"ix_", "array_split", "svd", "eig", "eigh", "qr", "lu", "lu_factor", "unique_all",
                       "unique_counts", "unique_inverse", "histogram", "histogram2d", "histogramdd", "polyfit",
                       "lstsq", "slogdet", "schur", "hessenberg", "tree_leaves", "tree_flatten", "leaves",
                       "tree_flatten_with_path", "tree_leaves_with_path"}
# Operations that return an array of another shape than their first argument.
SHAPE_CHANGING = {"concatenate", "append", "hstack", "vstack", "dstack", "column_stack", "row_stack", "stack",
                  "pad", "expand_dims", "outer", "kron", "insert", "repeat", "tile", "convolve", "correlate",
                  "polymul", "polyadd", "atleast_1d", "atleast_2d", "atleast_3d", "concat"}
REDUCTIONS = {"sum", "mean", "max", "min", "prod", "std", "var", "median", "amax", "amin", "nansum", "nanmean",
              "nanmax", "nanmin", "count_nonzero", "norm", "all", "any", "logsumexp", "average", "ptp"}
SCALAR_CONSTRUCTORS = {"asarray", "array", "float32", "float64", "float16", "bfloat16", "int32", "int64", "int8",
                       "uint8", "complex64"}
ELEMENTWISE_NAMES = {"tanh", "exp", "log", "log1p", "expm1", "sqrt", "abs", "sin", "cos", "square", "sigmoid",
                     "relu", "gelu", "softplus", "silu", "maximum", "minimum", "clip", "sign", "floor", "ceil",
                     "round", "power", "logaddexp", "float32", "float64", "asarray", "array", "exp2", "log2",
                     "reciprocal", "negative", "arctan2", "hypot", "rsqrt", "logistic", "stop_gradient"}
# Builtins and itertools whose results are Python sequences or iterators.
PYTHON_SEQUENCE_CALLS = {"sorted", "set", "frozenset", "range", "map", "filter", "zip", "enumerate", "reversed",
                         "iter", "dict", "str", "bytes"}
STATIC_FUNCS = {"len"}  # isinstance/type would see tracers inside a scan
BUILTIN_NAMES = set(dir(builtins))
NOT_ARRAY_ATTRS = STATIC_ATTRS | {"T", "mT", "real", "imag", "at"}


def _pos(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


@dataclass
class _LayerLoop:
    mode: str  # "stacked" | "keep"
    name: str  # the list, as named in the loop's function
    part: Optional[str]  # `a:b` when iterating a slice of it
    structure: object  # layers.Structure (stacked mode)


@dataclass
class _IndexUse:
    node: ast.Name
    kind: str  # "slice-candidate" | "at" | "generic"
    base: Optional[ast.AST] = None
    subscript: Optional[ast.Subscript] = None
    axis: int = 0
    offset: int = 0
    drop: Optional[int] = None  # keep the other index parts, dropping this one (None: replace the whole read)


class LoopAnalysis:
    """Analyses one loop.  Attributes set along the way are read by later phases
    and by :class:`OutputAnalysis`."""

    def __init__(self, mctx: ModuleContext, loop: ast.AST) -> None:
        self.mctx = mctx
        self.loop = loop
        self.func = mctx.enclosing_function(loop)
        self.written: set[str] = set()
        self.targets: set[str] = set()
        self.layer: Optional[_LayerLoop] = None

    @cached_property
    def fctx(self) -> Optional[FunctionContext]:
        return self.mctx.function(self.func) if self.func is not None else None

    @cached_property
    def facts(self) -> Optional[ArrayFacts]:
        return ArrayFacts(self.fctx) if self.fctx is not None else None

    # ------------------------------------------------------------------ api
    def run(self) -> LoopResult:
        loop = self.loop
        span = self.mctx.span(loop)
        try:
            if self._has_skip_comment():
                return LoopResult(span.line, span.col, span.end_line, "skipped", SKIPPED,
                                  "skipped by `# loop2scan: skip`")
            evidence = self._evidence()
            if evidence is None:
                return LoopResult(span.line, span.col, span.end_line, "not-candidate", NOT_CANDIDATE,
                                  self._not_candidate_reason())
            plan = self._analyse()
        except Decline as d:
            where = self.mctx.span(d.node) if d.node is not None and hasattr(d.node, "lineno") else None
            return LoopResult(span.line, span.col, span.end_line, "declined", d.code, d.message, where=where)
        return LoopResult(span.line, span.col, span.end_line, "rewritten", REWRITTEN, self._summary(plan), plan)

    # ------------------------------------------------------------ phase 1
    def _has_skip_comment(self) -> bool:
        loop = self.loop
        first = loop.lineno
        last = loop.body[0].lineno if loop.body else loop.lineno
        if last > first:
            last -= 1 if self._body_on_own_line() else 0
        for line in self.mctx.lines[first - 1:max(first, last)]:
            if SKIP_RE.search(line):
                return True
        # an own-line comment directly above the loop also counts
        if first >= 2 and SKIP_RE.search(self.mctx.lines[first - 2]) and \
                self.mctx.lines[first - 2].lstrip().startswith("#"):
            return True
        return False

    def _body_on_own_line(self) -> bool:
        return bool(self.loop.body) and self.loop.body[0].lineno > self.loop.lineno

    def _not_candidate_reason(self) -> str:
        fw = self.mctx.framework
        if fw is None:
            return "the module imports no array framework (jax, flax, torch_xla), so its loops are left alone"
        return ("no array operations in the loop: it computes Python values (shapes, names, config), "
                "which must stay a Python loop")

    def _evidence(self) -> Optional[ast.AST]:
        """An array operation in the loop, or ``None`` (not a candidate).  Cheap
        syntactic evidence first; dataflow only for loops without it."""
        if self.mctx.framework is None:
            return None
        loop = self.loop
        imports = self.fctx.imports if self.fctx is not None else self.mctx.imports
        for node in ast.walk(loop):
            found = None
            if isinstance(node, ast.Call):
                f = node.func
                if is_array_call(imports.qualname(f)):
                    found = f
                elif isinstance(f, ast.Call) and imports.qualname(f.func) in DIFFERENTIATE:
                    found = f.func  # jax.grad(loss)(params, x): computes arrays
                elif isinstance(f, ast.Name) and self.mctx.is_array_function(f.id):
                    found = f
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                return node
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "at":
                return node
            if found is not None and not self._shadowed(found):
                return node
        if self.fctx is None:
            return None
        fctx = self.fctx
        # carried names that start from arrays
        body_written = all_written_names(loop.body)
        body_read = all_read_names(loop.body)
        for name in sorted(body_written & body_read):
            if name in fctx.params and self.mctx.annotation_is_array(fctx.param_annotations.get(name)):
                return loop
            if not any(not isinstance(v, tuple) and self.facts.is_array(v) for v in fctx.assigned_values(name)):
                continue  # cheap filter before reaching definitions
            for d in fctx.defs_before(loop, name):
                value = getattr(d.node, "value", None) if d.kind == "assign" else None
                if value is not None and isinstance(d.node, (ast.Assign, ast.AnnAssign)) \
                        and self.facts.is_array(value):
                    return loop
        # iterating an array, or reading arrays (known from `.shape`, annotations...)
        it = loop.iter
        seqs = it.args if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and \
            it.func.id in ("reversed", "zip", "enumerate") else [it]
        for s in seqs:
            if isinstance(s, ast.Name) and self.facts.name_is_array(s.id):
                return s
        targets = set(target_names(loop.target))
        for node in walk_scope_all(loop.body):
            # an array computed with: indexed, or an operand of arithmetic
            if isinstance(node, ast.Subscript):
                operands = [node.value]
            elif isinstance(node, ast.BinOp):
                operands = [node.left, node.right]
            elif isinstance(node, ast.UnaryOp) and not isinstance(node.op, ast.Not):
                operands = [node.operand]
            else:
                continue
            for op in operands:
                if isinstance(op, ast.Name) and op.id not in targets and op.id not in body_written \
                        and op.id in fctx.locals and self.facts.name_is_array(op.id):
                    return op
        return None

    def _shadowed(self, expr: ast.AST) -> bool:
        """The root name of ``expr`` is rebound locally (not by an import)."""
        while isinstance(expr, ast.Attribute):
            expr = expr.value
        return isinstance(expr, ast.Name) and self.fctx is not None and expr.id in self.fctx.shadowing

    # ------------------------------------------------------------ phases 2..7
    def _analyse(self) -> ScanPlan:
        loop, mctx = self.loop, self.mctx
        mctx.ensure_parents(self.func if self.func is not None else loop)
        self._check_framework()
        if isinstance(loop, ast.AsyncFor):
            raise Decline("L2S010", "`async for` cannot become a scan", loop)
        if self.func is None:
            raise Decline("L2S011", "the loop is not inside a function; move it into one to rewrite it", loop)
        fctx = self.fctx
        if loop.orelse:
            raise Decline("L2S012", "the loop has an `else:` block; move its statements after the loop",
                          loop.orelse[0])
        if fctx.uses_dynamic_scope is not None:
            node = fctx.uses_dynamic_scope
            raise Decline("L2S014", f"the function calls `{ast.unparse(node.func)}()`, which inspects its frame", node)

        self.targets = set(target_names(loop.target))
        self.written = all_written_names(loop.body)
        iteration = parse_iteration(loop, set(fctx.locals) - set(), self)
        self.layer = self._layer_loop(iteration)
        self._check_iterables(iteration)
        self._check_body_structure()
        self._check_globals()

        live_out = fctx.liveness.live_after.get(id(loop), set())
        reassigned = sorted(self.targets & self.written)
        if reassigned:
            node = self._first_write(reassigned[0])
            raise Decline("L2S305", f"the loop variable `{reassigned[0]}` is reassigned in the body", node)
        used_after = sorted(n for n in self.targets & live_out if n != "_")
        if used_after:
            name = used_after[0]
            read = next((n for n in walk_body(self.func) if isinstance(n, ast.Name) and n.id == name
                         and isinstance(n.ctx, ast.Load) and _pos(n) > (loop.end_lineno, loop.end_col_offset)), loop)
            raise Decline("L2S306", f"the loop variable `{name}` is read after the loop; compute its last value "
                          "explicitly instead", read)
        for name in sorted(self.written | self.targets):
            outside = [n for n in fctx.captured.get(name, []) if not self._inside_loop(n)]
            if outside:
                raise Decline("L2S206", f"`{name}` changes in the loop and is read by a function or lambda "
                              f"defined at line {outside[0].lineno}, outside the loop", outside[0])

        accs = OutputAnalysis(self).find(self._counter_name(iteration))
        self._check_mutations(accs)

        body_rd, exposed, definitely = self._body_dataflow()
        self.body_rd = body_rd
        trip_min = self._trip_count_at_least_one(iteration)
        carries: list[str] = []
        last_values: list[str] = []
        for name in self._ordered(self.written - self.targets - set(accs)):
            if name in exposed:
                carries.append(name)
            elif name in live_out:
                defs = fctx.defs_before(loop, name)
                bound_before = bool(defs) and not any(d.kind in ("undef", "del") for d in defs)
                if name not in definitely or (bound_before and not trip_min):
                    carries.append(name)
                else:
                    last_values.append(name)
        for name in carries:
            self._check_carry_init(name)
        self._check_python_container_carries(carries)
        self._check_python_number_carries(carries)

        tainted = self._tainted(set(carries))
        self._check_control_flow(tainted)
        self._check_python_value_uses(tainted)
        self._check_conversions(tainted)
        self._check_carry_shapes(carries)

        xs, length, reverse, length_reason, index_info = self._inputs(iteration, accs)
        self._learn_step_arrays(xs)
        ys = self._outputs(accs, last_values, iteration, index_info, reverse)
        reads_in_body = all_read_names(loop.body)
        step_reads = self._step_reads(xs)
        broadcast = [n for n in self._ordered_reads(step_reads)
                     if n not in self.written and n not in self.targets and n not in accs
                     and self._is_value_name(n)]
        plan = ScanPlan(
            loop=self.mctx.span(loop),
            function=mctx.qualified_function_name(self.func),
            carries=carries,
            carry_inits={c: c for c in carries},
            xs=xs,
            ys=ys,
            broadcast=broadcast,
            reverse=reverse,
            length=length,
            length_reason=length_reason,
            target_text=mctx.source(loop.target),
            target_pattern=mctx.span(loop.target),
            elements_pattern=self._elements_pattern(iteration, xs),
            function_names=set(fctx.all_names) | mctx.module_names | reads_in_body,
            step_reads=step_reads,
            xs_tree=self.xs_tree,
            local_names=set(fctx.locals),
            layout=self._layout_change(),
        )
        return plan

    def _layout_change(self) -> Optional[LayoutChange]:
        layer = self.layer
        if layer is None:
            return None
        if layer.mode == "keep":
            return LayoutChange("keep", layer.name)
        st = layer.structure
        mctx = self.mctx
        edits = []
        for use in st.uses:
            edits.append(LayoutEdit(use.kind, mctx.span(use.node), mctx.span(use.arg) if use.arg is not None else None,
                                    use.text))
        edits.sort(key=lambda e: (e.span.line, e.span.col))
        return LayoutChange("stacked", layer.name, st.builder.name, st.builder.func.lineno, edits,
                            list(st.returned_from), key=id(st))

    # ---------------------------------------------------------------- helpers
    def _learn_step_arrays(self, xs: list[XsItem]) -> None:
        """Tell the array inference what the step function will see: per-step
        slices and per-step inputs bound to a plain name are arrays."""
        replaced = {span for item in xs for span in item.replaces}
        for node in walk_scope_all(self.loop.body):
            if isinstance(node, ast.Subscript) and self.mctx.span(node) in replaced:
                self.facts.known_nodes.add(id(node))
        for item in xs:
            if item.bind.isidentifier():
                self.facts.known_names.add(item.bind)

    def _step_reads(self, xs: list[XsItem]) -> set[str]:
        """Names the step function reads once index reads became slices."""
        replaced = {x_span for item in xs for x_span in item.replaces}
        skip: set[int] = set()
        for stmt in self.loop.body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Subscript) and self.mctx.span(node) in replaced:
                    skip.update(id(n) for n in ast.walk(node))
        out: set[str] = set()
        for stmt in self.loop.body:
            c = collect(stmt)
            out.update(n.id for n in c.loads if id(n) not in skip)
            out |= c.closure_reads
        return out

    def _inside_loop(self, node: ast.AST) -> bool:
        return any(a is self.loop for a in self.mctx.ancestors(node))

    def _ordered(self, names: Iterable[str]) -> list[str]:
        """Names in order of first appearance in the loop body."""
        names = set(names)
        order: list[str] = []
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                n = node.id if isinstance(node, ast.Name) else None
                if n in names and n not in order:
                    order.append(n)
        order += sorted(names - set(order))
        return order

    def _ordered_reads(self, names: set[str]) -> list[str]:
        return [n for n in self._ordered(names) if n in names]

    def _is_value_name(self, name: str) -> bool:
        fctx = self.fctx
        if name in fctx.locals:
            return True
        if name in self.mctx.module_functions or name in BUILTIN_NAMES and name not in self.mctx.module_names:
            return False
        if self.mctx.imports.lookup(name) is not None:
            return False
        for stmt in self.mctx.tree.body:
            if isinstance(stmt, ast.ClassDef) and stmt.name == name:
                return False
        if name in self.mctx.module_names:
            return True
        # a name of an enclosing function
        for anc in self.mctx.ancestors(self.func):
            if isinstance(anc, (ast.FunctionDef, ast.AsyncFunctionDef)) and name in self.mctx.function(anc).locals:
                return True
        return False

    def _first_write(self, name: str) -> Optional[ast.AST]:
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
                    return node
        return None

    def qual(self, expr: ast.AST) -> Optional[str]:
        return self.facts.qual(expr)

    def is_progress_bar(self, call: ast.Call) -> bool:
        q = self.qual(call.func)
        if q and (q.split(".")[0] in ("tqdm", "rich", "alive_progress", "progressbar") or "progress" in q.lower()):
            return True
        return isinstance(call.func, ast.Name) and call.func.id in ("tqdm", "trange")

    # ---------------------------------------------------------- framework
    def _check_framework(self) -> None:
        fw = self.mctx.framework
        imports = self.fctx.imports if self.fctx else self.mctx.imports
        shadow = frozenset(self.fctx.shadowing) if self.fctx else frozenset()
        if fw in ("torch", "torch_xla"):
            if fw == "torch":
                raise Decline("L2S602", "plain PyTorch file (no `torch_xla` import): there is no scan that keeps "
                              "eager CUDA code working; add `torch_xla` or pass `--framework torch_xla`", self.loop)
            raise Decline("L2S602", "the `torch_xla` target is not available in this version; "
                          "the loop is left unchanged", self.loop)
        if self.func is not None and self._pallas_kernel():
            raise Decline("L2S601", "the loop is in Pallas kernel code (the function uses `jax.experimental."
                          "pallas`); kernel loops are unrolled on purpose and a scan may not lower there",
                          self.loop)
        for node in ast.walk(self.loop):
            if isinstance(node, ast.Call):
                q = imports.qualname(node.func, shadow)
                if is_under(q, "torch", "torch_xla"):
                    raise Decline("L2S601", f"the loop calls PyTorch (`{ast.unparse(node.func)}`); "
                                  "the JAX target cannot rewrite it", node)
                if is_under(q, "flax.linen", "flax.nnx", "flax", "haiku", "equinox"):
                    raise Decline("L2S601", f"the loop builds or calls Flax/Haiku modules (`{ast.unparse(node.func)}`); "
                                  "module loops need a Flax target, which is not available in this version", node)
        cls = self.mctx.enclosing_class(self.func) if self.func is not None else None
        if cls is not None and self._is_module_class(cls):
            for node in ast.walk(self.loop):
                if isinstance(node, ast.Call):
                    f = node.func
                    while isinstance(f, (ast.Attribute, ast.Subscript)):
                        f = f.value
                    if isinstance(f, ast.Name) and f.id == "self" and isinstance(node.func, (ast.Attribute, ast.Subscript)):
                        raise Decline("L2S601", f"the loop calls a submodule (`{ast.unparse(node.func)}`) of a "
                                      "Flax/PyTorch module; module loops need a Flax or torch_xla target", node)

    def _pallas_kernel(self) -> bool:
        imports = self.fctx.imports
        for func in [self.func, *[a for a in self.mctx.ancestors(self.func)
                                  if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef))]]:
            for node in walk_body(func):
                if isinstance(node, (ast.Attribute, ast.Name)):
                    q = imports.qualname(node)
                    if is_under(q, "jax.experimental.pallas", "jax._src.pallas"):
                        return True
        return False

    def _is_module_class(self, cls: ast.ClassDef) -> bool:
        for base in cls.bases:
            q = self.mctx.imports.qualname(base)
            if is_under(q, "flax", "torch", "haiku", "equinox"):
                return True
        return False

    # ---------------------------------------------------------- structure
    def _check_iterables(self, iteration: Iteration) -> None:
        """Loops over layers, per-layer parameter structures, or Python values."""
        loop = self.loop
        element_names: set[str] = set()
        for leaf in iteration.leaves:
            if isinstance(leaf, ElementSource):
                element_names.update(target_names(leaf.target))
                if isinstance(leaf.target, (ast.Tuple, ast.List)) and self.layer is None:
                    raise Decline("L2S304", f"the loop unpacks each element of `{ast.unparse(leaf.expr)}` into "
                                  f"`{ast.unparse(leaf.target)}`: a list of per-layer parameter tuples; stack them "
                                  "into one pytree of arrays (one leading layer axis) and scan over that", leaf.target)
        for leaf in iteration.leaves:
            if isinstance(leaf, ElementSource) and self.layer is None:
                self._check_element_iterable(leaf.expr)
        for node in walk_scope_all(loop.body):
            if isinstance(node, ast.keyword) and node.arg in STATIC_KEYWORDS and isinstance(node.value, ast.Name) \
                    and node.value.id in self.targets:
                raise Decline("L2S307", f"the loop variable `{node.value.id}` is passed as `{node.arg}=`, which "
                              "must be a Python value; inside a scan it would be a traced array", node)
        index = iteration.range_loop.name if iteration.range_loop else None
        problems = []
        for node in walk_scope_all(loop.body):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in element_names:
                    problems.append(Decline("L2S303", f"the loop calls its element `{f.id}`: a loop over layers or "
                                            "callables", node))
                elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in element_names \
                        and f.attr not in NOT_ARRAY_ATTRS and f.attr not in ARRAY_METHODS:
                    problems.append(Decline("L2S303", f"the loop calls `{ast.unparse(f)}` on each element: a loop "
                                            "over layers or objects", node))
                elif isinstance(f, ast.Subscript) and index is not None and any(
                        isinstance(n, ast.Name) and n.id == index for n in ast.walk(f.slice)):
                    problems.append(Decline("L2S303", f"the loop calls `{ast.unparse(f)}`: a loop over a list of "
                                            "layers or callables", node))
            elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and self.layer is None and \
                    node.value.id in element_names and isinstance(node.slice, ast.Constant) and \
                    isinstance(node.slice.value, str):
                problems.append(Decline("L2S304", f"each element `{node.value.id}` is indexed by a string "
                                        f"(`{ast.unparse(node)}`): a list of per-layer parameter dicts; stack them "
                                        "into one pytree of arrays and scan over that", node))
            elif isinstance(node, ast.Subscript) and index is not None and isinstance(node.value, ast.Subscript) \
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str) \
                    and index_offset(node.value.slice, index) is not None and self.layer is None:
                problems.append(Decline("L2S304", f"`{ast.unparse(node)}` indexes a per-layer structure by the loop "
                                        "index: a list of per-layer parameter dicts; stack them into one pytree "
                                        "of arrays and scan over that", node))
        if problems:
            raise min(problems, key=lambda d: _pos(d.node))

    def _check_python_value_uses(self, tainted: set[str]) -> None:
        """Per-step values formatted into strings, made into slices or used as
        shapes: those must be Python values, and inside a scan they are traced."""
        for node in walk_scope_all(self.loop.body):
            if not (isinstance(node, ast.Name) and node.id in tainted and isinstance(node.ctx, ast.Load)):
                continue
            what = f"the loop variable `{node.id}`" if node.id in self.targets else \
                f"`{node.id}`, which changes every step,"
            cur: ast.AST = node
            parent = self.mctx.parent(cur)
            while isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Tuple, ast.List, ast.Starred)) or (
                    isinstance(parent, ast.Subscript) and parent.value is cur):
                cur, parent = parent, self.mctx.parent(parent)
            if isinstance(parent, ast.FormattedValue):
                raise Decline("L2S307", f"{what} is formatted into a string; inside a scan it is a traced array",
                              node)
            if isinstance(parent, ast.Call):
                f = parent.func
                if isinstance(f, ast.Name) and f.id in ("str", "repr", "format", "hash", "slice") and f.id not in \
                        self.fctx.shadowing:
                    raise Decline("L2S307", f"`{short(ast.unparse(parent))}` needs {what} as a Python value; inside "
                                  "a scan it is a traced array", node)
                if self._shape_argument(parent, cur):
                    raise Decline("L2S307", f"{what} sets a shape in `{short(ast.unparse(parent))}`; shapes must "
                                  "be Python values, and inside a scan it is a traced array", node)
                use = self._python_use_in_callee(parent, cur)
                if use is not None:
                    callee, text = use
                    raise Decline("L2S307", f"{what} is passed to `{callee}`, which uses it as a Python value "
                                  f"(`{short(text)}`); inside a scan it is a traced array", node)

    def _python_use_in_callee(self, call: ast.Call, arg: ast.AST) -> Optional[tuple[str, str]]:
        """A function of this module (or defined in the enclosing function) that
        branches on the parameter ``arg`` binds, loops ``range`` over it, or
        indexes a Python list or tuple with it."""
        if not isinstance(call.func, ast.Name) or arg not in call.args:
            return None
        name = call.func.id
        callee = next((n for n in walk_body(self.func) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and n.name == name), None) or self.mctx.module_functions.get(name)
        if callee is None:
            return None
        params = [a.arg for a in callee.args.posonlyargs + callee.args.args]
        pos = call.args.index(arg)
        if pos >= len(params):
            return None
        param = params[pos]
        sequences = {n.targets[0].id for n in ast.walk(callee) if isinstance(n, ast.Assign) and len(n.targets) == 1
                     and isinstance(n.targets[0], ast.Name) and isinstance(n.value, (ast.List, ast.Tuple))}
        sequences |= {n.targets[0].id for n in walk_body(self.func) if isinstance(n, ast.Assign)
                      and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                      and isinstance(n.value, (ast.List, ast.Tuple))}

        def reads_param(e: Optional[ast.AST]) -> bool:
            return e is not None and param in self._value_reads(e)

        for node in ast.walk(callee):
            if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)) and reads_param(node.test):
                return name, ast.unparse(node.test)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
                    and any(reads_param(a) for a in node.args):
                return name, ast.unparse(node)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                    and node.value.id in sequences and reads_param(node.slice):
                return name, ast.unparse(node)
        return None

    def _shape_argument(self, call: ast.Call, arg: ast.AST) -> bool:
        q = self.qual(call.func) or ""
        last = q.rsplit(".", 1)[-1] if q else (call.func.attr if isinstance(call.func, ast.Attribute) else "")
        pos = next((i for i, a in enumerate(call.args) if a is arg), None)
        kw = next((k.arg for k in call.keywords if k.value is arg), None)
        if kw in ("shape", "new_shape", "newshape", "size", "num", "length", "repeats"):
            return True
        if is_under(q, "jax.numpy", "jax.lax", "jax._src.numpy"):
            if last in ("zeros", "ones", "empty", "full", "eye", "identity", "arange", "tri", "iota") and pos == 0:
                return True
            if last in ("reshape", "broadcast_to", "full") and pos == 1:
                return True
            if last == "linspace" and pos == 2:
                return True
        if is_under(q, "jax.random") and pos is not None and pos >= 1 and last not in ("fold_in", "split",
                                                                                        "choice", "permutation"):
            return True
        if not q and isinstance(call.func, ast.Attribute) and call.func.attr in ("reshape", "broadcast_to") \
                and pos is not None:
            return True
        return False

    def _layer_loop(self, iteration: Iteration) -> Optional["_LayerLoop"]:
        """A loop over a per-layer parameter list: ``for W, b in params``,
        ``for p in params[1:]``, ``for i in range(len(params)): ... params[i]``."""
        seq: Optional[str] = None
        part: Optional[str] = None
        r = iteration.range_loop
        if r is not None:
            stop = r.stop
            if r.start is None and r.step is None and isinstance(stop, ast.Call) and isinstance(stop.func, ast.Name) \
                    and stop.func.id == "len" and len(stop.args) == 1 and isinstance(stop.args[0], ast.Name) \
                    and not iteration.reverse:
                seq = stop.args[0].id
        elif len(iteration.leaves) == 1 and isinstance(iteration.leaves[0], ElementSource) and not iteration.reverse:
            expr = iteration.leaves[0].expr
            if isinstance(expr, ast.Name):
                seq = expr.id
            elif isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name) and isinstance(
                    expr.slice, ast.Slice) and all(b is None or int_literal(b) is not None
                                                   for b in (expr.slice.lower, expr.slice.upper, expr.slice.step)):
                seq, part = expr.value.id, ast.unparse(expr.slice)
        if seq is None or seq in self.written:
            return None
        structure = None
        func = self.func
        if self.mctx.layout == "stacked" and func is not None and self.mctx.parent(func) is self.mctx.tree:
            # the layout analysis follows module-level functions (not methods or nested functions)
            structure = self.mctx.layers.structure_of(func, seq)
        if structure is not None:
            if structure.builder.problem is not None:
                raise structure.builder.problem
            if structure.problem is not None:
                raise structure.problem
            return _LayerLoop("stacked", seq, part, structure)
        if not self._looks_like_parameter_list(iteration, seq):
            return None
        if self.mctx.layout == "keep":
            return _LayerLoop("keep", seq, part, None)
        header = f"for {ast.unparse(self.loop.target)} in {ast.unparse(self.loop.iter)}"
        raise Decline("L2S304", f"`{header}`: `{seq}` is a list of per-layer parameters, but where it is built is "
                      "not visible "
                      "from this loop (a function of this module returning it, whose result reaches this "
                      "function): the stacked layout cannot be introduced safely. Build it in this module, or run "
                      "with `--layout keep` to stack it inside the function on every call (slower under "
                      "`jax.grad`)", self.loop.iter)

    def _looks_like_parameter_list(self, iteration: Iteration, seq: str) -> bool:
        if iteration.range_loop is not None:
            index = iteration.range_loop.name
            for node in walk_scope_all(self.loop.body):
                if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Subscript) \
                        and isinstance(node.value.value, ast.Name) and node.value.value.id == seq \
                        and index_offset(node.value.slice, index) == 0:
                    return True  # params[i]["w"], params[i][0]
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                        and isinstance(node.value, ast.Subscript) and isinstance(node.value.value, ast.Name) \
                        and node.value.value.id == seq:
                    return True  # W, b = params[i]
            return False
        leaf = iteration.leaves[0]
        if isinstance(leaf.target, (ast.Tuple, ast.List)):
            return True
        names = set(target_names(leaf.target))
        for node in walk_scope_all(self.loop.body):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in names \
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                return True
        return False

    def _check_element_iterable(self, expr: ast.AST) -> None:
        """Iterating a parameter annotated as Python values, a Python list (whose
        arrays may differ in shape), or the parts of a call that returns arrays
        of different shapes."""
        self._check_sequence(expr, "iterates over")
        if isinstance(expr, ast.Name) and expr.id in self.fctx.params and expr.id not in self.written:
            ann = self.fctx.param_annotations.get(expr.id)
            if ann is not None and not self.mctx.annotation_is_array(ann):
                text = ast.unparse(ann)
                if _python_values_annotation(ann):
                    raise Decline("L2S302", f"the loop iterates over `{expr.id}`, annotated `{text}`: Python values, "
                                  "not the rows of an array", expr)
        if isinstance(expr, ast.Name) and expr.id in self.fctx.locals:
            for d in self.fctx.defs_before(self.loop, expr.id):
                value = getattr(d.node, "value", None) if d.kind == "assign" else None
                if value is None or not isinstance(d.node, (ast.Assign, ast.AnnAssign)):
                    continue
                if isinstance(value, ast.Call) and self.is_progress_bar(value):
                    raise Decline("L2S201", f"the loop iterates through a progress bar (`{expr.id}`, line "
                                  f"{d.node.lineno}); drop it (a scan runs all steps at once)", expr)
                why = self._python_sequence(value)
                if why:
                    raise Decline("L2S302", f"the loop iterates over `{expr.id}`, {why} (line {d.node.lineno}): "
                                  "Python values, not the rows of an array", expr)
        if isinstance(expr, ast.Call):
            q = self.qual(expr.func)
            last = expr.func.attr if isinstance(expr.func, ast.Attribute) else getattr(expr.func, "id", "")
            if last in HETEROGENEOUS_CALLS:
                raise Decline("L2S302", f"the loop iterates over the results of `{ast.unparse(expr.func)}`, which "
                              "have different shapes and cannot be stacked into one array", expr)

    def _check_sequence(self, expr: ast.AST, how: str) -> None:
        """``expr`` (or the name it slices) holds a Python list or dict: scanning it would
        need ``jnp.asarray``, which changes Python numbers into strongly typed arrays and
        fails on arrays of different shapes."""
        base = expr
        while isinstance(base, ast.Subscript) and isinstance(base.slice, ast.Slice):
            base = base.value
        if not isinstance(base, ast.Name) or self.fctx is None:
            return
        name = base.id
        if name in self.fctx.params and name not in self.written:
            ann = self.fctx.param_annotations.get(name)
            root = ann.value if isinstance(ann, ast.Subscript) else ann
            root_name = getattr(root, "attr", getattr(root, "id", None))
            if root_name in ("dict", "Dict", "Mapping", "MutableMapping"):
                raise Decline("L2S302", f"the loop {how} `{name}`, annotated `{ast.unparse(ann)}`: a dict, not an "
                              "array (its values may also differ in shape)", expr)
            return
        if name not in self.fctx.locals:
            return
        for d in self.fctx.defs_before(self.loop, name):
            node = d.node
            if d.kind != "assign" or not isinstance(node, ast.Assign):
                continue
            value = node.value
            starred = any(isinstance(t, (ast.Tuple, ast.List)) and any(
                isinstance(e, ast.Starred) and isinstance(e.value, ast.Name) and e.value.id == name for e in t.elts)
                for t in node.targets)
            kind = None
            if starred:
                kind = "the rest of an unpacked sequence (a Python list)"
            elif isinstance(value, (ast.List, ast.ListComp, ast.Dict, ast.DictComp)):
                kind = "a Python list" if isinstance(value, (ast.List, ast.ListComp)) else "a Python dict"
                if isinstance(value, ast.List) and value.elts and all(
                        isinstance(e, ast.Constant) or int_literal(e) is not None for e in value.elts):
                    kind = "a Python list of numbers (a scan would make them strongly typed float32 arrays)"
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in (
                    "list", "dict") and value.func.id not in self.fctx.shadowing:
                kind = f"a Python {value.func.id}"
            if kind:
                raise Decline("L2S302", f"the loop {how} `{name}`, {kind} (line {node.lineno}): its items may "
                              "differ in shape or type; stack them into one array first (`jnp.stack`) and loop "
                              "over that", expr)

    def _python_sequence(self, value: ast.AST) -> str:
        """Why ``value`` is certainly a Python sequence/iterator of non-arrays ('' if not)."""
        if isinstance(value, (ast.GeneratorExp, ast.SetComp, ast.DictComp, ast.Dict, ast.Set)):
            return "a generator, set or dict"
        if isinstance(value, (ast.List, ast.Tuple)) and value.elts and all(
                isinstance(e, ast.Constant) for e in value.elts):
            return "a literal sequence of constants"
        if isinstance(value, ast.Call):
            f = value.func
            if isinstance(f, ast.Name) and f.id in PYTHON_SEQUENCE_CALLS and f.id not in self.fctx.locals:
                return f"built by `{f.id}(...)`"
            q = self.qual(f)
            if q and q.split(".")[0] in ("itertools", "functools", "collections", "string", "os", "re"):
                return f"built by `{q}(...)`"
        return ""

    def _check_body_structure(self) -> None:
        problems: list[tuple[tuple[int, int], str, str, ast.AST]] = []

        def add(code: str, message: str, node: ast.AST) -> None:
            problems.append((_pos(node), code, message, node))

        def binding(stmts: list[ast.stmt], binds: bool) -> None:
            for s in stmts:
                if isinstance(s, ast.Break) and binds:
                    add("L2S101", "`break` ends the loop early; a scan always runs every step", s)
                elif isinstance(s, ast.Continue) and binds:
                    add("L2S102", "`continue` skips the rest of a step; a scan runs the same code every step", s)
                elif isinstance(s, (ast.For, ast.AsyncFor, ast.While)):
                    binding(s.body, False)
                    binding(s.orelse, binds)
                elif isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                else:
                    for name in ("body", "orelse", "finalbody"):
                        block = getattr(s, name, None)
                        if isinstance(block, list):
                            binding(block, binds)
                    for h in getattr(s, "handlers", []) or []:
                        binding(h.body, binds)
                    for c in getattr(s, "cases", []) or []:
                        binding(c.body, binds)

        binding(self.loop.body, True)
        shadow = set(self.fctx.shadowing)
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                if isinstance(node, ast.Return):
                    add("L2S103", "`return` inside the loop leaves the function from within a step; "
                        "return after the loop", node)
                elif isinstance(node, (ast.Yield, ast.YieldFrom)):
                    add("L2S104", "`yield` inside the loop makes it a generator loop", node)
                elif isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
                    add("L2S105", "asynchronous code inside the loop", node)
                elif isinstance(node, (ast.Global, ast.Nonlocal)):
                    add("L2S106", f"`{type(node).__name__.lower()} {', '.join(node.names)}` inside the loop; "
                        "return the value from the step instead", node)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for sub in ast.walk(node):
                        if isinstance(sub, (ast.Global, ast.Nonlocal)):
                            add("L2S106", f"`{type(sub).__name__.lower()} {', '.join(sub.names)}` in a function "
                                "defined inside the loop; return the value instead", sub)
                elif isinstance(node, ast.Delete):
                    add("L2S107", f"`{ast.unparse(node)}` inside the loop; drop it (step locals are freed anyway)",
                        node)
                elif isinstance(node, ast.Raise):
                    add("L2S112", "`raise` inside the loop: a step cannot end the scan with an exception; "
                        "check the condition before or after the loop", node)
                elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
                    add("L2S108", "`try` inside the loop; handle errors around the loop instead", node)
                elif isinstance(node, ast.ClassDef):
                    add("L2S111", f"class `{node.name}` is defined inside the loop; define it before the loop", node)
                elif isinstance(node, ast.Match):
                    add("L2S111", "`match` statement inside the loop; use `jax.lax.switch` or move it out", node)
                elif isinstance(node, ast.With):
                    for item in node.items:
                        expr = item.context_expr
                        q = self.qual(expr.func) if isinstance(expr, ast.Call) else self.qual(expr)
                        if q not in PURE_CONTEXT_MANAGERS:
                            add("L2S110", f"`with {ast.unparse(expr)}` inside the loop: a context manager would be "
                                "entered once when the scan traces the step, not once per step", node)
                elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                    call = node.value
                    if not self._call_problem(call, shadow, add, statement=True) and not self._is_append_statement(node) \
                            and not is_under(self.qual(call.func), "jax.debug"):
                        add("L2S201", f"the result of `{short(ast.unparse(call))}` is discarded: a call made "
                            "for its effect would run once, when the scan traces the step (use "
                            "`jax.debug.callback` for host effects)", node)
                elif isinstance(node, ast.Call) and not isinstance(self.mctx.parent(node), ast.Expr):
                    self._call_problem(node, shadow, add)
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.With)):
                    targets: list[ast.AST] = []
                    if isinstance(node, ast.Assign):
                        targets = list(node.targets)
                    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                        targets = [node.target] if (not isinstance(node, ast.AnnAssign) or node.value is not None) else []
                    elif isinstance(node, ast.For):
                        targets = [node.target]
                    else:
                        targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
                    for t in targets:
                        for leaf in target_side_effects(t):
                            if isinstance(leaf, ast.Attribute):
                                add("L2S203", f"`{ast.unparse(leaf)}` is assigned inside the loop; a scan step "
                                    "cannot change objects outside it (assign a local name and set the attribute "
                                    "after the loop)", leaf)
                            else:
                                add("L2S204", f"`{ast.unparse(leaf)}` is assigned inside the loop; use "
                                    "`x = x.at[i].set(v)` or collect values and stack them after the loop", leaf)
        if problems:
            problems.sort(key=lambda p: (p[0], p[1]))
            _, code, message, node = problems[0]
            raise Decline(code, message, node)

    @staticmethod
    def _is_append_statement(stmt: ast.Expr) -> bool:
        call = stmt.value
        return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "append"
                and isinstance(call.func.value, ast.Name))

    def _call_problem(self, node: ast.Call, shadow: set[str], add, statement: bool = False) -> bool:
        """Report a host effect, attribute change or in-place mutation made by
        this call; ``True`` when one was reported."""
        f = node.func
        if isinstance(f, ast.Name) and f.id not in shadow:
            if f.id in HOST_BUILTINS:
                hint = "jax.debug.print" if f.id == "print" else "jax.debug.callback"
                add("L2S201", f"`{f.id}(...)` is a host side effect; inside a scan it would run once, at trace "
                    f"time (use `{hint}`)", node)
                return True
            if f.id in ATTR_BUILTINS:
                add("L2S203", f"`{f.id}(...)` changes an object inside the loop", node)
                return True
            if self.mctx.is_impure_function(f.id):
                add("L2S201", f"`{f.id}()` rebinds module globals (it has a `global` statement)", node)
                return True
            if self.is_progress_bar(node):
                add("L2S201", f"`{f.id}(...)` is a progress bar; drop it (a scan runs all steps at once)", node)
                return True
            return False
        q = self.qual(f)
        if q is not None:
            if is_under(q, *HOST_CALL_ROOTS) or (q.split(".")[0] == "builtins" and q.split(".")[-1] in HOST_BUILTINS):
                add("L2S201", f"`{ast.unparse(f)}(...)` is a host side effect; inside a scan it would run once, at "
                    "trace time (use `jax.debug.callback`, or move it out of the loop)", node)
                return True
            return False
        if not isinstance(f, ast.Attribute):
            return False
        recv = f.value
        if isinstance(recv, ast.Subscript) and isinstance(recv.value, ast.Attribute) and recv.value.attr == "at":
            return False
        recv_text = ast.unparse(recv).lower()
        if f.attr in LOG_METHODS and "log" in recv_text:
            add("L2S201", f"`{ast.unparse(f)}(...)` logs; inside a scan it would run once, at trace time "
                "(use `jax.debug.print`)", node)
            return True
        if f.attr in IO_METHODS:
            add("L2S201", f"`{ast.unparse(f)}(...)` writes output; inside a scan it would run once", node)
            return True
        host = self._host_object(recv)
        if host:
            add("L2S201", f"`{ast.unparse(f)}(...)` draws from {host}; a scan would draw once, when it traces the "
                "step, and reuse the value every step (use `jax.random` with a key in the carry)", node)
            return True
        if f.attr == "append" and isinstance(recv, ast.Name):
            return False  # list accumulators are judged by the output analysis
        if f.attr in MUTATING_METHODS or (f.attr.endswith("_") and not f.attr.startswith("_")):
            add("L2S205", f"`{ast.unparse(f)}(...)` changes an object in place inside the loop; a scan step must "
                "only return new values", node)
            return True
        return False

    def _host_object(self, recv: ast.AST) -> str:
        """``rng`` in ``rng.normal(...)`` when it is a NumPy / Python random generator."""
        root = recv
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        if not isinstance(root, ast.Name):
            return ""
        values = list(self.fctx.assigned_values(root.id)) if root.id in self.fctx.locals else \
            list(self.mctx.module_assigned_values(root.id))
        for v in values:
            if isinstance(v, ast.Call):
                q = self.qual(v.func) if root.id in self.fctx.locals else self.mctx.imports.qualname(v.func)
                if q and (is_under(q, "numpy.random", "random") or q in ("numpy.random.default_rng",)):
                    return f"a host random generator (`{root.id}`, line {v.lineno})"
        return ""

    def _check_globals(self) -> None:
        declared = self.fctx.declared_global
        if not declared:
            return
        used = (all_read_names(self.loop.body) | self.written) & declared
        if used:
            name = sorted(used)[0]
            decl = next((n for n in ast.walk(self.func) if isinstance(n, (ast.Global, ast.Nonlocal))
                         and name in n.names), self.loop)
            raise Decline("L2S106", f"`{name}` is declared `global`/`nonlocal` in the function and used in the loop; "
                          "a scan step cannot rebind it (return the value instead)", decl)

    def _check_mutations(self, accs: dict[str, Accumulator]) -> None:
        """``x.append(...)`` on a name that is not a recognised accumulator (other
        in-place calls were rejected with the body structure)."""
        handled = {id(a.stmt) for a in accs.values()}
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append"
                        and isinstance(node.func.value, ast.Name) and id(self.mctx.parent(node)) not in handled):
                    raise Decline("L2S205", f"`{ast.unparse(node.func)}(...)` changes a list in place inside the "
                                  "loop; a scan step must only return new values", node)

    # ---------------------------------------------------------- dataflow
    def _body_dataflow(self):
        """Reaching definitions over one iteration of the body: which names are
        read before being written (carried), and which are written on every path."""
        rd = ReachingDefinitions()
        entry = {}
        for name in self.written | self.targets:
            entry[name] = frozenset((Def(name, None, "entry"),))
        for name in self.targets:
            entry[name] = frozenset((Def(name, self.loop, "for"),))
        end = rd.run(self.loop.body, entry)
        exposed: set[str] = set()
        for stmt in self._body_statements():
            state = rd.before.get(id(stmt), {})
            eff = header_effects(stmt)
            names = {n.id for n in eff.reads} | eff.closure_reads
            if isinstance(stmt, ast.Match):
                names |= {n.id for c in stmt.cases for n in reads(c.guard)} if stmt.cases else set()
            for name in names & self.written:
                if any(d.kind == "entry" for d in state.get(name, ())):
                    exposed.add(name)
        definitely: set[str] = set()
        if end is not None:
            for name in self.written:
                if not any(d.kind == "entry" for d in end.get(name, ())):
                    definitely.add(name)
        return rd, exposed, definitely

    def _body_statements(self) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                if isinstance(node, ast.stmt) and (node is stmt or not isinstance(node, (ast.FunctionDef,
                                                                                         ast.AsyncFunctionDef,
                                                                                         ast.ClassDef)) or True):
                    out.append(node)
        return out

    def _trip_count_at_least_one(self, iteration: Iteration) -> bool:
        r = iteration.range_loop
        if r is None:
            return False
        start = to_lin(r.start, lambda n: None) if r.start is not None else Lin.constant(0)
        stop = to_lin(r.stop, lambda n: None)
        step = to_lin(r.step, lambda n: None) if r.step is not None else Lin.constant(1)
        if start is None or stop is None or step is None or not (start.is_const and stop.is_const and step.is_const):
            return False
        return len(range(start.const, stop.const, step.const or 1)) >= 1 if step.const else False

    def _check_carry_init(self, name: str) -> None:
        defs = self.fctx.defs_before(self.loop, name)
        if not defs or any(d.kind in ("undef", "del") for d in defs):
            raise Decline("L2S401", f"`{name}` is carried from step to step but may be unassigned before the loop; "
                          "initialise it before the loop", self._first_write(name) or self.loop)
        for d in defs:
            node = d.node
            value = getattr(node, "value", None) if d.kind == "assign" else None
            if isinstance(node, ast.Assign) and isinstance(value, ast.Constant) and value.value is None:
                raise Decline("L2S402", f"`{name}` is carried from step to step but starts as `None` "
                              f"(line {node.lineno}); initialise it with an array of its final shape", node)
            if isinstance(node, ast.AnnAssign) and isinstance(value, ast.Constant) and value.value is None:
                raise Decline("L2S402", f"`{name}` is carried from step to step but starts as `None` "
                              f"(line {node.lineno})", node)
        if len(defs) == 1:
            d = next(iter(defs))
            default = self.fctx.param_defaults.get(name) if d.kind == "param" else None
            if isinstance(default, ast.Constant) and default.value is None:
                raise Decline("L2S402", f"`{name}` is carried from step to step and its default is `None`; "
                              "initialise it before the loop (e.g. `if h is None: h = jnp.zeros(...)`)", default)

    def _carry_updates(self, name: str) -> list[tuple[ast.stmt, ast.AST]]:
        """The statements of the body that rebind ``name``, with the value each combines in."""
        out = []
        for stmt in self._body_statements():
            if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and stmt.value is not None \
                    and name in header_effects(stmt).writes:
                out.append((stmt, stmt.value))
        return out

    def _check_carry_shapes(self, carries: list[str]) -> None:
        """A scan carry keeps its shape.  Decline a carry grown by a shape-changing
        operation on itself, and one that starts as a scalar but is updated with
        values not known to be scalars (``h = 0`` then ``h = h + x``)."""
        for name in carries:
            updates = self._carry_updates(name)
            for stmt, value in updates:
                for node in ast.walk(value):
                    if not isinstance(node, ast.Call):
                        continue
                    q = self.qual(node.func) or ""
                    last = q.rsplit(".", 1)[-1] if q else getattr(node.func, "attr", getattr(node.func, "id", ""))
                    if (last in SHAPE_CHANGING and (is_under(q, "jax.numpy", "jax._src.numpy") or not q)
                            and any(isinstance(n, ast.Name) and n.id == name for a in node.args for n in ast.walk(a))):
                        raise Decline("L2S404", f"`{name}` is updated with `{short(ast.unparse(node))}`, which "
                                      "changes its shape from step to step; a scan carry keeps one shape", node)
            defs = self.fctx.defs_before(self.loop, name)
            init = [getattr(d.node, "value", None) for d in defs]
            if not defs or not all(d.kind == "assign" and v is not None and self._scalar_literal(v)
                                   for d, v in zip(defs, init)):
                continue
            for stmt, value in updates:
                if not self._scalar(value, name, stmt, 0):
                    d = next(iter(defs))
                    raise Decline("L2S404", f"`{name}` starts as the scalar `{short(ast.unparse(d.node.value))}` "
                                  f"(line {d.node.lineno}) but is updated with `{short(ast.unparse(value))}`, which "
                                  "is not known to be a scalar; a scan carry keeps its shape, so initialise it with "
                                  "the shape it has inside the loop", stmt)

    def _scalar_literal(self, value: ast.AST) -> bool:
        if int_literal(value) is not None or (isinstance(value, ast.Constant) and type(value.value) in (float, bool)):
            return True
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
            return self._scalar_literal(value.operand)
        if isinstance(value, ast.Call):
            q = self.qual(value.func) or ""
            last = q.rsplit(".", 1)[-1]
            if is_under(q, "jax.numpy") and last in ("zeros", "ones", "full") and value.args and \
                    isinstance(value.args[0], ast.Tuple) and not value.args[0].elts:
                return True
            if is_under(q, "jax.numpy") and last in SCALAR_CONSTRUCTORS and len(value.args) == 1:
                return self._scalar_literal(value.args[0])
        return False

    def _scalar(self, expr: ast.AST, carry: str, stmt: ast.stmt, depth: int) -> bool:
        """``expr`` is provably a scalar (carry ``carry`` is one by induction)."""
        if depth > 6:
            return False
        if self._scalar_literal(expr):
            return True
        if isinstance(expr, ast.Name):
            if expr.id == carry:
                return True
            state = self.body_rd.before.get(id(stmt), {})
            defs = state.get(expr.id)
            if not defs:
                return False
            for d in defs:
                node = d.node
                if d.kind == "entry":
                    ok = all(x.kind == "assign" and self._scalar_literal(getattr(x.node, "value", None) or ast.Pass())
                             for x in self.fctx.defs_before(self.loop, expr.id)) and \
                        bool(self.fctx.defs_before(self.loop, expr.id))
                elif d.kind == "assign" and isinstance(node, ast.Assign) and len(node.targets) == 1 \
                        and isinstance(node.targets[0], ast.Name):
                    ok = self._scalar(node.value, carry, node, depth + 1)
                else:
                    ok = False
                if not ok:
                    return False
            return True
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
            return self._scalar_attribute(expr.attr)
        if isinstance(expr, ast.BinOp):
            return self._scalar(expr.left, carry, stmt, depth + 1) and self._scalar(expr.right, carry, stmt, depth + 1)
        if isinstance(expr, ast.UnaryOp):
            return self._scalar(expr.operand, carry, stmt, depth + 1)
        if isinstance(expr, ast.IfExp):
            return self._scalar(expr.body, carry, stmt, depth + 1) and self._scalar(expr.orelse, carry, stmt,
                                                                                    depth + 1)
        if isinstance(expr, ast.Call):
            kw = {k.arg for k in expr.keywords}
            q = self.qual(expr.func) or ""
            last = q.rsplit(".", 1)[-1]
            if is_under(q, "jax.numpy", "jax.numpy.linalg") and last in REDUCTIONS and len(expr.args) == 1 \
                    and not kw & {"axis", "keepdims", "axes"}:
                return True
            if q in ("jax.numpy.vdot",) and len(expr.args) == 2:
                return True
            if (is_under(q, "jax.numpy", "jax.nn", "jax.lax") and last in ELEMENTWISE_NAMES) or \
                    (q in ("jax.numpy.where",) and len(expr.args) == 3):
                return all(self._scalar(a, carry, stmt, depth + 1) for a in expr.args)
            if not q and isinstance(expr.func, ast.Attribute) and expr.func.attr in REDUCTIONS \
                    and not expr.args and not kw & {"axis", "keepdims"}:
                return True
            if isinstance(expr.func, ast.Name) and expr.func.id not in self.fctx.shadowing:
                return self._returns_scalar(expr.func.id, depth + 1)
        return False

    def _scalar_attribute(self, attr: str) -> bool:
        """``self.attr`` is only ever set to a Python number (a literal, or a
        constructor parameter annotated ``float``/``int`` or defaulting to a number)."""
        cls = self.mctx.enclosing_class(self.func)
        if cls is None:
            return False
        values = []
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef):
                continue
            ctx = self.mctx.function(method)
            for node in ast.walk(method):
                if isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if any(isinstance(t, ast.Attribute) and t.attr == attr and isinstance(t.value, ast.Name)
                           and t.value.id == "self" for t in targets):
                        values.append((ctx, node.value))
        if not values:
            return False
        for ctx, v in values:
            if v is not None and self._scalar_literal(v):
                continue
            if isinstance(v, ast.Name) and v.id in ctx.params:
                ann = ctx.param_annotations.get(v.id)
                default = ctx.param_defaults.get(v.id)
                if (ann is not None and ast.unparse(ann) in ("float", "int")) or (
                        default is not None and self._scalar_literal(default)):
                    continue
            return False
        return True

    def _returns_scalar(self, name: str, depth: int) -> bool:
        """A module function whose every ``return`` is a reduction to a scalar."""
        fn = self.mctx.module_functions.get(name)
        if fn is None or depth > 3:
            return False
        returns = [n for n in walk_body(fn) if isinstance(n, ast.Return)]
        if not returns:
            return False
        imports = self.mctx.function(fn).imports
        for r in returns:
            v = r.value
            if v is None or not isinstance(v, ast.Call):
                return False
            kw = {k.arg for k in v.keywords}
            q = imports.qualname(v.func) or ""
            if not (is_under(q, "jax.numpy", "jax.numpy.linalg") and q.rsplit(".", 1)[-1] in REDUCTIONS
                    and len(v.args) == 1 and not kw & {"axis", "keepdims", "axes"}):
                return False
        return True

    def _check_python_number_carries(self, carries: list[str]) -> None:
        """A carry that starts as a Python number and is only ever updated by
        non-array computations is a Python value (a counter, a size)."""
        for name in carries:
            defs = self.fctx.defs_before(self.loop, name)
            if not defs or not all(self._numeric_literal_def(d) for d in defs):
                continue
            updates = []
            for stmt in self._body_statements():
                if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and name in header_effects(stmt).writes:
                    updates.append(stmt)
            if any(self._update_is_array(stmt, name) for stmt in updates):
                continue
            first = updates[0] if updates else self.loop
            raise Decline("L2S403", f"`{name}` starts as a Python number and is never combined with an array in "
                          "the loop, so it is a Python value; a scan would turn it into a traced array "
                          f"(initialise it with `jnp.asarray(...)` if it is meant to be an array)", first)

    def _check_python_container_carries(self, carries: list[str]) -> None:
        for name in carries:
            for d in self.fctx.defs_before(self.loop, name):
                value = getattr(d.node, "value", None) if d.kind == "assign" else None
                if value is None or not isinstance(d.node, (ast.Assign, ast.AnnAssign)):
                    continue
                kind = None
                if isinstance(value, (ast.Set, ast.Dict, ast.SetComp, ast.DictComp, ast.JoinedStr)) or (
                        isinstance(value, ast.Constant) and isinstance(value.value, (str, bytes))):
                    kind = "a Python set, dict or string"
                elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and \
                        value.func.id in ("set", "dict", "frozenset", "str", "collections.defaultdict") and \
                        value.func.id not in self.fctx.shadowing:
                    kind = f"a Python `{value.func.id}`"
                if kind:
                    raise Decline("L2S403", f"`{name}` is carried from step to step but starts as {kind} "
                                  f"(line {d.node.lineno}); a scan can only carry arrays", d.node)

    @staticmethod
    def _numeric_literal_def(d) -> bool:
        node = d.node
        if d.kind != "assign" or not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
            return False
        if isinstance(node, ast.Assign) and (len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name)):
            return False
        value = node.value
        while isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.USub, ast.UAdd)):
            value = value.operand
        return isinstance(value, ast.Constant) and type(value.value) in (int, float, bool, complex)

    def _update_is_array(self, stmt: ast.stmt, name: str) -> bool:
        state = self.body_rd.before.get(id(stmt), {})

        def defs_of(n):
            d = state.get(n)
            if n == name:
                return None
            if d is None or any(x.kind == "entry" for x in d):
                return self.fctx.defs_before(self.loop, n) or None
            return d

        value = stmt.value
        if value is None:
            return False
        return self.facts.is_array(value, defs_of) or any(
            isinstance(n, ast.Call) and self.facts.call_is_array(n) for n in ast.walk(value))

    # ------------------------------------------------------------ taint
    def _value_reads(self, expr: Optional[ast.AST]) -> set[str]:
        """Names whose *values* an expression uses (reads under ``.shape``,
        ``len()`` and friends only see static metadata)."""
        if expr is None:
            return set()
        skip: set[int] = set()
        for node in ast.walk(expr):
            if isinstance(node, ast.Attribute) and node.attr in STATIC_ATTRS:
                skip.update(id(n) for n in ast.walk(node.value))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in STATIC_FUNCS:
                for a in node.args:
                    skip.update(id(n) for n in ast.walk(a))
        return {n.id for n in reads(expr) if id(n) not in skip}

    def _tainted(self, carries: set[str]) -> set[str]:
        tainted = set(self.targets) | carries
        stmts = self._body_statements()
        comprehensions = [n for n in walk_scope_all(self.loop.body) if isinstance(n, ast.comprehension)]
        changed = True
        while changed:
            changed = False
            for comp in comprehensions:
                if self._value_reads(comp.iter) & tainted:
                    new = set(target_names(comp.target)) - tainted
                    if new:
                        tainted |= new
                        changed = True
            for stmt in stmts:
                if isinstance(stmt, (ast.For, ast.AsyncFor)):
                    if self._value_reads(stmt.iter) & tainted:
                        new = set(target_names(stmt.target)) - tainted
                        if new:
                            tainted |= new
                            changed = True
                    continue
                eff = header_effects(stmt)
                if not eff.writes:
                    continue
                if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    src = self._value_reads(stmt.value)
                    if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                        src.add(stmt.target.id)
                else:
                    src = {n.id for n in eff.reads} | eff.closure_reads
                if src & tainted:
                    new = set(eff.writes) - tainted
                    if new:
                        tainted |= new
                        changed = True
        return tainted

    def _check_control_flow(self, tainted: set[str]) -> None:
        problems = []
        for stmt in self.loop.body:
            for node in walk_scope_all([stmt]):
                bad: set[str] = set()
                what = ""
                if isinstance(node, (ast.If, ast.While)):
                    bad, what = self._value_reads(node.test) & tainted, f"`{type(node).__name__.lower()}` tests"
                elif isinstance(node, ast.IfExp):
                    bad, what = self._value_reads(node.test) & tainted, "a conditional expression tests"
                elif isinstance(node, ast.BoolOp):
                    bad = set()
                    for v in node.values:
                        bad |= self._value_reads(v) & tainted
                    what = f"`{'and' if isinstance(node.op, ast.And) else 'or'}` takes the truth value of"
                elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                    bad, what = self._value_reads(node.operand) & tainted, "`not` takes the truth value of"
                elif isinstance(node, ast.Compare) and len(node.ops) > 1:
                    bad = set()
                    for v in [node.left, *node.comparators]:
                        bad |= self._value_reads(v) & tainted
                    what = "a chained comparison takes the truth value of"
                elif isinstance(node, ast.Assert):
                    bad, what = self._value_reads(node.test) & tainted, "`assert` tests"
                elif isinstance(node, ast.comprehension):
                    bad = set()
                    for cond in node.ifs:
                        bad |= self._value_reads(cond) & tainted
                    what = "a comprehension filter tests"
                    where = node.ifs[0] if node.ifs else node.iter
                    if not bad and not isinstance(node.iter, _FIXED_LENGTH):
                        bad, what, where = self._value_reads(node.iter) & tainted, \
                            f"the length of a comprehension (`{short(ast.unparse(node.iter))}`) depends on", node.iter
                    if bad:
                        problems.append((_pos(where), what, self._ordered(bad)[0], where))
                    continue
                elif isinstance(node, (ast.For, ast.AsyncFor)) and node is not self.loop:
                    if not isinstance(node.iter, _FIXED_LENGTH) and not _array_arithmetic(node.iter):
                        bad = self._value_reads(node.iter) & tainted
                        what = f"the trip count of a nested loop (`{short(ast.unparse(node.iter))}`) depends on"
                if bad:
                    name = self._ordered(bad)[0]
                    problems.append((_pos(node), what, name, node))
        if problems:
            problems.sort(key=lambda p: p[0])
            _, what, name, node = problems[0]
            if name in self.targets and "trip count" in what or "length" in what and name in self.targets:
                raise Decline("L2S307", f"{what} the loop variable `{name}`; inside a scan it is traced, so the "
                              "number of iterations would not be static", node)
            kind = "the loop variable" if name in self.targets else "a value that changes every step"
            raise Decline("L2S109", f"{what} `{name}`, {kind}; inside a scan it is a traced array "
                          "(use `jnp.where` or `jax.lax.cond`)", node)

    def _check_conversions(self, tainted: set[str]) -> None:
        shadow = set(self.fctx.locals)
        for stmt in self.loop.body:
            for node in walk_scope_all([stmt]):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                args = list(node.args) + [k.value for k in node.keywords]
                arg_reads: set[str] = set()
                for a in args:
                    arg_reads |= self._value_reads(a)
                if isinstance(f, ast.Name) and f.id in CONVERSION_BUILTINS and f.id not in shadow:
                    if arg_reads & tainted:
                        raise Decline("L2S202", f"`{ast.unparse(node)}` converts a per-step value to a Python "
                                      "number; inside a scan it is a traced array", node)
                elif isinstance(f, ast.Attribute) and f.attr in CONVERSION_METHODS:
                    if self._value_reads(f.value) & tainted:
                        raise Decline("L2S202", f"`{ast.unparse(node)}` converts a per-step value to a Python "
                                      "value; inside a scan it is a traced array", node)
                else:
                    q = self.qual(f)
                    if q and (is_under(q, "numpy", "math", "scipy")) and arg_reads & tainted:
                        raise Decline("L2S202", f"`{ast.unparse(f)}(...)` is a host NumPy/math call on a per-step "
                                      "value; use the `jnp` equivalent", node)

    # ------------------------------------------------------------ inputs
    def _resolve(self, name: str):
        """Definition of a stable local name for symbolic bounds."""
        fctx = self.fctx
        d = fctx.single_defs.get(name)
        if d is None:
            return None
        value = d[0] if isinstance(d, tuple) else d
        roots = [n.id for n in ast.walk(value) if isinstance(n, ast.Name)]
        for r in roots:
            if r in self.written or r in self.targets:
                return None
            if r in fctx.params and r in fctx.locals - set(fctx.params):
                return None
            if r in fctx.locals and r not in fctx.params and r not in fctx.single_defs:
                return None
        return d

    def _lin(self, expr: Optional[ast.AST], default: int) -> Optional[Lin]:
        if expr is None:
            return Lin.constant(default)
        return to_lin(expr, self._resolve)

    def _index_uses(self, index: str, accs: dict[str, Accumulator]) -> list[_IndexUse]:
        at_nodes = set()
        for acc in accs.values():
            if acc.kind == "at_set":
                at_nodes.update(id(n) for n in ast.walk(acc.stmt.value.func.value.slice))
        uses: list[_IndexUse] = []
        changing = self.written | self.targets
        for node in walk_scope_all(self.loop.body):
            if not (isinstance(node, ast.Name) and node.id == index and isinstance(node.ctx, ast.Load)):
                continue
            if id(node) in at_nodes:
                uses.append(_IndexUse(node, "at"))
                continue
            parent = self.mctx.parent(node)
            expr: ast.AST = node
            if isinstance(parent, ast.BinOp) and index_offset(parent, index) is not None:
                expr = parent
                parent = self.mctx.parent(parent)
            if isinstance(parent, ast.Slice):
                raise Decline("L2S307", f"the loop index `{index}` bounds a slice (`{ast.unparse(parent)}`); inside "
                              "a scan it is traced, so the slice would not have a static size "
                              "(use `jax.lax.dynamic_slice`)", node)
            if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "range":
                raise Decline("L2S307", f"the loop index `{index}` is used as a trip count (`{ast.unparse(parent)}`)",
                              node)
            sub = None
            parts: list[ast.AST] = []
            pos = -1
            if isinstance(parent, ast.Subscript) and parent.slice is expr:
                sub, parts, pos = parent, [expr], 0
            elif isinstance(parent, ast.Tuple) and isinstance(self.mctx.parent(parent), ast.Subscript) \
                    and self.mctx.parent(parent).slice is parent:
                sub = self.mctx.parent(parent)
                parts = list(parent.elts)
                pos = next(i for i, e in enumerate(parts) if e is expr)
            if sub is not None and isinstance(sub.ctx, ast.Load):
                offset = index_offset(expr, index)
                base = sub.value
                if self.layer is None or not (isinstance(base, ast.Name) and base.id == self.layer.name):
                    self._check_sequence(base, "indexes")
                axis = self._slice_axis(parts, pos)
                if axis is not None and invariant_simple_expr(base, changing) \
                        and not (isinstance(base, ast.Attribute) and base.attr == "at"):
                    bare = all(full_slice(p) or (i == 0 and _is_ellipsis(p)) for i, p in enumerate(parts) if i != pos)
                    uses.append(_IndexUse(node, "slice-candidate", base, sub, axis, offset,
                                          None if bare else pos))
                    continue
                if not self._array_at_loop(base):
                    raise Decline("L2S307", f"`{ast.unparse(sub)}` indexes `{ast.unparse(base)}`, which may be a "
                                  "Python list, with the loop index; inside a scan the index is traced "
                                  "(make it an array with `jnp.asarray` before the loop)", sub)
            uses.append(_IndexUse(node, "generic"))
        return uses

    @staticmethod
    def _slice_axis(parts: list[ast.AST], pos: int) -> Optional[int]:
        """The axis ``x[parts]`` indexes with ``parts[pos]``, when ``x[parts]`` equals
        ``moveaxis(x, axis, 0)[index][parts without pos]`` (numpy indexing rules:
        only full slices, or a leading ``...``, before the index; after it, basic
        indices, or any indices when nothing comes before and no slice follows)."""
        before, after = parts[:pos], parts[pos + 1:]
        ellipsis = bool(before) and _is_ellipsis(before[0])
        if not all(full_slice(p) for p in (before[1:] if ellipsis else before)):
            return None
        basic = all(_basic_index(p) for p in after)
        if ellipsis:
            return -(len(after) + 1) if basic else None
        if basic or (pos == 0 and not any(isinstance(p, ast.Slice) for p in after)
                     and not any(isinstance(p, ast.Constant) and p.value in (None, Ellipsis) for p in after)
                     and not any(isinstance(p, ast.Starred) for p in after)):
            return pos
        return None

    def _array_at_loop(self, expr: ast.AST) -> bool:
        return self.facts.is_array(expr, lambda n: self.fctx.defs_before(self.loop, n) or None)

    def _inputs(self, iteration: Iteration, accs: dict[str, Accumulator]):
        """Per-step inputs, trip count, direction."""
        fctx = self.fctx
        reverse = iteration.reverse
        # static trip counts
        for leaf in iteration.leaves:
            if isinstance(leaf, RangeSource):
                for arg in leaf.args():
                    bad = static_int(arg, fctx, set())
                    if bad is not None:
                        raise Decline("L2S301", f"the trip count depends on `{ast.unparse(bad)}`, which is not "
                                      "known at trace time", bad)
                if leaf.step is not None and int_literal(leaf.step) is None:
                    raise Decline("L2S301", f"the `range` step `{ast.unparse(leaf.step)}` must be an integer "
                                  "literal (its sign decides the direction of the scan)", leaf.step)
                if leaf.step is not None and int_literal(leaf.step) == 0:
                    raise Decline("L2S302", "`range` step 0", leaf.step)
            elif isinstance(leaf, EnumerateIndex) and leaf.start is not None:
                bad = static_int(leaf.start, fctx, set())
                if bad is not None:
                    raise Decline("L2S301", f"the `enumerate` start `{ast.unparse(bad)}` is not static", bad)
        index_info = None
        xs: list[XsItem] = []
        length = None
        length_reason = ""
        r = iteration.range_loop
        if r is not None:
            xs, length, reverse, length_reason, index_info = self._range_inputs(r, accs, reverse)
            self.xs_tree = list(range(len(xs))) if len(xs) != 1 else 0
            return xs, length, reverse, length_reason, index_info
        # element loops: sources mirror the target
        source = iteration.source
        counter = self._enumerate_counter(iteration)
        self.elements_target = self.loop.target
        if counter is not None and not any(u.kind != "at" for u in self._index_uses(counter.target.id, accs)):
            # the counter only places `.at[i].set` outputs, which are written after the scan
            source = source.parts[1]
            self.elements_target = source.target
        self.xs_tree = self._element_items(source, xs)
        return xs, None, reverse, "", self._enumerate_info(iteration)

    @staticmethod
    def _enumerate_counter(iteration: Iteration) -> Optional[EnumerateIndex]:
        """The counter of a top-level ``for i, x in enumerate(seq[, start])``."""
        src = iteration.source
        if isinstance(src, TupleSource) and src.kind == "enumerate" and isinstance(src.parts[0].target, ast.Name):
            return src.parts[0]
        return None

    def _counter_name(self, iteration: Iteration) -> Optional[str]:
        """The integer counter that ``.at[i].set`` outputs may be indexed with."""
        if iteration.range_loop is not None:
            return iteration.range_loop.name
        counter = self._enumerate_counter(iteration)
        return counter.target.id if counter is not None else None

    def _enumerate_info(self, iteration: Iteration):
        """``enumerate(seq, a)`` counts like ``range(a, a + len(seq))``."""
        counter = self._enumerate_counter(iteration)
        if counter is None:
            return None
        lo = self._lin(counter.start, 0)
        seq = self.mctx.source(counter.seq)
        hi = lo + Lin.atom(length_atom(counter.seq, 0), f"len({seq})") if lo is not None else None
        return {"lo": lo, "hi": hi, "step": 1, "sliceable": lo is not None,
                "arange_args": self._enumerate_range_args(counter)}

    def _enumerate_range_args(self, counter: EnumerateIndex) -> list[str]:
        seq = self.mctx.source(counter.seq)
        if counter.start is None:
            return [f"len({seq})"]
        start = self.mctx.source(counter.start)
        return [start, f"{start} + len({seq})" if _atomic_text(start) else f"({start}) + len({seq})"]

    def _element_items(self, source, xs: list[XsItem]):
        """Per-step inputs of an element loop, mirroring the target's structure;
        returns that structure as nested lists of indices into ``xs``."""
        mctx = self.mctx
        if isinstance(source, TupleSource):
            return [self._element_items(p, xs) for p in source.parts]
        target = source.target
        bind = mctx.source(target) if hasattr(target, "lineno") else "_"
        if isinstance(source, ElementSource) and self.layer is not None:
            xs.append(XsItem("layers", bind, mctx.span(source.expr), self.layer.name, 0,
                             layer_slice=self.layer.part, layout=self.layer.mode))
        elif isinstance(source, ElementSource):
            xs.append(XsItem("elements", bind, mctx.span(source.expr), mctx.source(source.expr), 0,
                             wrap_asarray=not self._array_at_loop(source.expr)))
        elif isinstance(source, EnumerateIndex):
            xs.append(XsItem("arange", bind, None, "", 0, range_args=self._enumerate_range_args(source)))
        elif isinstance(source, RangeSource):
            xs.append(XsItem("arange", bind, None, "", 0, range_args=[mctx.source(a) for a in source.args()]))
        return len(xs) - 1

    def _range_inputs(self, r: RangeSource, accs, reverse: bool):
        """``for t in range(a, b, s)``: index reads ``x[t + c]`` become slices of
        ``x`` when that is provably the same sequence of rows; any other use of
        ``t`` scans the index values themselves.

        Everything is expressed over the ascending range ``lo:hi:step`` (a
        ``range(hi - 1, lo - 1, -1)`` loop is that range processed in reverse),
        so slices, the index array and ``.at[...]`` writes line up with the
        per-step outputs, which a scan returns in index order."""
        mctx = self.mctx
        index = r.name
        uses = self._index_uses(index, accs)
        step = int_literal(r.step) if r.step is not None else 1
        start = self._lin(r.start, 0)
        stop = self._lin(r.stop, 0)
        original_args = ([mctx.source(r.start)] if r.start is not None else []) + [mctx.source(r.stop)]
        if r.step is not None:
            original_args.append(mctx.source(r.step))
        sliceable = start is not None and stop is not None and (step > 0 or step == -1)
        if sliceable:
            if step > 0:
                lo, hi, s, scan_reverse = start, stop, step, reverse
                ascending_args = original_args
            else:
                lo, hi, s, scan_reverse = stop.shift(1), start.shift(1), 1, not reverse
                ascending_args = [hi.render()] if lo.is_const and lo.const == 0 else [lo.render(), hi.render()]
        else:
            lo = hi = None
            s, scan_reverse, ascending_args = step, reverse, original_args
        slices: dict[tuple, XsItem] = {}
        in_bounds: dict[tuple, bool] = {}
        generic = False
        for use in uses:
            if use.kind == "at":
                continue
            if use.kind == "slice-candidate" and sliceable:
                first, end = lo.shift(use.offset), hi.shift(use.offset)
                if first.nonnegative():
                    key = (ast.unparse(use.base), use.axis, use.offset)
                    item = slices.get(key)
                    if item is None:
                        base_len = Lin.atom(length_atom(use.base, use.axis), "")
                        # `x[:len(x) - 1]` is right even when x is empty (`x[:-1]` of an empty array is
                        # empty too); that holds down to `len(x) - 2`, not below.
                        own = base_len is not None and end.terms == base_len.terms and end.const >= -2
                        # a stop such as `len(x) - 3` is clamped at 0: `range` then runs no step, while
                        # the slice `x[:-1]` would wrap around
                        clamp = not own and end.may_go_negative()
                        in_bounds[key] = base_len is not None and end.le(base_len) and (
                            end.nonnegative() or own or clamp)
                        full = base_len is not None and in_bounds[key] and base_len.le(end)
                        stop_text = f"max({end.render()}, 0)" if clamp else end.render()
                        item = slices[key] = XsItem(
                            "slice", "", mctx.span(use.base), mctx.source(use.base), use.axis,
                            start=None if first.is_const and first.const == 0 else Bound(first.render()),
                            stop=Bound(stop_text), step=s, stop_is_full=full,
                            wrap_asarray=not self._array_at_loop(use.base),
                        )
                    item.replaces.append(mctx.span(use.subscript))
                    item.replace_drop.append(use.drop)
                    continue
            if use.kind == "slice-candidate" and not self._array_at_loop(use.base):
                raise Decline("L2S307", f"`{ast.unparse(use.subscript)}` indexes `{ast.unparse(use.base)}`, which "
                              "may be a Python list, with the loop index; inside a scan the index is traced "
                              "(make it an array with `jnp.asarray` before the loop)", use.subscript)
            generic = True
        xs: list[XsItem] = []
        reserved = set(self.fctx.all_names) | self.mctx.module_names | all_read_names(self.loop.body)
        for (_, _, off), item in sorted(slices.items(), key=lambda kv: min(kv[1].replaces)):
            suffix = "" if off == 0 else "_next" if off == 1 else "_prev" if off == -1 else \
                f"_{'p' if off > 0 else 'm'}{abs(off)}"
            item.bind = fresh_name(f"{_base_name(item.source_text)}_{index}{suffix}", reserved)
            xs.append(item)
        if self.layer is not None:
            if generic:
                raise Decline("L2S309", f"the layer index `{index}` is used for more than `{self.layer.name}[{index}]`"
                              "; with stacked layers only the per-layer parameters are scanned", self.loop)
            for item in xs:
                if item.source_text == self.layer.name and item.axis == 0:
                    item.kind, item.layout, item.layer_slice = "layers", self.layer.mode, None
                    item.start = item.stop = None
        if generic:
            xs.append(XsItem("arange", index, None, "", 0, range_args=list(ascending_args)))
        length = None
        reason = ""
        if not xs:
            length = self._trip_text(r, start, stop, step)
            reason = "no per-step inputs"
        elif slices and not generic and not any(in_bounds.values()):
            length = self._trip_text(r, start, stop, step)
            reason = ("the slices equal the loop's reads only when the arrays are long enough; `length=` makes "
                      "the scan raise instead of silently running a different number of steps")
        index_info = {"lo": lo, "hi": hi, "step": s, "sliceable": sliceable, "arange_args": ascending_args}
        return xs, length, scan_reverse, reason, index_info

    def _trip_text(self, r: RangeSource, start: Optional[Lin], stop: Optional[Lin], step: int) -> str:
        mctx = self.mctx
        if step == 1 and start is not None and stop is not None:
            diff = stop - start
            text = mctx.source(r.stop) if r.start is None else diff.render()
            # `range(T - 1)` runs no step when T is 0; a scan length must not be negative
            return f"max({text}, 0)" if diff.may_go_negative() else text
        args = ", ".join(mctx.source(a) for a in r.args())
        return f"len(range({args}))"

    def _elements_pattern(self, iteration: Iteration, xs: list[XsItem]) -> str:
        if iteration.range_loop is not None:
            return ", ".join(x.bind for x in xs)
        return self.mctx.source(self.elements_target)

    # ------------------------------------------------------------ outputs
    def _outputs(self, accs: dict[str, Accumulator], last_values: list[str], iteration: Iteration,
                 index_info, reverse: bool) -> list[YsItem]:
        mctx = self.mctx
        ys: list[YsItem] = []
        body_index = {id(s): i for i, s in enumerate(self.loop.body)}
        for acc in sorted(accs.values(), key=lambda a: _pos(a.stmt)):
            pos = body_index[id(acc.stmt)]
            later_writes = all_written_names(self.loop.body[pos + 1:])
            value_reads = {n.id for n in reads(acc.value)}
            bind_value = bool(value_reads & later_writes)
            is_name = acc.value.id if isinstance(acc.value, ast.Name) and not bind_value else None
            state = self.body_rd.before.get(id(acc.stmt), {})

            def defs_of(n, state=state):
                d = state.get(n)
                if d is None:
                    return self.fctx.defs_before(self.loop, n) or None
                if any(x.kind == "entry" for x in d):
                    return (d - {x for x in d if x.kind == "entry"}) | self.fctx.defs_before(self.loop, n) or None
                return d

            known = self.facts.is_array(acc.value, defs_of)
            item = YsItem("append" if acc.kind in ("list", "tuple") else "at_set", acc.name, mctx.span(acc.value),
                          is_name, bind_value, wrap_asarray=not known, statement=mctx.span(acc.stmt),
                          init=mctx.span(acc.init) if acc.init is not None else None)
            for c in acc.consumers:
                item.consumers.append(Consumer(mctx.span(c.node), c.kind, c.axis if c.kind != "index" else c.index,
                                               c.flipped, mctx.span(c.arg)))
            if acc.kind == "at_set":
                item.wrap_asarray = False  # `.set` converts the value like the original did
                item.at_index_before = [mctx.source(p) for p in acc.index_parts]
                item.at_axis = acc.index_axis
                item.at_offset = acc.offset
                item.at_target = mctx.span(acc.stmt.value.func.value)
                info = index_info
                lo, hi = info["lo"], info["hi"]
                first = lo.shift(acc.offset) if lo is not None else None
                end = hi.shift(acc.offset) if hi is not None else None
                item.at_slice = None
                item.at_arange = None
                if info["sliceable"] and first.nonnegative() and end.nonnegative():
                    start_txt = "" if first.is_const and first.const == 0 else first.render()
                    step_txt = "" if info["step"] == 1 else f":{info['step']}"
                    item.at_slice = f"{start_txt}:{end.render()}{step_txt}"
                else:
                    item.at_arange = list(info["arange_args"])
            ys.append(item)
        for name in last_values:
            ys.append(YsItem("last", name, None, name, False, wrap_asarray=False))
        return ys

    def _summary(self, plan: ScanPlan) -> str:
        parts = [f"carry: {', '.join(plan.carries) or '(none)'}"]
        if plan.xs:
            parts.append(f"xs: {'; '.join(x.describe() for x in plan.xs)}")
        if plan.ys:
            parts.append(f"ys: {', '.join(y.name for y in plan.ys)}")
        if plan.reverse:
            parts.append("reverse")
        return "scan with " + "; ".join(parts)


def _is_ellipsis(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def walk_scope_all(stmts) -> Iterable[ast.AST]:
    """Every node of these statements, nested function bodies and lambdas
    included (they run inside the step too)."""
    for stmt in stmts:
        yield from ast.walk(stmt)


_FIXED_LENGTH = (ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List)


def _array_arithmetic(expr: ast.AST) -> bool:
    """Arithmetic over names, attributes and subscripts with a ``@`` in it
    (``x @ w``, ``x @ w + b``): the ``@`` makes an array (Python sequences do not
    define it), arithmetic with an array stays an array, and a traced array's
    length is static."""
    def walk(e: ast.AST) -> Optional[bool]:  # None: not such an expression; else: contains `@`
        if isinstance(e, (ast.Name, ast.Attribute, ast.Subscript, ast.Constant)):
            return False
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
            return walk(e.operand)
        if isinstance(e, ast.BinOp):
            left, right = walk(e.left), walk(e.right)
            if left is None or right is None:
                return None
            return left or right or isinstance(e.op, ast.MatMult)
        return None
    return bool(walk(expr))


_SCALAR_TYPES = {"int", "float", "str", "bool", "bytes", "complex"}
_CONTAINER_TYPES = {"list", "tuple", "set", "frozenset", "dict", "List", "Tuple", "Set", "FrozenSet", "Dict",
                    "Sequence", "Iterable", "Collection", "Mapping", "MutableSequence", "Iterator"}


def _python_values_annotation(ann: ast.AST) -> bool:
    """An annotation that says "Python values": ``int``, ``str``, ``Sequence[int]``,
    ``tuple[str, ...]``, ``dict[...]``... (unknown names, such as type
    variables, say nothing)."""
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        try:
            ann = ast.parse(ann.value, mode="eval").body
        except SyntaxError:
            return False
    name = ann.attr if isinstance(ann, ast.Attribute) else getattr(ann, "id", None)
    if name in _SCALAR_TYPES or name in ("dict", "Dict", "Mapping", "set", "Set", "frozenset", "FrozenSet"):
        return True
    if isinstance(ann, ast.Subscript):
        base = ann.value.attr if isinstance(ann.value, ast.Attribute) else getattr(ann.value, "id", None)
        if base in _CONTAINER_TYPES:
            items = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
            items = [i for i in items if not (isinstance(i, ast.Constant) and i.value is Ellipsis)]
            return bool(items) and all(_python_values_annotation(i) for i in items)
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return _python_values_annotation(ann.left) and _python_values_annotation(ann.right)
    return False


def _basic_index(node: ast.AST) -> bool:
    """An index that consumes exactly one axis and never triggers advanced indexing."""
    if isinstance(node, ast.Slice):
        return all(b is None or int_literal(b) is not None for b in (node.lower, node.upper, node.step))
    return int_literal(node) is not None


def _atomic_text(text: str) -> bool:
    return re.fullmatch(r"[\w.]+", text) is not None


def _base_name(text: str) -> str:
    m = re.findall(r"[^\W\d]\w*", text)
    strings = re.findall(r"['\"]([^\W\d]\w*)['\"]\]$", text)
    if strings:
        return strings[-1]
    if not m:
        return "x"
    name = m[-1]
    return name


def analyze_module(mctx: ModuleContext) -> list[LoopResult]:
    """Analyse every ``for`` loop of a module, in source order."""
    if SKIP_FILE_RE.search(mctx.text):
        out = []
        for loop in mctx.loops:
            s = mctx.span(loop)
            out.append(LoopResult(s.line, s.col, s.end_line, "skipped", SKIPPED,
                                  "skipped by `# loop2scan: skip-file`"))
        return out
    results = [LoopAnalysis(mctx, loop).run() for loop in mctx.loops]
    _inputs_of_enclosing_steps(mctx, results)
    _layouts_change_together(mctx, results)
    return results


def _layouts_change_together(mctx: ModuleContext, results: list[LoopResult]) -> None:
    """All loops over one parameter list change with its layout, or none does."""
    if "layers" not in mctx.__dict__:
        return
    index = {id(loop): i for i, loop in enumerate(mctx.loops)}
    for st in mctx.layers.structures:
        members = [index[id(loop)] for loop in st.loops if id(loop) in index]
        if not members:
            continue
        blocking = [results[i] for i in members if results[i].status != "rewritten"]
        if not blocking:
            continue
        first = blocking[0]
        for i in members:
            r = results[i]
            if r.status == "rewritten":
                results[i] = LoopResult(r.line, r.col, r.end_line, "declined", "L2S309",
                                        f"every loop over the parameter list built by `{st.builder.name}` must "
                                        f"become a scan together; the loop at line {first.line} cannot "
                                        f"({first.code}: {first.message})")


def _inputs_of_enclosing_steps(mctx: ModuleContext, results: list[LoopResult]) -> None:
    """An inner loop over a per-step input of a rewritten outer loop iterates an
    array slice: it needs no ``jnp.asarray``."""
    by_loop = {id(loop): r for loop, r in zip(mctx.loops, results)}
    for loop, r in zip(mctx.loops, results):
        if r.plan is None:
            continue
        for item in r.plan.xs:
            if not (item.wrap_asarray and item.source_text.isidentifier()):
                continue
            for anc in mctx.ancestors(loop):
                outer = by_loop.get(id(anc))
                if outer is None or outer.plan is None:
                    continue
                if any(x.bind == item.source_text and x.bind.isidentifier() for x in outer.plan.xs):
                    item.wrap_asarray = False
                    break

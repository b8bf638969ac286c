"""Per-layer parameter lists: where they are built, where they flow, how they are used.

``for W, b in params: x = f(x, W, b)`` iterates a Python list of per-layer
pytrees.  Scanning it needs one pytree of arrays with a leading layer axis.
Stacking inside the function works but costs O(L) work on every call (and
more under ``jax.grad``), so the default is to change the *layout*: the
function of this module that builds the list returns it stacked once, and
every loop over it becomes a scan.  That is only sound when every use of the
structure in the module is known, so this pass

1. finds the *builders*: module-level functions returning a list built by a
   comprehension or an ``append`` loop, whose elements cannot differ in shape
   from layer to layer (the loop variable is a PRNG key, or an index used only
   to pick keys);
2. follows the list from each ``v = builder(...)`` through assignments, calls
   of module functions (also through ``jax.jit``/``jax.grad``/``partial``),
   ``jax.grad`` results and element-wise ``jax.tree.map`` updates;
3. classifies every use: loops over it (rewritten together), ``len(v)``,
   ``v[i]``, ``v[a:b]`` (rewritten with ``jax.tree`` operations), passing it on
   (followed), returning it (the module's API now returns the stacked layout);
   any other use makes the layout change unsafe and is reported by name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from .activity import arg_names, int_literal, walk_body, walk_scope
from .decline import Decline, short
from .imports import is_under
from .nodes import walk

TRANSFORMS = {"jax.jit", "jax.grad", "jax.value_and_grad", "jax.checkpoint", "jax.remat", "functools.partial",
              "jax.named_call"}
#: The most modules a loop's neighbourhood is searched in for a parameter-list builder.
NEIGHBOURHOOD_LIMIT = 40

#: optax transformations that act on each leaf element-wise (or on a norm over all leaves,
#: which stacking does not change), and combinators of such.
OPTAX_ELEMENTWISE = {
    "sgd", "adam", "adamw", "adamax", "adamaxw", "nadam", "nadamw", "radam", "rmsprop", "adagrad", "adadelta",
    "adabelief", "yogi", "lion", "noisy_sgd", "amsgrad", "optimistic_gradient_descent", "scale",
    "scale_by_adam", "scale_by_adamax", "scale_by_rms", "scale_by_stddev", "scale_by_learning_rate",
    "scale_by_schedule", "scale_by_lion", "scale_by_amsgrad", "scale_by_belief", "scale_by_yogi",
    "scale_by_radam", "scale_by_sign", "clip", "clip_by_global_norm", "add_decayed_weights", "trace", "ema",
    "identity", "zero_nans", "keep_params_nonnegative", "add_noise", "chain", "named_chain",
    "inject_hyperparams", "inject_stateful_hyperparams", "apply_if_finite", "MultiSteps", "apply_every",
    "sign_sgd", "polyak_sgd", "scale_by_polyak", "stateless", "stateless_with_tree_map",
}
#: optax transformations with per-leaf statistics (norms, factored moments, blocks).
OPTAX_PER_LEAF = {
    "lamb", "lars", "adafactor", "scale_by_factored_rms", "clip_by_block_rms", "scale_by_trust_ratio", "fromage",
    "novograd", "sm3", "scale_by_sm3", "scale_by_novograd", "centralize", "muon", "scale_by_muon", "adan",
    "scale_by_shampoo", "lbfgs", "scale_by_lbfgs", "normalize_by_update_norm", "sophia", "adagrad_matrix",
}
OPTAX_MASKS = {"masked", "multi_transform", "partition", "freeze", "set_to_zero", "flatten"}
OPTAX_SCHEDULES = {"join_schedules", "piecewise_constant_schedule", "piecewise_interpolate_schedule"}

ELEMENTWISE = {
    "jax.numpy.sqrt", "jax.numpy.square", "jax.numpy.abs", "jax.numpy.exp", "jax.numpy.log", "jax.numpy.sign",
    "jax.numpy.clip", "jax.numpy.where", "jax.numpy.maximum", "jax.numpy.minimum", "jax.numpy.zeros_like",
    "jax.numpy.ones_like", "jax.numpy.tanh", "jax.lax.stop_gradient", "jax.numpy.asarray",
}


@dataclass
class Builder:
    func: ast.FunctionDef
    returns: list[ast.Return]
    elem: ast.AST
    list_name: Optional[str] = None
    problem: Optional[Decline] = None
    mctx: object = None  # the module it is defined in

    @property
    def name(self) -> str:
        return self.func.name


@dataclass
class LayoutUse:
    """A use of the structure rewritten for the stacked layout."""

    kind: str  # "builder-return" | "len" | "index" | "slice"
    node: ast.AST  # the expression replaced
    arg: Optional[ast.AST] = None  # the structure expression inside it
    text: str = ""  # index or slice text
    mctx: object = None  # the module it is in


@dataclass
class Structure:
    builder: Builder
    names: set[tuple[int, str]] = field(default_factory=set)  # (id(scope), name)
    scopes: dict = field(default_factory=dict)  # (id(scope), name) -> the _Scope
    loops: list[ast.AST] = field(default_factory=list)
    loop_modules: dict = field(default_factory=dict)  # id(loop) -> the ModuleContext it is in
    uses: list[LayoutUse] = field(default_factory=list)
    returned_from: list[str] = field(default_factory=list)
    return_position: dict = field(default_factory=dict)  # function name -> {None (whole result) or tuple index}
    pending: list = field(default_factory=list)  # (scope, name) whose bindings are checked once the flow is known
    problem: Optional[Decline] = None


class _Scope:
    """A module-level function, or the module body itself."""

    def __init__(self, node: ast.AST, mctx) -> None:
        self.node = node
        self.mctx = mctx
        self.is_module = isinstance(node, ast.Module)
        self.params = [] if self.is_module else arg_names(node.args)
        self.body = node.body
        self._nodes: Optional[list[ast.AST]] = None
        self._bindings: Optional[dict[str, list[ast.AST]]] = None
        self._loads: Optional[dict[str, list[ast.Name]]] = None
        self.calls: list[ast.Call] = []

    def walk(self) -> list[ast.AST]:
        """Every node of the scope (nested definitions' bodies excluded), listed once."""
        if self._nodes is None:
            if self.is_module:
                self._nodes = [n for stmt in self.body for n in walk_scope(stmt)]
            else:
                self._nodes = list(walk_body(self.node))
            self.calls = [n for n in self._nodes if isinstance(n, ast.Call)]
        return self._nodes

    def _index(self) -> None:
        bindings: dict[str, list[ast.AST]] = {}
        loads: dict[str, list[ast.Name]] = {}
        for node in self.walk():
            if isinstance(node, ast.Name):
                (loads if isinstance(node.ctx, ast.Load) else bindings).setdefault(node.id, []).append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not self.node:
                bindings.setdefault(node.name, []).append(node)
        self._bindings, self._loads = bindings, loads

    def bindings(self, name: str) -> list[ast.AST]:
        """Every statement or node that binds ``name`` in this scope."""
        if self._bindings is None:
            self._index()
        return self._bindings.get(name, [])

    def loads(self, name: str) -> list[ast.Name]:
        """Every read of ``name`` in this scope."""
        if self._loads is None:
            self._index()
        return self._loads.get(name, [])


class LayerAnalysis:
    """The parameter lists one module (its *home*) can see, followed across the
    modules of its project.

    What a module sees is decided by the module alone, so that every process
    comes to the same conclusion about it: the builders it defines, the builders
    it imports and uses the result of as a list, and, for a loop over what looks
    like a parameter list, the builders of its neighbourhood (:meth:`neighbourhood`).
    A structure is followed from its builder to every module that imports a
    function it flows into or out of."""

    def __init__(self, home) -> None:
        self.home = home
        self.project = home.project
        self.modules: dict[int, object] = {}  # id(tree) -> ModuleContext
        self.scopes: dict[int, _Scope] = {}
        self._module_builders: dict[int, dict[str, Builder]] = {}
        self.structures: list[Structure] = []
        self._by_name: dict[tuple[int, str], Structure] = {}
        self._followed: dict[int, Structure] = {}  # id(builder function) -> its structure
        self._searched = False
        self.ensure_module(home)
        for octx in imported_list_sources(home):
            self.ensure_module(octx)

    # ------------------------------------------------------------------ lookup
    def structure_of(self, scope: ast.AST, name: str) -> Optional[Structure]:
        """The structure ``name`` holds in ``scope`` (a module-level function or the module)."""
        return self._by_name.get((id(scope), name))

    def structure_built_by(self, fn: ast.AST) -> Optional[Structure]:
        """The structure the builder function ``fn`` builds, as this module sees it."""
        st = self._followed.get(id(fn))
        return st if st is not None and st.names else None

    def builder_of(self, fn: ast.AST) -> Optional[Builder]:
        """The builder a module-level function is, if it is one."""
        for builders in self._module_builders.values():
            b = builders.get(getattr(fn, "name", ""))
            if b is not None and b.func is fn:
                return b
        return None

    def parent(self, node: ast.AST) -> Optional[ast.AST]:
        for mctx in self.modules.values():
            p = mctx.parents.get(id(node))
            if p is not None:
                return p
        return None

    # ---------------------------------------------------------------- modules
    def ensure_module(self, mctx) -> None:
        """Add a module: its scopes, and the structures its builders build (those
        whose layers provably share shapes: the others cannot change layout, and
        are followed only when a loop of the home asks, to say why)."""
        if id(mctx.tree) in self._module_builders:
            return
        builders = module_builders(mctx, self)
        self._module_builders[id(mctx.tree)] = builders
        if builders:
            self._add_scopes(mctx)
        for b in builders.values():
            if b.problem is None:
                self._follow(b)

    def follow_differing_builders(self, everywhere: bool = False) -> None:
        """Follow the builders whose layers may differ, of the home and of the
        modules whose builders the home calls (``everywhere``: of every module
        added, the home's neighbourhood included, through the modules their
        lists flow into), so that a loop over one says so (``L2S308``)."""
        others = imported_list_sources(self.home)
        if others or everywhere:
            self._add_scopes(self.home)  # where those builders are called, or their lists arrive
        sources = [self.modules.get(t) for t in list(self._module_builders)] if everywhere else \
            [self.home] + others
        for mctx in sources:
            if mctx is None:
                continue
            for b in self._module_builders.get(id(mctx.tree), {}).values():
                if b.problem is not None and id(b.func) not in self._followed:
                    self._follow(b, expand=everywhere)

    def _add_scopes(self, mctx) -> None:
        if id(mctx.tree) in self.modules:
            return
        self.modules[id(mctx.tree)] = mctx
        mctx.ensure_parents(mctx.tree)
        for node, scope in module_scopes(mctx).items():
            self.scopes[node] = scope

    def neighbourhood(self, mctx) -> Optional[list[str]]:
        """Where a loop of ``mctx`` looks for the builder of a parameter list it
        iterates: the modules it imports from, the modules that import it, and
        the modules those import from; ``None`` for a hub module with more than
        :data:`NEIGHBOURHOOD_LIMIT` of them (a list built out of sight stays out
        of sight: the loop is declined, never guessed).  The same in every process."""
        if self.project is None or mctx.name is None:
            return None
        forward = self.project.imports_of
        importers = sorted(self.project.importers_of_module_names(mctx.name))
        near = set(forward(mctx.name)) | set(importers)
        if len(near) > NEIGHBOURHOOD_LIMIT:
            return None
        for other in importers:
            near |= set(forward(other))
        near.discard(mctx.name)
        return sorted(near) if len(near) <= NEIGHBOURHOOD_LIMIT else None

    def search_neighbourhood(self, mctx) -> None:
        """Follow the builders of the home's neighbourhood (once)."""
        if self._searched or mctx is not self.home:
            return
        self._searched = True
        for name in self.neighbourhood(mctx) or ():
            octx = self.project.module_context(name)
            if octx is not None:
                self.ensure_module(octx)

    # --------------------------------------------------------------- builders
    # ------------------------------------------------------------------- flow
    def _follow(self, builder: Builder, expand: bool = True) -> None:
        if id(builder.func) in self._followed:
            return
        while True:
            st, missing = self._follow_once(builder)
            if not missing or not expand:
                break
            for octx in missing:
                self._add_scopes(octx)
        self._followed[id(builder.func)] = st
        if st is None or not st.names:
            return
        self.structures.append(st)
        for key in st.names:
            self._by_name[key] = st

    def _follow_once(self, builder: Builder):
        """The structure ``builder`` builds, followed through the modules added so
        far, and the modules not added yet that use a function the structure flows
        into or out of (an importer could pass or receive the list there)."""
        st = Structure(builder)
        for r in builder.returns:
            st.uses.append(LayoutUse("builder-return", r.value, mctx=builder.mctx))
        work: list[tuple[_Scope, str]] = []
        problems: list[Decline] = []
        for scope in list(self.scopes.values()):
            scope.walk()
            calls = [node for node in scope.calls if self._calls_builder(node, builder, scope)]
            for node in calls:
                parent = self.parent(node)
                if isinstance(parent, ast.Assign) and len(parent.targets) == 1 \
                        and isinstance(parent.targets[0], ast.Name) and parent.value is node:
                    work.append((scope, parent.targets[0].id))
                    continue
                flowed = self._flows_into(st, scope, node)
                returned = self._return_position(node)
                if flowed:
                    work.extend(flowed)
                elif returned is not False and not scope.is_module and scope.node is not builder.func:
                    work.extend(self._returned(st, scope.node, returned, problems, node))
                else:
                    problems.append(Decline("L2S309", f"the result of `{builder.name}(...)` is used as "
                                            f"`{short(ast.unparse(parent))}` (line {node.lineno}), which the "
                                            "stacked layout would change", node))
        if not work:
            # not called where we have looked: maybe by an importer of the builder
            return None, self._unseen_importers(st)
        seen: set[tuple[int, str]] = set()
        while work:
            scope, name = work.pop()
            key = (id(scope.node), name)
            if key in seen:
                continue
            seen.add(key)
            st.names.add(key)
            st.scopes[key] = scope
            work.extend(self._uses(st, scope, name, problems))
        for scope, name in st.pending:
            self._check_bindings(st, scope, name, problems)
        missing = self._unseen_importers(st)
        if missing:
            return st, missing
        problems += self._exposure_problems(st)
        if problems:
            st.problem = min(problems, key=lambda d: (getattr(d.node, "lineno", 0), getattr(d.node, "col_offset", 0)))
            st.problem.module = self.module_of(st.problem.node)
        return st, []

    def module_of(self, node: ast.AST):
        """The module a node of the analysed modules belongs to."""
        cur = node
        while cur is not None:
            mctx = self.modules.get(id(cur))
            if mctx is not None:
                return mctx
            cur = self.parent(cur)
        return None

    def _exposed(self, st: Structure) -> list[tuple[ast.AST, object]]:
        """The functions whose results or parameters hold the structure:
        ``(function, module)``; their callers see the layout."""
        out = [(st.builder.func, st.builder.mctx)]
        for key, scope in st.scopes.items():
            if not scope.is_module and key[1] in scope.params:
                out.append((scope.node, scope.mctx))
        for name in st.returned_from:
            for scope in list(self.scopes.values()):
                if not scope.is_module and scope.node.name == name and scope.mctx is not None:
                    out.append((scope.node, scope.mctx))
        seen, unique = set(), []
        for fn, mctx in out:
            if id(fn) not in seen:
                seen.add(id(fn))
                unique.append((fn, mctx))
        return unique

    def _unseen_importers(self, st: Structure) -> list:
        """Modules of the project that import an exposed function and are not
        followed yet."""
        if self.project is None:
            return []
        missing = {}
        for fn, mctx in self._exposed(st):
            if mctx.name is None or self.project.module_context(mctx.name) is not mctx:
                continue
            for other, _ in self.project.importers(mctx.name, fn.name):
                octx = self.project.module_context(other)
                if octx is not None and id(octx.tree) not in self.modules:
                    missing[other] = octx
        return [missing[k] for k in sorted(missing)]

    def _exposure_problems(self, st: Structure) -> list[Decline]:
        """Uses out of sight (public names of a library, ``__all__``, ``import *``)
        and edits in files this run may not write."""
        out: list[Decline] = []
        if self.project is None:
            return out
        for fn, mctx in self._exposed(st):
            if mctx.name is None:
                continue
            why = self.project.public(mctx.name, fn.name)
            if why is not None:
                out.append(Decline("L2S312", f"the stacked layout of the list built by `{st.builder.name}` would be "
                                   f"seen by `{fn.name}`'s callers out of sight ({why}): run with `--layout keep` "
                                   "to stack it inside the function on every call instead", fn))
        touched = {id(m): m for m in [st.builder.mctx, *st.loop_modules.values(),
                                       *(use.mctx for use in st.uses if use.mctx is not None)]}
        for mctx in touched.values():
            if mctx.name is not None and not self.project.is_writable(mctx.name):
                path = self.project.paths.get(mctx.name, mctx.name)
                out.append(Decline("L2S314", f"the stacked layout of the list built by `{st.builder.name}` needs an "
                                   f"edit in `{_display(path, self.project.root)}`, which is not among the files of "
                                   "this run: name it too (or run on the whole project), or use `--layout keep`",
                                   st.builder.func))
        return out

    def _return_position(self, node: ast.AST):
        """``None`` when ``node`` is returned whole, its index when it is an item
        of a returned tuple, ``False`` otherwise."""
        parent = self.parent(node)
        if isinstance(parent, ast.Return):
            return None
        if isinstance(parent, ast.Tuple) and isinstance(self.parent(parent), ast.Return):
            return next(i for i, e in enumerate(parent.elts) if e is node)
        return False

    def _returned(self, st: Structure, fn: ast.AST, position, problems: list, node: ast.AST):
        """``fn`` returns the structure (whole, or as item ``position`` of a
        tuple): the names its callers bind to it hold the structure too."""
        more: list[tuple[_Scope, str]] = []
        positions = st.return_position.setdefault(fn.name, set())
        if position in positions:
            return more
        if (position is None) != (None in positions) and positions:
            problems.append(Decline("L2S309", f"`{fn.name}` returns the list built by `{st.builder.name}` both as "
                                    "its whole result and as an item of it", node))
            return more
        positions.add(position)
        if fn.name not in st.returned_from:
            st.returned_from.append(fn.name)
        for other in list(self.scopes.values()):
            other.walk()
            for n in other.calls:
                callee = self._resolve_callee(n.func, other) if _may_call(n.func, fn.name, other) else None
                if callee is None or callee[0] is not fn:
                    continue
                parent = self.parent(n)
                target = parent.targets[0] if isinstance(parent, ast.Assign) and len(parent.targets) == 1 else None
                if position is None and isinstance(target, ast.Name):
                    more.append((other, target.id))
                elif position is not None and isinstance(target, ast.Tuple) and position < len(target.elts) \
                        and isinstance(target.elts[position], ast.Name):
                    more.append((other, target.elts[position].id))
                elif position is None and self._flows_into(st, other, n):
                    more.extend(self._flows_into(st, other, n))
                elif isinstance(parent, ast.Expr) or (position is not None and isinstance(parent, ast.Starred)):
                    problems.append(Decline("L2S309", f"the result of `{fn.name}(...)` (holding the list built by "
                                            f"`{st.builder.name}`) is used as `{short(ast.unparse(parent))}`", n))
                elif not isinstance(parent, ast.Return):
                    problems.append(Decline("L2S309", f"the result of `{fn.name}(...)` (holding the list built by "
                                            f"`{st.builder.name}`) is used as `{short(ast.unparse(parent))}` "
                                            f"(line {n.lineno}), which the stacked layout would change", n))
        return more

    def _calls_builder(self, value: ast.AST, builder: Builder, scope: _Scope) -> bool:
        """``value`` is a call of the builder (by its name in its module, not shadowed
        in ``scope``; or through an import of it elsewhere)."""
        if not isinstance(value, ast.Call):
            return False
        f = value.func
        if scope.mctx is builder.mctx:
            return isinstance(f, ast.Name) and f.id == builder.name and not self._locally_bound(scope, builder.name)
        if builder.mctx.name is None or (isinstance(f, ast.Name) and self._locally_bound(scope, f.id)):
            return False
        return scope.mctx.imports.qualname(f) == f"{builder.mctx.name}.{builder.name}"

    def _locally_bound(self, scope: _Scope, name: str) -> bool:
        return not scope.is_module and (name in scope.params or bool(scope.bindings(name)))

    def _resolve_callee(self, func: ast.AST, scope: _Scope) -> Optional[tuple[ast.FunctionDef, int]]:
        """The module-level function (of this module, or imported from another
        module of the project) a call reaches, and how many leading positional
        arguments a ``partial`` already bound."""
        imports = scope.mctx.imports
        bound = 0
        for _ in range(4):
            if isinstance(func, ast.Name):
                target = scope.mctx.module_functions.get(func.id)
                if target is not None and not self._locally_bound(scope, func.id):
                    return target, bound
                imported = self._imported(func, scope)
                if imported is not None:
                    return imported, bound
                # a name bound once to a transform of a module function: step = jax.jit(train_step)
                values = self._single_value(scope, func.id)
                if values is None:
                    return None
                func = values
                continue
            if isinstance(func, ast.Attribute):
                imported = self._imported(func, scope)
                return (imported, bound) if imported is not None else None
            if isinstance(func, ast.Call):
                q = imports.qualname(func.func)
                if q in TRANSFORMS and func.args:
                    if q == "functools.partial":
                        bound += len(func.args) - 1
                    func = func.args[0]
                    continue
            return None
        return None

    def _single_value(self, scope: _Scope, name: str) -> Optional[ast.AST]:
        """The value of the one plain assignment binding ``name`` in ``scope`` (or
        in its module), ``None`` when there is none or several."""
        found = None
        for b in scope.bindings(name):
            stmt = self.parent(b)
            if isinstance(stmt, ast.Assign) and b in stmt.targets:
                if found is not None:
                    return None
                found = stmt.value
        if found is None and not scope.is_module and not scope.bindings(name) and name not in scope.params:
            return self._single_value(self.scopes[id(scope.mctx.tree)], name)
        return found

    def _imported(self, func: ast.AST, scope: _Scope) -> Optional[ast.FunctionDef]:
        """A function of another module of the project, imported where ``func`` is
        used (its module's scopes are added)."""
        if self.project is None or (isinstance(func, ast.Name) and self._locally_bound(scope, func.id)):
            return None
        found = self.project.function(scope.mctx.imports.qualname(func))
        if found is None:
            return None
        fn, mctx = found
        self._add_scopes(mctx)
        return fn

    def _uses(self, st: Structure, scope: _Scope, name: str, problems: list) -> list[tuple[_Scope, str]]:
        """Classify every use of ``name`` (holding the structure) in ``scope``;
        returns further (scope, name) pairs holding it."""
        # every binding of the name must produce the structure (judged when the flow is complete:
        # which results of which functions hold the structure is known only then)
        st.pending.append((scope, name))
        return self._uses_of_value(st, scope, name, problems)

    def _check_bindings(self, st: Structure, scope: _Scope, name: str, problems: list) -> None:
        mctx = self
        builder = st.builder
        for b in scope.bindings(name):
            stmt = _statement(mctx, b)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and stmt.targets[0] is b:
                if self._calls_builder(stmt.value, builder, scope) or self._tree_map(stmt.value, name, scope):
                    continue
                callee = self._resolve_callee(stmt.value.func, scope) if isinstance(stmt.value, ast.Call) else None
                if callee is not None and None in st.return_position.get(callee[0].name, ()):
                    continue
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                grad = self._grad_target(st, stmt, b, scope)
                if grad or self._optimizer_result(st, stmt, scope):
                    continue
                callee = self._resolve_callee(stmt.value.func, scope)
                t = stmt.targets[0] if len(stmt.targets) == 1 else None
                if callee is not None and callee[0].name in st.return_position and isinstance(t, ast.Tuple):
                    if any(pos is not None and pos < len(t.elts) and t.elts[pos] is b
                           for pos in st.return_position[callee[0].name]):
                        continue
            problems.append(Decline("L2S309", f"`{name}` holds the list built by `{builder.name}` but is also "
                                    f"assigned `{short(ast.unparse(stmt) if isinstance(stmt, ast.AST) else name)}`"
                                    f" (line {getattr(stmt, 'lineno', '?')})", b))

    def _uses_of_value(self, st: Structure, scope: _Scope, name: str, problems: list) -> list[tuple[_Scope, str]]:
        mctx = self
        more: list[tuple[_Scope, str]] = []
        builder = st.builder
        for node in scope.loads(name):
            parent = mctx.parent(node)
            # loops over the structure: `for ... in v`, `for ... in v[a:b]`
            loop = _loop_over(mctx, node) or _range_len_loop(mctx, node)  # `for i in range(len(v))` + `v[i]`
            if loop is not None:
                if loop not in st.loops:
                    st.loops.append(loop)
                    st.loop_modules[id(loop)] = scope.mctx
                continue
            if isinstance(parent, ast.Subscript) and parent.value is node and _index_of_range_loop(mctx, parent, st):
                continue
            if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "len" \
                    and len(parent.args) == 1 and parent.args[0] is node:
                st.uses.append(LayoutUse("len", parent, node, mctx=scope.mctx))
                continue
            if isinstance(parent, ast.Subscript) and parent.value is node and isinstance(parent.ctx, ast.Load):
                sl = parent.slice
                if int_literal(sl) is not None:
                    st.uses.append(LayoutUse("index", parent, node, ast.unparse(sl), mctx=scope.mctx))
                    continue
                if isinstance(sl, ast.Slice) and all(b is None or int_literal(b) is not None
                                                     for b in (sl.lower, sl.upper, sl.step)):
                    st.uses.append(LayoutUse("slice", parent, node, ast.unparse(sl), mctx=scope.mctx))
                    more.extend(self._flows_into(st, scope, parent))
                    continue
            returned = self._return_position(node)
            if returned is not False:
                fn = scope.node
                if scope.is_module or fn is builder.func:
                    problems.append(Decline("L2S309", f"`{name}` is returned at module level", parent))
                    continue
                more.extend(self._returned(st, fn, returned, problems, node))
                continue
            if self._tree_map_arg(parent, node, scope):
                target = _assigned_name(mctx, parent)
                if target is not None:
                    more.append((scope, target))
                    continue
            optimized = self._optimizer_use(st, scope, node, problems)
            if optimized is not None:
                more.extend(optimized)
                continue
            flowed = self._flows_into(st, scope, node)
            if flowed is not None:
                more.extend(flowed)
                more.extend(self._gradients_of(scope, node))
                continue
            stmt = _statement(mctx, node)
            problems.append(Decline("L2S309", f"`{name}` (the list built by `{builder.name}`) is used as "
                                    f"`{short(ast.unparse(parent) if isinstance(parent, ast.expr) else ast.unparse(stmt))}`"
                                    f" (line {node.lineno}); with the layers stacked into one pytree that would "
                                    "change meaning", node))
        return more

    def _flows_into(self, st: Structure, scope: _Scope, expr: ast.AST) -> Optional[list[tuple[_Scope, str]]]:
        """``expr`` passed as an argument to a module function: the parameter
        it binds holds the structure.  ``None`` when it is not such an argument."""
        call = self.parent(expr)
        kw = None
        if isinstance(call, ast.keyword):
            kw = call.arg
            call = self.parent(call)
        if not isinstance(call, ast.Call) or expr is call.func:
            return None
        callee = self._resolve_callee(call.func, scope)
        if callee is None:
            # jax.grad(f)(v, ...) is handled as the value of an assignment; a plain call to an
            # unknown function cannot be followed
            return None
        fn, bound = callee
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if kw is not None:
            param = kw if kw in params + [a.arg for a in fn.args.kwonlyargs] else None
        else:
            if any(isinstance(a, ast.Starred) for a in call.args):
                return None
            pos = bound + next(i for i, a in enumerate(call.args) if a is expr)
            param = params[pos] if pos < len(params) else None
        if param is None:
            return None
        return [(self.scopes[id(fn)], param)]

    # ------------------------------------------------------------- optimizers
    def _optimizer_call(self, call: ast.AST, scope: _Scope) -> Optional[tuple[str, Optional[ast.AST]]]:
        """``("init" | "update", tx)`` for ``tx.init(...)``/``tx.update(...)``,
        ``("apply", None)`` for ``optax.apply_updates(...)``; ``None`` otherwise."""
        if not isinstance(call, ast.Call):
            return None
        f = call.func
        q = scope.mctx.imports.qualname(f)
        if q in ("optax.apply_updates",):
            return "apply", None
        if isinstance(f, ast.Attribute) and f.attr in ("init", "update") and q is None:
            return f.attr, f.value
        return None

    def _optimizer_use(self, st: Structure, scope: _Scope, node: ast.AST, problems: list):
        """``tx.init(v)``, ``tx.update(g, state, v)``, ``optax.apply_updates(v, u)``:
        the optimizer state and the updates have the structure's layout too
        (returns the names that hold them), when every transformation of ``tx``
        works leaf by leaf, element-wise; ``None`` when ``node`` is not such a use."""
        call = self.parent(node)
        if isinstance(call, ast.keyword):
            call = self.parent(call)
        found = self._optimizer_call(call, scope)
        if found is None or node is getattr(call.func, "value", None):
            return None
        kind, tx = found
        if tx is not None:
            why = self._optimizer_problem(tx, scope)
            if why is not None:
                problems.append(Decline("L2S313", f"`{short(ast.unparse(call))}` updates the list built by "
                                        f"`{st.builder.name}` with an optimizer that {why}: stacking the layers "
                                        "into one leaf would change what it computes; keep the list layout "
                                        "with `--layout keep`", call))
                return []
        stmt = self.parent(call)
        if not (isinstance(stmt, ast.Assign) and stmt.value is call and len(stmt.targets) == 1):
            if isinstance(stmt, ast.Return):
                return self._returned(st, scope.node, None, problems, call) if not scope.is_module else []
            return [] if isinstance(stmt, ast.Expr) else None
        names = [n.id for n in walk(stmt.targets[0]) if isinstance(n, ast.Name)]
        return [(scope, n) for n in names]

    def _optimizer_result(self, st: Structure, stmt: ast.Assign, scope: _Scope) -> bool:
        """``stmt`` binds the result of an optimizer call made with the structure."""
        found = self._optimizer_call(stmt.value, scope)
        if found is None:
            return False
        return any(isinstance(a, ast.Name) and (id(scope.node), a.id) in st.names
                   for a in list(stmt.value.args) + [k.value for k in stmt.value.keywords])

    def _optimizer_problem(self, tx: ast.AST, scope: _Scope, depth: int = 0) -> Optional[str]:
        """Why the optimizer ``tx`` is not element-wise per leaf (``None`` when it is)."""
        if depth > 4:
            return "is built out of sight"
        if isinstance(tx, ast.Name):
            value = self._single_value(scope, tx.id)
            if value is None:
                return f"is built out of sight (`{tx.id}`)"
            return self._optimizer_problem(value, scope, depth + 1)
        if not isinstance(tx, ast.Call):
            return f"is built out of sight (`{short(ast.unparse(tx))}`)"
        for node in walk(tx):
            if isinstance(node, ast.keyword) and node.arg == "mask":
                return "masks leaves (`mask=`: a mask reading shapes, `ndim` or paths would pick other leaves)"
            if not isinstance(node, ast.Call):
                continue
            q = scope.mctx.imports.qualname(node.func)
            if q is None or not q.startswith("optax."):
                if node is tx:
                    return f"is built out of sight (`{short(ast.unparse(node.func))}`)"
                continue
            last = q.rsplit(".", 1)[-1]
            if last in OPTAX_PER_LEAF:
                return f"uses per-leaf statistics (`{q}`)"
            if last in OPTAX_MASKS:
                return f"masks or partitions leaves (`{q}`)"
            if last not in OPTAX_ELEMENTWISE and not last.endswith("_schedule") and last not in OPTAX_SCHEDULES:
                return f"uses `{q}`, which is not known to work element-wise per leaf"
        return None

    def _gradients_of(self, scope: _Scope, arg: ast.AST) -> list[tuple[_Scope, str]]:
        """``g = jax.grad(f)(v, ...)``: ``g`` has the structure of ``v`` too."""
        call = self.parent(arg)
        if not (isinstance(call, ast.Call) and call.args and call.args[0] is arg and isinstance(call.func, ast.Call)):
            return []
        q = scope.mctx.imports.qualname(call.func.func)
        if q not in ("jax.grad", "jax.value_and_grad") or call.func.keywords:
            return []
        stmt = self.parent(call)
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and stmt.value is call):
            return []
        t = stmt.targets[0]
        if q == "jax.grad" and isinstance(t, ast.Name):
            return [(scope, t.id)]
        if q == "jax.value_and_grad" and isinstance(t, ast.Tuple) and len(t.elts) == 2 \
                and isinstance(t.elts[1], ast.Name):
            return [(scope, t.elts[1].id)]
        return []

    def _grad_target(self, st: Structure, stmt: ast.Assign, target_node: ast.AST, scope: _Scope) -> bool:
        """``g = jax.grad(f)(v, ...)`` / ``loss, g = jax.value_and_grad(f)(v, ...)``: ``g`` has
        the structure of ``v`` (argument 0)."""
        call = stmt.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Call)):
            return False
        q = scope.mctx.imports.qualname(call.func.func)
        if q not in ("jax.grad", "jax.value_and_grad") or len(call.func.args) != 1 or call.func.keywords:
            return False
        first = call.args[0] if call.args else None
        if not (isinstance(first, ast.Name) and (id(scope.node), first.id) in st.names):
            return False
        t = stmt.targets[0]
        if q == "jax.grad":
            return t is target_node
        return isinstance(t, ast.Tuple) and len(t.elts) == 2 and t.elts[1] is target_node

    def _tree_map(self, value: ast.AST, name: str, scope: _Scope) -> bool:
        q = scope.mctx.imports.qualname(value.func) if isinstance(value, ast.Call) else None
        return q in ("jax.tree.map", "jax.tree_util.tree_map") and self._elementwise(
            value.args[0] if value.args else None, scope.mctx.imports)

    def _tree_map_arg(self, call: ast.AST, node: ast.AST, scope: _Scope) -> bool:
        if not isinstance(call, ast.Call) or node not in call.args[1:]:
            return False
        return self._tree_map(call, "", scope)

    def _elementwise(self, fn: Optional[ast.AST], imports) -> bool:
        """A lambda computing leaf by leaf with arithmetic and element-wise jnp functions."""
        if not isinstance(fn, ast.Lambda):
            return False
        for node in walk(fn.body):
            if isinstance(node, ast.Call):
                if imports.qualname(node.func) not in ELEMENTWISE:
                    return False
            elif isinstance(node, (ast.Subscript, ast.Attribute, ast.Compare, ast.BoolOp, ast.IfExp,
                                   ast.ListComp, ast.GeneratorExp, ast.Lambda)) and node is not fn:
                if isinstance(node, ast.Attribute) and imports.qualname(node) in ELEMENTWISE:
                    continue
                if isinstance(node, ast.Attribute) and isinstance(self.parent(node), ast.Call):
                    continue
                return False
        return True


def module_scopes(mctx) -> dict[int, "_Scope"]:
    """The scopes of a module (its body and its module-level functions), indexed
    once per module and shared by every analysis that looks at it."""
    cached = mctx.__dict__.get("_layer_scopes")
    if cached is None:
        cached = {id(mctx.tree): _Scope(mctx.tree, mctx)}
        for stmt in mctx.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                cached[id(stmt)] = _Scope(stmt, mctx)
        mctx.__dict__["_layer_scopes"] = cached
    return cached


def module_builders(mctx, analysis=None) -> dict[str, Builder]:
    """The parameter-list builders a module defines (found once per module)."""
    cached = mctx.__dict__.get("_layer_builders")
    if cached is None:
        cached = {}
        if mctx.may_build_layers():
            finder = _BuilderFinder()
            for stmt in mctx.tree.body:
                if isinstance(stmt, ast.FunctionDef):
                    b = finder.builder(stmt, mctx)
                    if b is not None:
                        cached[stmt.name] = b
        mctx.__dict__["_layer_builders"] = cached
    return cached


def imported_list_sources(mctx) -> list:
    """The modules whose builders this module imports and uses the result of as
    a list (``v = init_params(...)``, then ``len(v)``, ``v[0]``, ``for .. in v``):
    it must see how they change."""
    project = mctx.project
    if project is None or mctx.name is None:
        return []
    # an imported function of the project that may build a list at all (the cheaper test first)
    if not any(project.function_may_build(q) for q in mctx.imports.all_aliases().values()
               if project.split(q) is not None):
        return []
    calls = mctx.imported_list_calls()
    if not calls:
        return []
    out = {}
    for qual in calls:
        if not project.function_may_build(qual):
            continue
        found = project.function(qual)
        if found is None or found[1] is mctx:
            continue
        fn, octx = found
        if fn.name in module_builders(octx):
            out[id(octx.tree)] = octx
    return list(out.values())


class _BuilderFinder:
    """Recognises parameter-list builders (module-level functions returning a list
    of per-layer structures) and whether their layers share shapes."""

    def builder(self, fn: ast.FunctionDef, mctx) -> Optional[Builder]:
        returns = [n for n in walk_body(fn) if isinstance(n, ast.Return)]
        if not returns:
            return None
        values = [r.value for r in returns]
        if any(v is None for v in values):
            return None
        if len(returns) == 1 and isinstance(values[0], ast.ListComp):
            mctx.ensure_parents(fn)
            comp = values[0]
            b = Builder(fn, returns, comp.elt, mctx=mctx)
            b.problem = self._homogeneous_comprehension(fn, comp, mctx)
            return b
        if not all(isinstance(v, ast.Name) for v in values) or len({v.id for v in values}) != 1:
            return None
        name = values[0].id
        # cheap filter before reaching definitions: the name is bound to a list somewhere
        if not any(isinstance(n, ast.Assign) and isinstance(n.value, (ast.List, ast.ListComp))
                   and any(isinstance(t, ast.Name) and t.id == name for t in n.targets) for n in walk_body(fn)):
            return None
        mctx.ensure_parents(fn)
        fctx = mctx.function(fn)
        defs = set()
        for r in returns:
            defs |= set(fctx.defs_before(r, name))
        if len(defs) != 1:
            return None
        d = next(iter(defs))
        node = d.node
        if d.kind != "assign" or not isinstance(node, ast.Assign) or len(node.targets) != 1 \
                or not isinstance(node.targets[0], ast.Name):
            return None
        if isinstance(node.value, ast.ListComp):
            b = Builder(fn, returns, node.value.elt, name, mctx=mctx)
            b.problem = self._homogeneous_comprehension(fn, node.value, mctx)
            if self._other_uses(fn, name, allowed={id(node)} | {id(r) for r in returns}):
                return None
            return b
        if not (isinstance(node.value, ast.List) and not node.value.elts):
            return None
        appends = [n for n in walk_body(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr == "append" and isinstance(n.func.value, ast.Name) and n.func.value.id == name]
        if len(appends) != 1 or len(appends[0].args) != 1:
            return None
        call = appends[0]
        stmt = mctx.parent(call)
        loop = mctx.parent(stmt)
        if not (isinstance(stmt, ast.Expr) and isinstance(loop, ast.For) and stmt in loop.body):
            return None
        if self._other_uses(fn, name, allowed={id(node), id(stmt)} | {id(r) for r in returns}):
            return None
        b = Builder(fn, returns, call.args[0], name, mctx=mctx)
        b.problem = self._homogeneous_loop(fn, loop, mctx)
        return b

    def _other_uses(self, fn: ast.FunctionDef, name: str, allowed: set[int]) -> bool:
        for stmt in walk_body(fn):
            if isinstance(stmt, ast.stmt) and id(stmt) not in allowed:
                if isinstance(stmt, (ast.For, ast.If, ast.While, ast.With, ast.Try)):
                    exprs = [getattr(stmt, "iter", None), getattr(stmt, "test", None), getattr(stmt, "target", None)]
                    if any(e is not None and any(isinstance(n, ast.Name) and n.id == name for n in walk(e))
                           for e in exprs):
                        return True
                    continue
                if any(isinstance(n, ast.Name) and n.id == name for n in walk_scope(stmt)):
                    return True
        return False

    def _key_iterable(self, fctx, it: ast.AST) -> Optional[str]:
        """``"keys"`` when ``it`` is an array of PRNG keys (a ``jax.random.split``),
        ``"range"`` for ``range(n)``; otherwise ``None``."""
        if isinstance(it, ast.Call):
            q = fctx.imports.qualname(it.func, fctx.shadowing)
            if q in ("jax.random.split",):
                return "keys"
            if isinstance(it.func, ast.Name) and it.func.id == "range" and "range" not in fctx.shadowing:
                return "range"
            return None
        if isinstance(it, ast.Name):
            values = fctx.assigned_values(it.id)
            if values and all(isinstance(v, ast.Call) and fctx.imports.qualname(v.func, fctx.shadowing)
                              == "jax.random.split" for v in values):
                return "keys"
            # `k1, *keys = jax.random.split(...)`
        return None

    def _homogeneous_comprehension(self, fn, comp: ast.ListComp, mctx) -> Optional[Decline]:
        fctx = mctx.function(fn)
        if len(comp.generators) != 1 or comp.generators[0].ifs:
            return Decline("L2S308", f"`{fn.name}` builds its list with a filtered or nested comprehension; the "
                           "number and shape of the layers cannot be read from the code", comp)
        gen = comp.generators[0]
        kind = self._key_iterable(fctx, gen.iter)
        var = gen.target.id if isinstance(gen.target, ast.Name) else None
        if kind is None or var is None:
            return Decline("L2S308", f"`{fn.name}` builds each layer from `{ast.unparse(gen.iter)}`: the layers may "
                           "differ in shape (only a loop over PRNG keys or over `range(n)` used to pick keys is "
                           "provably uniform)", gen.iter)
        return self._key_uses([comp.elt], var, kind, fn, fctx, mctx)

    def _homogeneous_loop(self, fn, loop: ast.For, mctx) -> Optional[Decline]:
        fctx = mctx.function(fn)
        kind = self._key_iterable(fctx, loop.iter)
        var = loop.target.id if isinstance(loop.target, ast.Name) else None
        if kind is None or var is None:
            return Decline("L2S308", f"`{fn.name}` builds each layer from `{ast.unparse(loop.iter)}`: the layers may "
                           "differ in shape (only a loop over PRNG keys or over `range(n)` used to pick keys is "
                           "provably uniform)", loop.iter)
        # names derived from the loop variable inside the body are keys too (split/fold_in)
        derived = {var}
        for stmt in loop.body:
            for node in walk_scope(stmt):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    q = fctx.imports.qualname(node.value.func, fctx.shadowing)
                    reads = {n.id for n in walk(node.value) if isinstance(n, ast.Name)}
                    if q in ("jax.random.split", "jax.random.fold_in") and reads & derived:
                        for t in node.targets:
                            derived |= {n.id for n in walk(t) if isinstance(n, ast.Name)}
        return self._key_uses(loop.body, var, kind, fn, fctx, mctx, derived)

    def _key_uses(self, roots, var: str, kind: str, fn, fctx, mctx, derived: Optional[set] = None) -> Optional[Decline]:
        """The loop variable (and keys derived from it) may only be passed as a
        PRNG key: the first argument of a call, or ``fold_in(key, i)`` /
        ``keys[i]`` for an index."""
        derived = derived or {var}
        for root in roots:
            for node in walk(root):
                if not (isinstance(node, ast.Name) and node.id in derived and isinstance(node.ctx, ast.Load)):
                    continue
                parent = mctx.parent(node)
                ok = False
                if kind == "keys" or node.id != var:
                    ok = (isinstance(parent, ast.Call) and parent.args and parent.args[0] is node) or (
                        isinstance(parent, ast.keyword) and parent.arg in ("key", "rng", "rngs", "prng_key"))
                    if isinstance(parent, ast.Assign):
                        ok = True  # re-binding a derived key
                    if isinstance(parent, ast.Call):
                        q = fctx.imports.qualname(parent.func, fctx.shadowing)
                        if is_under(q, "jax.random") and parent.args and parent.args[0] is node:
                            ok = True
                else:  # an index: fold_in(key, i) or keys[i]
                    if isinstance(parent, ast.Call) and len(parent.args) == 2 and parent.args[1] is node:
                        ok = fctx.imports.qualname(parent.func, fctx.shadowing) == "jax.random.fold_in"
                    if isinstance(parent, ast.Subscript) and parent.slice is node and isinstance(parent.value,
                                                                                                ast.Name):
                        ok = self._key_iterable(fctx, parent.value) == "keys"
                if not ok:
                    text = ast.unparse(parent) if isinstance(parent, ast.expr) else node.id
                    return Decline("L2S308", f"`{fn.name}` uses the per-layer `{node.id}` in `{short(text)}`: the "
                                   "layers may differ in shape or structure, so they cannot be stacked", node)
        return None


def _may_call(func: ast.AST, name: str, scope: "_Scope") -> bool:
    """A cheap test before resolving: ``func`` mentions ``name`` (``f``, ``m.f``,
    ``jax.jit(f)``, ``partial(f, ...)``), imports it under another name, or is
    bound in the scope or its module (``step = jax.jit(train_step)``)."""
    if isinstance(func, ast.Name):
        if func.id == name or scope.bindings(func.id):
            return True
        alias = scope.mctx.imports.lookup(func.id)
        if alias is not None:
            return alias.rsplit(".", 1)[-1] == name
        return func.id in scope.mctx.module_names
    if isinstance(func, ast.Attribute):
        return func.attr == name
    return any(isinstance(n, ast.Name) and n.id == name or isinstance(n, ast.Attribute) and n.attr == name
               for n in walk(func))


def _statement(mctx, node: ast.AST) -> ast.AST:
    cur = node
    while cur is not None and not isinstance(cur, ast.stmt):
        cur = mctx.parent(cur)
    return cur if cur is not None else node


def _assigned_name(mctx, expr: ast.AST) -> Optional[str]:
    parent = mctx.parent(expr)
    if isinstance(parent, ast.Assign) and parent.value is expr and len(parent.targets) == 1 \
            and isinstance(parent.targets[0], ast.Name):
        return parent.targets[0].id
    return None


def _loop_over(mctx, node: ast.Name) -> Optional[ast.For]:
    """The ``for`` statement iterating ``node`` (or ``node[a:b]``)."""
    cur: ast.AST = node
    parent = mctx.parent(cur)
    if isinstance(parent, ast.Subscript) and parent.value is cur and isinstance(parent.slice, ast.Slice):
        cur, parent = parent, mctx.parent(parent)
    if isinstance(parent, ast.For) and parent.iter is cur:
        return parent
    return None


def _range_len_loop(mctx, node: ast.Name) -> Optional[ast.For]:
    """``node`` in ``for i in range(len(node))`` (the loop then indexes ``node[i]``)."""
    call = mctx.parent(node)
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "len"):
        return None
    rng = mctx.parent(call)
    if not (isinstance(rng, ast.Call) and isinstance(rng.func, ast.Name) and rng.func.id == "range"
            and rng.args == [call]):
        return None
    loop = mctx.parent(rng)
    if isinstance(loop, ast.For) and loop.iter is rng:
        return loop
    return None


def _index_of_range_loop(mctx, sub: ast.Subscript, st: Structure) -> bool:
    """``v[i]`` where ``i`` is the index of a loop over ``range(len(v))`` already recorded."""
    if not isinstance(sub.slice, ast.Name):
        return False
    cur = mctx.parent(sub)
    while cur is not None:
        if isinstance(cur, ast.For) and cur in st.loops and isinstance(cur.target, ast.Name) \
                and cur.target.id == sub.slice.id:
            return True
        cur = mctx.parent(cur)
    return False


def _display(path: str, root: Optional[str]) -> str:
    """A path as the user knows it: relative to the project's root when inside it."""
    import os

    if root is not None:
        try:
            rel = os.path.relpath(path, root)
        except ValueError:
            return path
        if not rel.startswith(".."):
            return rel
    return path

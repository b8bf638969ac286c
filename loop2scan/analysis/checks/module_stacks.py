"""Stacks of Flax NNX modules (``L2S320``-``L2S322``).

A layer stack is a list attribute of an ``nnx.Module`` built in its
constructor, one module per layer, from one class with the same arguments for
every layer::

    self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])

and loops in the class's methods that call each layer in turn::

    for layer in self.layers:
        x = layer(x, mask, deterministic=deterministic)

The stacked form builds one module whose every variable has a leading layer
axis (``nnx.split_rngs`` + ``nnx.vmap`` over a factory), and the loop becomes
an ``nnx.scan`` over it with the carry marked ``nnx.Carry``.  Each layer keeps
its own parameters and RNG streams, and state a layer changes during the call
(RNG counts, batch statistics) is written back per layer, as in the loop.

The rules here are the ones the stacked module must keep: every layer is
built alike (so layer 0's Python attributes hold for every layer), nothing
else in the project uses the list as a list, and the step only calls its
layer and changes no module that is not scanned.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

from ...plan import ModuleBuild, ModuleScan
from ..activity import all_written_names, walk_all
from ..decline import Code, Decline, short
from ..examples import Invalid
from ..imports import is_under

from ..nodes import walk

CODES = (
    Code("L2S320", "module-stack-build", "the layer list is not built alike for every layer in the constructor",
         "Build the list in `__init__` from one class with the same arguments for every layer "
         "(`nnx.List([Block(cfg, rngs=rngs) for _ in range(n)])`): arguments that depend on the layer index, "
         "different classes or a list built elsewhere cannot become one stacked module."),
    Code("L2S321", "module-stack-use", "the layer list is used in a way a stacked module would change",
         "Only loops that call each layer in turn become a scan; `len(self.layers)`, `self.layers[i]`, slices "
         "and uses from other classes or modules see a list that the stacked form replaces. Rewrite those uses "
         "or keep the loop (`# loop2scan: skip`)."),
    Code("L2S322", "module-stack-step", "the loop does more with its layer than call it",
         "The step of a scan over stacked modules may call its layer, compute with arrays and read other "
         "values; it cannot read the layer's attributes, branch, or call another module of `self` (the step "
         "would close over it and its state changes could not be written back)."),
)

FLAX_LISTS = ("flax.nnx.List", "flax.nnx.list.List")
MODULE_BASES = ("flax.nnx.Module", "flax.nnx.module.Module")
SCANNED_AS = "flax.nnx.scan"


@dataclass
class Stack:
    """A layer stack found in a class's constructor."""

    cls: ast.ClassDef
    attr: str
    build: ast.stmt  # `self.<attr> = ...`
    append_loop: Optional[ast.For]  # the `for _ in range(n): self.<attr>.append(...)` form
    element: ast.Call  # the constructor call of one layer
    count: ast.expr
    rngs: str
    init: ast.FunctionDef


# ---------------------------------------------------------------------------- recognition

def stack_attribute(la) -> Optional[str]:
    """``X`` when the loop is ``for NAME in self.X:`` in a method of an
    ``nnx.Module`` class (the loops this target turns into ``nnx.scan``)."""
    loop, func = la.loop, la.func
    if func is None or not isinstance(loop, ast.For):
        return None
    it = stacked_iterable(loop.iter)
    if it is None:
        return None
    cls = la.mctx.enclosing_class(func)
    if cls is None or not is_nnx_module(la.mctx, cls):
        return None
    return it.attr


def stacked_iterable(it: ast.AST) -> Optional[ast.Attribute]:
    """The ``self.X`` a loop iterates: ``self.X`` itself, or inside
    ``reversed(...)``, ``enumerate(...)``, ``zip(...)`` or a slice (which the
    rules then accept or decline)."""
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id in ("reversed", "enumerate", "zip") \
            and it.args:
        found = [stacked_iterable(a) for a in it.args]
        return next((f for f in found if f is not None), None)
    if isinstance(it, ast.Subscript):
        return stacked_iterable(it.value)
    if isinstance(it, ast.Attribute) and isinstance(it.value, ast.Name) and it.value.id == "self":
        return it
    return None


def is_reversed(it: ast.AST) -> bool:
    return isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "reversed" \
        and len(it.args) == 1 and isinstance(it.args[0], ast.Attribute) and not it.keywords


def is_nnx_module(mctx, cls: ast.ClassDef, depth: int = 0) -> bool:
    """``cls`` derives from ``nnx.Module`` (directly, or through classes of its module)."""
    for base in cls.bases:
        q = mctx.imports.qualname(base)
        if q is not None and (q in MODULE_BASES or is_under(q, "flax.nnx") and q.endswith(".Module")):
            return True
        if isinstance(base, ast.Name) and depth < 8:
            local = mctx.module_classes.get(base.id)
            if local is not None and local is not cls and is_nnx_module(mctx, local, depth + 1):
                return True
    return False


# ---------------------------------------------------------------------------- the rules

def plan_module_loop(la, attr: str) -> ModuleScan:
    """The facts of a loop over a layer stack, or a decline."""
    mctx, loop, func = la.mctx, la.loop, la.func
    cls = mctx.enclosing_class(func)
    it = loop.iter
    if not (isinstance(it, ast.Attribute) or is_reversed(it)):
        what = short(ast.unparse(it))
        if isinstance(it, ast.Subscript) or (isinstance(it, ast.Call) and any(isinstance(a, ast.Subscript)
                                                                              for a in it.args)):
            raise Decline("L2S321", f"the loop iterates `{what}`, a part of the layer list: a stacked module "
                          "is scanned whole", it)
        raise Decline("L2S322", f"the loop iterates `{what}`: the step of a scan over stacked layers gets one "
                      "layer and no layer number or per-layer companion values (per-layer caches, states or names "
                      f"keyed by the index); iterate `self.{attr}` alone", it)
    if not isinstance(loop.target, ast.Name):
        raise Decline("L2S322", f"the loop unpacks `{short(ast.unparse(loop.target))}` from each layer; iterate "
                      "the layers themselves (`for layer in self." + attr + ":`)", loop.target)
    element = loop.target.id
    stack = find_stack(mctx, cls, attr)
    check_step(la, element, stack)
    keep = mctx.layout == "keep"
    if not keep:
        check_other_uses(la, stack)  # with `--layout keep` the list stays a list: its other uses see no change
    build = ModuleBuild(
        span=mctx.span(stack.build),
        attr=attr,
        constructor=mctx.source(stack.element),
        count=mctx.source(stack.count),
        rngs=stack.rngs,
        loop_span=mctx.span(stack.append_loop) if stack.append_loop is not None else None,
        names=set(mctx.function(stack.init).all_names),
        cls=cls.name,
        partitioned=_may_be_partitioned(mctx),
    )
    return ModuleScan(attr=attr, element=element, build=build, keep=keep)


#: Words of sharding metadata on variables (partition names): `nnx.with_partitioning`, `sharding=`,
#: `out_sharding`, `nnx.with_metadata`, partition specs.
_SHARDING_WORDS = ("partitioning", "sharding", "with_metadata", "PartitionSpec", "partition_spec")


def _may_be_partitioned(mctx) -> bool:
    """The layers may carry sharding metadata: this module, or a module of the
    project it imports, names it (then ``nnx.vmap`` and ``nnx.scan`` must name
    the stacked axis too; where nothing carries metadata, naming it changes nothing)."""
    texts = [mctx.text]
    project = mctx.project
    if project is not None and mctx.name is not None:
        texts += [project.text(m) or "" for m in sorted(project.imports_of(mctx.name))]
    return any(word in text for text in texts for word in _SHARDING_WORDS)


def find_stack(mctx, cls: ast.ClassDef, attr: str) -> Stack:
    """Where and how ``self.<attr>`` is built: once, in ``__init__``, as a list of
    modules of one class with arguments that do not depend on the layer."""
    init = _init(cls)
    if init is None:
        raise Decline("L2S320", f"`{cls.name}` has no `__init__` building `self.{attr}` (it may come from a base "
                      "class or be set from outside); the stacked form needs to see how every layer is built", cls)
    builds = _assignments(cls, attr)
    if not builds:
        raise Decline("L2S320", f"`self.{attr}` is not assigned in `{cls.name}`; the stacked form needs to see how "
                      "every layer is built", cls)
    if len(builds) > 1:
        raise Decline("L2S320", f"`self.{attr}` is assigned more than once in `{cls.name}` (line {builds[0].lineno} "
                      f"and line {builds[1].lineno})", builds[1])
    build = builds[0]
    if not isinstance(build, ast.Assign) or len(build.targets) != 1 or build not in init.body:
        raise Decline("L2S320", f"`self.{attr}` is built by `{short(ast.unparse(build))}`, not by a plain "
                      "assignment in the body of `__init__`", build)
    value = build.value
    if isinstance(value, ast.Call) and mctx.imports.qualname(value.func) in FLAX_LISTS:
        if len(value.args) > 1 or value.keywords:
            raise Decline("L2S320", f"`{short(ast.unparse(value))}` is not a list of layers built in place", value)
        value = value.args[0] if value.args else ast.List(elts=[], ctx=ast.Load())
    append_loop = None
    if isinstance(value, ast.ListComp):
        gen = value.generators
        if len(gen) != 1 or gen[0].ifs or gen[0].is_async or not isinstance(gen[0].target, ast.Name):
            raise Decline("L2S320", f"`{short(ast.unparse(value))}` is not one layer per step of `range(n)`", value)
        index, count, element = gen[0].target.id, _range_count(gen[0].iter), value.elt
        where = gen[0].iter
    elif isinstance(value, ast.List) and not value.elts:
        append_loop, index, count, element = _append_loop(init, build, attr)
        where = append_loop.iter
    else:
        raise Decline("L2S320", f"`self.{attr}` is built by `{short(ast.unparse(build.value))}`; the stacked form "
                      "needs one layer per step of `range(n)` (a comprehension or an `append` loop) to see that "
                      "every layer is built alike", build)
    if count is None:
        raise Decline("L2S320", f"the layers are built over `{short(ast.unparse(where))}`, not `range(n)`: the "
                      "stacked form needs the number of layers and every layer built alike", where)
    rngs = _check_element(mctx, cls, element, index)
    return Stack(cls, attr, build, append_loop, element, count, rngs, init)


def _assignments(cls: ast.ClassDef, attr: str) -> list[ast.stmt]:
    """Every statement of the class assigning ``self.<attr>``."""
    return [s for s in walk(cls) if isinstance(s, (ast.Assign, ast.AnnAssign, ast.AugAssign))
            and any(_is_self_attr(t, attr) for t in _targets(s))]


def _init(cls: ast.ClassDef) -> Optional[ast.FunctionDef]:
    return next((s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"), None)


def _targets(stmt: ast.stmt) -> list[ast.AST]:
    if isinstance(stmt, ast.Assign):
        return [leaf for t in stmt.targets for leaf in _leaves(t)]
    return [stmt.target]


def _leaves(target: ast.AST) -> list[ast.AST]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [leaf for e in target.elts for leaf in _leaves(e)]
    if isinstance(target, ast.Starred):
        return _leaves(target.value)
    return [target]


def _is_self_attr(node: ast.AST, attr: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == attr and isinstance(node.value, ast.Name) \
        and node.value.id == "self"


def _range_count(it: ast.AST) -> Optional[ast.expr]:
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range" \
            and len(it.args) == 1 and not it.keywords:
        return it.args[0]
    return None


def _append_loop(init: ast.FunctionDef, build: ast.stmt, attr: str):
    """``self.X = nnx.List()`` followed by ``for i in range(n): self.X.append(Block(...))``."""
    at = init.body.index(build)
    nxt = init.body[at + 1] if at + 1 < len(init.body) else None
    if isinstance(nxt, ast.For) and isinstance(nxt.target, ast.Name) and not nxt.orelse and len(nxt.body) == 1:
        stmt = nxt.body[0]
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and \
                isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "append" and \
                _is_self_attr(stmt.value.func.value, attr) and len(stmt.value.args) == 1 and \
                not stmt.value.keywords:
            return nxt, nxt.target.id, _range_count(nxt.iter), stmt.value.args[0]
    raise Decline("L2S320", f"`self.{attr}` starts empty and is not filled by the loop right after it "
                  f"(`for _ in range(n): self.{attr}.append(Block(...))`)", build)


def _check_element(mctx, cls: ast.ClassDef, element: ast.AST, index: str) -> str:
    """Every layer is built by one constructor call whose arguments do not
    depend on the layer; returns the name of the ``nnx.Rngs`` the layers draw from."""
    if not isinstance(element, ast.Call):
        raise Decline("L2S320", f"each layer is `{short(ast.unparse(element))}`, not a call of a module class",
                      element)
    callee = element.func
    if not _is_module_class(mctx, callee):
        raise Decline("L2S320", f"`{short(ast.unparse(callee))}` is not shown to be an `nnx.Module` class (a class "
                      "of this module deriving from `nnx.Module`, or one of `flax.nnx`)", callee)
    rngs: list[ast.Name] = []
    for arg in [*element.args, *[k.value for k in element.keywords]]:
        for node in walk(arg):
            if isinstance(node, ast.Name) and node.id == index:
                raise Decline("L2S320", f"the argument `{short(ast.unparse(arg))}` depends on the layer index "
                              f"`{index}`: the layers differ, and a stacked module would build them all alike", arg)
            if isinstance(node, (ast.Call, ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
                                 ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
                raise Decline("L2S320", f"the argument `{short(ast.unparse(arg))}` is computed by a call for each "
                              "layer; the stacked form would compute it once (pass the computed value instead)",
                              node)
        if isinstance(arg, ast.Name) and _is_rngs(mctx, arg.id, cls):
            rngs.append(arg)
    if any(isinstance(a, ast.Starred) for a in element.args) or any(k.arg is None for k in element.keywords):
        raise Decline("L2S320", f"`{short(ast.unparse(element))}` unpacks its arguments (`*args`/`**kwargs`); the "
                      "stacked form needs to see which one is the `nnx.Rngs`", element)
    if len(rngs) != 1:
        raise Decline("L2S320", f"`{short(ast.unparse(element))}` passes {'no' if not rngs else 'more than one'} "
                      "`nnx.Rngs` to the layer; the stacked form splits one `rngs` into a stream per layer",
                      element)
    name = rngs[0].id
    for arg in [*element.args, *[k.value for k in element.keywords]]:
        if arg is not rngs[0] and any(isinstance(n, ast.Name) and n.id == name for n in walk(arg)):
            raise Decline("L2S320", f"`{short(ast.unparse(arg))}` reads `{name}` too; the stacked form splits it "
                          "into a stream per layer", arg)
    return name


def _is_rngs(mctx, name: str, cls: ast.ClassDef) -> bool:
    if name == "rngs":
        return True
    init = _init(cls)
    if init is None:
        return False
    for a in [*init.args.posonlyargs, *init.args.args, *init.args.kwonlyargs]:
        if a.arg == name and a.annotation is not None:
            q = mctx.imports.qualname(a.annotation)
            return q is not None and q.startswith("flax.nnx") and q.endswith("Rngs")
    return False


def _is_module_class(mctx, callee: ast.AST) -> bool:
    q = mctx.imports.qualname(callee)
    if q is not None and is_under(q, "flax.nnx"):
        return q.rsplit(".", 1)[-1][:1].isupper()
    if isinstance(callee, ast.Name):
        local = mctx.module_classes.get(callee.id)
        return local is not None and is_nnx_module(mctx, local)
    return False


def check_step(la, element: str, stack: Stack) -> None:
    """The body only calls its layer (directly, or through ``nnx.remat``), and calls
    no other module of ``self``: every module it changes is scanned."""
    loop = la.loop
    for stmt in loop.body:
        if not isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr, ast.Pass)):
            raise Decline("L2S322", f"the body holds a `{type(stmt).__name__.lower()}` statement; the step of a "
                          "scan over stacked layers runs the same code for every layer (keep the body to "
                          "assignments and calls)", stmt)
    if element in all_written_names(loop.body):
        raise Decline("L2S305", f"the loop variable `{element}` is reassigned in the body", loop)
    calls = {id(n.func) for n in walk_all(loop.body) if isinstance(n, ast.Call)}
    remat = {id(n.args[0]) for n in walk_all(loop.body) if isinstance(n, ast.Call) and n.args
             and la.mctx.imports.qualname(n.func) in ("flax.nnx.remat", "flax.nnx.checkpoint")
             and id(n) in calls}
    for node in walk_all(loop.body):
        if isinstance(node, ast.Name) and node.id == element and isinstance(node.ctx, ast.Load):
            if id(node) not in calls and id(node) not in remat:
                parent = la.mctx.parent(node)
                what = short(ast.unparse(parent)) if parent is not None and not isinstance(parent, ast.stmt) \
                    else element
                raise Decline("L2S322", f"`{what}` uses the layer other than by calling it; inside the scan "
                              f"`{element}` is one slice of the stacked module", node)
        if isinstance(node, ast.Name) and node.id == "self" and isinstance(node.ctx, ast.Load):
            parent = la.mctx.parent(node)
            top = node
            while isinstance(parent, ast.Attribute):
                top, parent = parent, la.mctx.parent(parent)
            if isinstance(parent, ast.Call) and parent.func is top:
                raise Decline("L2S322", f"the body calls `{short(ast.unparse(top))}`, a part of `self` shared by "
                              "every layer: the scan step would close over it and could not write its state "
                              "changes back (call it before or after the loop)", parent)
            if top is node:
                raise Decline("L2S322", "the body passes `self` on; the scan step would close over the whole "
                              "module, stacked layers included", node)
            if isinstance(top, ast.Attribute) and top.attr == stack.attr:
                raise Decline("L2S321", f"the body reads `self.{stack.attr}` itself", top)


def check_other_uses(la, stack: Stack) -> None:
    """Every other use of ``self.<attr>``, in this module and in the modules of
    the project that name it, is a loop over it that is rewritten too."""
    mctx, attr = la.mctx, stack.attr
    mctx.ensure_parents(mctx.tree)  # which class each use is in
    allowed = {id(stack.build.targets[0])}
    if stack.append_loop is not None:
        allowed.add(id(stack.append_loop.body[0].value.func.value))
    loops = []
    for node in walk(mctx.tree):
        if not (isinstance(node, ast.Attribute) and node.attr == attr) or id(node) in allowed:
            continue
        owner = _owner_class(mctx, node)
        if owner is not None and owner is not stack.cls and not _derives(mctx, owner, stack.cls) \
                and isinstance(node.value, ast.Name) and node.value.id == "self":
            continue  # another class's own attribute of that name
        parent = mctx.parent(node)
        loop = parent
        while loop is not None and not isinstance(loop, ast.stmt) and stacked_iterable(loop) is node:
            loop = mctx.parent(loop)  # inside `reversed(...)`, `enumerate(...)`, `zip(...)`, a slice
        if isinstance(loop, ast.For) and stacked_iterable(loop.iter) is node and owner is stack.cls:
            loops.append(loop)
            continue
        what = short(ast.unparse(parent if parent is not None and not isinstance(parent, ast.stmt) else node))
        raise Decline("L2S321", f"`{what}` (line {node.lineno}) uses `self.{attr}` as a list; the stacked form "
                      "replaces the list by one stacked module", node)
    for other in loops:
        if other is la.loop:
            continue
        result = mctx.first_pass_result(other)
        if result is None or result.status != "rewritten":
            why = f" ({result.code}: {result.message})" if result is not None else ""
            raise Decline("L2S321", f"the loop over `self.{attr}` at line {other.lineno} stays a loop{why}; "
                          "both must change together", other)
    _check_optimizers(mctx, stack)
    project = mctx.project
    if project is None or mctx.name is None:
        return
    # the modules that import this one (where instances of the class are built, subclassed or used)
    for name in sorted(project.importers_of_module_names(mctx.name)):
        if name == mctx.name or not project.mentions(name, stack.cls.name):
            continue
        other = project.module_context(name)
        if other is None:
            continue
        _check_optimizers(other, stack)
        if not project.mentions(name, attr):
            continue
        other.ensure_parents(other.tree)
        for node in walk(other.tree):
            if isinstance(node, ast.Attribute) and node.attr == attr and not (
                    isinstance(node.value, ast.Name) and node.value.id == "self"
                    and not _derives_named(_owner_class(other, node), stack.cls.name)):
                d = Decline("L2S321", f"`{short(ast.unparse(node))}` in {other.display_path()} (line "
                            f"{node.lineno}) may read `{stack.cls.name}.{attr}` as a list; the stacked form "
                            "replaces it by one stacked module", node)
                d.module = other
                raise d


def _check_optimizers(mctx, stack: Stack) -> None:
    """Optimizers built where the model is (this module, or one importing its
    class) must update each leaf element-wise: per-leaf statistics (LAMB, LARS,
    Adafactor...) and masks that read shapes or paths change meaning when the
    layers become one stacked leaf per variable."""
    from ..layers import OPTAX_MASKS, OPTAX_PER_LEAF

    if "optax" not in mctx.text:
        return
    for node in walk(mctx.tree):
        if not isinstance(node, ast.Call):
            continue
        q = mctx.imports.qualname(node.func)
        if q is None or not q.startswith("optax."):
            continue
        last = q.rsplit(".", 1)[-1]
        why = None
        if last in OPTAX_PER_LEAF:
            why = f"uses per-leaf statistics (`{q}`)"
        elif last in OPTAX_MASKS or any(k.arg == "mask" for k in node.keywords):
            why = f"masks or partitions leaves (`{short(ast.unparse(node))}`: a mask reading shapes or paths would " \
                  "pick other leaves)"
        if why is not None:
            d = Decline("L2S313", f"an optimizer built where `{stack.cls.name}` is used {why}: stacking "
                        f"`self.{stack.attr}` into one module would change its update", node)
            d.module = mctx
            raise d


def _owner_class(mctx, node: ast.AST) -> Optional[ast.ClassDef]:
    for anc in mctx.ancestors(node):
        if isinstance(anc, ast.ClassDef):
            return anc
    return None


def _derives(mctx, cls: ast.ClassDef, base: ast.ClassDef, depth: int = 0) -> bool:
    for b in cls.bases:
        if isinstance(b, ast.Name):
            if b.id == base.name:
                return True
            local = mctx.module_classes.get(b.id)
            if local is not None and depth < 8 and _derives(mctx, local, base, depth + 1):
                return True
    return False


def _derives_named(cls: Optional[ast.ClassDef], base: str) -> bool:
    if cls is None:
        return False
    return any((isinstance(b, ast.Name) and b.id == base) or (isinstance(b, ast.Attribute) and b.attr == base)
               for b in cls.bases)


def carried_cells(la) -> list:
    """Under the Flax target, the submodules of ``self`` a time loop calls
    (``h = self.cell(h, x[:, t])``), as :class:`~loop2scan.plan.CarriedModule`
    facts; the ``nnx.scan`` over steps carries them (``nnx.Carry``): their
    parameters are shared by every step and their RNG streams advance step by
    step, exactly as in the loop (a broadcast module would reuse one dropout
    mask for every step).  Each must be an attribute assigned once, in
    ``__init__``, from a module class; anything else the body calls on ``self``
    declines."""
    mctx, func = la.mctx, la.func
    cls = mctx.enclosing_class(func) if func is not None else None
    if cls is None or not is_nnx_module(mctx, cls):
        return []
    calls: dict[str, ast.Call] = {}  # the first call of each `self.<attr>`
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
            calls.setdefault(node.func.attr, node)
    if not calls:
        return []
    from ...plan import CarriedModule

    out = []
    local_names = set(la.fctx.all_names) | set(mctx.module_names)
    for attr in sorted(calls):
        _submodule(mctx, cls, attr, calls[attr])
        uses = [n for n in walk_all(la.loop.body) if isinstance(n, ast.Attribute) and n.attr == attr
                and isinstance(n.value, ast.Name) and n.value.id == "self"]
        for use in uses:
            parent = mctx.parent(use)
            if isinstance(parent, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)) or \
                    not isinstance(use.ctx, ast.Load):
                raise Decline("L2S203", f"`self.{attr}` is assigned inside the loop", use)
        name = attr.strip("_") or "module"
        while name in local_names:
            name = "_" + name
        local_names.add(name)
        out.append(CarriedModule(f"self.{attr}", name, [mctx.span(u) for u in uses]))
    return out


def mark_build_loops(results: list) -> None:
    """The ``append`` loop that fills a layer stack builds Python objects (not a
    scan candidate); when the stack is rewritten, the loop goes with the list:
    its result says so, whatever it said before."""
    from ...plan import LoopResult

    builds = {}
    for r in results:
        if r.status == "rewritten" and r.plan is not None and r.plan.modules is not None \
                and not r.plan.modules.keep:
            build = r.plan.modules.build
            if build.loop_span is not None:
                builds.setdefault(build.loop_span.line, (build, r.line))
    for i, r in enumerate(results):
        if r.line in builds:
            build, loop_line = builds[r.line]
            results[i] = LoopResult(r.line, r.col, r.end_line, "not-candidate", "L2S001",
                                    f"builds the layers of `self.{build.attr}` (Python objects, not a scan): the "
                                    f"rewrite of the loop at line {loop_line} replaces it with one stacked module")


def _submodule(mctx, cls: ast.ClassDef, attr: str, where: ast.AST) -> None:
    """``self.<attr>`` is a submodule: assigned once in the class, in ``__init__``,
    from a module class (not a method, a function or a list)."""
    if any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == attr for s in cls.body):
        raise Decline("L2S322", f"the loop calls `self.{attr}`, a method of the module: a scan step would close "
                      "over the whole module (call a submodule, or keep the loop)", where)
    builds = _assignments(cls, attr)
    init = _init(cls)
    if len(builds) != 1 or init is None or builds[0] not in init.body or \
            not isinstance(getattr(builds[0], "value", None), ast.Call) or \
            not _is_module_class(mctx, builds[0].value.func):
        raise Decline("L2S322", f"the loop calls `self.{attr}`, which is not shown to be a submodule built once "
                      "in `__init__` from an `nnx.Module` class; the scan step carries only such modules", where)


# ----------------------------------------------------------------------------- examples

_BLOCK = """\
import jax
import jax.numpy as jnp
import optax
from flax import nnx


class Block(nnx.Module):
    def __init__(self, d, *, rngs):
        self.lin = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x, mask):
        return x + jnp.tanh(self.lin(x)) * mask


"""


def nnx_decoder(build: str, body: str = "x = layer(x, mask)", after: str = "return x", init: str = "",
                header: str = "for layer in self.layers:", before: str = "",
                signature: str = "@nnx.jit\n    def __call__(self, x, mask):") -> str:
    """A module of ``Block`` and a ``Decoder`` whose ``__init__`` builds ``self.layers``
    with ``build`` (plus ``init``) and whose ``__call__`` (``signature``) runs
    ``before``, then ``body`` for each layer, then ``after``."""
    extra = f"\n        {init}" if init else ""
    first = f"{before}\n        " if before else ""
    return _BLOCK + f"""\
class Decoder(nnx.Module):
    def __init__(self, d, n, *, rngs):
        self.layers = {build}{extra}

    {signature}
        {first}{header}
            {body}
        {after}
"""


SAME_LAYERS = "nnx.List([Block(d, rngs=rngs) for _ in range(n)])"

INVALID = (
    Invalid("L2S320", "index-dependent-argument",
            nnx_decoder("nnx.List([Block(d * (i + 1), rngs=rngs) for i in range(n)])  # <-"),
            says=("layer index", "`i`"), framework="flax", header=False),
    Invalid("L2S320", "different-first-block",
            nnx_decoder("nnx.List([nnx.Linear(d, d, rngs=rngs)] + [Block(d, rngs=rngs) for _ in range(n)])  # <-"),
            says=("range(n)",), framework="flax", header=False),
    Invalid("L2S321", "len-of-the-list", nnx_decoder(SAME_LAYERS, after="return x / len(self.layers)  # <-"),
            says=("len(self.layers)",), framework="flax", header=False),
    Invalid("L2S322", "layer-attribute-read", nnx_decoder(SAME_LAYERS, body="x = layer.lin(x) * mask  # <-"),
            says=("layer.lin",), framework="flax", header=False),
    Invalid("L2S322", "shared-module-called",
            nnx_decoder(SAME_LAYERS, body="x = self.drop(layer(x, mask))  # <-", init="self.drop = nnx.Dropout(0.1, rngs=rngs)"),
            says=("self.drop", "state"), framework="flax", header=False),
    Invalid("L2S322", "numbered-layers-with-per-layer-caches",
            nnx_decoder(SAME_LAYERS, header="for i, layer in enumerate(self.layers):  # <-",
                     body='x = layer(x, mask) + self.bias[f"layer_{i}"]', init="self.bias = {}"),
            says=("enumerate(self.layers)", "per-layer"), framework="flax", header=False),
    Invalid("L2S322", "per-layer-outputs-with-the-layout-kept",
            nnx_decoder(SAME_LAYERS, header="for layer in self.layers:  # <-", before="states = []",
                        body="x = layer(x, mask)\n            states.append(x)", after="return jnp.stack(states)"),
            says=("`states`", "--layout keep", "no value"), framework="flax", header=False, layout="keep"),
    Invalid("L2S322", "cell-method-of-self", _BLOCK + """\
class Cell(nnx.Module):
    def __init__(self, d, *, rngs):
        self.lin = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, h, x):
        return jnp.tanh(self.lin(h) + x)


class RNN(nnx.Module):
    def __init__(self, d, *, rngs):
        self.cell = Cell(d, rngs=rngs)

    def squash(self, h):
        return 0.5 * h

    @nnx.jit
    def __call__(self, xs: jax.Array, h):
        for x in xs:
            h = self.squash(self.cell(h, x))  # <-
        return h
""", says=("`self.squash`", "method"), framework="flax", header=False),
    Invalid("L2S321", "slice-of-the-list",
            nnx_decoder(SAME_LAYERS, header="for layer in self.layers[1:]:  # <-"),
            says=("self.layers[1:]", "part of the layer list"), framework="flax", header=False),
)

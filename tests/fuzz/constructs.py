"""Constructs of the real-code failure classes, inserted into the grammar's
program shapes.

Each class of :data:`DECLINE_CLASSES` is a function ``(chooser, target, ctx)
-> Snippet`` that builds one construct, in one of several variants, for one
loop of a generated program (the outer loop or the inner one): what it adds
to that loop's body, before the outer loop, to module level, to the
signature and to the returned values (:class:`fuzz.program.Snippet`).  Every
construct makes the program ``must-decline``: a scan of the loop it sits in
would compute something else, or raise, where the Python loop runs.  The
reason is given with each class.  :func:`stateful_pure` builds the
must-rewrite counterpart of the stateful class (calls whose scan is exact).

Sequences a construct iterates are either a new loop the construct brings
(the "own" placement: ``for e in seq:`` inside the target's body; only that
loop must stay a loop, the loops around it may become scans, unrolling it per
step) or a second sequence zipped into the outer loop (the "zip" placement:
``for x, e in zip(xs, seq):``; the outer loop must stay a loop).  The
sequences come from a parameter (the harness passes the value), a local
literal, or a module constant, with ``T`` items when zipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fuzz.program import B, H, ArgSpec, Mark, Snippet, Target


@dataclass
class Ctx:
    """What the constructs need to know about the program around the target."""

    steps: int  # T
    zip_ok: bool  # the outer loop iterates xs along axis 0 and may zip one more sequence
    xp: str  # the per-step input projected to (B, H): valid in both loop bodies
    outer_index: Optional[str]  # the outer loop's index, if it runs over positions 0..T-1


# ----------------------------------------------------------------------------- shared pieces

def _place(c, t: Target, ctx: Ctx) -> str:
    """"own" (a loop of the construct's own) or "zip" (zipped into the outer loop)."""
    if t.which == "outer" and ctx.zip_ok:
        return c.pick(["own", "zip"])
    return "own"


def _length(c, ctx: Ctx, placement: str) -> int:
    return ctx.steps if placement == "zip" else c.pick([1, 2, 3])


def _sequence(c, name: str, items: list[str], placement: str) -> tuple[str, list[str], str, list[ArgSpec], str]:
    """Where the sequence ``items`` comes from: ``(expression, pre, module,
    args, source)`` for a parameter (the harness passes a list), a local
    literal or a module constant (tuples)."""
    source = c.pick(["param", "local", "module"])
    if source == "param":
        return name, [], "", [ArgSpec(name, kind="python", value="[" + ", ".join(items) + "]")], source
    tup = "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if source == "local":
        return name, [f"{name} = {tup}"], "", [], source
    const = name.upper()
    return const, [], f"\n{const} = {tup}\n", [], source


def _loop_over(elem: str, seq: str, body: list[str]) -> list[str]:
    return [Mark(f"for {elem} in {seq}:")] + ["    " + line for line in body]


def _insert(snippet: Snippet, placement: str, elem: str, seq: str, body: list[str]) -> Snippet:
    """Put ``body`` (which reads ``elem``) in the construct's own loop over
    ``seq``, or, zipped into the outer loop, straight into the target body."""
    snippet.tags.append(f"{snippet.name.split(':')[0]}:placement:{placement}")
    if placement == "zip":
        snippet.stmt = body
        snippet.zip_seq, snippet.zip_elem = seq, elem
    else:
        snippet.stmt = _loop_over(elem, seq, body)
    return snippet


def _helper(name: str, params: str, *body: str) -> str:
    return f"\n\ndef {name}({params}):\n" + "".join(f"    {line}\n" for line in body)


# ----------------------------------------------------------------------------- 1. non-numeric elements

OBJECT_STYLES = ("dataclass", "plain", "namespace", "namedtuple")


def non_numeric(c, t: Target, ctx: Ctx) -> Snippet:
    """Loops over sequences whose elements are not arrays.  A scan stacks the
    sequence with ``jnp.asarray``: strings, objects (not array pytrees),
    indexers holding slices, ``None`` and per-layer dicts do not survive it,
    and numbers of mixed types become one float dtype (an ``int`` used as an
    index becomes a float)."""
    variant = c.pick(["strings", "objects", "indexers", "optional-masks", "opaque-dicts", "mixed-numbers"])
    cv = t.carry
    if variant == "optional-masks":
        return _optional_masks(c, t, ctx)
    if variant == "mixed-numbers":
        placement = _place(c, t, ctx)
        n = _length(c, ctx, placement)
        pairs = [c.pick(["(1, 0.5)", "(2, 1.5)", "(0, 2.0)", "(3, -0.5)"]) for _ in range(n)]
        seq, pre, module, args, source = _sequence(c, "coords", pairs, placement)
        unpack = c.flag(0.5)  # `for k, w in coords` rather than `for co in coords: k, w = co`
        elem = "(k, w)" if unpack and placement == "zip" else ("k, w" if unpack else "co")
        body = ([] if unpack else ["k, w = co"]) + [f"{cv} = {cv} + w * jnp.sum({cv}[..., k])"]
        snip = Snippet("non-numeric:mixed-numbers", [], pre, module, args,
                       tags=[f"non-numeric:source:{source}",
                             f"non-numeric:mixed-numbers:{'unpack' if unpack else 'index'}"])
        return _insert(snip, placement, elem, seq, body)

    placement = _place(c, t, ctx)
    n = _length(c, ctx, placement)
    if variant == "strings":
        items = [c.pick(['"wa"', '"wb"']) for _ in range(n)]
        seq, pre, module, args, source = _sequence(c, "names", items, placement)
        if c.flag(0.5):
            pre.append('table = {"wa": wh, "wb": 0.5 * wh}')
            body = [f"{cv} = jnp.tanh({cv} @ table[name])"]
        else:
            module += '\nGAIN = {"wa": 0.5, "wb": -0.25}\n'
            body = [f"{cv} = {cv} * GAIN[name]"]
        snip = Snippet("non-numeric:strings", [], pre, module, args, tags=[f"non-numeric:source:{source}"])
        return _insert(snip, placement, "name", seq, body)
    if variant == "objects":
        style = c.pick(OBJECT_STYLES)
        values = [c.pick(["(0.5, 0.1)", "(0.9, -0.2)", "(1.1, 0.0)"]) for _ in range(n)]
        if style == "namedtuple":
            # a NamedTuple is a pytree: its str field keeps it from being an array pytree
            module = ("\n\nclass Cfg(typing.NamedTuple):\n    name: str\n    scale: float\n")
            items = ["Cfg({}, {})".format(c.pick(['"wa"', '"wb"']), v[1:-1].split(",")[0]) for v in values]
            pre = ['table = {"wa": wh, "wb": 0.5 * wh}']
            body = [f"{cv} = jnp.tanh({cv} @ table[cfg.name]) * cfg.scale"]
        else:
            if style == "dataclass":
                module = "\n\n@dataclasses.dataclass(frozen=True)\nclass Cfg:\n    scale: float\n    shift: float\n"
            elif style == "plain":
                module = ("\n\nclass Cfg:\n    def __init__(self, scale, shift):\n        self.scale = scale\n"
                          "        self.shift = shift\n")
            else:
                module = ""
            items = [f"Cfg{v}" if style != "namespace" else
                     "types.SimpleNamespace(scale={}, shift={})".format(*v[1:-1].split(", ")) for v in values]
            pre = []
            use = c.pick(["attributes", "getattr", "helper"])
            if use == "attributes":
                body = [f"{cv} = {cv} * cfg.scale + cfg.shift"]
            elif use == "getattr":
                body = [f'{cv} = {cv} * getattr(cfg, "scale") + 0.1']
            else:
                module += _helper("rescale", "a, cfg", "return a * cfg.scale + cfg.shift")
                body = [f"{cv} = rescale({cv}, cfg)"]
            style += f"-{use}"
        seq, pre2, module2, args, source = _sequence(c, "cfgs", items, placement)
        snip = Snippet("non-numeric:objects", [], pre + pre2, module + module2, args,
                       tags=[f"non-numeric:objects:{style}", f"non-numeric:objects:{source}"])
        return _insert(snip, placement, "cfg", seq, body)
    if variant == "indexers":
        items = [c.pick(["np.s_[..., 0:2]", "(Ellipsis, slice(1, 3))", "slice(0, 1)", "(slice(1, None), Ellipsis)"])
                 for _ in range(n)]
        seq, pre, module, args, source = _sequence(c, "windows", items, placement)
        if c.flag(0.5):
            body = [f"{cv} = {cv} + 0.1 * jnp.sum({cv}[ix])"]
        else:
            module += _helper("window_sum", "a, ix", "return jnp.sum(a[ix])")
            body = [f"{cv} = {cv} + 0.1 * window_sum({cv}, ix)"]
        snip = Snippet("non-numeric:indexers", [], pre, module, args, tags=[f"non-numeric:source:{source}"])
        return _insert(snip, placement, "ix", seq, body)
    # opaque-dicts: per-layer dicts handed to a helper whose source is not visible
    value = f'[{{"w": rand({H}, {H}) * 0.3, "b": rand({H}) * 0.1}} for _ in range({n})]'
    helper = c.pick(["dense", "gated"])
    body = [f"{cv} = jnp.tanh({helper}(p, {cv}))"]
    snip = Snippet("non-numeric:opaque-dicts", [], [], "",
                   [ArgSpec("params", kind="python", value=value)], imports=(f"from fuzz.opaque import {helper}",))
    return _insert(snip, placement, "p", "params", body)


def _optional_masks(c, t: Target, ctx: Ctx) -> Snippet:
    """A mask list that may be ``None`` (the parameter's default, which the
    harness keeps): read by the loop index under ``if masks is not None`` (a
    scan would read ``masks`` as per-step inputs, ``jnp.asarray(None)``), or
    replaced by ``[None] * n`` and iterated (``None`` elements: nothing to
    stack)."""
    cv = t.carry
    if t.which == "outer" and ctx.outer_index is not None and c.flag(0.5):
        stmt = ["if masks is not None:", f"    {cv} = {cv} * masks[{ctx.outer_index}]"]
        return Snippet("non-numeric:optional-masks", stmt, args=[ArgSpec("masks", kind="omitted", value="None")],
                       tags=["non-numeric:optional-masks:index"])
    placement = _place(c, t, ctx)
    n = "len(xs)" if placement == "zip" else str(c.pick([1, 2, 3]))
    pre = ["if masks is None:", f"    masks = [None] * {n}"]
    helper = c.flag(0.5)
    if helper:
        module = _helper("apply_mask", "a, m", "return a if m is None else a * m")
        body = [f"{cv} = apply_mask({cv}, m)"]
    else:
        module = ""
        body = ["if m is not None:", f"    {cv} = {cv} * m"]
    snip = Snippet("non-numeric:optional-masks", [], pre, module, [ArgSpec("masks", kind="omitted", value="None")],
                   tags=[f"non-numeric:optional-masks:{'helper' if helper else 'if'}"])
    return _insert(snip, placement, "m", "masks", body)


# ----------------------------------------------------------------------------- 2. static uses

# what a per-step value must be for each use, as element values (index values are mapped into range)
STATIC_USES = ("axis-kw", "axis-pos", "axis-name", "size", "shape", "fstring-key", "slice", "dict-key")
_ELEMENT_VALUES = {"axis-kw": ("0", "-1"), "axis-pos": ("0", "-1"), "axis-name": ('"i"', '"j"'),
                   "size": ("1", "2", "4"), "shape": ("1", "2", "3"), "fstring-key": ("0", "1"),
                   "slice": ("1", "2", "3"), "dict-key": ("0", "1")}


def static_use(c, t: Target, ctx: Ctx) -> Snippet:
    """The loop index, or an element of a sequence of Python values, used where
    JAX needs a Python value: an axis or axis name (by position or keyword), a
    ``size=``, a shape, a string key, a slice bound (ragged values), a dict
    key; directly, or through a helper function of the module that uses its
    parameter that way.  Inside a scan the value is a traced array, and each
    of these raises."""
    source = "index" if t.index is not None and c.flag(0.6) else "element"
    uses = [u for u in STATIC_USES if source == "element" or u != "axis-name"]
    use = c.pick(uses)
    channel = c.pick(["direct", "helper"])
    cv = t.carry
    if source == "index":
        v = t.index
        placement = None
    else:
        v = "a"
        placement = _place(c, t, ctx)
    ranged = {"axis-kw": f"{v} % {cv}.ndim", "axis-pos": f"{v} % {cv}.ndim", "size": f"{v} + 1",
              "shape": f"{v} + 1", "fstring-key": f"{v} % 2", "slice": f"{v} % 3 + 1", "dict-key": f"{v} % 2",
              "axis-name": v}[use] if source == "index" else v
    pre: list[str] = []
    module = ""
    form = "direct"
    if use == "axis-kw":
        if channel == "direct":
            body = [f"{cv} = {cv} + 0.1 * jnp.sum({cv}, axis={ranged}, keepdims=True)"]
        else:
            form = c.pick(["kw", "kw-expr", "method"])
            ret = {"kw": "jnp.sum(a, axis=k, keepdims=True)", "kw-expr": "jnp.sum(a, axis=k % a.ndim, keepdims=True)",
                   "method": "a.sum(axis=k, keepdims=True)"}[form]
            module = _helper("reduce_axis", "a, k", f"return {ret}")
            arg = v if form == "kw-expr" else ranged
            body = [f"{cv} = {cv} + 0.1 * reduce_axis({cv}, {arg})"]
    elif use == "axis-pos":
        if channel == "direct":
            fn = c.pick(["jnp.cumsum", "jnp.flip"])
            body = [f"{cv} = {cv} * 0.5 + 0.1 * {fn}({cv}, {ranged})"]
        else:
            form = c.pick(["positional", "method"])
            ret = {"positional": "jnp.flip(a, k)", "method": "a.mean(k, keepdims=True)"}[form]
            module = _helper("along", "a, k", f"return {ret}")
            body = [f"{cv} = {cv} * 0.5 + 0.1 * along({cv}, {ranged})"]
    elif use == "axis-name":
        if channel == "direct":
            form = c.pick(["keyword", "positional"])
            red = f"jax.lax.psum(u, axis_name={v})" if form == "keyword" else f"jax.lax.pmean(u, {v})"
            body = [f"{cv} = {cv} * 0.5 + 0.1 * jax.vmap(lambda u: {red}, axis_name={v})({cv})"]
        else:
            module = _helper("psum_over", "a, name",
                             "return jax.vmap(lambda u: jax.lax.psum(u, name), axis_name=name)(a)")
            body = [f"{cv} = {cv} * 0.5 + 0.1 * psum_over({cv}, {v})"]
    elif use == "size":
        if channel == "direct":
            fn = c.pick(["nonzero", "argwhere"])
            expr = (f"jnp.nonzero({cv} > 0, size={ranged})[0]" if fn == "nonzero"
                    else f"jnp.argwhere({cv} > 0, size={ranged})")
            body = [f"{cv} = {cv} + 0.01 * jnp.sum({expr})"]
        else:
            form = c.pick(["kw", "kw-expr"])
            size = "k + 1" if form == "kw-expr" else "k"
            module = _helper("hits", "a, k", f"return jnp.sum(jnp.nonzero(a > 0, size={size})[0])")
            body = [f"{cv} = {cv} + 0.01 * hits({cv}, {v if form == 'kw-expr' else ranged})"]
    elif use == "shape":
        if channel == "direct":
            expr = c.pick([f"jnp.ones({ranged})", f"jnp.arange({ranged})", f"jnp.zeros(({ranged}, 2)) + 1.0"])
            body = [f"{cv} = {cv} + 0.01 * jnp.sum({expr})"]
        else:
            form = c.pick(["arange", "tuple", "expr"])
            ret = {"arange": "jnp.sum(jnp.arange(k))", "tuple": "jnp.sum(jnp.ones((k, 2)))",
                   "expr": "jnp.sum(jnp.ones(k + 1))"}[form]
            module = _helper("ramp", "k", f"return {ret}")
            body = [f"{cv} = {cv} + 0.01 * ramp({v if form == 'expr' else ranged})"]
    elif use == "fstring-key":
        pre.append('table = {"w0": wh, "w1": 0.5 * wh}')
        if channel == "direct":
            if c.flag(0.5):
                body = [f'{cv} = jnp.tanh({cv} @ table[f"w{{{ranged}}}"])']
            else:
                form = "named"
                body = [f'key = f"w{{{ranged}}}"', f"{cv} = jnp.tanh({cv} @ table[key])"]
        else:
            form = c.pick(["fstring", "fstring-expr"])
            key = 'f"w{k}"' if form == "fstring" else 'f"w{k % 2}"'
            module = _helper("pick_weight", "tab, k", f"return tab[{key}]")
            body = [f"{cv} = jnp.tanh({cv} @ pick_weight(table, {ranged if form == 'fstring' else v}))"]
    elif use == "slice":
        if channel == "direct":
            expr = c.pick([f"{cv}[..., :{ranged}]", f"{cv}[:{ranged}]"])
            body = [f"{cv} = {cv} + 0.1 * jnp.sum({expr})"]
        else:
            form = c.pick(["bound", "bound-expr"])
            bound = "k + 1" if form == "bound-expr" else "k"
            module = _helper("prefix", "a, k", f"return jnp.sum(a[..., :{bound}])")
            body = [f"{cv} = {cv} + 0.1 * prefix({cv}, {v if form == 'bound-expr' else ranged})"]
    else:  # dict-key
        if c.flag(0.5):
            pre.append("lookup = {0: wh, 1: 0.5 * wh}")
            if channel == "direct":
                body = [f"{cv} = jnp.tanh({cv} @ lookup[{ranged}])"]
            else:
                module = _helper("pick_weight", "tab, k", "return tab[k]")
                body = [f"{cv} = jnp.tanh({cv} @ pick_weight(lookup, {ranged}))"]
        else:
            module = "\nGAINS = {0: 0.5, 1: -0.25}\n"
            if channel == "direct":
                body = [f"{cv} = {cv} * GAINS[{ranged}]"]
            else:
                form = c.pick(["key", "key-expr"])
                module += _helper("gain", "k", "return GAINS[k % 2]" if form == "key-expr" else "return GAINS[k]")
                body = [f"{cv} = {cv} * gain({v if form == 'key-expr' else ranged})"]
    tags = [f"static-use:{source}", f"static-use:{channel}", f"static-use:{use}:{source}:{channel}"]
    if form != "direct":
        tags.append(f"static-use:{use}:{channel}:{form}")
    snip = Snippet(f"static-use:{use}", body, pre, module, tags=tags)
    if source == "index":
        return snip
    n = _length(c, ctx, placement)
    items = [c.pick(_ELEMENT_VALUES[use]) for _ in range(n)]
    seq, pre2, module2, args, src = _sequence(c, {"axis-name": "axis_names"}.get(use, "statics"), items, placement)
    snip.tags.append(f"static-use:source:{src}")
    snip.pre += pre2
    snip.module += module2
    snip.args += args
    return _insert(snip, placement, "a", seq, body)


# ----------------------------------------------------------------------------- 3. boolean masks

def bool_mask(c, t: Target, ctx: Ctx) -> Snippet:
    """Rows selected with a boolean mask computed from the loop index (or an
    element): ``R[species == i]``.  The selection's shape depends on the data,
    which a scan cannot trace (``NonConcreteBooleanIndexError``): not the
    loop over the index, nor any loop around it (inside a scan step even a
    mask of closed-over arrays and a Python int is traced)."""
    cv = t.carry
    source = "index" if t.index is not None and c.flag(0.7) else "element"
    v = t.index if source == "index" else "kind"
    k = f"{v} % 3" if source == "index" else v
    rows = c.pick([r for r in (t.rows, ctx.xp) if r is not None])
    form = c.pick(["eq", "eq-reversed", "named", "and", "helper", "at-get", "nonzero", "where", "compress"])
    module = ""
    sel = {"eq": f"{rows}[species == {k}]", "eq-reversed": f"{rows}[{k} == species]", "named": f"{rows}[sel]",
           "and": f"{rows}[(species == {k}) & (species >= 0)]", "helper": f"part({rows}, species, {k})",
           "at-get": f"{rows}.at[species == {k}].get()", "nonzero": f"{rows}[jnp.nonzero(species == {k})[0]]",
           "where": f"{rows}[jnp.where(species == {k})[0]]",
           "compress": f"jnp.compress(species == {k}, {rows}, axis=0)"}[form]
    body = [f"{cv} = {cv} + 0.1 * jnp.sum({sel})"]
    if form == "named":
        body.insert(0, f"sel = species == {k}")
    if form == "helper":
        module = _helper("part", "a, sp, k", "return a[sp == k]")
    args = [ArgSpec("species", (3,), dtype="int32", kind="ints", high=3)]
    snip = Snippet(f"bool-mask:{form}", body, [], module, args, tags=[f"bool-mask:{source}"], untraceable=True)
    if source == "index":
        return snip
    placement = _place(c, t, ctx)
    n = _length(c, ctx, placement)
    items = [c.pick(["0", "1", "2"]) for _ in range(n)]
    seq, pre, module2, args2, src = _sequence(c, "kinds", items, placement)
    snip.tags.append(f"bool-mask:source:{src}")
    snip.pre += pre
    snip.module += module2
    snip.args += args2
    return _insert(snip, placement, "kind", seq, body)


# ----------------------------------------------------------------------------- 5. dtype-unstable carries

def dtype_carry(c, t: Target, ctx: Ctx) -> Snippet:
    """A carry whose dtype changes in the first step: an int32 accumulator
    updated with floats, a bfloat16 state updated with float32 values (the
    float32 visible in the code), or a state in one named dtype meeting a
    value in another (called with bfloat16 and float32).  A scan's carry
    keeps one dtype and raises."""
    cv, shape = t.carry, t.carry_shape
    variant = c.pick(["int-accumulator", "bfloat16-state", "two-dtype-sources"])
    returns: list[str] = []
    args: list[ArgSpec] = []
    tags: list[str] = []
    module = ""
    if variant == "int-accumulator":
        init = c.pick([f"jnp.zeros({shape}, dtype=jnp.int32)", f"jnp.zeros({shape}, jnp.int32)",
                       f"jnp.full({shape}, 0, jnp.int32)", f"jnp.full({shape}, 1, dtype=jnp.int32)",
                       f"jnp.zeros({shape}).astype(jnp.int32)", f'jnp.zeros({shape}, "int32")'])
        update = c.pick([f"cnt = cnt + jnp.tanh({cv})", f"cnt = cnt + {cv} * 0.5", f"cnt += jnp.mean({cv})",
                         "cnt = cnt + 0.5", f"cnt = cnt + jnp.sum({cv}) / 2"])
        pre, stmt, name = [f"cnt = {init}"], [update], "cnt"
    elif variant == "bfloat16-state":
        inits = [f"jnp.zeros({shape}, jnp.bfloat16)", f"jnp.zeros({shape}, dtype=jnp.bfloat16)",
                 f'jnp.ones({shape}, "bfloat16")']
        if t.which == "outer":
            inits += [f"{cv}.astype(jnp.bfloat16)", f"jnp.asarray({cv}, jnp.bfloat16)"]
        update = c.pick([f"s16 = s16 * 0.5 + jnp.tanh({cv}).astype(jnp.float32)",
                         f"s16 = s16 * 0.5 + jnp.asarray({cv}, jnp.float32)",
                         f"s16 = jnp.tanh(s16 + jnp.ones({shape}, jnp.float32))",
                         f's16 = s16 * 0.5 + jnp.sin({cv}.astype("float32"))'])
        pre, stmt, name = [f"s16 = {c.pick(inits)}"], [update], "s16"
    else:
        source = c.pick(["params", "module", "config"])
        if source == "params":
            pd, d = "param_dtype", "dtype"
            args = [ArgSpec("param_dtype", kind="python", value="jnp.bfloat16"),
                    ArgSpec("dtype", kind="python", value="jnp.float32")]
        elif source == "module":
            pd, d = "PARAM_DTYPE", "DTYPE"
            module = "\nPARAM_DTYPE = jnp.bfloat16\nDTYPE = jnp.float32\n"
        else:
            pd, d = "cfg.param_dtype", "cfg.dtype"
            args = [ArgSpec("cfg", kind="python",
                            value="types.SimpleNamespace(param_dtype=jnp.bfloat16, dtype=jnp.float32)")]
        init = c.pick([f"jnp.ones({shape}, {pd})", f"jnp.zeros({shape}, dtype={pd})"])
        pre = [f"lowp = {init}"]
        if c.flag(0.5):
            pre.append(f"wd = wh.astype({d})")
            stmt = ["lowp = jnp.tanh(lowp @ wd)"]
        else:
            stmt = [c.pick([f"lowp = lowp * 0.5 + jnp.asarray({cv}, {d})",
                            f"lowp = jnp.tanh(lowp + {cv}.astype({d}))"])]
        name = "lowp"
        tags.append(f"dtype-carry:{variant}:{source}")
    returns.append(name)
    return Snippet(f"dtype-carry:{variant}", stmt, pre, module, args, returns, escapes=True, tags=tags)


# ----------------------------------------------------------------------------- 6. growing list carries

def growing_list(c, t: Target, ctx: Ctx) -> Snippet:
    """A list carried from step to step that grows (``acc = acc + [g]``,
    ``acc += [g]``, ``acc = [*acc, g]``), starting with items or read in the
    loop, so that it is no per-step output: a scan carry keeps one
    structure and raises."""
    cv, shape = t.carry, t.carry_shape
    inits = [f"hist = [jnp.zeros({shape})]", "hist = list(init)", "hist = []"]
    if t.which == "outer":
        inits.append(f"hist = [{cv}]")
    init = c.pick(inits)
    args = []
    if init == "hist = list(init)":
        args.append(ArgSpec("init", (2, B, H) if t.ndim == 2 else (2, H), kind="list"))
    growth = c.pick(["hist = hist + [{g}]", "hist += [{g}]", "hist = [*hist, {g}]"])
    g = c.pick([cv, f"{cv} * 0.5"])
    reads = [None, f"{cv} = {cv} * (1.0 - 0.01 * len(hist))"]
    if init != "hist = []":
        reads.append(f"{cv} = {cv} + 0.1 * hist[-1]")
    read = c.pick(reads[1:] if init == "hist = []" else reads)
    stmt = ([read] if read else []) + [growth.format(g=g)]
    # what reads the list after the loop (an empty start may stay empty: zero steps)
    after = c.pick(["len(hist)", "sum(hist)"] if init == "hist = []" else
                   ["jnp.stack(hist)", "hist[-1]", "len(hist)", "jnp.concatenate(hist)", "sum(hist)"])
    kind = {"hist = hist + [{g}]": "concat", "hist += [{g}]": "iadd", "hist = [*hist, {g}]": "star"}[growth]
    start = "empty" if init == "hist = []" else ("param" if init == "hist = list(init)" else "items")
    return Snippet(f"growing-list:{kind}", stmt, [init], "", args, [after], escapes=True,
                   tags=[f"growing-list:start:{start}", f"growing-list:read:{'yes' if read else 'no'}",
                         f"growing-list:after:{after.split('(')[0]}"])


# ----------------------------------------------------------------------------- 9. stateful objects

COUNTER = """

class Counter(nnx.Module):
    def __init__(self):
        self.count = nnx.Variable(jnp.zeros(()))

    def __call__(self, a):
        self.count[...] = self.count[...] + 1.0
        return a * (1.0 / self.count[...])
"""


def stateful(c, t: Target, ctx: Ctx) -> Snippet:
    """NNX objects whose calls change their state, called in the loop: a
    dropout layer or an ``Rngs`` stream (RNG counts), batch norm in training
    (batch statistics), a layer built in the loop from one ``Rngs`` (a new
    key per step), a module counting its calls, a module passed in
    (annotated ``nnx.Module``).  Under a scan the state would change once, at
    trace time; NNX raises (``TraceContextError``)."""
    cv = t.carry
    variants = ["dropout", "rngs-stream", "linear-in-loop", "counter", "module-param"]
    if t.ndim == 2:
        variants.append("batchnorm")
    variant = c.pick(variants)
    pre: list[str] = []
    module = ""
    args: list[ArgSpec] = []
    returns: list[str] = []
    tags: list[str] = []
    seed = c.pick([0, 1])
    if variant == "dropout":
        pre.append(f"drop = nnx.Dropout(0.5, rngs=nnx.Rngs({seed}))")
        stmt = [f"{cv} = drop({cv})"]
    elif variant == "rngs-stream":
        pre.append(f"rngs = nnx.Rngs({seed})")
        draw = c.pick(["rngs.noise()", "rngs()", "rngs.params()"])
        stmt = [f"{cv} = {cv} + 0.1 * jax.random.normal({draw}, {cv}.shape)"]
    elif variant == "linear-in-loop":
        pre.append(f"rngs = nnx.Rngs({seed})")
        stmt = [f"{cv} = jnp.tanh(nnx.Linear(wx.shape[1], wx.shape[1], rngs=rngs)({cv}))"]
    elif variant == "counter":
        module = COUNTER
        pre.append("m = Counter()")
        stmt = [f"{cv} = m({cv})"]
    elif variant == "module-param":
        value = c.pick([f"nnx.Dropout(0.5, rngs=nnx.Rngs({seed}))", "Counter()"])
        module = COUNTER if value == "Counter()" else ""
        args.append(ArgSpec("model", kind="python", value=value, annotation="nnx.Module"))
        stmt = [f"{cv} = model({cv})"]
        tags = [f"stateful:module-param:{'counter' if value == 'Counter()' else 'dropout'}"]
    else:
        pre.append("bn = nnx.BatchNorm(wx.shape[1], use_running_average=False, rngs=nnx.Rngs(0))")
        stmt = [f"{cv} = bn({cv})"]
        if c.flag(0.5):
            returns.append("bn.mean[...]")
    return Snippet(f"stateful:{variant}", stmt, pre, module, args, returns, escapes=True,
                   imports=("from flax import nnx",), tags=tags)


def stateful_pure(c, t: Target, ctx: Ctx) -> Snippet:
    """The must-rewrite counterpart: an ``nnx.Linear`` built before the loop
    and only called (its parameters are read, nothing changes), and mutable
    references read or updated in the loop (``jax.new_ref``; a scan orders
    the reference's effects step by step, as the loop does).  A scan of
    these is exact (checked by the harness)."""
    cv, shape = t.carry, t.carry_shape
    variant = c.pick(["linear-called", "ref-read", "ref-addupdate"])
    returns: list[str] = []
    if variant == "linear-called":
        pre = ["dense = nnx.Linear(wx.shape[1], wx.shape[1], rngs=nnx.Rngs(0))"]
        stmt = [f"{cv} = jnp.tanh(dense({cv}))"]
    elif variant == "ref-read":
        pre = [f"offset = jax.new_ref(jnp.full({shape}, 0.1))"]
        stmt = [f"{cv} = {cv} + offset[...]"]
    else:
        pre = [f"acc_ref = jax.new_ref(jnp.zeros({shape}))"]
        stmt = [f"jax.ref.addupdate(acc_ref, ..., {cv})"]
        returns.append("acc_ref[...]")
    return Snippet(f"stateful-pure:{variant}", stmt, pre, "", [], returns, escapes=True,
                   imports=("from flax import nnx",) if variant == "linear-called" else ())


#: The must-decline classes built here, by name.
DECLINE_CLASSES = {
    "non-numeric": non_numeric,
    "static-use": static_use,
    "bool-mask": bool_mask,
    "dtype-carry": dtype_carry,
    "growing-list": growing_list,
    "stateful": stateful,
}

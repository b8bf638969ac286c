"""The table of loop2scan codes.

Every loop the tool looks at ends with one code: ``L2S000`` when it is rewritten,
``L2S001``/``L2S002`` when it is not a candidate or skipped, and one decline code
otherwise.  Codes are stable: new ones are added, existing ones never change
meaning.  ``docs/codes.md`` is generated from this table (see
``tests/test_docs.py``), so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    name: str  # short kebab-case slug, used as the SARIF rule name
    title: str  # one line, what the rule is about
    fix: str  # what the user can do about it


_CODES = [
    Code("L2S000", "scan-rewrite", "loop rewritten as a scan", "Review the diff; `--write` applies it."),
    Code("L2S001", "not-a-candidate", "not an array loop",
         "Nothing to do: the loop computes Python values (shapes, names, config), which must stay a loop."),
    Code("L2S002", "skipped", "skipped by a `# loop2scan: skip` comment",
         "Remove the comment to let loop2scan rewrite the loop."),
    # structure
    Code("L2S010", "async-for", "`async for` loop", "An asynchronous loop cannot become a scan."),
    Code("L2S011", "not-in-function", "loop outside a function",
         "Move the loop into a function: the scan step is defined next to the loop, in a function body."),
    Code("L2S012", "for-else", "`for ... else`", "Move the `else` block after the loop (it always runs when there is no `break`)."),
    Code("L2S013", "unsupported-target", "loop target is not a name or a tuple of names",
         "Iterate into plain names (`for x in xs:`), then assign attributes or items inside the body."),
    Code("L2S014", "dynamic-scope", "the function uses `locals()`, `vars()`, `eval`, `exec` or zero-argument `super()`",
         "These see the function's own frame, which a scan step would change; rewrite by hand."),
    # control flow in the body
    Code("L2S101", "break", "`break` in the loop body",
         "A scan always runs every step: compute the stopping step and mask with `jnp.where`, or use `jax.lax.while_loop`."),
    Code("L2S102", "continue", "`continue` in the loop body",
         "Replace the skipped part with `jnp.where(condition, new, old)` so every step runs the same code."),
    Code("L2S103", "return", "`return` in the loop body", "Return after the loop; a scan step cannot leave the enclosing function."),
    Code("L2S104", "yield", "`yield` in the loop body", "A generator loop cannot become a scan."),
    Code("L2S105", "await", "`await` in the loop body", "An asynchronous loop body cannot become a scan."),
    Code("L2S106", "global-nonlocal", "`global`/`nonlocal` declaration in or around the loop",
         "A scan step cannot rebind the enclosing scope's names; return the values instead."),
    Code("L2S107", "del", "`del` in the loop body", "Drop the `del`: names local to a step are freed when the step ends."),
    Code("L2S108", "try", "`try` in the loop body", "Exceptions cannot be caught per step inside a scan; handle them around the loop."),
    Code("L2S109", "data-dependent-branch", "Python control flow depends on a per-step value",
         "Inside a scan the per-step values are traced arrays: use `jnp.where` / `jax.lax.cond` instead of `if`, `while`, `and`/`or` or a conditional expression."),
    Code("L2S110", "with", "`with` statement in the loop body",
         "Only known pure context managers (such as `jax.named_scope`) may run once per traced step."),
    Code("L2S111", "class-def", "class definition or `match` statement in the loop body",
         "Move it out of the loop."),
    Code("L2S112", "raise", "`raise` in the loop body",
         "A scan step cannot stop the loop with an exception: check the condition before or after the loop "
         "(or use `checkify`)."),
    # side effects
    Code("L2S201", "host-side-effect", "host side effect in the loop body (printing, logging, I/O, Python randomness, progress bars)",
         "A scan traces the body once, so the effect would happen once instead of every step: use `jax.debug.print`/`jax.debug.callback`, or move it out of the loop."),
    Code("L2S202", "host-conversion", "a per-step value is converted to a Python or NumPy value",
         "`.item()`, `float()`, `int()`, `bool()`, `.tolist()` and `np.*` need concrete values; keep the computation in `jnp`."),
    Code("L2S203", "attribute-write", "an attribute is assigned in the loop body",
         "Assign to a local name and set the attribute once after the loop."),
    Code("L2S204", "subscript-write", "an item is assigned in the loop body",
         "Use a functional update (`x = x.at[i].set(v)`) or collect per-step values in a list and stack them after the loop."),
    Code("L2S205", "mutation", "an object is mutated by a method call in the loop body",
         "Only `outs.append(y)` into a list that is stacked after the loop is understood; keep other state in local names."),
    Code("L2S206", "closure-capture", "a name changed by the loop is read by a function defined outside the loop",
         "That function would keep seeing the value from before the loop; pass the value as an argument instead."),
    # iteration and trip count
    Code("L2S301", "dynamic-trip-count", "the number of steps is not static",
         "Scan needs a trip count known at trace time: derive it from shapes, `len()` or Python ints, not from array values."),
    Code("L2S302", "unsupported-iterable", "the loop iterates over something that cannot be scanned",
         "Iterate over an array, `range(...)`, `zip`, `enumerate` or `reversed` of those."),
    Code("L2S303", "layer-loop", "the loop calls each element: a loop over layers or callables",
         "Layer loops need a framework target that stacks parameters (`--framework flax`, `flax-linen` or `torch_xla`)."),
    Code("L2S304", "parameter-list", "the loop iterates over a list of per-layer parameters built out of sight",
         "Build the list in a function of this module whose result is passed here (loop2scan then stacks it once, "
         "where it is built), or run with `--layout keep` to stack it inside the function on every call."),
    Code("L2S305", "target-reassigned", "the loop variable is reassigned in the loop body",
         "Use a new name for the modified value."),
    Code("L2S306", "target-used-after", "the loop variable is used after the loop",
         "Compute the last index or element explicitly after the loop."),
    Code("L2S307", "index-as-python-value", "the loop index is used as a Python value",
         "Inside a scan the index is a traced integer: it cannot size arrays, bound slices or `range`s, or index Python lists."),
    Code("L2S308", "layers-differ", "the per-layer parameters may differ in shape from layer to layer",
         "Build every layer from the same shapes (loop over `jax.random.split(key, n)` or `range(n)` used only to "
         "pick keys); layers of different widths cannot be stacked into one scan."),
    Code("L2S309", "layout-use", "the per-layer parameter list is used in a way the stacked layout would change",
         "Replace the use with a layout-independent one (`jax.tree.map` over leaves, or scan it too), or keep the "
         "list layout with `--layout keep`."),
    # carries
    Code("L2S401", "carry-unbound", "a value carried from step to step is not assigned before the loop",
         "Initialise it before the loop with a value of the same shape and dtype it has inside the loop."),
    Code("L2S402", "carry-none", "a carried value starts as `None`",
         "Initialise it with an array of the shape and dtype it has inside the loop (e.g. `jnp.zeros(...)`)."),
    Code("L2S403", "python-value-carry", "a carried value is a Python value (a number that never meets an array, "
         "a set, a dict, a string)",
         "A scan would turn it into a traced array; if it really is an array value, initialise it as one "
         "(`jnp.zeros(())`, `jnp.float32(0)`), otherwise keep the loop."),
    Code("L2S404", "carry-shape", "a carried value may change shape from step to step",
         "A scan carry keeps one shape and dtype: initialise it with the shape it has inside the loop "
         "(e.g. `jnp.zeros_like(...)`), and do not grow it (collect per-step values in a list instead)."),
    # outputs
    Code("L2S501", "list-accumulator", "a list built in the loop is used in a way a stacked array cannot replace",
         "Only `outs.append(y)` once per step, then `jnp.stack(outs)` / `jnp.array(outs)` / `jnp.concatenate(outs)` / `len(outs)` / `outs[i]` after the loop are understood."),
    Code("L2S502", "accumulator-init", "a list or tuple accumulator does not start empty just before the loop",
         "Start it as `[]` (or `()`) right before the loop and add the initial items after stacking."),
    # framework
    Code("L2S601", "framework-mismatch", "the loop uses a framework the chosen target does not handle",
         "Choose the matching `--framework`, or leave the loop as it is."),
    Code("L2S602", "framework-unavailable", "no scan target is available for this file's framework",
         "Plain PyTorch has no scan that runs eagerly on CUDA; add `torch_xla` or pass `--framework` explicitly."),
    # internal
    Code("L2S901", "internal", "internal limitation while rewriting",
         "Please report this loop; it is left unchanged."),
]

CODES: dict[str, Code] = {c.code: c for c in _CODES}

REWRITTEN = "L2S000"
NOT_CANDIDATE = "L2S001"
SKIPPED = "L2S002"


def code_table_markdown() -> str:
    """The documentation table of all codes (``docs/codes.md`` embeds it)."""
    lines = ["| code | name | meaning | what to do |", "|---|---|---|---|"]
    for c in _CODES:
        lines.append(f"| `{c.code}` | {c.name} | {c.title} | {c.fix} |")
    return "\n".join(lines) + "\n"

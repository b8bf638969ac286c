"""The data the grammar produces and the harness consumes: labelled programs,
the arguments to call them with, and the pieces a construct adds to one.

Kept apart from :mod:`fuzz.grammar` so that the construct modules
(:mod:`fuzz.constructs`, :mod:`fuzz.packages`) can build programs without
importing the grammar that drives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

MUST_REWRITE = "must-rewrite"
MUST_DECLINE = "must-decline"

# batch, input and hidden sizes: fixed, so that JAX's per-shape caches of eager
# operations are shared by all programs (compiles are the fuzzer's cost), and
# different from each other and from every T
B, D, H = 3, 4, 6

#: The argument kinds :func:`fuzz.harness.make_args` can build.
ARG_KINDS = ("array", "list", "numpy", "ints", "key", "python", "omitted")


@dataclass(frozen=True)
class ArgSpec:
    """One parameter of the program's function and the value it is called with.

    ``kind``:

    ``array``
        a JAX array of ``shape`` and ``dtype`` (normal values times ``scale``);
    ``list``
        a Python list of JAX arrays: ``shape`` is (number of items,) + the
        shape of each;
    ``numpy``
        a NumPy array (host code);
    ``ints``
        a JAX int32 array with values in ``0 .. high - 1`` (labels, species);
    ``key``
        a JAX PRNG key (``jax.random.PRNGKey(seed)``);
    ``python``
        the value of the Python expression ``value``, evaluated in the
        program's own module (so it may build objects of the module's
        classes), with ``rand(*shape)`` giving seeded random float32 arrays;
    ``omitted``
        not passed: the parameter keeps its default, ``value`` (source text).

    Parameters with a default (``omitted``, or ``python`` with ``default``
    set) come last in the signature.
    """

    name: str
    shape: tuple[int, ...] = ()
    dtype: str = "float32"
    scale: float = 1.0  # standard deviation of the random values
    kind: str = "array"
    value: str = ""  # "python": the expression; "omitted": the default's source
    high: int = 0  # "ints": values in 0 .. high - 1
    default: str = ""  # source of a default value in the signature ("" = none)
    annotation: str = ""  # source of an annotation in the signature ("" = none)

    def signature(self) -> str:
        text = self.name + (f": {self.annotation}" if self.annotation else "")
        default = self.value if self.kind == "omitted" else self.default
        if default:
            text += f" = {default}" if self.annotation else f"={default}"
        return text

    @property
    def passed(self) -> bool:
        return self.kind != "omitted"

    @property
    def differentiable(self) -> bool:
        """A floating-point JAX argument the VJP is taken with respect to."""
        return self.kind in ("array", "list") and self.dtype.startswith(("float", "bfloat"))

    def describe(self) -> str:
        if self.kind in ("array", "numpy", "ints"):
            what = {"array": "", "numpy": "numpy ", "ints": f"ints<{self.high} "}[self.kind]
            return f"{self.name}: {what}{self.dtype}{list(self.shape)}"
        if self.kind == "list":
            return f"{self.name}: list of {self.dtype}{list(self.shape[1:])} x {self.shape[0]}"
        if self.kind == "key":
            return f"{self.name}: PRNG key"
        if self.kind == "omitted":
            return f"{self.name}: (default {self.value})"
        return f"{self.name} = {self.value}"


@dataclass(frozen=True)
class Program:
    """A labelled program.

    A single-module program is ``source`` (a whole module) holding the
    function ``fn``; ``loops`` and ``must_not_rewrite`` are line numbers.

    A package program (``files`` not empty) is several modules of the package
    ``files[0]``'s directory; ``source`` is then the text of the module named
    by ``entry`` (``"pkg/main.py"``), ``fn`` a function of it, and ``loops`` /
    ``must_not_rewrite`` are ``(path, line)`` pairs.  The outputs at
    ``stacked_outputs`` are per-layer parameter lists: the original's are
    compared with the rewritten project's after
    :func:`loop2scan.layout.stack_layers`.
    """

    source: str
    args: tuple[ArgSpec, ...]
    label: str
    loops: tuple = ()  # line of every `for` (outer first), or (path, line) pairs for a package
    must_not_rewrite: tuple = ()  # loops a must-decline construct forbids rewriting
    free_loops: tuple = ()  # loops the label says nothing about (a package's builder or training loop)
    construct: Optional[str] = None
    construct_loop: Optional[str] = None  # "outer" or "inner"; "own" for a loop the construct brings
    steps: int = 0  # T, the length of the time axis of xs
    features: tuple[str, ...] = ()
    fn: str = "f"
    klass: str = "basic"  # the class of the program (grammar.CLASSES)
    modes: tuple[str, ...] = ()  # extra dtype modes to compare in: "strict", "x64"
    files: tuple[tuple[str, str], ...] = ()  # a package: (relative path, text) of each module
    entry: str = ""  # a package: the path of the module holding `fn`
    stacked_outputs: tuple[int, ...] = ()  # a package: outputs that are per-layer parameter lists

    @property
    def is_package(self) -> bool:
        return bool(self.files)

    def describe(self) -> str:
        args = ", ".join(a.describe() for a in self.args)
        what = f"{self.label} [{self.klass}]"
        if self.construct:
            what += f" ({self.construct} in the {self.construct_loop} loop)"
        if self.modes:
            what += f"; modes: {', '.join(self.modes)}"
        if not self.is_package:
            return f"{what}; {self.fn}({args})\n{self.source}"
        texts = "\n".join(f"# ---- {path}\n{text}" for path, text in self.files)
        return f"{what}; {self.entry}::{self.fn}({args})\n{texts}"


@dataclass
class Target:
    """A loop of the program that a construct may be inserted into, and what
    its body may refer to."""

    which: str  # "outer" / "inner"
    carry: str  # an array carry of this loop: (B, H), or (H,) for the loop over rows
    carry_shape: str  # source for its shape, valid before the outer loop
    ndim: int  # of the carry
    index: Optional[str]  # an int loop variable, if any
    element: str  # a per-step value (expression)
    rows: Optional[str] = None  # a per-step array whose first axis has length B, if any
    body: list = field(default_factory=list)  # statements: lists of lines (relative indentation)
    first: int = 0  # statements may be inserted at positions first .. len(body)


class Mark(str):
    """A line of a construct that is the head of a loop the construct brings
    (the renderer records its line number)."""


@dataclass
class Snippet:
    """What one construct adds to a program.

    ``stmt`` is inserted into the body of the target loop at a random
    position; ``pre`` goes before the outer loop, ``module`` to module level,
    ``args`` to the signature, ``returns`` to the returned values.  ``zip_seq``
    makes the outer loop also iterate the argument of that name (``for x, e in
    zip(xs, seq)``) with ``zip_elem`` as the element.  The loops that must stay
    loops: the loop the construct brings (a :class:`Mark` line in ``stmt``), or
    else the outer loop when ``zip_seq`` is set, or else the target loop, plus
    the outer loop when the target is the inner loop and ``escapes`` is set.
    An ``untraceable`` construct (a boolean mask: its shape depends on the
    data) forbids every loop around it."""

    name: str  # the feature: "<class>:<variant>"
    stmt: list
    pre: list = field(default_factory=list)
    module: str = ""
    args: list = field(default_factory=list)
    returns: list = field(default_factory=list)
    zip_seq: Optional[str] = None
    zip_elem: Optional[str] = None
    escapes: bool = False
    untraceable: bool = False  # no scan can trace the construct: every loop around it must stay a loop
    imports: tuple[str, ...] = ()  # import lines the module needs
    tags: list = field(default_factory=list)  # finer features ("<class>:<detail>")

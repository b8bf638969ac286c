"""Labelled differential fuzzing of the ``torch_xla`` target: the ``torch``
class of the fuzz grammar (``fuzz/torch_programs.py``), judged by
``fuzz/harness.py``.

Must-rewrite programs (loops over lists of torch layers, time loops over
tensors) that are rewritten run original against rewrite on the XLA device
(``PJRT_DEVICE=CPU`` here) in eval mode: outputs, gradients with respect to
the inputs and every parameter, the inputs and the state after the call.
Must-decline programs (constructs JAX would allow but PyTorch or torch_xla's
scans cannot keep) must not be rewritten; their decline codes are printed.

The runs are bounded and derandomized (a few executed programs, since
torch_xla compiles are slow; more rewritten only); ``benchmarks/fuzz_long.py
--class torch`` runs the same grammar over many seeds.  The tool bugs the
grammar finds today are listed in ``KNOWN_TOOL_BUGS``: a bounded run fails on
any other failure, and each bug has a shrunk program below, marked
``xfail(strict=True)``, that starts failing once the bug is fixed (then drop
it from ``KNOWN_TOOL_BUGS`` and keep its program as a regression).  Shapes
the grammar must rewrite and the tool once declined are kept, shrunk, in
``FIXED_FALSE_DECLINES``: each must rewrite and run equal.
"""

from __future__ import annotations

import ast
import collections
import json
import logging
import os
import textwrap

import pytest

from fuzz import torch_programs
from fuzz.grammar import MUST_DECLINE, MUST_REWRITE, ArgSpec, Program, generate
from fuzz.harness import Tally, run_program

os.environ.setdefault("PJRT_DEVICE", "CPU")

# must-rewrite programs run (seeds 0 ..): about half are rewritten today, each compiles two
# graphs (about 1 to 3 s each on a 2-core machine)
EXECUTED_SEEDS = 24
MIN_EXECUTED = 7
# programs rewritten only (about 10 ms each): of both labels, then must-decline ones (so that every
# construct of the grammar occurs)
STATIC_SEEDS = 300
DECLINE_SEEDS = 500

#: Failures of the grammar's programs that are tool bugs not fixed yet: name -> (what, match).
#: ``match(program, outcome)`` says whether a failing program is that bug.
KNOWN_TOOL_BUGS: dict = {}


# constructs that known bugs have rewritten every time so far
ALWAYS_REWRITTEN: tuple = ()


def _known_bug(program: Program, outcome) -> str | None:
    for name, match in KNOWN_TOOL_BUGS.items():
        if match(program, outcome):
            return name
    return None


def _report(program: Program, outcome) -> str:
    return "\n".join(outcome.failures) + "\n\n" + program.describe()


def _run(programs, execute: bool, capsys, what: str) -> tuple[Tally, list, list]:
    """Judge every program; (the tally, the failures that are no known bug,
    every (program, outcome))."""
    logging.disable(logging.CRITICAL)
    tally, unknown, known, judged = Tally(), [], collections.Counter(), []
    try:
        for program in programs:
            outcome = run_program(program, execute=execute)
            judged.append((program, outcome))
            tally.add(program, outcome)
            if outcome.failed:
                bug = _known_bug(program, outcome)
                if bug is None:
                    unknown.append((program, outcome))
                else:
                    known[bug] += 1
    finally:
        logging.disable(logging.NOTSET)
        with capsys.disabled():
            summary = tally.by_class.get("torch", {})
            print(f"\nfuzz (torch, {what}): {json.dumps(summary, sort_keys=True)}; known tool bugs met: "
                  f"{dict(known)}")
    unknown.sort(key=lambda pair: len(pair[0].source))
    return tally, unknown, judged


def test_fuzz_torch_executed(capsys):
    """Must-rewrite programs, run: every rewrite computes the same outputs,
    gradients, inputs and state as the loop (apart from the known bugs)."""
    pytest.importorskip("torch_xla")
    programs = [generate(seed, label=MUST_REWRITE, klass="torch") for seed in range(EXECUTED_SEEDS)]
    tally, unknown, judged = _run(programs, True, capsys, "executed")
    assert not unknown, f"{len(unknown)} failing programs; the smallest:\n\n" + "\n\n".join(
        _report(p, o) for p, o in unknown[:3])
    counts = tally.by_class["torch"]
    equal = sum(1 for _, o in judged if o.rewritten_all and not o.failed)
    assert equal >= MIN_EXECUTED, counts  # the comparison ran, and passed, on enough programs
    assert not counts.get("discarded"), counts  # every original runs: the programs are valid


def test_fuzz_torch_static(capsys):
    """Programs of both labels, rewritten only: no crash, every loop reported,
    the output parses, and no loop a must-decline construct forbids is
    rewritten (apart from the known bugs); every construct of the grammar
    occurs and is declined at least once."""
    programs = [generate(seed, klass="torch") for seed in range(STATIC_SEEDS)] + \
        [generate(seed, label=MUST_DECLINE, klass="torch") for seed in range(DECLINE_SEEDS)]
    tally, unknown, judged = _run(programs, False, capsys, "static")
    by_construct: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for program, outcome in judged:
        for status, code in outcome.forbidden:
            by_construct[program.construct][f"{status} {code}"] += 1
    with capsys.disabled():
        print("fuzz (torch, static): status and code of the forbidden loop, by construct: "
              + json.dumps({k: dict(v) for k, v in sorted(by_construct.items())}, sort_keys=True))
    assert not unknown, f"{len(unknown)} failing programs; the smallest:\n\n" + "\n\n".join(
        _report(p, o) for p, o in unknown[:3])
    constructs = set(torch_programs.STACK_DECLINES) | set(torch_programs.TIME_DECLINES)
    assert set(by_construct) == constructs, constructs ^ set(by_construct)
    never_declined = [c for c, codes in by_construct.items() if c not in ALWAYS_REWRITTEN
                      and not any(k.startswith("declined") for k in codes)]
    assert not never_declined, never_declined
    assert tally.must_rewrite >= STATIC_SEEDS // 2, tally.summary()


def test_torch_grammar_coverage():
    """The torch class produces every variant and construct it promises."""
    seen: collections.Counter = collections.Counter()
    labels: collections.Counter = collections.Counter()
    for seed in range(1500):
        p = generate(seed, klass="torch")
        labels[p.label] += 1
        seen.update(p.features)
        assert p.klass == "torch" and p.steps >= 1
        ast.parse(p.source)
    tp = torch_programs
    wanted = (
        ["class:torch"] + [f"torch:{k}" for k in tp.KINDS]
        + [f"torch:block-{b}" for b in tp.BLOCKS] + [f"torch:build-{b}" for b in tp.BUILDS]
        + [f"torch:order-{o}" for o in tp.ORDERS] + [f"torch:layers-{n}" for n in tp.LAYERS]
        + [f"torch:body-{b}" for b in tp.STACK_BODIES] + [f"torch:after-{a}" for a in ("plain", "norm", "len")]
        + [f"torch:collect-{k}" for k in set(tp.COLLECTS)]
        + [f"torch:cell-{c}" for c in tp.CELLS + ("function",)] + [f"torch:iter-{i}" for i in tp.ITERATIONS]
        + [f"torch:steps-{t}" for t in tp.STEPS] + [f"torch:extra-{e}" for e in tp.EXTRAS]
        + [f"torch:h-{h}" for h in set(tp.H_INITS)] + [f"torch:ys-{o}" for o in tp.OUTPUTS]
        + [f"torch:stack-dim-{d}" for d in (None, 0, 1, 2, -1)]
        + ["torch:ys-flipped", "torch:ys-last", "torch:ys-before-update", "torch:two-carries", "torch:xs-computed",
           "torch:python-passed", "torch:python-default", "torch:mask-passed", "torch:mask-default",
           "torch:mask-computed",
           "torch:optional-gain-passed", "torch:optional-gain-default"]
        + [f"torch:decline-stack-{c}" for c in tp.STACK_DECLINES]
        + [f"torch:decline-cell-{c}" for c in tp.TIME_DECLINES]
        + [f"torch:decline-function-{c}" for c in tp.FUNCTION_DECLINES]
    )
    missing = [w for w in wanted if w not in seen]
    assert not missing, f"never generated: {missing}"
    assert 0.25 < labels[MUST_DECLINE] / sum(labels.values()) < 0.45, labels
    assert generate(3, klass="torch") == generate(3, klass="torch")


def test_torch_judge_sees_a_wrong_rewrite(monkeypatch):
    """The judge can fail: a rewrite whose step computes something else, and one
    that changes what a call leaves behind, are mismatches."""
    pytest.importorskip("torch_xla")
    from fuzz import harness

    program = _program("""
        def f(x: torch.Tensor, h: torch.Tensor):
            outs = []
            for x_t in x:
                h = torch.tanh(x_t + h)
                outs.append(h)
            return h, torch.stack(outs, dim=1)
        """, [ArgSpec("x", (4, 3, 7)), ArgSpec("h", (3, 7))])
    rewrite = harness.rewrite_source

    def corrupted(edit):
        def fake(*args, **kwargs):
            result = rewrite(*args, **kwargs)
            result.new_text = edit(result.new_text)
            return result
        return fake

    assert not run_program(program).failed
    monkeypatch.setattr(harness, "rewrite_source", corrupted(lambda text: text.replace(
        "torch.tanh(x_t + h)", "torch.tanh(x_t - h)")))
    outcome = run_program(program)
    assert outcome.failure_kind == "mismatch" and "output" in outcome.failures[0], outcome.failures
    monkeypatch.setattr(harness, "rewrite_source", corrupted(lambda text: text + (
        "\n\n_f = f\n\n\ndef f(*args):\n    LOG.append(1)\n    return _f(*args)\n\n\nLOG = []\n")))
    outcome = run_program(program)
    assert outcome.failure_kind == "mismatch" and "module `LOG`" in outcome.failures[0], outcome.failures


# ----------------------------------------------------------------------------- shrunk programs

_HEADER = "from typing import Optional\n\nimport torch\nimport torch.nn as nn\nimport torch_xla\n\n\n"


def _program(body: str, args: list, label: str = MUST_REWRITE) -> Program:
    """A hand-written torch program: ``body`` defines ``f`` (a function) or
    ``Model`` (built as ``Model(5, 7)``); a must-decline program forbids
    rewriting its last loop."""
    source = _HEADER + textwrap.dedent(body).lstrip("\n")
    tree = ast.parse(source)
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    source += "\n\ndef build():\n    return " + ("Model(5, 7)" if "Model" in names else "f") + "\n"
    loops = tuple(sorted(n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.For)))
    return Program(source=source, args=tuple(args), label=label, loops=loops,
                   must_not_rewrite=loops[-1:] if label == MUST_DECLINE else (),
                   free_loops=loops[:-1], construct="hand-written" if label == MUST_DECLINE else None,
                   construct_loop="outer" if label == MUST_DECLINE else None, fn="build", klass="torch")


_XH = [ArgSpec("x", (4, 3, 7)), ArgSpec("h", (3, 7))]
_H = [ArgSpec("h", (3, 5))]
_BLOCK = """
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.lin = nn.Linear(d, d)

            def forward(self, h):
                return h + torch.tanh(self.lin(h))
"""


def _stack(*body: str) -> str:
    """A model looping over `Block` layers, ``body`` the loop's statements."""
    return """
        class Model(nn.Module):
            def __init__(self, d, n):
                super().__init__()
                self.layers = nn.ModuleList([Block(d) for _ in range(n)])

            def forward(self, h: torch.Tensor):
                for layer in self.layers:
""" + "".join(f"{' ' * 20}{line}\n" for line in body) + """                return h
"""


# must-decline programs the fuzzer found rewritten (each rewrite, run, differed or raised): declined since
WRONG_REWRITES = {
    "helper-appends-to-a-module-list": _program("""
        LOG = []

        def record(h):
            LOG.append(h.shape)
            return h

        def f(x: torch.Tensor, h: torch.Tensor):
            for x_t in x:
                h = record(torch.tanh(x_t + h))
            return h
        """, _XH, MUST_DECLINE),
    "layer-forward-appends-to-a-list-attribute": _program("""
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.lin = nn.Linear(d, d)
                self.seen = []

            def forward(self, h):
                self.seen.append(h.shape)
                return h + torch.tanh(self.lin(h))
        """ + _stack("h = layer(h)"), _H, MUST_DECLINE),
    "cell-forward-appends-to-a-list-attribute": _program("""
        class Cell(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.lin = nn.Linear(d, d)
                self.seen = []

            def forward(self, x, h):
                self.seen.append(h.shape)
                return torch.tanh(self.lin(h) + x)

        class Model(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.cell = Cell(k)

            def forward(self, x: torch.Tensor, h: torch.Tensor):
                for x_t in x:
                    h = self.cell(x_t, h)
                return h
        """, _XH, MUST_DECLINE),
    "float-of-a-tensor-in-a-layer-loop": _program(_BLOCK + _stack("h = layer(h)",
                                                                  "h = h / (1.0 + float(h.abs().max()))"),
                                                  _H, MUST_DECLINE),
}


@pytest.mark.parametrize("name", sorted(WRONG_REWRITES))
def test_regression_wrong_rewrite_declined(name):
    outcome = run_program(WRONG_REWRITES[name], execute=False)
    assert not outcome.failed, _report(WRONG_REWRITES[name], outcome)
    assert all(status in ("declined", "not-candidate") for status, _ in outcome.forbidden), outcome.forbidden


# must-rewrite programs the fuzzer found rewritten into code that raised where the loop runs: declined
# since (a tensor that may be None cannot ride in a scan's carry; a computed tensor that may need
# gradients cannot be a buffer of the step modules `scan_layers` copies)
RAISING_REWRITES = {
    "optional-tensor-none-in-the-carry": _program("""
        def f(x: torch.Tensor, h: torch.Tensor, gain: Optional[torch.Tensor] = None):
            for x_t in x:
                h = torch.tanh(x_t + h)
                if gain is not None:
                    h = h * gain
            return h
        """, _XH + [ArgSpec("gain", (7,), kind="omitted", value="None")]),
    # an encoder-decoder's memory, passed to every layer
    "computed-tensor-passed-to-every-layer": _program("""
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.lin = nn.Linear(d, d)

            def forward(self, h, memory):
                return h + torch.tanh(self.lin(h) + memory)

        class Model(nn.Module):
            def __init__(self, d, n):
                super().__init__()
                self.encoder = nn.Linear(d, d)
                self.layers = nn.ModuleList([Block(d) for _ in range(n)])

            def forward(self, h: torch.Tensor, x: torch.Tensor):
                memory = torch.tanh(self.encoder(x))
                for layer in self.layers:
                    h = layer(h, memory)
                return h
        """, [ArgSpec("h", (3, 5)), ArgSpec("x", (3, 5))]),
}


@pytest.mark.parametrize("name", sorted(RAISING_REWRITES))
def test_regression_raising_rewrite_declined(name):
    outcome = run_program(RAISING_REWRITES[name], execute=False)
    assert not outcome.rewritten_all, outcome.messages
    assert not outcome.failed, _report(RAISING_REWRITES[name], outcome)



#: Shapes the tool once declined and now rewrites: each must rewrite and run equal.
FIXED_FALSE_DECLINES = {
    # `self.training` (and `self.config...`) in the body were taken for values of `self` (L2S334)
    "self-training-in-a-layer-loop": _program(_BLOCK + _stack("h = layer(h) * (0.5 if self.training else 0.9)"), _H),
    # a carry that starts from `torch.zeros_like`, `x.new_zeros` (L2S406)
    "carry-from-zeros-like": _program("""
        def f(x: torch.Tensor, h: torch.Tensor):
            s = torch.zeros_like(h)
            for x_t in x:
                h = torch.tanh(x_t + h)
                s = s + h
            return h, s
        """, _XH),
    "carry-from-new-zeros": _program("""
        class Model(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.k = k
                self.cell = nn.GRUCell(d, k)

            def forward(self, x: torch.Tensor):
                h = x.new_zeros(x.size(1), self.k)
                for x_t in x:
                    h = self.cell(x_t, h)
                return h
        """, [ArgSpec("x", (4, 3, 5))]),
    # the elements of `x.unbind(1)` only passed to a cell (L2S310)
    "unbind-elements-passed-to-a-cell": _program("""
        class Model(nn.Module):
            def __init__(self, d, k):
                super().__init__()
                self.cell = nn.GRUCell(d, k)

            def forward(self, x: torch.Tensor, h: torch.Tensor):
                for x_t in x.unbind(1):
                    h = self.cell(x_t, h)
                return h
        """, [ArgSpec("x", (3, 4, 5)), ArgSpec("h", (3, 7))]),
    # `torch.unbind(x, dim=1)` was not taken for a tensor (L2S335; `x.unbind(1)` was)
    "torch-unbind": _program("""
        def f(x: torch.Tensor, w: torch.Tensor, h: torch.Tensor):
            for x_t in torch.unbind(x, dim=1):
                h = torch.tanh(x_t @ w + h)
            return h
        """, [ArgSpec("x", (3, 4, 5)), ArgSpec("w", (5, 7)), ArgSpec("h", (3, 7))]),
    # a layer calling an `nn.Sequential` of pure torch layers (L2S331)
    "layer-calls-a-sequential": _program("""
        class Block(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

            def forward(self, h):
                return h + self.mlp(h)
        """ + _stack("h = layer(h)"), _H),
}


@pytest.mark.parametrize("name", sorted(FIXED_FALSE_DECLINES))
def test_fixed_false_decline(name):
    outcome = run_program(FIXED_FALSE_DECLINES[name], execute=False)
    assert outcome.rewritten_all, outcome.messages
    outcome = run_program(FIXED_FALSE_DECLINES[name])
    assert outcome.rewritten_all and not outcome.failed, _report(FIXED_FALSE_DECLINES[name], outcome)

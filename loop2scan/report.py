"""Rendering run reports: text for people, JSON and SARIF for machines.

The JSON schema (stable keys; new keys may be added)::

    {"version": str, "write": bool,
     "files": [{"path": str, "error": str | null, "framework": str | null, "changed": bool,
                "loops": [{"line": int, "col": int, "end_line": int,
                           "status": "rewritten" | "declined" | "skipped" | "not-candidate",
                           "code": str, "message": str, "target": str | null,
                           "carry": [str], "xs": [{"expr": str, "axis": int, "kind": str, "as": str}],
                           "ys": [str], "broadcast": [str], ...}]}],
     "summary": {"files": int, "changed_files": int, "errors": int, "loops": int,
                 "by_status": {status: int}, "by_code": {code: int}}}

``col`` is 1-based, like the text output.
"""

from __future__ import annotations

import difflib
import json
from typing import Optional

from . import __version__
from .api import FileReport, RunReport
from .codes import CODES
from .plan import LoopResult
from .versions import show

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def to_json(report: RunReport) -> str:
    data = {
        "version": __version__,
        "write": report.write,
        "files": [f.to_json() for f in report.files],
        "summary": report.summary(),
        "target_versions": {name: {"version": show(t.version) if t.version else None, "source": t.source}
                            for name, t in report.targets.items()},
    }
    return json.dumps(data, indent=2) + "\n"


def to_sarif(report: RunReport) -> str:
    used = sorted({loop.code for f in report.files for loop in f.loops if loop.status in ("rewritten", "declined")})
    rules = [
        {
            "id": code,
            "name": CODES[code].name,
            "shortDescription": {"text": CODES[code].title},
            "help": {"text": CODES[code].fix_text()},
        }
        for code in used if code in CODES
    ]
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in report.files:
        fix = _sarif_fix(f)
        for loop in f.loops:
            if loop.status not in ("rewritten", "declined"):
                continue
            result = {
                "ruleId": loop.code,
                "ruleIndex": index.get(loop.code, 0),
                "level": "warning" if loop.status == "rewritten" else "note",
                "message": {"text": (f"loop can be rewritten as a scan: {loop.message}" if loop.status == "rewritten"
                                     else f"loop not rewritten: {loop.message}")},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": f.path.replace("\\", "/")},
                    "region": {"startLine": loop.line, "startColumn": loop.col + 1, "endLine": loop.end_line},
                }}],
            }
            if loop.status == "rewritten" and fix is not None:
                result["fixes"] = [fix]
                fix = None  # the file's edits go with its first rewrite: they hold every rewrite of the file
            results.append(result)
    notifications = [
        {"level": "error", "message": {"text": f.error},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.path.replace("\\", "/")}}}]}
        for f in report.files if f.error is not None
    ]
    run = {
        "tool": {"driver": {"name": "loop2scan", "version": __version__, "rules": rules}},
        "results": results,
        "invocations": [{"executionSuccessful": not report.errors, "toolExecutionNotifications": notifications}],
    }
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2) + "\n"


def _sarif_fix(f) -> Optional[dict]:
    """The edits that turn a file into its rewrite, as a SARIF ``fix``: whole lines
    replaced (a rewrite also adds imports and may move a step or edit a builder,
    so a file's rewrites are applied together)."""
    if f.new_text is None or f.old_text is None:
        return None
    old = f.old_text.splitlines(keepends=True)
    new = f.new_text.splitlines(keepends=True)
    def position(i: int) -> dict:
        """Where line ``i`` (0-based) starts; the end of the text for ``i == len(old)``."""
        if i < len(old):
            return {"line": i + 1, "column": 1}
        return {"line": max(len(old), 1), "column": len(old[-1]) + 1 if old else 1}

    replacements = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        start, end = position(i1), position(i2)  # lines i1+1 .. i2 replaced (none: an insertion)
        region = {"startLine": start["line"], "startColumn": start["column"],
                  "endLine": end["line"], "endColumn": end["column"]}
        replacements.append({"deletedRegion": region, "insertedContent": {"text": "".join(new[j1:j2])}})
    count = sum(1 for loop in f.loops if loop.status == "rewritten")
    return {"description": {"text": f"rewrite the {count} loop{'s' if count != 1 else ''} of this file that "
                                    "loop2scan proved safe as scans"},
            "artifactChanges": [{"artifactLocation": {"uri": f.path.replace("\\", "/")},
                                 "replacements": replacements}]}


def status_word(loop: LoopResult) -> str:
    return {"rewritten": "rewritten", "declined": "declined", "skipped": "skipped",
            "not-candidate": "not a candidate"}[loop.status]


def explain_loop(path: str, loop: LoopResult, framework: Optional[str] = None) -> str:
    """The multi-line explanation ``loop2scan explain`` prints for one loop
    (``framework``: the file's, for advice in its words)."""
    head = f"{display_path(path)}:{loop.line}:{loop.col + 1}: "
    if loop.status == "rewritten" and loop.plan is not None:
        plan = loop.plan
        lines = [head + f"rewritten -> {loop.target or 'scan'}"]
        lines.append(f"    carry:     {', '.join(plan.carries) or '(none)'}")
        if plan.xs:
            lines.append(f"    xs:        {'; '.join(x.describe() for x in plan.xs)}")
        else:
            lines.append("    xs:        (none)")
        if plan.length:
            lines.append(f"    length:    {plan.length}" + (f"  ({plan.length_reason})" if plan.length_reason else ""))
        ys = []
        for y in plan.ys:
            if y.kind == "append":
                how = "stacked after the loop"
                if y.wrap_asarray:
                    how += ", each value made an array with jnp.asarray"
                ys.append(f"{y.name} ({how})")
            elif y.kind == "at_set":
                ys.append(f"{y.name} (rows written with .at[...].set after the scan)")
            elif y.kind == "discard":
                ys.append(f"{y.name} (never read after the loop: not collected)")
            else:
                ys.append(f"{y.name} (value of the last step)")
        if plan.torch_layers is not None:
            ys += [f"{o.name} (one item per layer, added after the scan)" for o in plan.torch_layers.outputs]
        lines.append(f"    ys:        {', '.join(ys) or '(none)'}")
        if plan.counter is not None:
            c = plan.counter
            lines.append(f"    index:     {c.name} carried from {c.init}, {'+' if c.step >= 0 else '-'} {abs(c.step)} "
                         "a step (weakly typed, like the loop's int)")
        lines.append(f"    broadcast: {', '.join(plan.broadcast) or '(none)'}")
        if plan.reverse:
            how = "inputs flipped with `.flip(0)`" if plan.torch_time is not None else "reverse=True"
            lines.append(f"    direction: {how} (the loop ran from the last index to the first)")
        if plan.layout is not None:
            lines.append(f"    layout:    {plan.layout.describe()}")
        if plan.context is not None:
            lines.append(f"    context:   {plan.context.describe()}")
            lines.append(f"    step:      {step_form(plan)}")
        for i, a in enumerate(plan.assumptions):
            lines.append(f"    {'assumes:' if i == 0 else '':<11}{a}")
        for i, note in enumerate(plan.notes):
            lines.append(f"    {'note:' if i == 0 else '':<11}{note}")
        return "\n".join(lines)
    code = CODES.get(loop.code)
    word = status_word(loop)
    lines = [head + f"{word} {loop.code} [{code.name if code else '?'}]: {loop.message}"]
    if loop.where is not None and (loop.where.line, loop.where.col) != (loop.line, loop.col):
        lines.append(f"    at {path}:{loop.where.line}:{loop.where.col + 1}")
    if loop.status == "declined" and code is not None:
        lines.append(f"    fix: {code.fix_for(framework)}")
    for i, b in enumerate((loop.blockers or [])[1:]):
        where = f" (line {b['line']})" if b["line"] is not None else ""
        lines.append(f"    {'also:' if i == 0 else '':<6}{b['code']}{where}: {b['message']}")
    return "\n".join(lines)


def step_form(plan) -> str:
    """How the step is defined, in words."""
    if plan.hoisted is None:
        return "a closure defined in place of the loop (traced with the function around it)"
    names = ", ".join(f"`{n}`" for n in plan.hoisted or ())
    passed = f"; {names} {'rides' if len(plan.hoisted or ()) == 1 else 'ride'} in the carry unchanged" if names else ""
    return f"defined once at module level, so that an eager call compiles it only once{passed}"


def loop_line(path: str, loop: LoopResult) -> str:
    """One line per loop (``rewrite --verbose``)."""
    return f"{display_path(path)}:{loop.line}:{loop.col + 1}: {loop.code} {status_word(loop)}: {loop.message}"


def check_line(path: str, loop: LoopResult) -> str:
    from .check import describe

    return f"{display_path(path)}:{loop.line}:{loop.col + 1}: {describe(loop.check)}"


def summary_text(report: RunReport) -> str:
    s = report.summary()
    st = s["by_status"]
    rewritten = st.get("rewritten", 0)
    changed = s["changed_files"]
    files_word = "file" if changed == 1 else "files"
    loops_word = "loop" if rewritten == 1 else "loops"
    if report.write:
        written = [f for f in report.files if f.written]
        done = sum(1 for f in written for loop in f.loops if loop.status == "rewritten")
        head = (f"rewrote {done} {'loop' if done == 1 else 'loops'} in {len(written)} "
                f"{'file' if len(written) == 1 else 'files'}")
    elif rewritten:
        head = f"{rewritten} {loops_word} can be rewritten in {changed} {files_word} (run with --write to apply)"
    else:
        head = "no loop to rewrite"
    parts = []
    if st.get("declined"):
        parts.append(f"{st['declined']} declined")
    if st.get("skipped"):
        parts.append(f"{st['skipped']} skipped")
    if st.get("not-candidate"):
        parts.append(f"{st['not-candidate']} not array loops")
    tail = f"; {', '.join(parts)}" if parts else ""
    n = s["files"]
    errors = f"; {s['errors']} file{'s' if s['errors'] != 1 else ''} could not be processed" if s["errors"] else ""
    hint = " (`loop2scan explain PATH` says why)" if st.get("declined") else ""
    checked = ""
    if report.check:
        verdicts = [loop.check["verdict"] for f in report.files for loop in f.loops if loop.check is not None]
        checked = (f"; --check: {verdicts.count('verified')} verified, {verdicts.count('differs')} DIFFER, "
                   f"{verdicts.count('unverified')} unverified")
        if any(f.check_failed for f in report.files) and report.write:
            checked += " (files with a rewrite that did not verify were not written)"
    note = ""
    unknown = [t for t in report.targets.values() if t.version is None]
    if rewritten and unknown:
        note = "\nnote: " + "; ".join(t.describe() for t in unknown)
    return f"{head} ({n} file{'s' if n != 1 else ''} checked){tail}{checked}{errors}{hint}.{note}"


def display_path(path: str) -> str:
    """A path printed on one line: control characters escaped."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "".join(c.encode("unicode_escape").decode("ascii") if ord(c) < 32 or ord(c) == 127 else c
                       for c in path)
    return path


def file_error_line(f: FileReport) -> Optional[str]:
    if f.error is None:
        return None
    return f"error: {display_path(f.path)}: {' '.join(f.error.split())}"

"""The ``loop2scan`` command: a thin shell over :mod:`loop2scan.api`.

Exit codes (like black and ruff): 0 nothing to do or everything written,
1 rewrites available (preview), 2 usage error or a file that could not be
processed (2 wins over 1).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Optional

import click

from . import __version__
from .api import (FileReport, Options, RunReport, options_from_config, pause_collector_for_process, process_file, run,
                  run_source)
from .codes import CODES, CodeSelection, code_table_markdown
from .config import ConfigError, load_config
from .engine import AVAILABLE_FRAMEWORKS, FRAMEWORKS, TARGETS
from .policy import DEFAULT_MIN_TRIP_COUNT, EAGER_MODES
from .report import check_line, explain_loop, file_error_line, loop_line, summary_text, to_json, to_sarif

FRAMEWORK_HELP = ("Target API: " + ", ".join(
    "auto (per file, from its imports)" if f == "auto" else f"{f} ({TARGETS[f]})" for f in AVAILABLE_FRAMEWORKS)
    + ".")
LAYOUT_HELP = ("Loops over per-layer parameter lists: 'stacked' (default) makes the function that builds the list "
               "return it stacked, once; 'keep' stacks it inside the function on every call.")


def _check_framework(framework: Optional[str], source: str) -> None:
    if framework is None:
        return
    if framework not in FRAMEWORKS:
        raise click.UsageError(f"unknown framework {framework!r} ({source}); choose one of "
                               f"{', '.join(AVAILABLE_FRAMEWORKS)}")
    if framework not in AVAILABLE_FRAMEWORKS:
        raise click.UsageError(
            f"the {framework!r} target ({source}) is not available in loop2scan {__version__}; "
            f"use --framework jax (or auto)")


def _code_list(ctx, param, values) -> Optional[tuple[str, ...]]:
    """``--select L2S3,L2S404 --select L2S5`` -> ``("L2S3", "L2S404", "L2S5")``; ``None`` when not given."""
    if not values:
        return None
    codes = tuple(c.strip() for v in values for c in v.split(",") if c.strip())
    try:
        CodeSelection(codes)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx=ctx, param=param) from None
    return codes


def _policy_options(f):
    """The options that choose which loops pay for a scan, shared by ``rewrite`` and ``explain``."""
    f = click.option("--ignore", "ignore", multiple=True, callback=_code_list, metavar="CODES",
                     help="Never report these codes (comma-separated; a prefix such as L2S7 names a group). "
                          "Rewrites are always reported.")(f)
    f = click.option("--select", "select", multiple=True, callback=_code_list, metavar="CODES",
                     help="Report only these codes (comma-separated prefixes); `select` in [tool.loop2scan]. "
                          "It never makes a loop rewritten.")(f)
    f = click.option("--force-exclude", is_flag=True, default=None,
                     help="Apply the excludes and the test-file patterns to files named on the command line too "
                          "(for pre-commit, which names every file; `force-exclude` in [tool.loop2scan]).")(f)
    f = click.option("--include-tests", is_flag=True, default=None,
                     help="Also process test files met while walking directories (tests/, test_*.py, *_test.py; "
                          "`test-files` in [tool.loop2scan]). Test files named on the command line are processed "
                          "unless --force-exclude is given.")(f)
    f = click.option("--eager", type=click.Choice(EAGER_MODES), default=None,
                     help="Loops in functions that may run outside a JAX transformation: 'compile-once' (default) "
                          "rewrites them only into a step whose eager calls compile once; 'skip' leaves them "
                          "alone; 'closure' rewrites them with the step as a closure, as under a transformation "
                          "(for code that always runs under jax.jit where loop2scan cannot see it).")(f)
    f = click.option("--assume-pure", is_flag=True, default=None,
                     help="torch_xla: declare the layers free of effects the analysis cannot see, and emit "
                          "`scan_layers(..., is_layer_pure=True)` where the list's own layers are scanned (the "
                          "trace is reused across calls); it never lifts a decline (`assume-pure` in "
                          "[tool.loop2scan]).")(f)
    f = click.option("--min-trip-count", type=click.IntRange(min=0), default=None,
                     help=f"Leave loops with a constant trip count below N alone (default "
                          f"{DEFAULT_MIN_TRIP_COUNT}; 0 rewrites every length).", metavar="N")(f)
    return f


def _options(paths, framework, config_path, write=False, layout=None, **policy) -> Options:
    """The run's options: ``[tool.loop2scan]``, overridden by the flags given
    (``policy``: the flags of :func:`_policy_options`)."""
    _check_framework(framework, "--framework")
    try:
        cfg = load_config(list(paths), config_path)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if framework is None:
        _check_framework(cfg.framework, f"framework in {cfg.path}")
    return options_from_config(cfg, list(paths), framework=framework, write=write, layout=layout, **policy)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loop2scan")
def main() -> None:
    """Rewrite Python loops over layers and time steps into scans, safely."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str), metavar="PATH[:LINE]...")
@click.option("--framework", type=str, default=None, help=FRAMEWORK_HELP)
@click.option("--layout", type=click.Choice(["stacked", "keep"]), default=None, help=LAYOUT_HELP)
@click.option("--write", is_flag=True, help="Write the rewrites into the files (default: show a diff).")
@click.option("--diff/--no-diff", default=True, help="Show the unified diff of each rewrite (preview mode).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              help="Output format: text (diff and summary), json or sarif (machine-readable report).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Read [tool.loop2scan] from this pyproject.toml.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores). Output is the same for any number.")
@click.option("--check", is_flag=True,
              help="Run every rewrite before and after on the device with the examples of "
                   "[tool.loop2scan.examples] and compare outputs, gradients and state; with --write, only files "
                   "whose every rewrite verified are written.")
@click.option("--device", type=click.Choice(["default", "cpu"]), default="default",
              help="--check: the framework's default device (an accelerator when present) or the CPU.")
@click.option("--rtol", type=float, default=None, help="--check: relative tolerance (default: by dtype).")
@click.option("--atol", type=float, default=None, help="--check: absolute tolerance (default: by dtype).")
@click.option("-v", "--verbose", is_flag=True, help="Also print one line per loop (rewritten, declined, skipped).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors (and the diff unless --no-diff).")
@click.option("--unroll", type=click.IntRange(min=1), default=None, metavar="N",
              help="Pass unroll=N to every emitted scan (`unroll` in [tool.loop2scan]).")
@click.option("--statistics", is_flag=True, help="Print the number of loops per code instead of the diffs.")
@click.option("--stdin-filename", type=str, default=None,
              help="With PATH `-`: the file the source on standard input comes from (for the configuration, the "
                   "project around it and the names in the output).")
@_policy_options
def rewrite(paths, framework, layout, write, diff, fmt, config_path, jobs, check, device, rtol, atol,
            verbose, quiet, unroll, statistics, stdin_filename, **policy) -> None:
    """Find loops in PATHS, prove them safe, and rewrite them into scans.

    Without --write, prints a unified diff and exits 1 when a rewrite is available.
    PATH:LINE rewrites only the loop at that line (or the innermost loop around it).
    `-` reads the source from standard input and writes the diff (with --write, the
    whole new source) to standard output, for editors."""
    if "-" in paths:
        _rewrite_stdin(paths, framework, layout, write, fmt, config_path, check, stdin_filename, unroll, policy)
        return
    split = [_split_target(p) for p in paths]
    files = list(dict.fromkeys(p for p, _ in split))
    options = _options(files, framework, config_path, write, layout, unroll=unroll, rtol=rtol, atol=atol, **policy)
    options.jobs = jobs
    options.check, options.device = check, device
    for path, line in split:
        if line is not None:
            options.lines.setdefault(os.path.normpath(path), []).append(line)
    bar = Progress() if fmt == "text" and not quiet and sys.stderr.isatty() else None
    try:
        report = run(files, options, bar)
    except KeyboardInterrupt:
        _interrupted(write)
    finally:
        if bar is not None:
            bar.clear()
    if statistics:
        _print_statistics(report, fmt, quiet)
    else:
        _print_report(report, fmt, diff and not write, verbose, quiet)
    sys.exit(report.exit_code)


def _rewrite_stdin(paths, framework, layout, write, fmt, config_path, check, stdin_filename, unroll,
                   policy) -> None:
    """``loop2scan rewrite -``: the source on standard input; the diff, or with
    ``--write`` the new source, on standard output (the source unchanged when
    nothing is rewritten; nothing at all when it cannot be processed, exit 2)."""
    if len(paths) != 1:
        raise click.UsageError("`-` (standard input) cannot be combined with other paths")
    if check:
        raise click.UsageError("--check runs files of a project; it does not read standard input")
    options = _options([stdin_filename] if stdin_filename else [], framework, config_path, False, layout,
                       unroll=unroll, **policy)
    raw = sys.stdin.buffer.read()
    report = run_source(raw, options, stdin_filename)
    (f,) = report.files
    if f.error is not None:
        click.echo(file_error_line(f), err=True)
        sys.exit(2)
    if fmt == "json":
        click.echo(to_json(report), nl=False)
    elif fmt == "sarif":
        click.echo(to_sarif(report), nl=False)
    elif write:
        sys.stdout.write(f.new_text if f.new_text is not None else f.old_text)
    elif f.changed:
        click.echo(f.diff(), nl=False)
    sys.exit(0 if write else report.exit_code)


def _print_statistics(report: RunReport, fmt: str, quiet: bool) -> None:
    """Loops per code, the most frequent first (as ``ruff --statistics``)."""
    counts: dict[str, int] = {}
    for f in report.files:
        line = file_error_line(f)
        if line:
            click.echo(line, err=True)
        for loop in f.loops:
            counts[loop.code] = counts.get(loop.code, 0) + 1
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if fmt == "json":
        import json

        data = [{"code": code, "name": CODES[code].name if code in CODES else code, "count": n}
                for code, n in rows]
        click.echo(json.dumps(data, indent=2))
        return
    width = max((len(str(n)) for _, n in rows), default=1)
    for code, n in rows:
        c = CODES.get(code)
        click.echo(f"{n:>{width}}  {code}  {c.name if c else ''}  {c.title if c else ''}".rstrip())
    if not quiet:
        click.echo(summary_text(report), err=True)


def _interrupted(write: bool) -> None:
    """Ctrl-C: every file is either untouched or completely rewritten (writes are atomic)."""
    done = " files already written are complete; the others are untouched" if write else ""
    click.echo(f"interrupted;{done}".rstrip(";"), err=True)
    sys.exit(130)


class Progress:
    """``checked 120/855 files`` on a terminal's stderr, rewritten in place (at
    most ten times a second) and erased when the run ends."""

    def __init__(self) -> None:
        self.shown = False
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if total < 2 or (now - self.last < 0.1 and done < total):
            return
        self.last = now
        sys.stderr.write(f"\rchecked {done}/{total} files")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _colour() -> bool:
    """Colour on a terminal only, never when ``NO_COLOR`` is set (no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def coloured_diff(diff: str) -> str:
    """A unified diff with git's colours: headers bold, hunks cyan, - red, + green."""
    out = []
    for line in diff.splitlines(keepends=True):
        text = line.rstrip("\r\n")
        end = line[len(text):]
        if line.startswith(("--- ", "+++ ")):
            text = click.style(text, bold=True)
        elif line.startswith("@@"):
            text = click.style(text, fg="cyan")
        elif line.startswith("-"):
            text = click.style(text, fg="red")
        elif line.startswith("+"):
            text = click.style(text, fg="green")
        out.append(text + end)
    return "".join(out)


def _print_report(report: RunReport, fmt: str, show_diff: bool, verbose: bool, quiet: bool) -> None:
    if fmt == "json":
        click.echo(to_json(report), nl=False)
    elif fmt == "sarif":
        click.echo(to_sarif(report), nl=False)
    for f in report.files:
        line = file_error_line(f)
        if line:
            click.echo(line, err=True)
        if fmt != "text":
            continue
        if show_diff and f.changed:
            click.echo(coloured_diff(f.diff()) if _colour() else f.diff(), nl=False, color=_colour())
        if verbose and not quiet:
            for loop in f.loops:
                click.echo(loop_line(f.path, loop), err=True)
        for loop in f.loops:
            if loop.check is not None and not quiet:
                click.echo(check_line(f.path, loop), err=True)
    if fmt == "text" and not quiet:
        click.echo(summary_text(report), err=True)


_LINE_SUFFIX = re.compile(r"^(?P<path>.+):(?P<line>\d+)$")


def _split_target(target: str) -> tuple[str, Optional[int]]:
    if os.path.exists(target):
        return target, None
    m = _LINE_SUFFIX.match(target)
    if m and os.path.exists(m.group("path")):
        return m.group("path"), int(m.group("line"))
    return target, None


@main.command()
@click.argument("targets", nargs=-1, required=True, metavar="PATH[:LINE]...")
@click.option("--framework", type=str, default=None, help=FRAMEWORK_HELP)
@click.option("--layout", type=click.Choice(["stacked", "keep"]), default=None, help=LAYOUT_HELP)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=str), default=None)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Worker processes (default: all cores).")
@_policy_options
def explain(targets, framework, layout, fmt, config_path, jobs, **policy) -> None:
    """Explain each loop: its carry / xs / ys / broadcast split, or why it is not rewritten.

    Every loop of each file is listed: the rewritten ones first, then the declined,
    the skipped and the loops that are not array loops.
    PATH:LINE explains the loop on that line (or the innermost loop around it)."""
    split = [_split_target(t) for t in targets]
    options = _options([p for p, _ in split], framework, config_path, layout=layout, **policy)
    options.jobs = jobs
    exit_code = 0
    try:
        reports = _explain_reports(split, options)
    except KeyboardInterrupt:
        _interrupted(False)
    report = RunReport(reports)
    if report.errors:
        exit_code = 2
    if fmt == "json":
        click.echo(to_json(report), nl=False)
    for f in reports:
        line = file_error_line(f)
        if line:
            click.echo(line, err=True)
        if fmt != "text":
            continue
        for loop in sorted(f.loops, key=lambda lp: (EXPLAIN_ORDER.index(lp.status), lp.line, lp.col)):
            click.echo(explain_loop(f.path, loop, f.framework))
    sys.exit(exit_code)


#: The order of the groups ``explain`` lists a file's loops in: what changes first.
EXPLAIN_ORDER = ("rewritten", "declined", "skipped", "not-candidate")


def _explain_reports(split, options) -> list[FileReport]:
    reports: list[FileReport] = []
    for path, line in split:
        if line is None:
            r = run([path], options)
            reports.extend(r.files)
            continue
        if os.path.isfile(path):
            r = run([path], options)
            fr = r.files[0] if r.files else FileReport(path, error="no such file")
        else:
            fr = process_file(path, options)  # reports why the path is not a readable file
        if fr.error is None:
            chosen = [lp for lp in fr.loops if lp.line == line]
            if not chosen:
                around = [lp for lp in fr.loops if lp.line <= line <= lp.end_line]
                chosen = around[-1:] if around else []
            if not chosen:
                fr.error = f"no `for` loop at line {line}"
            fr.loops = chosen
        reports.append(fr)
    return reports


@main.command("convert-state")
@click.argument("src", type=click.Path(exists=True, path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--to", "to", type=click.Choice(["stacked", "list"]), required=True,
              help="stacked: a list of per-layer pytrees becomes one pytree with a leading layer axis; list: back.")
@click.option("--key", default="", help="The entry to convert, as a /-separated path (e.g. params/layers).")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
def convert_state(src, dst, to, key, force) -> None:
    """Convert a saved parameter list between the list and the stacked layout.

    Formats by extension: .npz, .pkl/.pickle, .msgpack (flax.serialization);
    a directory (or a new path with no extension) is an Orbax checkpoint.
    The conversion is exact: every value is copied bit for bit, in layer order."""
    from .layout import LayoutError, convert_checkpoint

    if os.path.exists(dst) and not force:
        raise click.UsageError(f"{dst} exists; pass --force to overwrite it")
    try:
        convert_checkpoint(src, dst, to, key)
    except (LayoutError, OSError, ValueError, KeyError, IndexError) as e:
        click.echo(f"error: {src}: {e}", err=True)
        sys.exit(2)
    click.echo(f"wrote {dst} ({to} layout)", err=True)


@main.command()
@click.argument("code", required=False)
def codes(code: Optional[str]) -> None:
    """List the loop2scan codes (or explain one)."""
    if code is None:
        click.echo(code_table_markdown(), nl=False)
        return
    c = CODES.get(code.upper())
    if c is None:
        raise click.UsageError(f"unknown code {code!r}")
    click.echo(f"{c.code} ({c.name}): {c.title}\n\n{c.fix_text()}")


def entry() -> None:
    """The ``loop2scan`` command: :func:`main`, then, once the output is flushed,
    an exit that skips the interpreter's teardown.  A whole-tree run leaves
    millions of syntax-tree objects behind, and freeing them one by one at exit
    took seconds for nothing (the operating system takes the memory back at once).
    For the same reason the cycle collector stays paused after the runs
    (:func:`loop2scan.api.pause_collector_for_process`)."""
    pause_collector_for_process()
    try:
        main()
    except SystemExit as e:
        code = e.code
    else:  # pragma: no cover - click's standalone mode always exits
        code = 0
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`loop2scan ... | head`)
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()

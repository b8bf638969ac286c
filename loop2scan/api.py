"""Running loop2scan over files and directories (the library behind the CLI).

    from loop2scan.api import Options, run
    report = run(["models/"], Options(framework="jax", write=False))
    report.exit_code, report.files[0].loops
"""

from __future__ import annotations

import difflib
import gc
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .config import Config, nearest_pyproject
from .codes import CodeSelection
from .versions import TargetVersion, target_version
from .engine import SourceResult, rewrite_source
from .analysis.project import build_project, project_root
from .files import (DEFAULT_TEST_FILES, SourceError, SourceFile, decode_source, discover, read_source,
                    write_source)
from .plan import LoopResult
from .policy import DEFAULT_LINE_LENGTH, DEFAULT_MIN_TRIP_COUNT, Policy, Style


@dataclass
class Options:
    framework: str = "auto"
    layout: str = "stacked"  # per-layer parameter lists: "stacked" (at construction) or "keep" (per call)
    write: bool = False
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    root: Optional[str] = None
    jobs: Optional[int] = None  # worker processes; None: all cores
    check: bool = False  # run each rewrite before and after and compare (needs the framework)
    device: str = "default"
    rtol: Optional[float] = None
    atol: Optional[float] = None
    examples: tuple = ()  # check.Example entries from [tool.loop2scan.examples]
    min_trip_count: int = DEFAULT_MIN_TRIP_COUNT  # constant trip counts below this are left alone
    eager: str = "compile-once"  # or "skip", "closure" (see loop2scan.policy.Policy)
    assume_pure: bool = False  # torch_xla: `is_layer_pure=True` where it applies (loop2scan.policy.Policy)
    include_tests: bool = False  # directory runs skip test files unless this is set
    force_exclude: bool = False  # excludes and test files apply to files named explicitly too
    lines: dict = field(default_factory=dict)  # FILE:LINE runs: normalised path -> the lines to rewrite
    select: tuple[str, ...] = ()  # codes reported (prefixes; all when empty); rewrites always are
    unroll: Optional[int] = None  # `unroll=` of every emitted scan
    layer_axis_name: str = "layers"  # NNX layer stacks: the sharding name of the stacked axis
    jax_target: Optional[TargetVersion] = None  # the JAX version emitted code must run on (None: the newest)
    ignore: tuple[str, ...] = ()  # codes never reported
    test_files: tuple[str, ...] = DEFAULT_TEST_FILES
    line_length: int = DEFAULT_LINE_LENGTH  # of emitted code

    @property
    def policy(self) -> Policy:
        return Policy(min_trip_count=self.min_trip_count, eager=self.eager, assume_pure=self.assume_pure)

    @property
    def style(self) -> Style:
        jax = self.jax_target.version if self.jax_target is not None else None
        return Style(line_length=self.line_length, unroll=self.unroll, jax=jax, layer_axis_name=self.layer_axis_name)

    def reported(self, loops: list) -> list:
        """The loops a report shows (``select`` / ``ignore``)."""
        if not (self.select or self.ignore):
            return loops
        selection = CodeSelection(self.select, self.ignore)
        return [loop for loop in loops if selection.reports(loop.code)]


@dataclass
class FileReport:
    path: str
    loops: list[LoopResult] = field(default_factory=list)
    error: Optional[str] = None
    framework: Optional[str] = None
    old_text: Optional[str] = None
    new_text: Optional[str] = None
    written: bool = False
    check_failed: bool = False  # --check: a rewrite did not verify (the file is not written)

    @property
    def changed(self) -> bool:
        return self.new_text is not None

    def diff(self) -> str:
        if self.new_text is None or self.old_text is None:
            return ""
        a = self.old_text.splitlines(keepends=True)
        b = self.new_text.splitlines(keepends=True)
        out = []
        # git-style a/ b/ prefixes for relative paths (`git apply`, `patch -p1`); absolute paths as they are
        old, new = (self.path, self.path) if os.path.isabs(self.path) else (f"a/{self.path}", f"b/{self.path}")
        for line in difflib.unified_diff(a, b, old, new):
            if not line.endswith(("\n", "\r")):
                line += "\n\\ No newline at end of file\n"
            out.append(line)
        return "".join(out)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "error": self.error,
            "framework": self.framework,
            "changed": self.changed,
            "loops": [loop.to_json() for loop in self.loops],
        }


@dataclass
class RunReport:
    files: list[FileReport]
    write: bool = False

    @property
    def errors(self) -> list[FileReport]:
        return [f for f in self.files if f.error is not None]

    def count(self, status: str) -> int:
        return sum(1 for f in self.files for loop in f.loops if loop.status == status)

    check: bool = False
    targets: dict = field(default_factory=dict)  # framework -> the TargetVersion emitted code must run on

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        if self.check:
            return 1 if any(f.check_failed for f in self.files) else 0
        if not self.write and any(f.changed for f in self.files):
            return 1
        return 0

    def summary(self) -> dict:
        by_status: dict[str, int] = {}
        by_code: dict[str, int] = {}
        for f in self.files:
            for loop in f.loops:
                by_status[loop.status] = by_status.get(loop.status, 0) + 1
                by_code[loop.code] = by_code.get(loop.code, 0) + 1
        return {
            "files": len(self.files),
            "changed_files": sum(1 for f in self.files if f.changed),
            "errors": len(self.errors),
            "loops": sum(by_status.values()),
            "by_status": dict(sorted(by_status.items())),
            "by_code": dict(sorted(by_code.items())),
        }


def options_from_config(cfg: Config, paths: Sequence[str] = (), **overrides) -> Options:
    opts = Options(framework=cfg.framework, layout=cfg.layout, exclude=cfg.exclude,
                   extend_exclude=cfg.extend_exclude, root=cfg.root, examples=tuple(cfg.examples),
                   min_trip_count=cfg.min_trip_count, eager=cfg.eager, assume_pure=cfg.assume_pure,
                   include_tests=cfg.include_tests,
                   test_files=cfg.test_files, line_length=cfg.line_length, force_exclude=cfg.force_exclude,
                   select=cfg.select, ignore=cfg.ignore, unroll=cfg.unroll, rtol=cfg.rtol, atol=cfg.atol,
                   layer_axis_name=cfg.layer_axis_name,
                   jax_target=target_version("jax", cfg.target_versions.get("jax"),
                                             cfg.path or nearest_pyproject(paths)))
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    return opts


def process_file(path: str, options: Options) -> FileReport:
    """Read, analyse, rewrite (and, with ``options.write``, write) one file.
    A bug on one file is reported for that file; it never stops the run."""
    try:
        return _process_file(path, options)
    except Exception as e:  # noqa: BLE001
        from .engine import _reraise_interrupt

        _reraise_interrupt(e)
        return FileReport(path, error=f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    finally:
        _file_done()


#: Growth of the process's memory (peak resident size) between two runs of the
#: cycle collector while a run holds it, checked every ``CHECK_EVERY`` files.
COLLECT_GROWTH = 1 << 30
CHECK_EVERY = 50
_collector_held = False
_files_since_check = 0
_peak_at_collect = 0


def _hold_collector() -> bool:
    """Pause Python's cycle collector for a run: the syntax trees of each file
    (and of the project's modules it looks at) are millions of objects, and
    the collector's passes over them took about half of a whole-tree run (a
    full collection costs about 4 ms per file analysed since the last one).
    Reference counting frees almost everything; the cycles left are collected
    when the process has grown by ``COLLECT_GROWTH`` since the last collection
    (:func:`_file_done`), and what survives a collection is not looked at
    again.  Most runs never collect; a run over a tree too large for memory
    does, a gigabyte at a time.  True when this call paused it (and must release it)."""
    global _collector_held, _peak_at_collect
    if _collector_held or not (gc.isenabled() or _paused_for_process):
        return False
    gc.disable()
    _collector_held = True
    _peak_at_collect = _peak_memory()
    return not _paused_for_process


_paused_for_process = False


def pause_collector_for_process() -> None:
    """Keep the cycle collector paused after runs too, for a process that exits
    (with ``os._exit``) once its runs are done: resuming it would cost a pass
    over every tree of the run, about a second per thousand files, for memory
    the exit gives back anyway.  Runs still collect when memory grows by
    ``COLLECT_GROWTH``."""
    global _paused_for_process
    _paused_for_process = True
    gc.disable()


def _release_collector() -> None:
    global _collector_held
    _collector_held = False
    gc.unfreeze()
    gc.enable()


def _stop_growth_checks() -> None:
    """After a run in a process whose collector stays paused."""
    global _collector_held
    _collector_held = False


def _peak_memory() -> int:
    """The process's peak resident size in bytes (0 where it cannot be read)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on every platform
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _file_done() -> None:
    global _files_since_check, _peak_at_collect
    if not _collector_held:
        return
    _files_since_check += 1
    if _files_since_check < CHECK_EVERY:
        return
    _files_since_check = 0
    peak = _peak_memory()
    if peak - _peak_at_collect >= COLLECT_GROWTH:
        gc.collect()
        gc.freeze()  # what survives is the project's index, mostly: the next collection skips it
        _peak_at_collect = _peak_memory()


def _process_file(path: str, options: Options) -> FileReport:
    try:
        source: SourceFile = read_source(path)
    except SourceError as e:
        return FileReport(path, error=e.message)
    result: SourceResult = rewrite_source(source.text, options.framework, options.layout, _PROJECT, path,
                                          options.policy, options.style, options.lines.get(os.path.normpath(path)))
    report = FileReport(path, options.reported(result.loops), result.error, result.framework, source.text,
                        result.new_text)
    if options.check and result.new_text is not None:
        from .check import CheckOptions, check_loops

        checks = check_loops(path, source.text, result.new_text, result.loops, result.framework or "jax",
                             list(options.examples), options.root,
                             CheckOptions(options.device, options.rtol, options.atol))
        for loop in result.loops:
            if loop.status == "rewritten":
                loop.check = checks.get(loop.line, {"verdict": "unverified", "reason": "not checked"})
        if any(loop.check["verdict"] != "verified" for loop in result.loops if loop.status == "rewritten"):
            report.check_failed = True
            return report  # a file is written only when every rewrite in it verified
    if options.write and result.new_text is not None:
        try:
            write_source(source, result.new_text)
            report.written = True
        except SourceError as e:
            report.error = e.message
    return report


#: The project of the run in progress (set in the main process, and in each worker by its initializer).
_PROJECT = None


def run(paths: Sequence[str], options: Options, progress: Optional[Callable[[int, int], None]] = None) -> RunReport:
    """Process every Python file under ``paths``.  The order of the reports
    (and so every output) is the same whatever the number of jobs.
    ``progress(done, total)`` is called as files are done."""
    held = _hold_collector()
    try:
        return _run(paths, options, progress)
    finally:
        if held:
            _release_collector()
        elif _paused_for_process:
            _stop_growth_checks()


def _run(paths: Sequence[str], options: Options, progress=None) -> RunReport:
    global _PROJECT
    files, errors = discover(list(paths), exclude=options.exclude, extend_exclude=options.extend_exclude,
                             root=options.root, skip=() if options.include_tests else options.test_files,
                             force_exclude=options.force_exclude)
    reports = [FileReport(e.path, error=e.message) for e in errors]
    files = [os.path.normpath(p) for p in files]
    project = build_project(list(paths), files, project_root(list(paths)), options.exclude, options.extend_exclude,
                            options.layout, options.framework, options.policy)
    jobs = options.jobs or os.cpu_count() or 1
    previous, _PROJECT = _PROJECT, project
    try:
        if jobs <= 1 or len(files) < 2 * MIN_FILES_PER_JOB:
            for done, path in enumerate(files, 1):
                reports.append(process_file(path, options))
                if progress is not None:
                    progress(done, len(files))
        else:
            reports.extend(_parallel(files, options, jobs, project, progress))
    finally:
        _PROJECT = previous
    return RunReport(reports, write=options.write, check=options.check, targets=_targets(options))


def run_source(raw: bytes, options: Options, filename: Optional[str] = None) -> RunReport:
    """Analyse and rewrite source that does not come from a file of its own
    (standard input, an editor's buffer).  ``filename``, when given, is where
    the source lives: it is analysed as that module of its project (the
    project's other modules are read from disk).  Nothing is written."""
    name = filename if filename is not None else "-"
    try:
        source = decode_source(name, raw)
    except SourceError as e:
        return RunReport([FileReport(name, error=e.message)])
    global _PROJECT
    project = None
    if filename is not None:
        files = [os.path.normpath(filename)]
        project = build_project([filename], files, project_root([filename]), options.exclude,
                                options.extend_exclude, options.layout, options.framework, options.policy)
    previous, _PROJECT = _PROJECT, project
    try:
        result = rewrite_source(source.text, options.framework, options.layout, project, filename,
                                options.policy, options.style, options.lines.get(os.path.normpath(name)))
    finally:
        _PROJECT = previous
    report = FileReport(name, options.reported(result.loops), result.error, result.framework, source.text,
                        result.new_text)
    return RunReport([report], targets=_targets(options))


def _targets(options: Options) -> dict:
    return {"jax": options.jax_target} if options.jax_target is not None else {}


MIN_FILES_PER_JOB = 4


_THREADED_FRAMEWORKS = ("jax", "torch", "tensorflow")


def _start_method() -> str:
    """``fork`` (fast: workers inherit the loaded modules), unless the calling
    process has imported a multithreaded framework (library use from a
    notebook or a test session), where forking can deadlock: then a fork server."""
    if any(name in sys.modules for name in _THREADED_FRAMEWORKS):
        return "forkserver"
    return "fork"


def _parallel(files: list[str], options: Options, jobs: int, project, progress=None) -> list[FileReport]:
    import concurrent.futures as cf
    import multiprocessing

    jobs = min(jobs, max(1, len(files) // MIN_FILES_PER_JOB))
    results: list[Optional[FileReport]] = [None] * len(files)
    ctx = multiprocessing.get_context(_start_method()) if hasattr(os, "fork") else multiprocessing.get_context()
    stop = ctx.Event()
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_start_worker,
                                  initargs=(project, stop))
    try:
        todo = iter(_chunks(files, jobs))
        running = {}
        for chunk in todo:
            running[pool.submit(_process_chunk, [files[i] for i in chunk], options)] = chunk
            if len(running) >= jobs:
                break
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                chunk = running.pop(fut)
                try:
                    reports = fut.result()
                except Exception as e:  # noqa: BLE001 - a crash in one worker must not lose the other files
                    reports = [FileReport(files[i], error=f"internal error: {type(e).__name__}: {e}") for i in chunk]
                for i, report in zip(chunk, reports):
                    results[i] = report
                if progress is not None:
                    progress(sum(r is not None for r in results), len(files))
                nxt = next(todo, None)
                if nxt is not None:
                    running[pool.submit(_process_chunk, [files[i] for i in nxt], options)] = nxt
    except KeyboardInterrupt:
        # Ctrl-C: the workers finish (atomically) the file in hand and start no other
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [r for r in results if r is not None]


#: Chunks handed to each worker over a run (more: finer balance; fewer: more of
#: the modules a file looks at are already read in the worker that needs them).
CHUNKS_PER_JOB = 8


def _chunks(files: list[str], jobs: int) -> list[list[int]]:
    """The files cut into runs of neighbours (in path order) of about equal
    size, the largest first.  A file's analysis reads the modules around it
    (its imports, its importers); a worker that processes a package's files
    together reads each of them once."""
    order = sorted(range(len(files)), key=lambda i: files[i])
    sizes = [_size(f) + 1 for f in files]
    count = max(1, min(len(files) // MIN_FILES_PER_JOB, jobs * CHUNKS_PER_JOB))
    target = sum(sizes) / count
    chunks: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i in order:
        current.append(i)
        filled += sizes[i]
        if filled >= target:
            chunks.append(current)
            current, filled = [], 0
    if current:
        chunks.append(current)
    chunks.sort(key=lambda c: -sum(sizes[i] for i in c))
    return chunks


#: Set in a worker when the run is interrupted: the worker stops between two files.
_STOP = None
#: Set in a worker by Ctrl-C in a terminal, which reaches every process of the
#: group: the worker stops as soon as the signal arrives, without waiting for
#: the main process to be scheduled and set ``_STOP``.
_INTERRUPTED = False


def _interrupted(signum, frame) -> None:
    global _INTERRUPTED
    _INTERRUPTED = True


def _process_chunk(paths: list[str], options: Options) -> list[FileReport]:
    out = []
    for path in paths:
        if _INTERRUPTED or (_STOP is not None and _STOP.is_set()):
            out.append(FileReport(path, error="not processed: the run was interrupted"))
            continue
        out.append(process_file(path, options))
    return out


def _start_worker(project, stop=None) -> None:
    """Workers finish the file in hand on Ctrl-C and start no other (the main
    process also tells them to stop, for a signal sent to it alone), and look
    up other modules in the run's project."""
    import signal

    global _PROJECT, _STOP
    signal.signal(signal.SIGINT, _interrupted)
    _PROJECT = project
    _STOP = stop
    _hold_collector()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0

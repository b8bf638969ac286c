"""Invalid and hostile inputs.

Each bad input must give exactly one clear line on stderr naming the file,
exit code 2, the other files still processed (and written with ``--write``),
and nothing changed in the bad file.  Also: files that change between being
read and written, read-only files and directories, and Ctrl-C in the middle
of ``--write`` (simulated with ``KeyboardInterrupt`` and with a real SIGINT):
no file is ever half written, no temporary file is left behind, and the run
stops with a non-zero exit code.

Most tests drive the click command in process (``--jobs 1`` where a
monkeypatch must act in the process that reads and writes); the SIGINT tests
run ``python -m loop2scan`` in a subprocess, and so does the unreadable file
among many when the tests run as root (``tests/unreadable.py``).
"""

from __future__ import annotations

import errno
import gzip
import importlib.util
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from loop2scan import api, rewrite_source
from loop2scan.api import Options
from loop2scan.cli import main

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BOM = b"\xef\xbb\xbf"
TEMP_SUFFIX = ".loop2scan.tmp"

RNN_SRC = '''\
import jax
import jax.numpy as jnp


def rnn(params, xs, h0):
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)
'''
RNN_NEW = rewrite_source(RNN_SRC, "jax").new_text
assert RNN_NEW is not None and "lax.scan(" in RNN_NEW
RNN_LOOP_LINE = RNN_SRC.splitlines().index("    for t in range(xs.shape[0]):") + 1
N_GOOD = 8  # with 8 files or more, --jobs 2 really runs two worker processes


# ----------------------------------------------------------------------------- helpers


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:  # click >= 8.2 keeps stdout and stderr apart
        return CliRunner()


def cli(*args):
    """Run the command in process; an exception other than SystemExit fails the test with its repr."""
    r = _runner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"loop2scan raised {type(r.exception).__name__}: {r.exception}") from r.exception
    return r


def put(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def lines_naming(stderr: str, path: str) -> list[str]:
    return [line for line in stderr.splitlines() if path in line]


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def good_files(project: Path, n: int = N_GOOD) -> list[Path]:
    return [put(project / f"good_{i}.py", RNN_SRC) for i in range(n)]


def assert_good_written(files: list[Path]) -> None:
    for path in files:
        assert path.read_text(encoding="utf-8") == RNN_NEW, path


def assert_one_error_line(stderr: str, path: str, *words: str) -> str:
    lines = lines_naming(stderr, path)
    assert len(lines) == 1, (path, stderr)
    line = lines[0]
    assert line.startswith(f"error: {path}: "), line
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    return line


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return Path("proj")


# ----------------------------------------------------------------------------- syntax errors


SYNTAX_ERRORS = {
    # name: (content, line of the error)
    "unterminated_triple.py": (b'x = 1\ns = """never closed\ny = 2\n', 2),
    "tab_error.py": (b"def f(x):\n\tif x:\n        return 1\n\treturn 2\n", 3),
    "indentation.py": (b"import jax\n\ndef f():\nreturn 1\n", 4),
    "unmatched.py": (b"x = 1\ny = (2 + 3))\n", 2),
    "fstring.py": (b'name = "a"\nmsg = f"{name"\n', 2),
    "bad_def.py": (b"import jax.numpy as jnp\n\n\ndef rnn(params, xs, h0:\n    return h0\n", 4),
    "eof_in_bracket.py": (b"x = [1,\n     2,\n", 1),
    "loop_with_error.py": (RNN_SRC.replace("hs.append(h)", "hs.append(h))").encode(), 10),
}


def test_syntax_errors_give_one_line_each_and_do_not_stop_the_run(project):
    good = good_files(project)
    for name, (content, _) in SYNTAX_ERRORS.items():
        put(project / name, content)
    before = snapshot(project)

    previews = [cli("rewrite", project, "--jobs", jobs) for jobs in ("1", "2")]
    assert previews[0].stdout == previews[1].stdout  # the output does not depend on --jobs
    assert previews[0].stderr == previews[1].stderr
    assert previews[0].exit_code == previews[1].exit_code == 2
    assert snapshot(project) == before

    r = cli("rewrite", project, "--write")
    assert r.exit_code == 2
    assert len(error_lines(r.stderr)) == len(SYNTAX_ERRORS), r.stderr
    for name, (content, line) in SYNTAX_ERRORS.items():
        text = assert_one_error_line(r.stderr, f"proj/{name}", "syntax error", f"line {line}")
        assert "Traceback" not in text
        assert (project / name).read_bytes() == content
    assert_good_written(good)
    assert "Traceback" not in r.stderr


def test_nesting_too_deep_for_any_python_is_not_blamed_on_the_python_version(project):
    # No version of Python accepts more than 200 nested parentheses.
    content = b"x = " + b"(" * 250 + b"1" + b")" * 250 + b"\n"
    put(project / "nested.py", content)
    good = good_files(project, 1)
    r = cli("rewrite", project, "--write")
    assert r.exit_code == 2
    line = assert_one_error_line(r.stderr, "proj/nested.py", "syntax error", "nested parentheses")
    assert "newer python" not in line.lower(), line
    assert (project / "nested.py").read_bytes() == content
    assert_good_written(good)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_deeply_nested_valid_expression_does_not_crash_the_run(project, jobs):
    """Python compiles this file; loop2scan must process it (or report it on one line), never crash."""
    terms = " + ".join(["xs[t]"] * 600)
    content = (f"import jax.numpy as jnp\n\n\ndef f(xs, h):\n    for t in range(xs.shape[0]):\n"
               f"        h = h + {terms}\n    return h\n").encode()
    compile(content, "deep.py", "exec")
    put(project / "deep.py", content)
    good = good_files(project)
    r = cli("rewrite", project, "--write", "--jobs", jobs)
    assert "Traceback" not in r.stderr
    assert r.exit_code in (0, 2), r.stderr
    if r.exit_code == 2:
        assert_one_error_line(r.stderr, "proj/deep.py")
    assert len(error_lines(r.stderr)) == (1 if r.exit_code == 2 else 0)
    assert_good_written(good)


# ----------------------------------------------------------------------------- encodings and binary files


NOT_UTF8 = {
    # name: (content, words expected in the error line)
    "latin1_comment.py": (b"x = 1\ny = 2\n# caf\xe9\n", ("not valid utf-8", "line 3", "coding declaration")),
    "surrogate.py": (b"s = '\xed\xa0\x80'\n", ("not valid utf-8", "line 1")),
    "overlong.py": (b"x = 1\ns = '\xc0\xaf'\n", ("not valid utf-8", "line 2")),
    "truncated.py": (b"x = 1  # \xe2\x82", ("not valid utf-8",)),
    "bom_then_invalid.py": (BOM + b"x = 1\ny = '\xff'\n", ("not valid utf-8", "line 2")),
    "declared_ascii.py": (b"# coding: ascii\ns = '\xe9'\n", ("'ascii'", "line 2")),
    "unknown_codec.py": (b"# -*- coding: klingon-9 -*-\nx = 1\n", ("unknown encoding", "klingon-9")),
    "bom_and_latin1.py": (BOM + b"# coding: latin-1\nx = 1\n", ("byte order mark", "latin-1")),
    "latin1_loop.py": (RNN_SRC.replace("hs = []", "hs = []  # \xe9tat").encode("latin-1"),
                       ("not valid utf-8", "line 7")),
}


def test_files_that_are_not_valid_in_their_encoding(project):
    for name, (content, _) in NOT_UTF8.items():
        put(project / name, content)
    good = good_files(project)
    r = cli("rewrite", project, "--write")
    assert r.exit_code == 2
    assert len(error_lines(r.stderr)) == len(NOT_UTF8), r.stderr
    for name, (content, words) in NOT_UTF8.items():
        assert_one_error_line(r.stderr, f"proj/{name}", *words)
        assert (project / name).read_bytes() == content
    assert_good_written(good)


BINARIES = {
    "elf.py": b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00",
    "png.py": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
    "gzip.py": gzip.compress(RNN_SRC.encode(), mtime=0),
    "utf16.py": RNN_SRC.encode("utf-16"),
    "utf32.py": RNN_SRC.encode("utf-32"),
    "pyc.py": importlib.util.MAGIC_NUMBER + b"\x00" * 12 + b"\xe3\x00\x00\x00",
    "zeros.py": b"\x00" * 64,
    "high_bytes.py": bytes(range(128, 256)) * 4,  # binary without a NUL byte
}


def test_binary_files_named_py(project):
    for name, content in BINARIES.items():
        put(project / name, content)
    good = good_files(project)
    r = cli("rewrite", project, "--write")
    assert r.exit_code == 2
    assert len(error_lines(r.stderr)) == len(BINARIES), r.stderr
    for name, content in BINARIES.items():
        line = assert_one_error_line(r.stderr, f"proj/{name}")
        assert "binary file" in line or "not valid utf-8" in line.lower(), line
        assert (project / name).read_bytes() == content
    assert_good_written(good)


def test_file_names_with_control_characters_give_one_line_each(project):
    put(project / "bad\nname.py", b"def f(:\n    pass\n")
    put(project / "odd\rname.py", b"\x00\x01binary")
    put(project / "tab\tname.py", b"s = '\xff'\n")
    good = good_files(project, 1)
    r = cli("rewrite", project, "--write")
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 3 + 1, r.stderr  # one line per bad file, then the summary
    assert all(line.startswith("error: proj/") for line in lines[:3]), lines
    assert "could not be processed" in lines[3]
    assert_good_written(good)


# ----------------------------------------------------------------------------- unreadable files, links, special files


def _run_with_unreadable(path: Path, *args):
    """Run the command with ``path`` unreadable: by permissions in process, or,
    when running as root (who may read anything), in a fresh interpreter whose
    `os.open` refuses to read exactly that file (its forked workers inherit the
    patch; this process has loaded JAX, whose threads make forking it unsafe)."""
    if not IS_ROOT and os.name == "posix":
        path.chmod(0)
        return cli(*args)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "unreadable.py"), str(path), *map(str, args)],
                          capture_output=True, text=True, env=_env())
    return types.SimpleNamespace(exit_code=proc.returncode, stderr=proc.stderr, stdout=proc.stdout)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_unreadable_file_among_many(project, jobs):
    secret = put(project / "secret.py", RNN_SRC)
    good = good_files(project)
    try:
        r = _run_with_unreadable(secret, "rewrite", project, "--write", "--jobs", jobs)
    finally:
        secret.chmod(0o644)
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "proj/secret.py", "permission denied")
    assert len(error_lines(r.stderr)) == 1
    assert secret.read_text() == RNN_SRC  # never rewritten, although it has a rewritable loop
    assert_good_written(good)


def test_broken_symlinks_symlink_loops_and_special_files(project):
    good = good_files(project, 2)
    (project / "dangling.py").symlink_to("nowhere.py")
    (project / "loop_a.py").symlink_to("loop_b.py")
    (project / "loop_b.py").symlink_to("loop_a.py")
    os.mkfifo(project / "pipe.py")
    # Found while walking: skipped without a word.
    r = cli("rewrite", project, "--no-diff")
    assert r.exit_code == 1, r.stderr
    assert error_lines(r.stderr) == []
    # Named explicitly: one line each, the others still processed.
    named = ["proj/dangling.py", "proj/loop_a.py", "proj/pipe.py"]
    r = cli("rewrite", *named, *good, "--write")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "proj/dangling.py", "broken symbolic link")
    assert_one_error_line(r.stderr, "proj/loop_a.py", "symbolic links")
    assert_one_error_line(r.stderr, "proj/pipe.py", "not a regular file")
    assert len(error_lines(r.stderr)) == 3
    assert_good_written(good)
    assert os.path.islink(project / "dangling.py") and not os.path.exists(project / "nowhere.py")


def test_explain_with_a_directory_where_a_file_is_expected(project):
    put(project / "pkg" / "inner.py", RNN_SRC)
    put(project / "rnn.py", RNN_SRC)
    r = cli("explain", "proj/pkg:3", f"proj/rnn.py:{RNN_LOOP_LINE}")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "proj/pkg", "is a directory")
    assert len(error_lines(r.stderr)) == 1
    assert r.stdout.startswith(f"proj/rnn.py:{RNN_LOOP_LINE}:5: rewritten")
    r = cli("explain", "proj/pkg:3", "--format", "json")
    assert r.exit_code == 2
    (entry,) = json.loads(r.stdout)["files"]
    assert entry["path"] == "proj/pkg" and "directory" in entry["error"]
    assert len(error_lines(r.stderr)) == 1
    # Without a line number a directory is explained file by file.
    r = cli("explain", "proj/pkg")
    assert r.exit_code == 0 and r.stdout.startswith("proj/pkg/inner.py:")


# ----------------------------------------------------------------------------- changed between read and write


def _change_after_read(monkeypatch, target: str, how: str) -> dict:
    """Make ``target`` change on disk right after loop2scan has read it."""
    real_read = api.read_source
    seen: dict = {}

    def read_then_change(path):
        source = real_read(path)
        if os.path.normpath(path) == os.path.normpath(target) and not seen:
            st = os.stat(path)
            if how == "appended":
                with open(path, "ab") as f:
                    f.write(b"# edited by someone else\n")
            elif how == "same-size-same-mtime":
                data = bytearray(source.raw)
                data[data.index(b"tanh")] = ord("T")  # same length
                with open(path, "r+b") as f:
                    f.write(bytes(data))
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
                assert os.stat(path).st_mtime_ns == st.st_mtime_ns
                assert os.stat(path).st_size == st.st_size
            elif how == "deleted":
                os.unlink(path)
            elif how == "replaced":
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
                with os.fdopen(fd, "wb") as f:
                    f.write(source.raw.replace(b"tanh", b"sinh"))
                os.replace(tmp, path)
            seen["content"] = None if how == "deleted" else Path(path).read_bytes()
        return source

    monkeypatch.setattr(api, "read_source", read_then_change)
    return seen


@pytest.mark.parametrize("how", ["appended", "same-size-same-mtime", "deleted", "replaced"])
def test_file_changed_between_read_and_write_is_not_overwritten(project, monkeypatch, how):
    target = put(project / "model.py", RNN_SRC)
    good = good_files(project, 3)
    seen = _change_after_read(monkeypatch, str(target), how)
    r = cli("rewrite", project, "--write", "--jobs", "1")
    assert seen, "the file was never read"
    assert r.exit_code == 2
    words = ("no longer exists",) if how == "deleted" else ("changed on disk", "not overwritten")
    assert_one_error_line(r.stderr, "proj/model.py", *words)
    assert len(error_lines(r.stderr)) == 1
    if how == "deleted":
        assert not target.exists()
    else:
        assert target.read_bytes() == seen["content"]  # the other writer's version survives
    assert_good_written(good)
    assert temp_files(project) == []


# ----------------------------------------------------------------------------- read-only files and directories


def test_read_only_file_with_write(project):
    target = put(project / "frozen.py", RNN_SRC)
    good = good_files(project, 3)
    target.chmod(0o444)
    try:
        r = cli("rewrite", project, "--write")
        mode = stat.S_IMODE(target.stat().st_mode)
    finally:
        target.chmod(0o644)
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "proj/frozen.py", "read-only", "not overwritten")
    assert len(error_lines(r.stderr)) == 1
    assert target.read_text() == RNN_SRC and mode == 0o444
    assert_good_written(good)
    assert temp_files(project) == []


@pytest.mark.parametrize("where", ["directory", "rename"])
def test_write_refused_by_the_operating_system(project, monkeypatch, where):
    """A read-only directory (no temporary file can be created) or a failing rename
    (simulated, as root may write anywhere): one line, the file untouched, no temporary file."""
    target = put(project / "locked" / "model.py", RNN_SRC)
    good = good_files(project, 3)
    locked = os.path.abspath(project / "locked")
    if where == "directory":
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if os.path.abspath(kwargs.get("dir") or "") == locked:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), locked)
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        words = ("read-only directory", "not overwritten")
    else:
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if os.path.dirname(os.path.abspath(dst)) == locked:
                raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(dst))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
        words = ("not overwritten",)
    r = cli("rewrite", project, "--write", "--jobs", "1")
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "proj/locked/model.py", *words)
    assert len(error_lines(r.stderr)) == 1
    assert target.read_text() == RNN_SRC
    assert_good_written(good)
    assert temp_files(project) == []


# ----------------------------------------------------------------------------- Ctrl-C during --write


def _numbered_project(project: Path, n: int) -> list[Path]:
    """``n`` rewritable files, each a little different, in processing (sorted) order."""
    return [put(project / f"m{i:03d}.py", RNN_SRC.replace("def rnn(", f"def rnn_{i}(")) for i in range(n)]


def _expected_new(files: list[Path]) -> dict[Path, bytes]:
    out = {}
    for path in files:
        new = rewrite_source(path.read_text(encoding="utf-8"), "jax").new_text
        assert new is not None
        out[path] = new.encode("utf-8")
    return out


def _assert_whole(files: list[Path], old: dict[Path, bytes], new: dict[Path, bytes]) -> list[Path]:
    """Every file is entirely old or entirely new, and valid Python; return the new ones."""
    written = []
    for path in files:
        data = path.read_bytes()
        assert data in (old[path], new[path]), f"{path} is neither the old nor the new version"
        compile(data, str(path), "exec", dont_inherit=True)
        if data == new[path]:
            written.append(path)
    return written


def _interrupt_on_replace(monkeypatch, nth: int) -> list[str]:
    real_replace = os.replace
    calls: list[str] = []

    def replace(src, dst, *args, **kwargs):
        calls.append(os.fsdecode(dst))
        if len(calls) == nth:
            raise KeyboardInterrupt
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_keyboard_interrupt_during_write_through_the_api(project, monkeypatch):
    files = _numbered_project(project, 6)
    old = {p: p.read_bytes() for p in files}
    new = _expected_new(files)
    calls = _interrupt_on_replace(monkeypatch, nth=3)
    with pytest.raises(KeyboardInterrupt):
        api.run([str(project)], Options(write=True, jobs=1))
    assert len(calls) == 3
    written = _assert_whole(files, old, new)
    assert written == files[:2]  # the files before the interrupted one are complete, no later one was touched
    assert temp_files(project) == []


def test_keyboard_interrupt_during_write_through_the_command(project, monkeypatch):
    files = _numbered_project(project, 6)
    old = {p: p.read_bytes() for p in files}
    new = _expected_new(files)
    _interrupt_on_replace(monkeypatch, nth=3)
    r = _runner().invoke(main, ["rewrite", str(project), "--write", "--jobs", "1"])
    assert r.exit_code != 0, (r.exit_code, r.stderr)
    assert _assert_whole(files, old, new) == files[:2]
    assert temp_files(project) == []


def test_keyboard_interrupt_inside_libcst_is_not_swallowed(project, monkeypatch):
    """Ctrl-C may arrive while libcst computes positions for the emitter; it must stop
    the run, not be turned into a declined loop (L2S901) with the run going on."""
    import libcst.metadata.position_provider as position_provider

    files = _numbered_project(project, 6)
    old = {p: p.read_bytes() for p in files}
    new = _expected_new(files)
    state = {"armed": False, "fired": 0}
    real_read = api.read_source

    def read(path):
        if os.path.basename(path) == "m002.py":
            state["armed"] = True
        return real_read(path)

    cls = position_provider.PositionProvidingCodegenState
    real_add_token = cls.add_token

    def add_token(self, value):
        if state["armed"]:
            state["armed"] = False
            state["fired"] += 1
            raise KeyboardInterrupt
        return real_add_token(self, value)

    monkeypatch.setattr(api, "read_source", read)
    monkeypatch.setattr(cls, "add_token", add_token)
    with pytest.raises(KeyboardInterrupt):
        report = api.run([str(project)], Options(write=True, jobs=1))
        swallowed = [(f.path, loop.code, loop.message.splitlines()[0]) for f in report.files
                     for loop in f.loops if loop.code == "L2S901"]
        raise AssertionError(f"the interrupt was swallowed: {swallowed}")
    assert state["fired"] == 1
    assert _assert_whole(files, old, new) == files[:2]
    assert temp_files(project) == []


# ----------------------------------------------------------------------------- a real SIGINT


N_SIGINT_FILES = 200
PADDING = "".join(f"\n\ndef helper_{i}(x):\n    y = x * {i}\n    return y + 1\n" for i in range(60))


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def test_a_worker_stops_on_ctrl_c_without_waiting_for_the_main_process(monkeypatch):
    """Ctrl-C in a terminal reaches the workers too: a worker finishes the file
    in hand and starts no other, even before the main process (which may not
    be scheduled yet) tells it to stop."""
    done = []

    def process(path, options):
        done.append(path)
        if path == "b.py":
            os.kill(os.getpid(), signal.SIGINT)  # arrives while this file is in hand
        return api.FileReport(path)

    monkeypatch.setattr(api, "process_file", process)
    for name in ("_PROJECT", "_STOP"):  # set by the worker's start, restored after the test
        monkeypatch.setattr(api, name, getattr(api, name))
    monkeypatch.setattr(api, "_INTERRUPTED", False)
    previous = signal.getsignal(signal.SIGINT)
    try:
        monkeypatch.setattr(api, "_hold_collector", lambda: None)
        api._start_worker(None, stop=None)
        reports = api._process_chunk(["a.py", "b.py", "c.py", "d.py"], Options())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["a.py", "b.py"]
    assert [r.error for r in reports] == [None, None] + ["not processed: the run was interrupted"] * 2


@pytest.mark.parametrize("mode", ["jobs-1-sigint-to-process", "jobs-2-sigint-to-process-group"])
def test_real_sigint_during_write(tmp_path, mode):
    """Ctrl-C in a terminal: SIGINT to the command (and, with workers, to its whole
    process group) as soon as a first file has been written."""
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    files = [put(project / f"m{i:03d}.py", RNN_SRC + PADDING) for i in range(N_SIGINT_FILES)]
    new_bytes = _expected_new(files[:1])[files[0]]
    old = {p: p.read_bytes() for p in files}
    new = {p: new_bytes for p in files}
    jobs = 1 if mode.startswith("jobs-1") else 2
    proc = subprocess.Popen([sys.executable, "-m", "loop2scan", "rewrite", "proj", "--write", "--jobs", str(jobs)],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        written_at_signal = 0
        while time.monotonic() < deadline and proc.poll() is None:
            written_at_signal = sum(p.read_bytes() == new[p] for p in files)
            if written_at_signal:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before a signal could be sent"
        assert written_at_signal >= 1, "no file was written in time"
        if jobs == 1:
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        # files finished between the count above and the signal (a busy machine can take a while)
        # were written before the signal too
        written_at_signal = sum(p.read_bytes() == new[p] for p in files)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err.decode("utf-8", "replace")
    print(f"\n{mode}: exit code {proc.returncode}; stderr tail: {stderr[-200:]!r}")
    written = _assert_whole(files, old, new)  # no half-written file
    assert temp_files(project) == []
    assert proc.returncode != 0, f"exit code 0 after Ctrl-C: {stderr[-500:]}"
    assert "Traceback" not in stderr
    # The run stops: at most the files already being written when the signal came are finished.
    assert len(written) <= written_at_signal + jobs, (
        f"{len(written)} files written after Ctrl-C arrived with {written_at_signal} written")

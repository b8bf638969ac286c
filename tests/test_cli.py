"""End-to-end tests of the ``loop2scan`` command.

Most tests drive ``loop2scan.cli.main`` in-process through click's
``CliRunner`` with stdout and stderr kept apart; a few run the real
``python -m loop2scan`` in a subprocess to prove the console entry works.
Every test builds a small project under ``tmp_path`` (with a ``.git``
directory, so configuration lookup stops there) and runs from ``tmp_path``
with relative paths, so reported paths are ``proj/...``.

Array sizes in the numerical checks are all different (T=5, B=3, D=4, H=6)
so a swapped axis cannot go unnoticed.
"""

from __future__ import annotations

import ast
import difflib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from loop2scan import __version__
from loop2scan.cli import entry, main
from loop2scan.codes import CODES, code_table_markdown
from unreadable import refuse_reading

REPO = Path(__file__).resolve().parent.parent
SCHEMA_PATH = Path(__file__).resolve().with_name("report_schema.json")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BOM = b"\xef\xbb\xbf"
T, B, D, H = 5, 3, 4, 6

# ----------------------------------------------------------------------------- sources

RNN_SRC = '''\
"""A small Elman RNN."""
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

BREAK_SRC = '''\
import jax.numpy as jnp


def until(xs, h):
    for t in range(xs.shape[0]):
        h = jnp.tanh(h + xs[t])
        if t >= 2:
            break
    return h
'''

NAMES_SRC = '''\
import jax.numpy as jnp


def layer_names(n):
    names = []
    for i in range(n):
        names.append("layer" + str(i))
    return names


def zeros(n):
    return jnp.zeros((n,))
'''

NESTED_SRC = '''\
import jax.numpy as jnp


def nested(xs, h):
    for i in range(xs.shape[0]):
        h = h * 0.5
        for j in range(xs.shape[1]):
            h = jnp.tanh(h + xs[i, j])
        h = h + 1.0
    return h
'''

# Only `jax.numpy` is imported, so the rewrite must insert an `import jax`
# line; the comment inside the loop body is not ASCII.
VARIANT_SRC = '''\
import jax.numpy as jnp


def rnn(params, xs, h0):
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        # caf\u00e9: one step
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)
'''

SKIP_SRC = '''\
import jax
import jax.numpy as jnp


def on_line(xs, h):
    for t in range(xs.shape[0]):  # loop2scan: skip
        h = jnp.tanh(h + xs[t])
    return h


def above(xs, h):
    # loop2scan: skip
    for t in range(xs.shape[0]):
        h = jnp.tanh(h + xs[t])
    return h


def free(xs, h):
    for t in range(xs.shape[0]):
        h = jnp.tanh(h + xs[t])
    return h
'''


def line_of(src: str, needle: str, nth: int = 0) -> int:
    """1-based number of the ``nth`` line of ``src`` containing ``needle``."""
    hits = [i for i, line in enumerate(src.splitlines(), 1) if needle in line]
    assert len(hits) > nth, f"{needle!r} not in source"
    return hits[nth]


RNN_LOOP = line_of(RNN_SRC, "for t in")
BREAK_LOOP = line_of(BREAK_SRC, "for t in")
NAMES_LOOP = line_of(NAMES_SRC, "for i in")

# ----------------------------------------------------------------------------- helpers


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:  # click >= 8.2 always keeps stdout and stderr apart
        return CliRunner()


def cli(*args):
    """Invoke the command in-process; any exception other than SystemExit fails the test."""
    return _runner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def put(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def error_lines(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if name in line]


_module_ids = itertools.count()


def import_path(path: Path):
    """Import ``path`` as a fresh module (so two versions of a file can be compared)."""
    name = f"_l2s_cli_module_{next(_module_ids)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rnn_inputs(steps: int, seed: int):
    rng = np.random.default_rng(seed)
    params = {
        "wx": rng.standard_normal((D, H)).astype(np.float32) / 2,
        "wh": rng.standard_normal((H, H)).astype(np.float32) / 3,
        "b": rng.standard_normal((H,)).astype(np.float32) / 10,
    }
    xs = rng.standard_normal((steps, B, D)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    return params, xs, h0


def assert_same_rnn(original: Path, rewritten: Path, fn: str = "rnn") -> None:
    """Both files define ``fn(params, xs, h0) -> (h, hs)``; they must agree numerically."""
    a = getattr(import_path(original), fn)
    b = getattr(import_path(rewritten), fn)
    for steps, seed in ((T, 0), (1, 1), (7, 2)):
        args = rnn_inputs(steps, seed)
        ha, hsa = a(*args)
        hb, hsb = b(*args)
        assert np.shape(ha) == (B, H) and np.shape(hsa) == (steps, B, H)
        assert np.shape(hb) == np.shape(ha) and np.shape(hsb) == np.shape(hsa)
        np.testing.assert_allclose(np.asarray(hb), np.asarray(ha), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(hsb), np.asarray(hsa), rtol=1e-5, atol=1e-6)


def function_has_for(source: str, name: str) -> bool:
    tree = ast.parse(source)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    return any(isinstance(n, ast.For) for n in ast.walk(fn))


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_report(data: dict) -> None:
    import jsonschema

    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def by_path(data: dict) -> dict[str, dict]:
    return {f["path"]: f for f in data["files"]}


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """``tmp_path/proj`` with a rewritable RNN, a declined loop and a Python-value loop."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    put(root / "rnn.py", RNN_SRC)
    put(root / "brk.py", BREAK_SRC)
    put(root / "names.py", NAMES_SRC)
    monkeypatch.chdir(tmp_path)
    return Path("proj")


# ----------------------------------------------------------------------------- preview


def test_preview_prints_unified_diff_leaves_files_and_exits_1(project):
    before = snapshot(project)
    r = cli("rewrite", project)
    assert r.exit_code == 1, r.stderr
    out = r.stdout
    assert out.startswith("--- a/proj/rnn.py\n+++ b/proj/rnn.py\n@@ "), out
    assert out.count("--- a/") == 1 and out.count("+++ b/") == 1  # only the file with a rewrite
    assert "brk.py" not in out and "names.py" not in out
    removed = [line for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert any("for t in range(xs.shape[0]):" in line for line in removed)
    assert any("jax.lax.scan(" in line for line in added)
    assert snapshot(project) == before
    assert "1 loop can be rewritten in 1 file" in r.stderr
    assert "1 declined" in r.stderr


def test_preview_diff_is_exactly_what_write_applies(project):
    old = (project / "rnn.py").read_text()
    preview = cli("rewrite", project / "rnn.py")
    assert preview.exit_code == 1
    assert cli("rewrite", project / "rnn.py", "--write").exit_code == 0
    new = (project / "rnn.py").read_text()
    expected = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                            "a/proj/rnn.py", "b/proj/rnn.py"))
    assert preview.stdout == expected


def test_preview_without_rewrites_exits_0(project):
    (project / "rnn.py").unlink()
    before = snapshot(project)
    r = cli("rewrite", project)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert "no loop to rewrite" in r.stderr
    assert "1 declined" in r.stderr and "(2 files checked)" in r.stderr
    assert snapshot(project) == before


def test_no_diff_prints_no_diff_but_keeps_exit_code(project):
    r = cli("rewrite", project, "--no-diff")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "1 loop can be rewritten" in r.stderr
    (project / "rnn.py").unlink()
    r = cli("rewrite", project, "--no-diff")
    assert r.exit_code == 0 and r.stdout == ""


def test_quiet_prints_only_the_diff(project):
    r = cli("rewrite", project, "-q")
    assert r.exit_code == 1
    assert r.stdout.startswith("--- a/proj/rnn.py\n")
    assert r.stderr == ""
    r = cli("rewrite", project, "-q", "--no-diff")
    assert r.exit_code == 1 and r.stdout == "" and r.stderr == ""
    r = cli("rewrite", project, "-q", "-v")
    assert r.exit_code == 1 and r.stderr == ""


def test_quiet_still_reports_errors(project):
    put(project / "syn.py", "def f(:\n    pass\n")
    r = cli("rewrite", project, "-q", "--no-diff")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "proj/syn.py" in r.stderr


def test_verbose_prints_one_line_per_loop_with_its_code(project):
    put(project / "nest.py", NESTED_SRC)
    r = cli("rewrite", project, "-v", "--no-diff")
    assert r.exit_code == 1
    loop_lines = [line for line in r.stderr.splitlines() if re.match(r"^\S+:\d+:\d+: L2S\d{3} ", line)]
    assert len(loop_lines) == 5, r.stderr
    expected = [
        f"proj/brk.py:{BREAK_LOOP}:5: L2S101 declined: ",
        f"proj/names.py:{NAMES_LOOP}:5: L2S001 not a candidate: ",
        f"proj/nest.py:{line_of(NESTED_SRC, 'for i in')}:5: L2S000 rewritten: ",
        f"proj/nest.py:{line_of(NESTED_SRC, 'for j in')}:9: L2S000 rewritten: ",
        f"proj/rnn.py:{RNN_LOOP}:5: L2S000 rewritten: ",
    ]
    for prefix in expected:
        assert sum(line.startswith(prefix) for line in loop_lines) == 1, (prefix, r.stderr)
    assert "break" in next(line for line in loop_lines if "L2S101" in line)
    assert r.stdout == ""


# ----------------------------------------------------------------------------- --write


def test_write_rewrites_and_second_write_changes_nothing(project):
    before = snapshot(project)
    r = cli("rewrite", project, "--write")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""  # no diff in write mode
    assert "rewrote 1 loop in 1 file" in r.stderr
    after = snapshot(project)
    assert after["rnn.py"] != before["rnn.py"]
    assert b"jax.lax.scan(" in after["rnn.py"]
    assert {k: v for k, v in after.items() if k != "rnn.py"} == {k: v for k, v in before.items() if k != "rnn.py"}
    assert not [p for p in project.rglob("*") if "tmp" in p.name]  # no temporary file left behind

    r2 = cli("rewrite", project, "--write")
    assert r2.exit_code == 0, r2.stderr
    assert snapshot(project) == after
    assert "rewrote 0 loops in 0 files" in r2.stderr
    r3 = cli("rewrite", project)
    assert r3.exit_code == 0 and r3.stdout == ""


def test_written_file_is_valid_python_and_computes_the_same(project, tmp_path):
    original = put(tmp_path / "orig" / "rnn_original.py", RNN_SRC)
    assert cli("rewrite", project / "rnn.py", "--write").exit_code == 0
    written = (project / "rnn.py").read_text(encoding="utf-8")
    ast.parse(written)
    compile(written, "rnn.py", "exec")
    assert not function_has_for(written, "rnn")
    assert "jax.lax.scan(" in written
    assert_same_rnn(original, project / "rnn.py")


# ----------------------------------------------------------------------------- bad input


def _make_unreadable(path: Path, monkeypatch) -> None:
    """Make ``path`` unreadable: by permissions, or, when running as root (who
    may read anything), by making opening exactly that file fail with EACCES."""
    if not IS_ROOT and os.name == "posix":
        path.chmod(0)
        return
    monkeypatch.setattr(os, "open", refuse_reading(path))


BAD_KINDS = {
    # kind: (file name, content or None for a path that does not exist, expected words in the error)
    "missing": ("nope.py", None, "no such file"),
    "syntax-error": ("syn.py", b"def f(:\n    pass\n", "syntax error"),
    "not-utf8": ("latin.py", b'name = "caf\xe9"\n', "utf-8"),
    "binary": ("blob.py", b"\x00\x01\x02\xff\xfebinary\x00\x7f", "binary"),
    "unreadable": ("secret.py", RNN_SRC.encode(), "permission denied"),
}


@pytest.fixture(params=sorted(BAD_KINDS))
def bad_project(request, project, monkeypatch):
    name, content, words = BAD_KINDS[request.param]
    path = project / name
    if content is not None:
        put(path, content)
    if request.param == "unreadable":
        _make_unreadable(path, monkeypatch)
        request.addfinalizer(lambda: os.path.exists(path) and path.chmod(0o644))
    # A missing file can only be named explicitly; the others are also found by the walk.
    args = [project, path] if content is None else [project]
    return request.param, path, content, words, args


def test_bad_file_exits_2_even_with_rewrites_and_names_the_file(bad_project):
    kind, path, content, words, args = bad_project
    r = cli("rewrite", *args)
    assert r.exit_code == 2, (kind, r.stdout, r.stderr)
    assert "--- a/proj/rnn.py" in r.stdout  # the good file is still processed
    lines = error_lines(r.stderr, str(path))
    assert len(lines) == 1, (kind, r.stderr)
    assert lines[0].startswith(f"error: {path}: "), lines
    assert words in lines[0].lower(), lines
    assert "1 file could not be processed" in r.stderr
    if content is not None and kind != "unreadable":
        assert path.read_bytes() == content


def test_bad_file_does_not_stop_write(bad_project):
    kind, path, content, words, args = bad_project
    r = cli("rewrite", *args, "--write")
    assert r.exit_code == 2, (kind, r.stderr)
    assert b"jax.lax.scan(" in (Path("proj") / "rnn.py").read_bytes()
    assert len(error_lines(r.stderr, str(path))) == 1
    if content is None:
        assert not path.exists()
    elif kind != "unreadable":
        assert path.read_bytes() == content
    else:
        os.chmod(path, 0o644)
        assert path.read_bytes() == content  # never rewritten, although it has a rewritable loop


def test_bad_file_named_explicitly_alone_exits_2(project):
    put(project / "syn.py", "x = (\n")
    r = cli("rewrite", project / "syn.py")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert error_lines(r.stderr, "proj/syn.py")[0].startswith("error: proj/syn.py: ")


def test_directory_is_searched_recursively_skipping_default_excludes(project):
    put(project / "pkg" / "deep" / "mod.py", RNN_SRC)
    put(project / "build" / "gen.py", RNN_SRC)
    put(project / ".venv" / "lib" / "site.py", RNN_SRC)
    put(project / "pkg" / "notes.txt", RNN_SRC)
    r = cli("rewrite", project, "--format", "json")
    assert r.exit_code == 1
    paths = [f["path"] for f in json.loads(r.stdout)["files"]]
    assert paths == ["proj/brk.py", "proj/names.py", "proj/pkg/deep/mod.py", "proj/rnn.py"]
    r = cli("rewrite", project / "pkg", "--write")
    assert r.exit_code == 0
    assert b"jax.lax.scan(" in (project / "pkg" / "deep" / "mod.py").read_bytes()
    assert (project / "build" / "gen.py").read_text() == RNN_SRC


# ----------------------------------------------------------------------------- preservation


def _bom(src: str) -> bytes:
    return BOM + src.encode("utf-8")


def _latin1(src: str) -> bytes:
    return ("# -*- coding: latin-1 -*-\n" + src).encode("latin-1")


def _crlf(src: str) -> bytes:
    return src.replace("\n", "\r\n").encode("utf-8")


def _no_final_newline(src: str) -> bytes:
    return src.rstrip("\n").encode("utf-8")


def _check_bom(raw: bytes) -> None:
    assert raw.startswith(BOM) and not raw[len(BOM):].startswith(BOM)
    assert "caf\u00e9: one step" in raw[len(BOM):].decode("utf-8")


def _check_latin1(raw: bytes) -> None:
    assert raw.startswith(b"# -*- coding: latin-1 -*-\n")
    assert b"# caf\xe9: one step" in raw
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # still latin-1, not transcoded


def _check_crlf(raw: bytes) -> None:
    assert raw.count(b"\n") == raw.count(b"\r\n") > 5
    assert raw.count(b"\r") == raw.count(b"\r\n")
    lines = raw.split(b"\r\n")
    inserted = [line for line in lines if b"import jax" == line.strip() or b"lax.scan(" in line or b"def _" in line]
    assert len(inserted) >= 3, raw  # the added import, the step function and the scan call
    assert raw.endswith(b"\r\n")


def _check_no_final_newline(raw: bytes) -> None:
    assert not raw.endswith((b"\n", b"\r"))


PRESERVATION = {
    "utf8-bom": (_bom, _check_bom),
    "latin1-declaration": (_latin1, _check_latin1),
    "crlf": (_crlf, _check_crlf),
    "no-final-newline": (_no_final_newline, _check_no_final_newline),
}


@pytest.mark.parametrize("kind", sorted(PRESERVATION))
def test_write_preserves_file_format(kind, tmp_path, monkeypatch):
    make, check = PRESERVATION[kind]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proj" / ".git").mkdir(parents=True)
    original = put(tmp_path / "orig" / "model.py", make(VARIANT_SRC))
    target = put(tmp_path / "proj" / "model.py", make(VARIANT_SRC))
    preview = cli("rewrite", "proj/model.py")
    assert preview.exit_code == 1, preview.stderr
    if kind == "no-final-newline":
        assert preview.stdout.endswith("\n\\ No newline at end of file\n")
    r = cli("rewrite", "proj/model.py", "--write")
    assert r.exit_code == 0, r.stderr
    raw = target.read_bytes()
    assert b"jax.lax.scan(" in raw
    check(raw)
    compile(raw, "model.py", "exec")  # bytes: Python applies the BOM / coding declaration itself
    assert_same_rnn(original, target)
    again = cli("rewrite", "proj/model.py", "--write")
    assert again.exit_code == 0 and target.read_bytes() == raw


# ----------------------------------------------------------------------------- --format json


def test_json_report_matches_schema_and_describes_every_loop(project):
    r = cli("rewrite", project, "--format", "json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    validate_report(data)
    assert data["version"] == __version__
    assert data["write"] is False
    files = by_path(data)
    assert list(files) == ["proj/brk.py", "proj/names.py", "proj/rnn.py"]

    rnn = files["proj/rnn.py"]
    assert rnn["error"] is None and rnn["changed"] is True and rnn["framework"] == "jax"
    (loop,) = rnn["loops"]
    assert (loop["line"], loop["col"], loop["end_line"]) == (RNN_LOOP, 5, line_of(RNN_SRC, "hs.append"))
    assert loop["status"] == "rewritten" and loop["code"] == "L2S000"
    assert loop["target"] == "jax.lax.scan"
    assert loop["carry"] == ["h"]
    assert loop["ys"] == ["hs"]
    assert len(loop["xs"]) == 1
    assert loop["xs"][0]["expr"] == "xs" and loop["xs"][0]["axis"] == 0
    assert loop["broadcast"] == ["params"]

    brk = files["proj/brk.py"]
    assert brk["changed"] is False
    (loop,) = brk["loops"]
    assert (loop["status"], loop["code"], loop["line"]) == ("declined", "L2S101", BREAK_LOOP)
    assert "break" in loop["message"]
    assert loop["where"]["line"] == line_of(BREAK_SRC, "break")

    names = files["proj/names.py"]
    (loop,) = names["loops"]
    assert (loop["status"], loop["code"], loop["line"]) == ("not-candidate", "L2S001", NAMES_LOOP)

    assert data["summary"] == {
        "files": 3, "changed_files": 1, "errors": 0, "loops": 3,
        "by_status": {"declined": 1, "not-candidate": 1, "rewritten": 1},
        "by_code": {"L2S000": 1, "L2S001": 1, "L2S101": 1},
    }
    assert r.stderr == ""


def test_json_report_counts_several_files_and_codes(project):
    put(project / "more.py", RNN_SRC.replace("def rnn", "def rnn2"))
    put(project / "nest.py", NESTED_SRC)
    put(project / "skip.py", SKIP_SRC)
    r = cli("rewrite", project, "--format", "json")
    data = json.loads(r.stdout)
    validate_report(data)
    s = data["summary"]
    assert s["by_status"] == {"declined": 1, "not-candidate": 1, "rewritten": 5, "skipped": 2}
    assert s["by_code"] == {"L2S000": 5, "L2S001": 1, "L2S002": 2, "L2S101": 1}
    assert s["loops"] == 9 and s["files"] == 6 and s["changed_files"] == 4 and s["errors"] == 0


def test_json_report_with_a_file_error(project):
    put(project / "syn.py", "def f(:\n    pass\n")
    r = cli("rewrite", project, "--format", "json")
    assert r.exit_code == 2
    data = json.loads(r.stdout)
    validate_report(data)
    bad = by_path(data)["proj/syn.py"]
    assert isinstance(bad["error"], str) and "syntax error" in bad["error"]
    assert bad["loops"] == [] and bad["changed"] is False
    assert data["summary"]["errors"] == 1
    assert by_path(data)["proj/rnn.py"]["changed"] is True
    assert len(error_lines(r.stderr, "proj/syn.py")) == 1


def test_json_report_of_write(project):
    r = cli("rewrite", project, "--format", "json", "--write")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    validate_report(data)
    assert data["write"] is True
    assert b"jax.lax.scan(" in (project / "rnn.py").read_bytes()


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("summary"),
    lambda d: d["files"][0]["loops"][0].__setitem__("status", "maybe"),
    lambda d: d["files"][0]["loops"][0].__setitem__("code", "E501"),
    lambda d: d["files"][0]["loops"][0].__setitem__("col", 0),
    lambda d: d["files"][0].__setitem__("changed", "yes"),
    lambda d: d["files"][0]["loops"][0].pop("carry"),
    lambda d: d["summary"]["by_status"].__setitem__("unknown", 1),
], ids=["no-summary", "bad-status", "bad-code", "col-0", "changed-not-bool", "no-carry", "bad-status-key"])
def test_schema_rejects_malformed_reports(project, mutate):
    import jsonschema

    data = json.loads(cli("rewrite", project, "--format", "json").stdout)
    validate_report(data)
    mutate(data)
    with pytest.raises(jsonschema.ValidationError):
        validate_report(data)


# ----------------------------------------------------------------------------- --format sarif

SARIF_SHAPE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "pattern": "sarif"},
        "runs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["tool", "results"],
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "properties": {"driver": {
                    "type": "object", "required": ["name", "rules"],
                    "properties": {"name": {"type": "string"}, "rules": {"type": "array", "items": {
                        "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}}}}},
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["ruleId", "level", "message", "locations"],
                    "properties": {
                        "ruleId": {"type": "string"},
                        "ruleIndex": {"type": "integer", "minimum": 0},
                        "level": {"enum": ["none", "note", "warning", "error"]},
                        "message": {"type": "object", "required": ["text"]},
                        "locations": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["physicalLocation"],
                            "properties": {"physicalLocation": {
                                "type": "object", "required": ["artifactLocation", "region"],
                                "properties": {
                                    "artifactLocation": {"type": "object", "required": ["uri"]},
                                    "region": {"type": "object", "required": ["startLine", "startColumn"],
                                               "properties": {"startLine": {"type": "integer", "minimum": 1},
                                                              "startColumn": {"type": "integer", "minimum": 1}}},
                                }}}}},
                    }}},
            }}},
    },
}


def validate_sarif(log: dict) -> None:
    """Against the official SARIF 2.1.0 schema (tests/data), and the shape loop2scan promises."""
    import jsonschema

    official = json.loads((Path(__file__).with_name("data") / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft4Validator(official).validate(log)
    jsonschema.Draft202012Validator(SARIF_SHAPE).validate(log)


def test_sarif_report(project):
    put(project / "nest.py", NESTED_SRC)
    r = cli("rewrite", project, "--format", "sarif")
    assert r.exit_code == 1
    log = json.loads(r.stdout)
    validate_sarif(log)
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "loop2scan"
    assert driver["version"] == __version__
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids)) and set(rule_ids) <= set(CODES)
    assert {"L2S000", "L2S101"} <= set(rule_ids)
    found = {}
    for res in run["results"]:
        assert res["ruleId"] in rule_ids
        if "ruleIndex" in res:
            assert driver["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["message"]["text"]
        loc = res["locations"][0]["physicalLocation"]
        key = (loc["artifactLocation"]["uri"], loc["region"]["startLine"])
        found[key] = (res["ruleId"], loc["region"]["startColumn"], res["level"])
    assert found[("proj/rnn.py", RNN_LOOP)][:2] == ("L2S000", 5)
    assert found[("proj/brk.py", BREAK_LOOP)][:2] == ("L2S101", 5)
    inner = line_of(NESTED_SRC, "for j in")
    assert found[("proj/nest.py", line_of(NESTED_SRC, "for i in"))][:2] == ("L2S000", 5)
    assert found[("proj/nest.py", inner)][:2] == ("L2S000", 9)  # 1-based column of the indented `for`
    assert found[("proj/rnn.py", RNN_LOOP)][2] != found[("proj/brk.py", BREAK_LOOP)][2]


def _apply_sarif_fix(text: str, fix: dict) -> str:
    """Apply a SARIF fix's replacements (1-based lines and columns, end exclusive)."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col - 1 if line <= len(lines) else len(text)

    (change,) = fix["artifactChanges"]
    edits = []
    for rep in change["replacements"]:
        r = rep["deletedRegion"]
        edits.append((offset(r["startLine"], r["startColumn"]), offset(r["endLine"], r["endColumn"]),
                      rep["insertedContent"]["text"]))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def test_sarif_fixes_reproduce_the_rewrite(project):
    """Each file's rewrites come as one SARIF fix on its first rewrite; applying its
    replacements gives exactly the text --write writes."""
    put(project / "nest.py", NESTED_SRC)
    log = json.loads(cli("rewrite", project, "--format", "sarif").stdout)
    validate_sarif(log)
    fixes = {}
    for res in log["runs"][0]["results"]:
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        if "fixes" in res:
            assert res["ruleId"] == "L2S000" and uri not in fixes
            (fixes[uri],) = res["fixes"]
            assert fixes[uri]["artifactChanges"][0]["artifactLocation"]["uri"] == uri
    assert sorted(fixes) == ["proj/nest.py", "proj/rnn.py"]
    before = {uri: Path(uri).read_text() for uri in fixes}
    assert cli("rewrite", project, "--write").exit_code == 0
    for uri, fix in fixes.items():
        assert _apply_sarif_fix(before[uri], fix) == Path(uri).read_text()


def test_sarif_report_with_a_file_error_exits_2(project):
    put(project / "blob.py", b"\x00\x00")
    r = cli("rewrite", project, "--format", "sarif")
    assert r.exit_code == 2
    log = json.loads(r.stdout)
    validate_sarif(log)
    assert log["version"] == "2.1.0"
    (note,) = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert note["level"] == "error" and "binary" in note["message"]["text"]
    assert len(error_lines(r.stderr, "proj/blob.py")) == 1


# ----------------------------------------------------------------------------- explain


def test_explain_prints_split_and_decline(project):
    r = cli("explain", project / "rnn.py", project / "brk.py")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert f"proj/rnn.py:{RNN_LOOP}:5: rewritten -> jax.lax.scan" in out
    assert re.search(r"^\s+carry:\s+h$", out, re.M), out
    assert re.search(r"^\s+xs:\s+xs\b.*$", out, re.M), out
    assert re.search(r"^\s+ys:\s+hs\b", out, re.M), out
    assert re.search(r"^\s+broadcast:\s+params$", out, re.M), out
    assert f"proj/brk.py:{BREAK_LOOP}:5: declined L2S101" in out
    assert f"fix: {CODES['L2S101'].fix}" in out


def test_explain_path_line_selects_the_loop_on_that_line(project):
    r = cli("explain", f"proj/brk.py:{BREAK_LOOP}")
    assert r.exit_code == 0
    assert r.stdout.startswith(f"proj/brk.py:{BREAK_LOOP}:5: declined L2S101")
    r = cli("explain", f"proj/brk.py:{line_of(BREAK_SRC, 'break')}")  # inside the body
    assert r.exit_code == 0
    assert r.stdout.startswith(f"proj/brk.py:{BREAK_LOOP}:5: declined L2S101")
    r = cli("explain", f"proj/names.py:{NAMES_LOOP}")
    assert r.exit_code == 0 and "L2S001" in r.stdout


def test_explain_path_line_picks_the_innermost_loop(project):
    put(project / "nest.py", NESTED_SRC)
    outer, inner = line_of(NESTED_SRC, "for i in"), line_of(NESTED_SRC, "for j in")
    cases = {
        outer: (outer, 5),
        line_of(NESTED_SRC, "h = h * 0.5"): (outer, 5),
        inner: (inner, 9),
        line_of(NESTED_SRC, "jnp.tanh"): (inner, 9),
        line_of(NESTED_SRC, "h = h + 1.0"): (outer, 5),
    }
    for line, (want_line, want_col) in cases.items():
        r = cli("explain", f"proj/nest.py:{line}")
        assert r.exit_code == 0, (line, r.stderr)
        heads = re.findall(r"^proj/nest\.py:(\d+):(\d+): ", r.stdout, re.M)
        assert heads == [(str(want_line), str(want_col))], (line, r.stdout)


def test_explain_line_without_loop_exits_2(project):
    line = line_of(RNN_SRC, "return h, jnp.stack")
    r = cli("explain", f"proj/rnn.py:{line}")
    assert r.exit_code == 2
    assert r.stdout == ""
    (msg,) = error_lines(r.stderr, "proj/rnn.py")
    assert f"no `for` loop at line {line}" in msg


def test_explain_json(project):
    r = cli("explain", f"proj/rnn.py:{RNN_LOOP + 1}", "--format", "json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    validate_report(data)
    (f,) = data["files"]
    (loop,) = f["loops"]
    assert loop["line"] == RNN_LOOP and loop["carry"] == ["h"] and loop["ys"] == ["hs"]
    r = cli("explain", project, "--format", "json")
    data = json.loads(r.stdout)
    validate_report(data)
    assert data["summary"]["loops"] == 3


def test_explain_does_not_write(project):
    before = snapshot(project)
    assert cli("explain", project).exit_code == 0
    assert snapshot(project) == before


# ----------------------------------------------------------------------------- --framework


@pytest.mark.parametrize("framework", ["jax", "auto", "flax"])
def test_framework_jax_and_auto(project, framework):
    r = cli("rewrite", project, "--framework", framework, "--format", "json")
    assert r.exit_code == 1, r.stderr
    assert by_path(json.loads(r.stdout))["proj/rnn.py"]["changed"] is True
    r = cli("rewrite", project, "--framework", framework, "--write")
    assert r.exit_code == 0
    assert b"jax.lax.scan(" in (project / "rnn.py").read_bytes()


@pytest.mark.parametrize("framework", ["flax-linen"])
@pytest.mark.parametrize("command", ["rewrite", "explain"])
def test_framework_not_available_is_a_usage_error(project, framework, command):
    before = snapshot(project)
    extra = ["--write"] if command == "rewrite" else []
    r = cli(command, project, "--framework", framework, *extra)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert f"'{framework}'" in r.stderr and "not available" in r.stderr
    assert snapshot(project) == before


def test_unknown_framework_is_a_usage_error(project):
    r = cli("rewrite", project, "--framework", "tensorflow")
    assert r.exit_code == 2
    assert "unknown framework 'tensorflow'" in r.stderr
    assert r.stdout == ""


# ----------------------------------------------------------------------------- configuration


def _pyproject(path: Path, body: str) -> Path:
    return put(path, "[project]\nname = \"demo\"\n\n[tool.loop2scan]\n" + textwrap.dedent(body))


def test_config_is_found_from_a_subdirectory(project):
    sub = project / "pkg" / "sub"
    put(sub / "model.py", RNN_SRC)
    put(sub / "model_pb2.py", RNN_SRC)
    r = cli("rewrite", sub, "--format", "json")
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["proj/pkg/sub/model.py", "proj/pkg/sub/model_pb2.py"]
    _pyproject(project / "pyproject.toml", 'extend-exclude = ["*_pb2.py"]\n')
    r = cli("rewrite", sub, "--format", "json")
    assert r.exit_code == 1
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["proj/pkg/sub/model.py"]


def test_config_framework_not_available_is_an_error_and_command_line_wins(project):
    put(project / "pkg" / "sub" / "model.py", RNN_SRC)
    _pyproject(project / "pyproject.toml", 'framework = "flax-linen"\n')
    r = cli("rewrite", "proj/pkg/sub")
    assert r.exit_code == 2
    assert "'flax-linen'" in r.stderr and r.stdout == ""
    r = cli("rewrite", "proj/pkg/sub", "--framework", "jax")
    assert r.exit_code == 1
    assert "--- a/proj/pkg/sub/model.py" in r.stdout


def test_config_unknown_key_is_an_error_naming_it(project):
    _pyproject(project / "pyproject.toml", 'framework = "jax"\nexlcude = ["build"]\n')
    before = snapshot(project)
    r = cli("rewrite", project, "--write")
    assert r.exit_code == 2
    assert "exlcude" in r.stderr
    assert snapshot(project) == before


def test_config_invalid_toml_is_an_error(project):
    put(project / "pyproject.toml", "[tool.loop2scan]\nframework = \n")
    r = cli("rewrite", project)
    assert r.exit_code == 2
    assert "pyproject.toml" in r.stderr


def test_config_exclude_and_extend_exclude(project):
    put(project / "legacy" / "old.py", RNN_SRC)
    put(project / "gen" / "model_pb2.py", RNN_SRC)
    put(project / "build" / "out.py", RNN_SRC)  # `exclude` replaces the defaults, so build/ is searched
    put(project / "pkg" / "vendored" / "v.py", RNN_SRC)
    _pyproject(project / "pyproject.toml", """\
        exclude = ["legacy", "pkg/vendored"]
        extend-exclude = ["*_pb2.py"]
    """)
    r = cli("rewrite", project, "--format", "json")
    assert r.exit_code == 1
    paths = [f["path"] for f in json.loads(r.stdout)["files"]]
    assert paths == ["proj/brk.py", "proj/build/out.py", "proj/names.py", "proj/rnn.py"]
    # Patterns with a slash are anchored at the directory of pyproject.toml, also from a subdirectory.
    r = cli("rewrite", project / "pkg", "--format", "json")
    assert json.loads(r.stdout)["files"] == [] and r.exit_code == 0
    # Explicitly named files are always processed.
    r = cli("rewrite", project / "legacy" / "old.py", project / "gen" / "model_pb2.py", "--write")
    assert r.exit_code == 0, r.stderr
    assert b"jax.lax.scan(" in (project / "legacy" / "old.py").read_bytes()
    assert b"jax.lax.scan(" in (project / "gen" / "model_pb2.py").read_bytes()


def test_explicit_config_path(project, tmp_path):
    conf = _pyproject(tmp_path / "elsewhere" / "custom.toml", 'extend-exclude = ["rnn.py"]\n')
    assert cli("rewrite", project, "--no-diff").exit_code == 1
    r = cli("rewrite", project, "--config", conf, "--format", "json")
    assert r.exit_code == 0
    assert "proj/rnn.py" not in by_path(json.loads(r.stdout))
    _pyproject(conf, 'framework = "flax-linen"\n')
    r = cli("rewrite", project, "--config", conf)
    assert r.exit_code == 2 and "flax-linen" in r.stderr


def test_explicit_config_path_that_does_not_exist(project):
    r = cli("rewrite", project, "--config", "nowhere/pyproject.toml")
    assert r.exit_code == 2
    assert "nowhere/pyproject.toml" in r.stderr


# ----------------------------------------------------------------------------- suppression


def test_skip_comment_on_the_for_line_and_on_the_line_above(project):
    put(project / "skip.py", SKIP_SRC)
    r = cli("rewrite", project / "skip.py", "--format", "json")
    assert r.exit_code == 1
    (f,) = json.loads(r.stdout)["files"]
    got = {loop["line"]: (loop["status"], loop["code"]) for loop in f["loops"]}
    assert got == {
        line_of(SKIP_SRC, "for t in", 0): ("skipped", "L2S002"),
        line_of(SKIP_SRC, "for t in", 1): ("skipped", "L2S002"),
        line_of(SKIP_SRC, "for t in", 2): ("rewritten", "L2S000"),
    }
    assert cli("rewrite", project / "skip.py", "--write").exit_code == 0
    new = (project / "skip.py").read_text()
    assert function_has_for(new, "on_line") and function_has_for(new, "above")
    assert not function_has_for(new, "free")
    assert new.count("# loop2scan: skip") == 2
    assert new.count("lax.scan(") == 1


def test_skip_file_skips_every_loop(project):
    src = "# loop2scan: skip-file\n" + SKIP_SRC.replace("  # loop2scan: skip", "").replace(
        "    # loop2scan: skip\n", "")
    path = put(project / "skipfile.py", src)
    r = cli("rewrite", path, "--format", "json")
    assert r.exit_code == 0
    (f,) = json.loads(r.stdout)["files"]
    assert len(f["loops"]) == 3 and f["changed"] is False
    assert all((loop["status"], loop["code"]) == ("skipped", "L2S002") for loop in f["loops"])
    r = cli("rewrite", path, "--write")
    assert r.exit_code == 0 and "3 skipped" in r.stderr
    assert path.read_text() == src
    # Control: without the comment the same file is rewritten.
    put(path, src.replace("# loop2scan: skip-file\n", ""))
    assert cli("rewrite", path, "--no-diff").exit_code == 1


# ----------------------------------------------------------------------------- codes, version


def test_codes_lists_every_code():
    r = cli("codes")
    assert r.exit_code == 0
    assert r.stdout == code_table_markdown()
    for code in CODES:
        assert f"`{code}`" in r.stdout


def test_codes_explains_one_code():
    r = cli("codes", "L2S101")
    assert r.exit_code == 0
    c = CODES["L2S101"]
    assert r.stdout.startswith(f"L2S101 ({c.name}): {c.title}")
    assert c.fix in r.stdout
    assert "L2S102" not in r.stdout


def test_codes_unknown_code_exits_2():
    r = cli("codes", "L2S999")
    assert r.exit_code == 2
    assert "L2S999" in r.stderr and r.stdout == ""


def test_version():
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"loop2scan, version {__version__}"
    assert __version__ == importlib.metadata.version("loop2scan")


# ----------------------------------------------------------------------------- real processes


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def run_module(*args, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop2scan", *map(str, args)], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=120)


def test_console_entry_point_runs_the_click_main():
    (ep,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "loop2scan"]
    assert ep.value == "loop2scan.cli:entry"
    assert ep.load() is entry


def test_entry_exits_with_the_commands_code_and_flushes_its_output(tmp_path):
    """The command's exit code and output survive the exit that skips teardown,
    piped as in pre-commit and CI."""
    (tmp_path / "rnn.py").write_text(RNN_SRC)
    code = "import sys; sys.argv = ['loop2scan', *sys.argv[1:]]; from loop2scan.cli import entry; entry()"
    p = subprocess.run([sys.executable, "-c", code, "rewrite", "rnn.py"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith("--- a/rnn.py\n+++ b/rnn.py\n")
    assert "1 loop can be rewritten" in p.stderr
    p = subprocess.run([sys.executable, "-c", code, "rewrite", "--framework", "nope", "rnn.py"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Error" in p.stderr


def test_module_entry_preview_then_write(project, tmp_path):
    p = run_module("rewrite", "proj", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith("--- a/proj/rnn.py\n+++ b/proj/rnn.py\n")
    assert "1 loop can be rewritten" in p.stderr
    assert (tmp_path / "proj" / "rnn.py").read_text() == RNN_SRC
    p = run_module("rewrite", "proj", "--write", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    assert "jax.lax.scan(" in (tmp_path / "proj" / "rnn.py").read_text()
    p = run_module("--version", cwd=tmp_path)
    assert p.returncode == 0 and __version__ in p.stdout


def test_module_entry_bad_path_exits_2(project, tmp_path):
    p = run_module("rewrite", "proj", "proj/missing.py", "--no-diff", cwd=tmp_path)
    assert p.returncode == 2
    (line,) = error_lines(p.stderr, "proj/missing.py")
    assert line.startswith("error: proj/missing.py: ")
    assert "Traceback" not in p.stderr


def test_output_is_deterministic(project, tmp_path):
    put(project / "nest.py", NESTED_SRC)
    put(project / "skip.py", SKIP_SRC)
    put(project / "pkg" / "a.py", RNN_SRC)
    put(project / "pkg" / "b" / "c.py", VARIANT_SRC)
    runs = []
    for seed in ("1", "2"):
        text = run_module("rewrite", "proj", "-v", cwd=tmp_path, PYTHONHASHSEED=seed)
        js = run_module("rewrite", "proj", "--format", "json", cwd=tmp_path, PYTHONHASHSEED=seed)
        runs.append((text.returncode, text.stdout, text.stderr, js.returncode, js.stdout))
    assert runs[0] == runs[1]
    assert runs[0][0] == 1 and runs[0][1].count("--- a/") == 5
    in_process = cli("rewrite", "proj", "--format", "json")
    assert in_process.stdout == runs[0][4]

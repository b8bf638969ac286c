"""Unusual but valid inputs, processed end to end through the command line.

Each test writes a file, runs ``loop2scan rewrite FILE --write`` (in process,
through the click command), and checks that the result parses, computes the
same as the original where it can run, and keeps the property under test:
a UTF-8 byte order mark, a latin-1 coding declaration, CRLF and mixed line
endings, tab indentation, empty files, a ~10 MB file, and Python 3.12 syntax
that the running Python cannot parse.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from loop2scan.cli import main

BOM = b"\xef\xbb\xbf"
T, B, D, H = 5, 3, 4, 6  # all different, so a swapped axis cannot go unnoticed


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:  # click >= 8.2 keeps stdout and stderr apart
        return CliRunner()


def cli(*args):
    return _runner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


_ids = itertools.count()


def import_path(path: Path):
    """Import ``path`` as a fresh module (Python applies the BOM / coding declaration)."""
    spec = importlib.util.spec_from_file_location(f"_l2s_unusual_{next(_ids)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exec_source(src: str):
    namespace: dict = {"__name__": f"_l2s_unusual_src_{next(_ids)}"}
    exec(compile(src, "<src>", "exec"), namespace)
    return namespace


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


def assert_same_outputs(f, g) -> None:
    """``f`` and ``g`` take ``(params, xs, h0)``; they must agree in structure, shape, dtype and value."""
    import jax

    for steps, seed in ((T, 0), (1, 1), (7, 2)):
        args = rnn_inputs(steps, seed)
        want, got = f(*args), g(*args)
        want_leaves, want_tree = jax.tree.flatten(want)
        got_leaves, got_tree = jax.tree.flatten(got)
        assert got_tree == want_tree
        for w, x in zip(want_leaves, got_leaves):
            assert np.shape(x) == np.shape(w) and np.asarray(x).dtype == np.asarray(w).dtype
            np.testing.assert_allclose(np.asarray(x), np.asarray(w), rtol=1e-5, atol=1e-6)


def write_and_check(path: Path, original: Path) -> bytes:
    """Run ``rewrite --write`` on ``path`` (a copy of ``original``), check the rewrite
    parses and that a second ``--write`` changes nothing; return the new bytes."""
    before = path.read_bytes()
    r = cli("rewrite", path, "--write")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert "error" not in r.stderr.lower(), r.stderr
    raw = path.read_bytes()
    assert raw != before, "nothing was rewritten"
    assert b"lax.scan(" in raw
    compile(raw, str(path), "exec", dont_inherit=True)  # bytes: BOM / coding declaration honoured
    assert original.read_bytes() == before
    again = cli("rewrite", path, "--write")
    assert again.exit_code == 0, again.stderr
    assert path.read_bytes() == raw
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".loop2scan.tmp")]
    return raw


def lines_with_ends(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def ending(line: bytes) -> bytes:
    for end in (b"\r\n", b"\n", b"\r"):
        if line.endswith(end):
            return end
    return b""


# ----------------------------------------------------------------------------- BOM


BOM_SRC = '''\
# -*- coding: utf-8 -*-
"""Récurrence « simple » — état caché h (°)."""
import jax.numpy as jnp


def rnn(params, xs, h0):
    α = 0.5  # facteur d'oubli
    h = h0
    hs = []
    for t in range(xs.shape[0]):  # ⏱ pas de temps
        h = jnp.tanh(α * h + xs[t] @ params["wx"] + h @ params["wh"] + params["b"])  # ∑ des entrées
        hs.append(h)
    return h, jnp.stack(hs)
'''


def test_utf8_bom_with_declaration_and_non_ascii_identifiers(tmp_path):
    data = BOM + BOM_SRC.encode("utf-8")
    original = put(tmp_path / "orig" / "model.py", data)
    path = put(tmp_path / "proj" / "model.py", data)
    raw = write_and_check(path, original)
    assert raw.startswith(BOM) and not raw[len(BOM):].startswith(BOM)
    assert raw.count(BOM) == 1
    text = raw[len(BOM):].decode("utf-8")
    old_lines = BOM_SRC.splitlines(keepends=True)
    new_lines = text.splitlines(keepends=True)
    assert new_lines[:3] == old_lines[:3]  # coding line, docstring, import: untouched
    assert "import jax\n" in new_lines[3:5]
    for fragment in ("α = 0.5  # facteur d'oubli", "# ⏱ pas de temps", "# ∑ des entrées", "α * h"):
        assert fragment in text, fragment
    assert_same_outputs(import_path(original).rnn, import_path(path).rnn)


# ----------------------------------------------------------------------------- latin-1


LATIN1_SRC = '''\
#!/usr/bin/env python
# -*- coding: latin-1 -*-
"""Modèle récurrent (°C, ±, µs, ÿ)."""
import jax.numpy as jnp


def rnn(params, xs, h0):
    """Itère sur le temps, « pas à pas »."""
    unité = "µs ± 5 %"
    h = h0
    hs = []
    for t in range(xs.shape[0]):  # boucle très simple
        # étape numéro t : mise à jour de l'état
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])  # état caché
        hs.append(h)  # ÿ
    # fin de la boucle «°»
    return h, jnp.stack(hs)
'''


def test_latin1_declaration_with_non_ascii_near_the_loop(tmp_path):
    data = LATIN1_SRC.encode("latin-1")
    original = put(tmp_path / "orig" / "model.py", data)
    path = put(tmp_path / "proj" / "model.py", data)
    raw = write_and_check(path, original)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # still latin-1, not transcoded
    assert raw.startswith(b"#!/usr/bin/env python\n# -*- coding: latin-1 -*-\n")
    for fragment in ('"""Itère sur le temps, « pas à pas »."""', 'unité = "µs ± 5 %"', "# boucle très simple",
                     "# étape numéro t : mise à jour de l'état", "# état caché", "# ÿ", "# fin de la boucle «°»"):
        assert fragment.encode("latin-1") in raw, fragment
    assert raw.decode("latin-1").count("\n") >= LATIN1_SRC.count("\n")
    assert_same_outputs(import_path(original).rnn, import_path(path).rnn)


# ----------------------------------------------------------------------------- CRLF


CRLF_SRC = '''\
"""Two loops and a multi-line body."""
import jax
import jax.numpy as jnp


def untouched(x):
    # nothing to rewrite here
    return x + 1


class Model:
    def rnn(self, params, xs, h0):
        h = h0
        hs = []
        for t in range(xs.shape[0]):
            # a comment line inside the body
            h = jnp.tanh(
                xs[t] @ params["wx"]
                + h @ params["wh"]
                + params["b"]
            )
            hs.append(h)
        return h, jnp.stack(hs)


def rnn(params, xs, h0):
    h = Model().rnn(params, xs, h0)[0]
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"])
    return h
'''


def test_crlf_file_keeps_crlf_on_every_line(tmp_path):
    data = CRLF_SRC.replace("\n", "\r\n").encode("utf-8")
    original = put(tmp_path / "orig" / "model.py", data)
    path = put(tmp_path / "proj" / "model.py", data)
    raw = write_and_check(path, original)
    assert raw.count(b"\n") == raw.count(b"\r\n") and raw.count(b"\r") == raw.count(b"\r\n")
    assert raw.count(b"lax.scan(") == 2
    lines = lines_with_ends(raw)
    assert all(ending(line) == b"\r\n" for line in lines)
    head = lines_with_ends(data)[:9]  # docstring, imports, `untouched`
    assert lines[:9] == head
    assert_same_outputs(import_path(original).rnn, import_path(path).rnn)


# ----------------------------------------------------------------------------- mixed line endings


MIXED_HEAD = '''\
"""Mixed line endings."""
import jax.numpy as jnp


def helper_one(x):
    return x * 2


def helper_two(x):
    return x - 2


'''

MIXED_LOOP = '''\
def rnn(params, xs, h0):
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)
'''

MIXED_TAIL = '''\


def helper_three(x):
    return x / 2
'''


def _with_endings(text: str, ends: list[str]) -> str:
    lines = text.splitlines()
    assert len(lines) == len(ends)
    return "".join(line + end for line, end in zip(lines, ends))


def _generated_lines(raw: bytes) -> list[bytes]:
    """Lines that the rewrite created (not present in any form in the original)."""
    keys = (b"_step(", b"return h, ", b"return (h, ", b"lax.scan(", b"import jax\r\n", b"import jax\n")
    return [line for line in lines_with_ends(raw)
            if any(k in line for k in keys) and b"import jax.numpy" not in line]


@pytest.mark.parametrize("layout", ["loop-function-lf", "loop-function-crlf"])
def test_mixed_line_endings(layout, tmp_path):
    """The file's first and dominant line ending is CRLF.  New lines take CRLF;
    every line outside the rewritten function keeps its own ending."""
    head_n, loop_n, tail_n = (len(s.splitlines()) for s in (MIXED_HEAD, MIXED_LOOP, MIXED_TAIL))
    if layout == "loop-function-lf":
        head = _with_endings(MIXED_HEAD, ["\r\n"] * head_n)
        loop = MIXED_LOOP  # LF, in a CRLF file
        tail = _with_endings(MIXED_TAIL, ["\r\n"] * tail_n)
    else:
        # CRLF everywhere but in helper_two and helper_three, which use LF.
        ends = ["\r\n"] * head_n
        for i, line in enumerate(MIXED_HEAD.splitlines()):
            if line.startswith("def helper_two") or line.startswith("    return x - 2"):
                ends[i] = "\n"
        head = _with_endings(MIXED_HEAD, ends)
        loop = _with_endings(MIXED_LOOP, ["\r\n"] * loop_n)
        tail = _with_endings(MIXED_TAIL, ["\r\n", "\r\n", "\n", "\n"])
    data = (head + loop + tail).encode("utf-8")
    assert data.count(b"\r\n") > data.count(b"\n") - data.count(b"\r\n")  # CRLF dominates
    assert lines_with_ends(data)[0].endswith(b"\r\n")  # and comes first
    original = put(tmp_path / "orig" / "model.py", data)
    path = put(tmp_path / "proj" / "model.py", data)
    raw = write_and_check(path, original)

    generated = _generated_lines(raw)
    assert len(generated) >= 4, raw  # the import, the step function, its return, the scan call
    wrong = [line for line in generated if ending(line) != b"\r\n"]
    assert wrong == [], f"new lines without the file's CRLF ending: {wrong}"

    # Untouched lines keep their own endings, byte for byte.
    old, new = lines_with_ends(data), lines_with_ends(raw)
    old_head, new_head = old[:head_n], [line for line in new[:head_n + 1] if line.strip() != b"import jax"]
    assert new_head == old_head
    assert new[-tail_n:] == old[-tail_n:]
    assert_same_outputs(import_path(original).rnn, import_path(path).rnn)


# ----------------------------------------------------------------------------- tabs


TABS_SRC = (
    "import jax\n"
    "import jax.numpy as jnp\n"
    "\n"
    "\n"
    "class Model:\n"
    "\tdef rnn(self, params, xs, h0):\n"
    "\t\th = h0\n"
    "\t\ths = []\n"
    "\t\tfor t in range(xs.shape[0]):\n"
    "\t\t\tif True:\n"
    "\t\t\t\th = jnp.tanh(xs[t] @ params[\"wx\"]\n"
    "\t\t\t\t             + h @ params[\"wh\"] + params[\"b\"])\n"
    "\t\t\ths.append(h)\n"
    "\t\treturn h, jnp.stack(hs)\n"
    "\n"
    "\n"
    "@jax.jit\n"
    "def rnn(params, xs, h0):\n"
    "\treturn Model().rnn(params, xs, h0)\n"
)


def test_tab_indentation_is_used_for_the_step_function(tmp_path):
    data = TABS_SRC.encode("utf-8")
    original = put(tmp_path / "orig" / "model.py", data)
    path = put(tmp_path / "proj" / "model.py", data)
    raw = write_and_check(path, original)
    text = raw.decode("utf-8")
    lines = text.splitlines()
    step = next(i for i, line in enumerate(lines) if line.lstrip().startswith("def _rnn_step"))
    assert lines[step].startswith("\t\tdef _rnn_step") and not lines[step].startswith("\t\t\t")
    scan = next(line for line in lines if "lax.scan(" in line)
    assert scan.startswith("\t\t") and not scan.startswith("\t\t\t")
    ret = next(line for line in lines[step:] if line.strip().startswith("return") and "_step" not in line)
    assert ret.startswith("\t\t\t") and not ret.startswith("\t\t\t\t")
    for line in lines:
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if line.strip() and not line.lstrip().startswith("+ h @"):
            assert " " not in indent, f"space indentation in a tab-indented file: {line!r}"
    ast.parse(text)
    assert_same_outputs(import_path(original).rnn, import_path(path).rnn)


# ----------------------------------------------------------------------------- empty files


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

EMPTY_KINDS = {
    "empty": b"",
    "bom-only": BOM,
    "newline": b"\n",
    "crlf-lines": b"\r\n\r\n",
    "comment-only": b"# nothing here\n",
    "whitespace-only": b"   \n\t\n  ",
    "form-feed": b"\x0c\n",
    "docstring-only": b'"""Only a docstring."""',
}


@pytest.mark.parametrize("kind", sorted(EMPTY_KINDS))
def test_empty_files_are_processed_and_left_alone(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    content = EMPTY_KINDS[kind]
    empty = put(tmp_path / "proj" / "empty.py", content)
    put(tmp_path / "proj" / "rnn.py", RNN_SRC.encode())
    r = cli("rewrite", "proj", "--write", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    report = {f["path"]: f for f in json.loads(r.stdout)["files"]}
    assert report["proj/empty.py"] == {"path": "proj/empty.py", "error": None, "framework": None,
                                       "changed": False, "loops": []}
    assert report["proj/rnn.py"]["changed"] is True
    assert empty.read_bytes() == content
    assert b"lax.scan(" in (tmp_path / "proj" / "rnn.py").read_bytes()
    r = cli("rewrite", "proj/empty.py", "--write")
    assert r.exit_code == 0 and empty.read_bytes() == content
    assert r.stderr == "rewrote 0 loops in 0 files (1 file checked).\n"


# ----------------------------------------------------------------------------- a ~10 MB file


BIG_HELPER = '''

def helper_{i}(x, y, scale=1.0):
    """Combine ``x`` and ``y`` (helper {i}).

    Args:
      x: the first operand.
      y: the second operand.
      scale: a factor applied to the sum.

    Returns:
      The scaled, clipped combination.
    """
    # keep the arithmetic simple: this module is generated
    total = (x + y) * scale + {i}
    if total > {limit}:
        total = {limit}
    return total
'''

BIG_LOOP = '''

def rnn_{i}(params, xs, h0):
    """An Elman RNN over the leading axis of ``xs``."""
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)
'''

BIG_LIMIT_S = 60.0


def _big_module(target: int) -> tuple[str, list[int]]:
    parts = ['"""A generated module of about 10 MB."""\nimport jax\nimport jax.numpy as jnp\n']
    size, i, loops = len(parts[0]), 0, []
    while size < target:
        chunk = BIG_HELPER.format(i=i, limit=i * 3 + 7)
        parts.append(chunk)
        size += len(chunk)
        i += 1
        if i % 10000 == 5:
            chunk = BIG_LOOP.format(i=i)
            parts.append(chunk)
            size += len(chunk)
            loops.append(i)
    return "".join(parts), loops


def _chunks(text: str) -> list[str]:
    return text.split("\n\n\ndef ")


def test_ten_megabyte_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, loops = _big_module(10_000_000)
    assert len(text) >= 10_000_000 and len(loops) == 3
    path = put(tmp_path / "big.py", text.encode("utf-8"))
    start = time.perf_counter()
    r = cli("rewrite", "big.py", "--write", "--format", "json")
    elapsed = time.perf_counter() - start
    print(f"\n10 MB file ({len(text)} bytes, {text.count(chr(10))} lines): rewrite --write took {elapsed:.1f} s")
    assert elapsed < BIG_LIMIT_S, f"rewriting a 10 MB file took {elapsed:.1f} s"
    assert r.exit_code == 0, r.stderr
    (report,) = json.loads(r.stdout)["files"]
    assert [loop["status"] for loop in report["loops"]] == ["rewritten"] * 3

    new = path.read_bytes().decode("utf-8")
    ast.parse(new)
    old_chunks, new_chunks = _chunks(text), _chunks(new)
    # no caller is seen: each step is defined once, at module level, right before its function
    steps = [i for i, chunk in enumerate(new_chunks) if chunk.startswith("_rnn_")]
    assert [new_chunks[i].split("(")[0] for i in steps] == [f"_rnn_{i}_step" for i in loops]
    kept = [chunk for i, chunk in enumerate(new_chunks) if i not in steps]
    assert len(kept) == len(old_chunks)
    differing = [i for i, (a, b) in enumerate(zip(old_chunks, kept)) if a != b]
    assert [kept[i].split("(")[0] for i in differing] == [f"rnn_{i}" for i in loops]
    header = "import jax\nimport jax.numpy as jnp\n\n\ndef "
    for i, step in zip(differing, steps):
        name = old_chunks[i].split("(")[0]
        before = exec_source(header + old_chunks[i])[name]
        after = exec_source(header + new_chunks[step] + "\n\n\ndef " + kept[i])[name]
        assert "lax.scan(" in kept[i]
        assert_same_outputs(before, after)


# ----------------------------------------------------------------------------- Python 3.12+ syntax


PY312_SRC = '''\
"""Model code written for Python 3.12+ (PEP 695 and PEP 701)."""
import jax.numpy as jnp

type Params = dict[str, jnp.ndarray]
type Pair[T] = tuple[T, T]


class Box[T]:
    def __init__(self, item: T) -> None:
        self.item = item


def first[T](items: list[T]) -> T:
    return items[0]


def describe(cfg: dict) -> str:
    return f"{cfg["name"]}: {f"{cfg["steps"]:>{cfg["width"]}}"} steps, {"-".join(f"{k}" for k in cfg)}"


def rnn(params, xs, h0):
    h = h0
    hs = []
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
        hs.append(h)
    return h, jnp.stack(hs)


def last_state[T](params, xs: T, h0: T) -> T:
    label = f"{params["wx"].shape}"
    h = h0
    for t in range(xs.shape[0]):
        h = jnp.tanh(xs[t] @ params["wx"] + h @ params["wh"] + params["b"])
    return h
'''


def _region(text: str, start: str, end: str | None) -> str:
    i = text.index(start)
    j = text.index(end, i) if end is not None else len(text)
    return text[i:j]


def test_python_312_syntax_file_is_processed_and_rewritten(tmp_path, monkeypatch):
    import libcst

    with pytest.raises(SyntaxError):
        ast.parse(PY312_SRC)  # the running Python cannot parse this file
    monkeypatch.chdir(tmp_path)
    path = put(tmp_path / "proj" / "model312.py", PY312_SRC.encode("utf-8"))
    r = cli("rewrite", "proj/model312.py", "--write", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert "syntax error" not in r.stderr.lower()
    (report,) = json.loads(r.stdout)["files"]
    assert report["error"] is None
    assert [(loop["status"], loop["code"]) for loop in report["loops"]] == [("rewritten", "L2S000")] * 2, \
        [(loop["line"], loop["code"], loop["message"]) for loop in report["loops"]]

    new = path.read_bytes().decode("utf-8")
    assert libcst.parse_module(new).code == new  # valid Python 3.12+
    # Everything up to the first rewritten function is byte-for-byte the same, but
    # for the import the rewrite may add after the existing ones.
    head_old = PY312_SRC[: PY312_SRC.index("def rnn(")]
    head_new = new[: new.index("def _rnn_step(")]  # no caller is seen: the step is defined before `rnn`
    assert head_new.replace("import jax\n", "", 1) == head_old
    for line in ("type Params = dict[str, jnp.ndarray]", "type Pair[T] = tuple[T, T]", "class Box[T]:",
                 "def first[T](items: list[T]) -> T:", "def last_state[T](params, xs: T, h0: T) -> T:",
                 '    label = f"{params["wx"].shape}"',
                 '    return f"{cfg["name"]}: {f"{cfg["steps"]:>{cfg["width"]}}"} steps, '
                 '{"-".join(f"{k}" for k in cfg)}"'):
        assert new.count(line + "\n") == 1, line
    assert _region(new, "def rnn(", "def last_state").count("lax.scan(") == 1
    assert _region(new, "def last_state", None).count("lax.scan(") == 1

    # The rewritten function runs (it uses no 3.12 syntax itself) and computes the same.
    prelude = "import jax\nimport jax.numpy as jnp\n\n\n"
    before = exec_source(prelude + _region(PY312_SRC, "def rnn(", "def last_state"))["rnn"]
    after = exec_source(prelude + _region(new, "def _rnn_step(", "def last_state"))["rnn"]
    assert_same_outputs(before, after)

    again = cli("rewrite", "proj/model312.py", "--write")
    assert again.exit_code == 0 and path.read_bytes().decode("utf-8") == new


def test_python_312_syntax_is_not_reported_as_a_syntax_error_when_nothing_is_rewritten(tmp_path):
    src = PY312_SRC.replace("for t in range(xs.shape[0]):", "for t in range(xs.shape[0]):  # loop2scan: skip")
    path = put(tmp_path / "m.py", src.encode("utf-8"))
    r = cli("rewrite", path, "--write", "--format", "json")
    assert r.exit_code == 0, r.stderr
    (report,) = json.loads(r.stdout)["files"]
    assert report["error"] is None
    assert [loop["status"] for loop in report["loops"]] == ["skipped", "skipped"]
    assert path.read_bytes() == src.encode("utf-8")
    assert re.search(r"\(1 file checked\)", cli("rewrite", path).stderr)

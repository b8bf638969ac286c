"""Choosing what a run rewrites and reports: ``FILE:LINE``, standard input
(``-``), ``--select`` / ``--ignore``, ``--statistics``, and ``explain`` listing
every loop, the interesting ones first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import SMALL_RNN, load
from loop2scan.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden"

TWO = SMALL_RNN + '''

def decay(a, b):
    for i in range(10):
        a = a * b + jnp.sin(a)
    return a
'''
RNN_LOOP, DECAY_LOOP = 7, 14


def cli(*args, stdin: bytes | None = None):
    result = CliRunner().invoke(main, list(map(str, args)), input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def two(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "two.py").write_text(TWO)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "two.py"


# ----------------------------------------------------------------------------- FILE:LINE
def test_file_line_rewrites_only_that_loop(two):
    code, out, err = cli("rewrite", f"two.py:{DECAY_LOOP}", "--write")
    assert code == 0, err
    new = two.read_text()
    assert new.startswith(TWO.split("def decay")[0].rstrip())  # the other loop is untouched
    assert "for i in range(10)" not in new and "jax.lax.scan" in new
    before, after = load(TWO), load(new)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(after.decay(a, b)), np.asarray(before.decay(a, b)), rtol=1e-5, atol=1e-6)


def test_a_line_inside_the_body_names_the_innermost_loop_around_it(two):
    code, out, _ = cli("rewrite", f"two.py:{RNN_LOOP + 1}", "--format", "json")
    assert code == 1
    loops = json.loads(out)["files"][0]["loops"]
    assert [(lp["line"], lp["code"]) for lp in loops] == [(RNN_LOOP, "L2S000")]


def test_a_line_with_no_loop_is_an_error_for_that_file(two):
    code, _, err = cli("rewrite", "two.py:2")
    assert code == 2
    assert "two.py: no `for` loop at line 2" in err
    assert two.read_text() == TWO


def test_inner_loop_alone_is_declined_with_the_line_to_name(tmp_path, monkeypatch):
    (tmp_path / "nested.py").write_text((GOLDEN / "nested_loops.py").read_text())
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("rewrite", "nested.py:21", "--format", "json")
    (loop,) = json.loads(out)["files"][0]["loops"]
    assert code == 0 and loop["code"] == "L2S702" and "`FILE:18`" in loop["message"]
    # naming the outer loop rewrites both: the inner one lives in its step
    code, out, _ = cli("rewrite", "nested.py:18", "--format", "json")
    assert code == 1
    assert [(lp["line"], lp["code"]) for lp in json.loads(out)["files"][0]["loops"]] == \
        [(18, "L2S000"), (21, "L2S000")]


def test_a_parameter_list_loop_brings_its_builder_along(tmp_path, monkeypatch):
    (tmp_path / "layers.py").write_text((GOLDEN / "layer_builders.py").read_text())
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("rewrite", "layers.py:23")
    assert code == 1
    assert "def init_blocks" in out or "init_blocks(" in out  # the builder now returns the stacked layout
    assert "gated_stack" not in out  # the other parameter list is not touched


# ----------------------------------------------------------------------------- standard input
def test_stdin_diff_and_write(two):
    code, out, _ = cli("rewrite", "-", stdin=TWO.encode())
    assert code == 1
    assert out.startswith("--- a/-\n+++ b/-\n") and "jax.lax.scan" in out
    code, out, _ = cli("rewrite", "-", "--write", stdin=TWO.encode())
    assert code == 0
    assert "jax.lax.scan" in out and "for t in range" not in out
    compile(out, "<stdin>", "exec")
    assert two.read_text() == TWO  # nothing written


def test_stdin_unchanged_source_comes_back_as_it_was():
    src = b"import jax.numpy as jnp\n\n\ndef f(names):\n    return [n.upper() for n in names]\n"
    code, out, _ = cli("rewrite", "-", "--write", stdin=src)
    assert code == 0 and out.encode() == src
    code, out, _ = cli("rewrite", "-", stdin=src)
    assert code == 0 and out == ""


def test_stdin_filename_places_the_source_and_names_it(two):
    code, out, _ = cli("rewrite", "-", "--stdin-filename", "two.py", "--format", "json", stdin=TWO.encode())
    data = json.loads(out)
    assert code == 1 and data["files"][0]["path"] == "two.py"
    code, out, _ = cli("rewrite", "-:7", "--write", stdin=TWO.encode())
    assert code != 0  # `-:7` is not a file; only `-` reads standard input


def test_stdin_errors_print_one_line_and_nothing_on_stdout():
    code, out, err = cli("rewrite", "-", "--write", stdin=b"def f(:\n")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: -: syntax error at line 1, column 7: invalid syntax"]
    code, out, err = cli("rewrite", "-", stdin=b"\xff\xfe not utf-8\n")
    assert code == 2 and out == "" and "-:" in err
    code, _, err = cli("rewrite", "-", "two.py", stdin=b"")
    assert code == 2 and "cannot be combined" in err


def test_stdin_through_the_command(two):
    p = subprocess.run([sys.executable, "-m", "loop2scan", "rewrite", "-", "--write"], input=TWO, text=True,
                       capture_output=True, cwd=two.parent, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "jax.lax.scan" in p.stdout


# ----------------------------------------------------------------------------- select / ignore
MIXED = TWO + '''

def until(xs, h):
    for t in range(xs.shape[0]):
        if h.sum() > 3:
            break
        h = jnp.tanh(h + xs[t])
    return h


def names(n):
    out = []
    for i in range(n):
        out.append(f"layer_{i}")
    return out
'''


def _codes(out: str) -> list[str]:
    return sorted(lp["code"] for f in json.loads(out)["files"] for lp in f["loops"])


def test_select_and_ignore_choose_what_is_reported_never_what_is_rewritten(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "m.py").write_text(MIXED)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("rewrite", "m.py", "--format", "json")
    everything = _codes(out)
    assert everything == ["L2S000", "L2S000", "L2S001", "L2S101"]
    code, out, _ = cli("rewrite", "m.py", "--format", "json", "--ignore", "L2S001")
    assert _codes(out) == ["L2S000", "L2S000", "L2S101"] and code == 1
    code, out, _ = cli("rewrite", "m.py", "--format", "json", "--select", "L2S1")
    assert _codes(out) == ["L2S000", "L2S000", "L2S101"]
    # the more specific selector wins
    code, out, _ = cli("rewrite", "m.py", "--format", "json", "--select", "L2S0", "--ignore", "L2S001,L2S101")
    assert _codes(out) == ["L2S000", "L2S000"]
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\nignore = ["L2S0"]\n')
    code, out, _ = cli("rewrite", "m.py", "--format", "json")
    assert _codes(out) == ["L2S000", "L2S000", "L2S101"]  # rewrites are always reported
    code, out, _ = cli("rewrite", "m.py", "--format", "json", "--select", "L2S001")  # the flag wins
    assert _codes(out) == ["L2S000", "L2S000", "L2S001"]
    (tmp_path / "pyproject.toml").write_text('[tool.loop2scan]\nselect = ["L2S99"]\n')
    code, _, err = cli("rewrite", "m.py")
    assert code == 2 and "unknown code selector 'L2S99'" in err
    code, _, err = cli("rewrite", "m.py", "--ignore", "E501")
    assert code == 2 and "unknown code selector" in err


# ----------------------------------------------------------------------------- statistics
def test_statistics_counts_loops_per_code(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.py").write_text(MIXED)
    (tmp_path / "b.py").write_text(TWO)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("rewrite", ".", "--statistics")
    assert code == 1  # rewrites are available, as without --statistics
    rows = [line.split() for line in out.strip().splitlines()]
    assert [(r[0], r[1]) for r in rows] == [("4", "L2S000"), ("1", "L2S001"), ("1", "L2S101")]
    assert "---" not in out  # no diff
    code, out, _ = cli("rewrite", ".", "--statistics", "--format", "json")
    assert json.loads(out)[0] == {"code": "L2S000", "name": "scan-rewrite", "count": 4}


# ----------------------------------------------------------------------------- explain
def test_explain_lists_every_loop_the_interesting_ones_first(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text(MIXED)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli("explain", "m.py")
    assert code == 0
    heads = [line.split(": ")[1].split()[0] for line in out.splitlines() if line.startswith("m.py:")]
    assert heads == ["rewritten", "rewritten", "declined", "not"], out
    lines = [int(line.split(":")[1]) for line in out.splitlines() if line.startswith("m.py:")]
    assert lines == [7, 14, 20, 29]


# ----------------------------------------------------------------------------- terminals
def _on_a_terminal(args, cwd, **env):
    """Run the command with stdout and stderr on a pseudo-terminal; what it printed."""
    import os
    import pty

    main_fd, worker_fd = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    environment.update(env)
    p = subprocess.Popen([sys.executable, "-m", "loop2scan", *args], cwd=cwd, stdout=worker_fd, stderr=worker_fd,
                         stdin=subprocess.DEVNULL, env=environment)
    os.close(worker_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=120)
    os.close(main_fd)
    return p.returncode, b"".join(chunks).decode()


def test_colour_and_progress_on_a_terminal_only(tmp_path):
    (tmp_path / ".git").mkdir()
    for i in range(3):
        (tmp_path / f"m{i}.py").write_text(TWO)
    code, out = _on_a_terminal(["rewrite", "."], tmp_path)
    assert code == 1
    assert "\x1b[32m+" in out and "\x1b[31m-" in out  # + green, - red
    assert "checked 3/3 files" in out and "\x1b[K" in out  # the progress line, erased at the end
    code, out = _on_a_terminal(["rewrite", "."], tmp_path, NO_COLOR="1")
    assert code == 1 and "\x1b[3" not in out and "+++ b/m0.py" in out
    p = subprocess.run([sys.executable, "-m", "loop2scan", "rewrite", "."], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "\x1b[" not in p.stdout + p.stderr and "checked 3/3" not in p.stderr
    code, out = _on_a_terminal(["rewrite", ".", "-q"], tmp_path)
    assert "checked 3/3" not in out


# ----------------------------------------------------------------------------- emitted options
def test_unroll_from_the_configuration_or_the_flag_reaches_every_scan(two):
    (two.parent / "pyproject.toml").write_text("[tool.loop2scan]\nunroll = 2\n")
    code, out, _ = cli("rewrite", "two.py")
    assert code == 1 and out.count("unroll=2") == 2
    code, out, _ = cli("rewrite", "two.py", "--unroll", "4")
    assert out.count("unroll=4") == 2 and "unroll=2" not in out
    assert cli("rewrite", "two.py", "--write", "--unroll", "3")[0] == 0
    before, after = load(TWO), load(two.read_text())
    rng = np.random.default_rng(7)
    w = rng.normal(size=(5, 5)).astype(np.float32) / 3
    for steps in (0, 1, 7):  # fewer steps than unroll, and a remainder
        xs = rng.normal(size=(steps, 2, 5)).astype(np.float32)
        h = rng.normal(size=(2, 5)).astype(np.float32)
        if steps:
            for a, b in zip(before.rnn(w, xs, h), after.rnn(w, xs, h)):
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(np.asarray(after.rnn(w, xs, h)[0]), h)
    (two.parent / "pyproject.toml").write_text("[tool.loop2scan]\nunroll = 0\n")
    code, _, err = cli("rewrite", "two.py")
    assert code == 2 and "unroll must be a positive integer" in err


def test_check_tolerances_from_the_configuration(tmp_path):
    from loop2scan.api import options_from_config
    from loop2scan.config import ConfigError, load_config

    (tmp_path / "pyproject.toml").write_text("[tool.loop2scan]\nrtol = 0.001\natol = 1e-4\n")
    cfg = load_config([str(tmp_path)])
    assert (cfg.rtol, cfg.atol) == (0.001, 1e-4)
    options = options_from_config(cfg)
    assert (options.rtol, options.atol) == (0.001, 1e-4)
    assert options_from_config(cfg, rtol=0.5).rtol == 0.5  # the flag wins
    (tmp_path / "pyproject.toml").write_text("[tool.loop2scan]\natol = -1\n")
    with pytest.raises(ConfigError, match="atol must be a non-negative number"):
        load_config([str(tmp_path)])

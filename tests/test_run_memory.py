"""The cycle collector during a run: paused, and run when the process has
grown by ``COLLECT_GROWTH`` (so most runs never pay for a collection, and a
run over a huge tree still frees its garbage cycles)."""

from __future__ import annotations

import gc

from helpers import SMALL_RNN
from loop2scan import api


def _collections_during(tmp_path, monkeypatch, growth: int) -> int:
    for i in range(6):
        (tmp_path / f"m{i}.py").write_text(SMALL_RNN)
    monkeypatch.setattr(api, "COLLECT_GROWTH", growth)
    monkeypatch.setattr(api, "CHECK_EVERY", 2)
    seen = []

    def callback(phase, info):
        if phase == "start" and not gc.isenabled():
            seen.append(info["generation"])

    gc.callbacks.append(callback)
    try:
        assert gc.isenabled()
        report = api.run([str(tmp_path)], api.Options(jobs=1))
        assert gc.isenabled()  # given back after the run
    finally:
        gc.callbacks.remove(callback)
    assert len(report.files) == 6 and all(f.changed for f in report.files)
    return len(seen)


def test_no_collection_while_memory_stays_under_the_growth(tmp_path, monkeypatch):
    assert _collections_during(tmp_path, monkeypatch, growth=1 << 40) == 0


def test_collections_once_memory_has_grown(tmp_path, monkeypatch):
    monkeypatch.setattr(api, "_peak_memory", iter(range(0, 10 ** 9, 1000)).__next__)
    assert _collections_during(tmp_path, monkeypatch, growth=1) == 3  # every second file of six


def test_a_process_that_exits_after_its_runs_keeps_the_collector_paused(tmp_path):
    """The command's process: the collector is not resumed after a run (its first
    pass would scan every tree of the run), yet memory growth is still watched."""
    import subprocess
    import sys

    (tmp_path / "m.py").write_text(SMALL_RNN)
    code = (
        "import gc, sys\n"
        "from loop2scan import api\n"
        "api.pause_collector_for_process()\n"
        "for _ in range(2):\n"
        "    held = []\n"
        "    original = api._file_done\n"
        "    api._file_done = lambda: (held.append(api._collector_held), original())\n"
        "    report = api.run([sys.argv[1]], api.Options(jobs=1))\n"
        "    api._file_done = original\n"
        "    assert report.files[0].changed\n"
        "    assert held == [True], held  # growth checks during the run\n"
        "    assert not api._collector_held and not gc.isenabled()\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr

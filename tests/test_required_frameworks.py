"""The guard in conftest.py: with LOOP2SCAN_REQUIRE_FRAMEWORKS set, a test
skipped for a required framework fails the run; an expected failure whose
text names the framework does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(body)
    env = dict(os.environ, LOOP2SCAN_REQUIRE_FRAMEWORKS="json")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_skip_for_a_required_framework_fails_the_run(tmp_path):
    proc = _run(tmp_path, "import pytest\n\ndef test_a():\n    pytest.skip('json is not installed')\n")
    assert proc.returncode == 1, proc.stdout
    assert "tests skipped for a framework this run requires" in proc.stdout


def test_expected_failure_naming_the_framework_is_not_a_skip(tmp_path):
    body = (
        "import pytest\n\n"
        "@pytest.mark.xfail(strict=True, reason='known limitation')\n"
        "def test_a():\n"
        "    assert 'import json' == ''\n"
    )
    proc = _run(tmp_path, body)
    assert proc.returncode == 0, proc.stdout
    assert "1 xfailed" in proc.stdout


def test_other_skips_pass(tmp_path):
    proc = _run(tmp_path, "import pytest\n\ndef test_a():\n    pytest.skip('root can read anything')\n")
    assert proc.returncode == 0, proc.stdout

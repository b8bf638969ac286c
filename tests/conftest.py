"""Shared test configuration.

CI sets ``LOOP2SCAN_REQUIRE_FRAMEWORKS``: a framework it is meant to have
must import, so that no test can pass by being skipped for want of it."""

from __future__ import annotations

import importlib
import os

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    required = [f for f in os.environ.get("LOOP2SCAN_REQUIRE_FRAMEWORKS", "").split(",") if f]
    missing = []
    for name in required:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            missing.append(f"{name} ({type(e).__name__}: {e})")
    if missing:
        raise pytest.UsageError(f"frameworks required in this run are not importable: {', '.join(missing)}")


_BAD_SKIPS: list[str] = []


def pytest_runtest_logreport(report) -> None:
    required = [f for f in os.environ.get("LOOP2SCAN_REQUIRE_FRAMEWORKS", "").split(",") if f]
    # An expected failure is reported as skipped too; it is not a skip.
    if not required or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(f in reason for f in required):
        _BAD_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    if _BAD_SKIPS:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _BAD_SKIPS:
        terminalreporter.write_line("tests skipped for a framework this run requires:", red=True)
        for line in _BAD_SKIPS:
            terminalreporter.write_line(f"  {line}", red=True)

"""The graded tests' harness, a pytest plugin that grade.py loads (`-p harness`; it is not a
conftest.py, so that the repository's tests/, which import their own conftest, collect beside
these): a time limit per test (`@pytest.mark.limit(seconds)`, default DEFAULT_LIMIT, or the
ASSIGNMENT_TIME_LIMIT variable; an endless loop costs that test, not the run), and, when
ASSIGNMENT_REPORT names a file, one JSON line per test event for grade.py: "start" when a test
begins (so a test that kills the process is known), then its outcome and a one-line message
saying what failed and where.

Time limits use SIGALRM (Linux and macOS); elsewhere only grade.py's limit on the whole run holds.
"""

from __future__ import annotations

import json
import os
import signal
import traceback
from pathlib import Path

import pytest

DEFAULT_LIMIT = float(os.environ.get("ASSIGNMENT_TIME_LIMIT", 30))   # seconds; every test takes < 2 on a laptop
REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent


class TimeLimit(Exception):
    """A graded test ran past its time limit."""


def pytest_configure(config):
    config.addinivalue_line("markers", "limit(seconds): the graded test's time limit")


def _write(record: dict) -> None:
    path = os.environ.get("ASSIGNMENT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def pytest_runtest_logstart(nodeid, location):
    _write({"nodeid": nodeid, "event": "start"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("limit")
    limit = float(marker.args[0]) if marker else DEFAULT_LIMIT
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeLimit(f"still running after {limit:.0f} s (an endless loop, or far too slow)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(excinfo) -> str:
    """The innermost line of the repository's own code (not the tests) in the traceback."""
    for frame in reversed(traceback.extract_tb(excinfo.tb)):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(REPO) and not path.is_relative_to(TESTS):
            return f" (at {path.relative_to(REPO).as_posix()}:{frame.lineno})"
    return ""


def message(excinfo) -> str:
    """One line: the assertion's own message, or the exception's type, text and place."""
    exc = excinfo.value
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, AssertionError):
        return text[:400]
    if isinstance(exc, NotImplementedError):
        return f"NotImplementedError: {text[:300]}"
    return f"{type(exc).__name__}: {text[:300]}{_where(excinfo)}"


def pytest_collectreport(report):
    if report.failed:   # e.g. a SyntaxError or ImportError in the code a test file imports
        lines = [x for x in str(report.longrepr).splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("E ")] or lines[-1:]
        text = " ".join(" ".join(x[1:].split()) if x.startswith("E ") else x.strip() for x in errors[-2:])
        _write({"nodeid": report.nodeid, "event": "collect_error", "message": f"could not import: {text[:400]}"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        record = {"nodeid": item.nodeid, "event": "result", "outcome": report.outcome}
        if call.excinfo is not None and not report.passed:
            record["message"] = message(call.excinfo)
            record["not_implemented"] = isinstance(call.excinfo.value, NotImplementedError)
        _write(record)

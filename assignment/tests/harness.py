"""The graded tests' harness, a pytest plugin that grade.py runs in its own process (the tests
themselves never import the submission: worker.py calls it in a child process). It gives each
test its time limit in the submission's code (`@pytest.mark.limit(seconds)`, default
worker.DEFAULT_LIMIT, or the ASSIGNMENT_TIME_LIMIT variable) and keeps, in RECORDS, one record
per test: its outcome and a one-line message saying what failed and where.
"""

from __future__ import annotations

import _support
import pytest
import worker

RECORDS: list[dict] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "limit(seconds): the graded test's time limit")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("limit")
    worker.set_limit(float(marker.args[0]) if marker else worker.DEFAULT_LIMIT)
    _support.begin(item.nodeid)
    yield
    worker.end_test()      # nothing the test's calls started runs on


def message(excinfo) -> str:
    """One line: the assertion's own message, or the exception's type and text."""
    exc = excinfo.value
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, (AssertionError, worker.SubmissionError)):
        return text[:500]
    return f"{type(exc).__name__}: {text[:400]}"


def pytest_collectreport(report):
    if report.failed:   # the graded tests' own code; never the submission's
        lines = [x for x in str(report.longrepr).splitlines() if x.strip()]
        RECORDS.append({"nodeid": report.nodeid, "event": "collect_error",
                        "message": f"could not collect: {' '.join(lines[-2:])[:400]}"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        record = {"nodeid": item.nodeid, "event": "result", "outcome": report.outcome}
        if call.excinfo is not None and not report.passed:
            record["message"] = message(call.excinfo)
            record["not_implemented"] = isinstance(call.excinfo.value, NotImplementedError)
        RECORDS.append(record)


def pytest_sessionfinish(session):
    worker.shutdown()
    worker.remove_scratch()

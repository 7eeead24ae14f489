"""Grade the assignment: run the graded tests, print one row per problem, write Gradescope's
results.json.

    python assignment/grade.py                      # every problem; results.json in this folder
    python assignment/grade.py --problems P1,P3     # only those
    python assignment/grade.py --results /autograder/results/results.json --submission /autograder/submission

The tests (assignment/tests/, listed with their points in assignment/manifest.py) run with pytest
in a child process, each under a time limit (the plugin assignment/tests/harness.py), so an exception, a
wrong shape, a NaN, an endless loop or a crash costs only the tests it hits. A problem's row says
"not attempted" while its functions still raise NotImplementedError, "needs Pk" when it calls a
function of problem Pk that does, and otherwise names the first failing check, with what was
expected, what came back, and a hint. Written parts are graded by hand (HANDOUT.md); their
points are listed but not scored here.

--submission DIR grades the student's files from DIR (the modules that hold the assignment's
functions) inside a copy of this tree, so that the graded tests are this tree's, not the
submission's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import manifest  # noqa: E402

REPO = HERE.parent
TESTS = "assignment/tests"
MAX_RESTARTS = 5     # child processes started after one died (a segfault, the overall limit)


def _function(nodeid: str) -> str:
    """'assignment/tests/f.py::test_x[3]' -> 'f.py::test_x'."""
    return nodeid.split("/")[-1].split("[")[0]


def run_tests(repo: Path, tests: list[str], timeout: float) -> dict[str, list[dict]]:
    """Run the given 'file.py::test' ids under repo with pytest; their result records (one per
    parametrised case), a failure record for a test that died with its process."""
    results: dict[str, list[dict]] = {t: [] for t in tests}
    todo = list(tests)
    for _ in range(MAX_RESTARTS + 1):
        if not todo:
            break
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.jsonl"
            path = os.pathsep.join([str(repo / TESTS), str(repo), os.environ.get("PYTHONPATH", "")])
            env = {**os.environ, "ASSIGNMENT_REPORT": str(report), "PYTHONDONTWRITEBYTECODE": "1",
                   "PYTHONPATH": path, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
            env.setdefault("OMP_NUM_THREADS", "1")
            env.setdefault("HF_HUB_OFFLINE", "1")
            env.setdefault("TOKENIZERS_PARALLELISM", "false")
            cmd = [sys.executable, "-m", "pytest", "-p", "harness", "-p", "no:cacheprovider", "-q", "--tb=no",
                   "--no-header", "-o", "addopts=", "-o", "testpaths=", "--rootdir", str(repo),
                   "-c", str(repo / "pytest.ini"),
                   *[f"{TESTS}/{t}" for t in todo]]
            died = ""
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
                if proc.returncode not in (0, 1):
                    tail = " ".join(proc.stderr.split())[-300:]
                    how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                           else f"exited with status {proc.returncode}")
                    died = f"the test process {how}" + (f": {tail}" if tail else
                                                        " (os._exit, a segfault or out of memory?)")
            except subprocess.TimeoutExpired:
                died = f"the tests ran past the overall limit of {timeout:.0f} s"
            timeout = max(timeout - (time.monotonic() - start), 30.0)
            records = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        started = None
        for r in records:
            if r["event"] == "collect_error":    # every test of that file fails with its message
                for t in todo:
                    if f"{TESTS}/{t}".startswith(r["nodeid"]) and not results[t]:
                        results[t].append({"nodeid": t, "outcome": "failed", "message": r["message"]})
                continue
            key = _function(r["nodeid"])
            if key not in results:
                continue
            if r["event"] == "start":
                started = r["nodeid"]
            else:
                results[key].append(r)
                started = None if started == r["nodeid"] else started
        if started is not None:     # the process died inside this test
            results[_function(started)].append({"nodeid": started, "outcome": "failed",
                                                "message": f"crashed: {died or 'the test process died'}"})
        elif died and not any(results[t] for t in todo):
            for t in todo:          # e.g. an import error before any test started
                results[t].append({"nodeid": t, "outcome": "failed", "message": f"did not run: {died}"})
        todo = [t for t in todo if not results[t]]
    for t in todo:
        results[t].append({"nodeid": t, "outcome": "failed", "message": "did not run (the test process kept dying)"})
    return results


def _pid_of(message: str) -> str | None:
    """'NotImplementedError: P3: ...' -> 'P3'."""
    rest = message.split("NotImplementedError:", 1)[-1].strip()
    pid = rest.split(":", 1)[0]
    return pid if any(p["id"] == pid for p in manifest.PROBLEMS) else None


def score(results: dict[str, list[dict]], problems: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows, gradescope tests): per problem its points and status line; per test its entry."""
    rows, entries = [], []
    for p in problems:
        earned, possible, first, blocked, own_missing, n_tests = 0.0, 0, None, None, 0, 0
        for test, (points, hint) in p["tests"].items():
            records = results.get(test, [])
            n_tests += 1
            passed = sum(r["outcome"] == "passed" for r in records)
            got = round(points * passed / len(records), 2) if records else 0.0
            earned += got
            possible += points
            failed = [r for r in records if r["outcome"] != "passed"]
            output = "passed" if not failed else failed[0].get("message", "failed")
            if failed:
                msg = failed[0].get("message", "failed")
                if failed[0].get("not_implemented"):
                    pid = _pid_of(msg)
                    if pid == p["id"]:
                        own_missing += 1
                    elif blocked is None:
                        blocked = pid or msg
                elif first is None:
                    first = f"{test.split('::')[1]}: {msg}  Hint: {hint}"
                output += f"\nHint: {hint}" if not failed[0].get("not_implemented") else ""
            entries.append({"name": f"{p['id']} {p['title']}: {test.split('::')[1]}", "score": got,
                            "max_score": points, "output": output})
        if earned == possible:
            status = "all checks pass"
        elif own_missing == n_tests:
            status = "not attempted (still raises NotImplementedError)"
        elif first is not None:
            status = first
        elif blocked is not None:
            status = f"needs {blocked} first (it still raises NotImplementedError)"
        else:
            status = "not attempted (still raises NotImplementedError)"
        rows.append({"id": p["id"], "title": p["title"], "earned": round(earned, 2), "possible": possible,
                     "written": p["written"], "status": status})
    return rows, entries


def table(rows: list[dict]) -> str:
    lines = [f"{'problem':<8} {'points':>13}  {'written':>7}  status", "-" * 100]
    for r in rows:
        lines.append(f"{r['id']:<8} {r['earned']:>6g} / {r['possible']:<4d}  {r['written']:>7}  {r['status']}")
    earned, possible = sum(r["earned"] for r in rows), sum(r["possible"] for r in rows)
    written = sum(r["written"] for r in rows)
    lines += ["-" * 100, f"{'total':<8} {earned:>6g} / {possible:<4d}  {written:>7}  "
              f"(autograded; the {written} written points are graded by hand)"]
    return "\n".join(lines)


def _overlay(submission: Path, dest: Path) -> None:
    """A copy of this tree with the submission's files of the assignment's modules."""
    shutil.copytree(REPO, dest, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "runs", ".venv*", "__pycache__", ".pytest_cache"))
    modules = {spec.split(":")[0] + ".py" for p in manifest.PROBLEMS for spec in p["functions"]}
    for name in sorted(modules):
        if (submission / name).is_file():
            shutil.copy2(submission / name, dest / name)


def grade(repo: Path, problems: list[dict], timeout: float) -> tuple[list[dict], list[dict]]:
    tests = [t for p in problems for t in p["tests"]]
    return score(run_tests(repo, tests, timeout), problems)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the graded tests; print a table; write results.json.")
    p.add_argument("--problems", default="", help="comma-separated problem ids (default: all)")
    p.add_argument("--results", type=Path, default=Path("results.json"),
                   help="where to write Gradescope's results.json (default: ./results.json)")
    p.add_argument("--submission", type=Path, default=None,
                   help="grade the assignment's modules from this folder inside a copy of this tree")
    p.add_argument("--timeout", type=float, default=900, help="limit on the whole run, in seconds")
    args = p.parse_args(argv)
    try:
        problems = [manifest.problem(x.strip()) for x in args.problems.split(",") if x.strip()] or manifest.PROBLEMS
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    if args.submission is not None:
        if not args.submission.is_dir():
            print(f"error: --submission {args.submission} is not a folder.", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            _overlay(args.submission, Path(tmp) / "tree")
            rows, entries = grade(Path(tmp) / "tree", problems, args.timeout)
    else:
        rows, entries = grade(REPO, problems, args.timeout)
    text = table(rows)
    print(text)
    results = {"score": round(sum(e["score"] for e in entries), 2), "output": text, "tests": entries}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

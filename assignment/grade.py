"""Grade the assignment: run the graded tests, print one row per problem, write Gradescope's
results.json.

    python assignment/grade.py                      # every problem; results.json in this folder
    python assignment/grade.py --problems P1,P3     # only those
    python assignment/grade.py --results /autograder/results/results.json --submission /autograder/submission

The tests (assignment/tests/, listed with their points in assignment/manifest.py) run with pytest
in this process, which never imports the code it grades: each call of a student's function goes
to a worker process started in the graded tree (assignment/tests/worker.py), on inputs the tests
choose, and only its outputs come back to be judged here. So an exception, a wrong shape, a NaN,
an endless loop, a crash or an exit in the student's code costs only the tests it hits, and
nothing that code does reaches the report. A problem's row says "not attempted" while its
functions still raise NotImplementedError, "needs Pk" when it calls a function of problem Pk that
does, and otherwise names the first failing check, with what was expected, what came back, and a
hint. Written parts are graded by hand (HANDOUT.md); their points are listed but not scored here.

--submission DIR grades the student's entropy.py, grpo.py and clipping.py from DIR (or from the
one subfolder of DIR that holds them, as in a zip with a folder inside), in a copy of the
student version of this tree, so that the graded tests, the inputs and the expected values are
this tree's, and the reference (where this tree is the instructor's) stays out of the worker's
reach.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "tests")]
import _support  # noqa: E402
import harness  # noqa: E402
import manifest  # noqa: E402
import worker  # noqa: E402

REPO = HERE.parent
TESTS = HERE / "tests"
SUBMITTED = sorted({spec.split(":")[0] + ".py" for p in manifest.PROBLEMS for spec in p["functions"]})


def run_tests(tree: Path, tests: list[str]) -> dict[str, list[dict]]:
    """Run the given 'file.py::test' ids here, their calls going to a worker in tree; their
    result records (one per parametrised case)."""
    results: dict[str, list[dict]] = {t: [] for t in tests}
    os.environ["ASSIGNMENT_TREE"] = str(tree)
    harness.RECORDS.clear()
    with tempfile.TemporaryDirectory() as tmp:
        ini = Path(tmp) / "pytest.ini"
        ini.write_text("[pytest]\n")
        with contextlib.redirect_stdout(io.StringIO()):     # the table says it all
            pytest.main(["-p", "no:cacheprovider", "-q", "--tb=no", "--no-header", "-c", str(ini),
                         "--rootdir", str(TESTS), *[str(TESTS / t) for t in tests]], plugins=[harness])
    _check_nothing_imported(tree)
    for r in harness.RECORDS:
        if r["event"] == "collect_error":
            for t in tests:
                if str(TESTS / t).startswith(r["nodeid"]) or t.startswith(r["nodeid"].split("/")[-1]):
                    results[t] = results[t] or [{"nodeid": t, "outcome": "failed", "message": r["message"]}]
            continue
        key = r["nodeid"].split("/")[-1].split("[")[0]
        if key in results:
            results[key].append(r)
    for t in tests:
        if not results[t]:
            results[t].append({"nodeid": t, "outcome": "failed", "message": "did not run"})
    return results


def _check_nothing_imported(tree: Path) -> None:
    """The grader's promise: no module of the graded tree (its top-level .py files; a virtual
    environment inside the tree is not the tree's code) was imported here."""
    root = tree.resolve()
    for module in list(sys.modules.values()):
        path = Path(getattr(module, "__file__", None) or "/")
        if path.is_absolute() and path.resolve().parent == root:
            raise RuntimeError(f"the grader imported {path}; the graded tests must call it through worker.py")


def _pid_of(message: str) -> str | None:
    """'NotImplementedError: P3: ...' -> 'P3'."""
    rest = message.split("NotImplementedError:", 1)[-1].strip()
    pid = rest.split(":", 1)[0]
    return pid if any(p["id"] == pid for p in manifest.PROBLEMS) else None


def score(results: dict[str, list[dict]], problems: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows, gradescope tests): per problem its points and status line; per test its entry. A
    problem with `requires` keeps its points only when every required problem, graded in the
    same results, earned full marks."""
    rows, entries = [], []
    for p in problems:
        row, mine = _score_problem(results, p)
        rows.append(row)
        entries += mine
    by_id = {r["id"]: r for r in rows}
    for row in rows:
        required = manifest.problem(row["id"]).get("requires", [])
        if not required or row["earned"] == 0:
            continue
        short = [f"{q} {by_id[q]['earned']:g}/{by_id[q]['possible']}" if q in by_id else f"{q} not graded"
                 for q in required if q not in by_id or by_id[q]["earned"] != by_id[q]["possible"]]
        names = ", ".join(required[:-1]) + f" and {required[-1]}"
        if short:
            row["earned"] = 0.0
            row["status"] = (f"your run's checks pass, but they count only when {names} all pass in the same "
                             f"grading (they call your code; not yet: {', '.join(short)})")
            for e in entries:
                if e["name"].startswith(row["id"] + " "):
                    e["score"], e["output"] = 0.0, row["status"]
        else:
            row["status"] += f" (and they count: {names} pass in this grading)"
    return rows, entries


def _score_problem(results: dict[str, list[dict]], p: dict) -> tuple[dict, list[dict]]:
    """One problem's row and Gradescope entries."""
    entries = []
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
    row = {"id": p["id"], "title": p["title"], "earned": round(earned, 2), "possible": possible,
           "written": p["written"], "status": status}
    return row, entries


def table(rows: list[dict]) -> str:
    lines = [f"{'problem':<8} {'points':>13}  {'written':>7}  status", "-" * 100]
    for r in rows:
        lines.append(f"{r['id']:<8} {r['earned']:>6g} / {r['possible']:<4d}  {r['written']:>7}  {r['status']}")
    earned, possible = sum(r["earned"] for r in rows), sum(r["possible"] for r in rows)
    written = sum(r["written"] for r in rows)
    lines += ["-" * 100, f"{'total':<8} {earned:>6g} / {possible:<4d}  {written:>7}  "
              f"(autograded; the {written} written points are graded by hand)"]
    return "\n".join(lines)


def find_submission(submission: Path) -> dict[str, Path]:
    """The submitted files by name: in DIR, or else in the one subfolder that holds any of them."""
    found = {name: submission / name for name in SUBMITTED if (submission / name).is_file()}
    if found:
        return found
    folders = sorted({p.parent for name in SUBMITTED for p in submission.rglob(name)
                      if "__MACOSX" not in p.parts})
    if len(folders) != 1:
        return {}
    return {name: folders[0] / name for name in SUBMITTED if (folders[0] / name).is_file()}


def _student_tree(dest: Path) -> None:
    """The student version of this tree in dest: made afresh from the instructor's tree (which
    holds the reference), copied from a student tree."""
    if _support.INSTRUCTOR:
        import make_student
        variant = int(os.environ.get("ASSIGNMENT_VARIANT") or 0)
        make_student.make_student(dest, variant, snapshot=False)
    else:
        shutil.copytree(REPO, dest, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "runs", ".venv*", "__pycache__", ".pytest_cache"))


def with_required(problems: list[dict]) -> list[dict]:
    """The problems, and after them those their `requires` name that are not among them."""
    ids = [p["id"] for p in problems]
    extra = [q for p in problems for q in p.get("requires", []) if q not in ids]
    return problems + [manifest.problem(q) for q in dict.fromkeys(extra)]


def grade(tree: Path, problems: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows and entries of the problems, each graded with the problems it requires (whose own
    rows are left out unless asked for)."""
    graded = with_required(problems)
    rows, entries = score(run_tests(tree, [t for p in graded for t in p["tests"]]), graded)
    ids = {p["id"] for p in problems}
    return [r for r in rows if r["id"] in ids], [e for e in entries if e["name"].split(" ", 1)[0] in ids]


def snapshot(dest: Path, tree: Path) -> int:
    """Run the graded tests of P1-P7 on the reference in tree with the public inputs (seed 0) and
    store their expected values in dest; 1 if the reference fails one (the tests are wrong)."""
    _support.BASE_SEED, _support.RECORDING = 0, {}
    problems = [p for p in manifest.PROBLEMS if p["functions"]]
    rows, _ = grade(tree, problems)
    if any(r["earned"] != r["possible"] for r in rows):
        print(table(rows))
        return 1
    torch.save(_support.RECORDING, dest)
    return 0


def _seed_line() -> str:
    return (f"inputs drawn with ASSIGNMENT_SEED={_support.BASE_SEED} (set it to grade on the same inputs again)"
            if _support.INSTRUCTOR else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the graded tests; print a table; write results.json.")
    p.add_argument("--problems", default="", help="comma-separated problem ids (default: all)")
    p.add_argument("--results", type=Path, default=Path("results.json"),
                   help="where to write Gradescope's results.json (default: ./results.json)")
    p.add_argument("--snapshot", type=Path, default=None, help=argparse.SUPPRESS)   # make_student.py's
    p.add_argument("--tree", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--submission", type=Path, default=None,
                   help="grade the assignment's modules from this folder inside a copy of this tree")
    args = p.parse_args(argv)
    try:
        problems = [manifest.problem(x.strip()) for x in args.problems.split(",") if x.strip()] or manifest.PROBLEMS
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    try:
        worker.account()         # ASSIGNMENT_WORKER_USER, checked before anything runs
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.snapshot is not None:
        return snapshot(args.snapshot, args.tree or REPO)
    if args.submission is not None:
        if not args.submission.is_dir():
            print(f"error: --submission {args.submission} is not a folder.", file=sys.stderr)
            return 2
        files = find_submission(args.submission)
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)         # readable by the worker, which may run as another user
            tree = Path(tmp) / "tree"
            _student_tree(tree)
            for name, path in files.items():
                shutil.copy2(path, tree / name)
            rows, entries = grade(tree, problems)
        note = (f"graded {', '.join(sorted(files))} from {args.submission}" if files else
                f"no {', '.join(SUBMITTED)} found in {args.submission} or in one folder inside it: "
                "every problem grades as not attempted")
    else:
        rows, entries = grade(REPO, problems)
        note = ""
    text = "\n".join(x for x in (note, table(rows), _seed_line()) if x)
    print(text)
    results = {"score": round(sum(e["score"] for e in entries), 2), "output": text, "tests": entries}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The grader's worker leaves nothing running (assignment/tests/reaper.py): a submission's
grandchild, one that left the process group with os.setsid(), a double fork, a child that holds
the worker's output pipe and a process that keeps forking are all killed when the test ends,
while the grader still runs; a call that catches every exception and ignores the usual signals
ends at its time limit, and so does one that hands its work to a child; the worker, and what it
started, die when the grader dies. Each case runs a small grader (the worker module, as grade.py
uses it) on a tree whose module `evil.py` does one of these things, and checks from outside, in
/proc, that the processes are gone."""

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1] / "assignment" / "tests"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reaper.py needs Linux's /proc and prctl")

EVIL = '''
import ctypes, os, signal, subprocess, sys, time


def _scribble(path):
    """Forever: write the time into path (the proof that a stray still runs)."""
    while True:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {time.time()}\\n")
        time.sleep(0.02)


def stray(path, how):
    """Leave a process behind that writes into path, and return at once."""
    if how == "holder":           # a child in its own session that holds the worker's output pipe
        subprocess.Popen([sys.executable, "-c", f"import evil; evil._scribble({path!r})"],
                         start_new_session=True, cwd=os.getcwd())
        time.sleep(0.3)
        return "started"
    if os.fork() == 0:
        os.setsid()
        if how == "double-fork" and os.fork() != 0:
            os._exit(0)            # the grandchild is orphaned at once
        if how == "forking":       # keeps forking (at most 30 in all), every process writing
            for _ in range(4):
                if os.fork() == 0:
                    os.fork()
                    break
        _scribble(path)
    time.sleep(0.3)
    return "started"


def stubborn(sleep):
    """Never return: catch every exception, ignore SIGTERM, SIGINT and SIGALRM."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        try:
            if sleep:
                time.sleep(100)
            else:
                sum(range(10**6))
        except BaseException:
            pass


def burn_in_child():
    """Hand the work to a child in its own session that computes forever; wait for it, idle."""
    if os.fork() == 0:
        os.setsid()
        while True:
            pass
    time.sleep(1000)


def overwrite(path):
    """What a forged grade needs: write over a file of the grader's."""
    with open(path, "w") as f:
        f.write("forged")
    return "written"


def unguard():
    """Clear the worker's death signal and its handler (the watchdog thread must still act)."""
    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return os.getpid()


def pid():
    return os.getpid()


def uid():
    return os.getuid()
'''

GRADER = '''
import json, os, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
import worker

worker.set_limit(float(sys.argv[3]))
out = {"worker_pids": []}
start = time.monotonic()
try:
    for fn, *args in json.loads(sys.argv[2]):
        if fn == "die":                  # the grader is killed during the next call
            threading.Timer(float(args[0]), lambda: (print(json.dumps(out), flush=True),
                                                     os.kill(os.getpid(), signal.SIGKILL))).start()
            continue
        out.setdefault("values", []).append(worker.call(fn, *args))
        out["worker_pids"].append(worker._worker[0].proc.pid)
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
out["seconds"] = time.monotonic() - start
worker.end_test()                        # what harness.py does after each test
out["swept"] = time.time()
time.sleep(0.5)                          # the grader goes on: a stray must already be gone
out["alive_after"] = [w.proc.pid for w in worker._worker if w.proc.poll() is None]
worker.shutdown()
print(json.dumps(out), flush=True)
'''


def _running(pid: int) -> bool:
    """Whether pid is a live process (a zombie does not run)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _grade(tmp_path: Path, calls: list, limit: float = 30.0, env: dict | None = None) -> dict:
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "evil.py").write_text(EVIL)
    grader = tmp_path / "grader.py"
    grader.write_text(GRADER)
    env = {**os.environ, **(env or {}), "ASSIGNMENT_TREE": str(tree)}
    proc = subprocess.run([sys.executable, str(grader), str(TESTS), json.dumps(calls), str(limit)],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {**json.loads(lines[-1]), "returncode": proc.returncode}


def _writers(path: Path) -> dict[int, float]:
    """pid -> the last time it wrote into path."""
    last: dict[int, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        pid, when = line.split()
        last[int(pid)] = float(when)
    return last


def _gone(pids, within: float = 5.0) -> list[int]:
    end = time.monotonic() + within
    while time.monotonic() < end and any(_running(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _running(p)]


@pytest.mark.parametrize("how", ["setsid", "double-fork", "holder", "forking"])
def test_a_stray_of_the_submission_is_killed_when_its_test_ends(tmp_path, how):
    log = tmp_path / "writes.log"
    out = _grade(tmp_path, [["evil:stray", str(log), how]])
    assert out.get("values") == ["started"], out
    writers = _writers(log)
    assert writers, "the stray never wrote: the test proves nothing"
    if how == "forking":
        assert len(writers) > 2, writers
    assert not _gone(writers), f"still running after the test ended: {writers}"
    late = {pid: t for pid, t in writers.items() if t > out["swept"] + 0.05}
    assert not late, f"wrote after the test ended: {late}"
    assert out["alive_after"] == out["worker_pids"], out     # the worker itself was spared


@pytest.mark.parametrize("sleep", [False, True], ids=["busy", "sleeping"])
def test_a_call_that_catches_everything_ends_at_its_limit(tmp_path, sleep):
    limit = 1.0 if not sleep else 0.3        # CPU seconds; a sleeping call meets the wall limit (10x)
    out = _grade(tmp_path, [["evil:pid"], ["evil:stubborn", sleep]], limit=limit)
    assert out.get("error", "").startswith("TimeLimit"), out
    assert out["seconds"] < 10 * limit + 10, out
    assert not _gone(out["worker_pids"]), out


def test_a_child_that_does_the_work_counts_against_the_limit(tmp_path):
    limit = 1.0          # CPU seconds; the idle worker alone would meet only the wall limit (10x)
    out = _grade(tmp_path, [["evil:pid"], ["evil:burn_in_child"]], limit=limit)
    assert out.get("error", "").startswith("TimeLimit"), out
    assert out["seconds"] < 4 * limit + 2, out
    assert not _gone(out["worker_pids"]), out


def _runs_as_nobody() -> bool:
    """Whether this process may start this Python as the user nobody (it is root, and the
    interpreter does not lie under a private home)."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run([sys.executable, "-c", ""], user="nobody", group="nogroup", extra_groups=[],
                              cwd="/", capture_output=True, timeout=60).returncode == 0
    except (OSError, KeyError, ValueError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _runs_as_nobody(), reason="needs root and a Python the user nobody can run")
def test_a_worker_run_as_another_user_cannot_write_the_graders_files(tmp_path):
    base = Path(tempfile.mkdtemp())       # the tree must be readable by nobody; tmp_path is not
    try:
        base.chmod(0o755)
        target = base / "results.json"
        target.write_text("{}")
        out = _grade(base, [["evil:uid"], ["evil:overwrite", str(target)]], env={"ASSIGNMENT_WORKER_USER": "nobody"})
        assert out["values"] == [pwd.getpwnam("nobody").pw_uid], out          # the worker ran as nobody
        assert out.get("error", "").startswith("PermissionError"), out
        assert target.read_text() == "{}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_worker_user_the_grader_cannot_use_is_one_sentence(tmp_path):
    grade = TESTS.parent / "grade.py"
    for user, said in (("no-such-user-here", "no such user"),
                       ("nobody", "cannot run" if os.geteuid() == 0 and not _runs_as_nobody() else None)):
        if said is None:
            continue          # nobody works here (the test above) or this is not root (next case)
        proc = subprocess.run([sys.executable, str(grade), "--problems", "P1"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "ASSIGNMENT_WORKER_USER": user}, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and said in proc.stderr, proc.stderr


@pytest.mark.parametrize("unguarded", [False, True], ids=["death-signal", "watchdog"])
def test_the_worker_and_its_strays_die_with_the_grader(tmp_path, unguarded):
    log = tmp_path / "writes.log"
    calls = ([["evil:unguard"]] if unguarded else []) + [["evil:pid"], ["evil:stray", str(log), "setsid"],
                                                         ["die", 1.0], ["evil:stubborn", True]]
    out = _grade(tmp_path, calls)
    assert out["returncode"] == -signal.SIGKILL, out
    pids = [*out["worker_pids"], *_writers(log)]
    assert len(pids) >= 2, out
    assert not _gone(pids), f"still running after the grader died: {pids}"


def test_the_reaper_names_only_descendants():
    sys.path.insert(0, str(TESTS))
    try:
        import reaper
    finally:
        sys.path.remove(str(TESTS))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in reaper.descendants(os.getpid())
        assert os.getpid() not in reaper.descendants(child.pid) and not reaper.descendants(child.pid)
    finally:
        child.kill()
        child.wait()
    assert child.pid not in reaper.descendants(os.getpid())

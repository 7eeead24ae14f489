"""The graded tests' side of the worker (runner.py): the submission's functions are called in a
child process started in the tree being graded, on inputs the tests choose, and only their outputs
come back, unpickled with torch.load(weights_only=True) so that a reply can carry tensors and
numbers but no code. This process never imports the submission.

    E = student("entropy")
    h = E.entropy(z)                                     # a tensor, computed in the worker
    value, grads = call_grad("grpo:aggregate", (loss, keep, "token-mean"), wrt=[0])

A call that spends the test's time limit in CPU seconds, its own or its child processes' (or
WALL_FACTOR times it in wall time,
so that a busy machine does not fail a right answer), a worker that exits (sys.exit, os._exit, a
crash) or prints more than OUTPUT_LIMIT bytes ends that call with a message, and the next call
starts a fresh worker. After each test (`end_test`, which harness.py calls) and at the worker's
end, every process the submission started is killed, even one that left the worker's process
group (reaper.py). The tree is ASSIGNMENT_TREE (grade.py sets it), or this repository.
"""

from __future__ import annotations

import builtins
import io
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import reaper
import torch

RUNNER = Path(__file__).resolve().parent / "runner.py"
OUTPUT_LIMIT = 1 << 20      # bytes of print output per worker
REPLY_LIMIT = 256 << 20     # bytes of one reply
DEFAULT_LIMIT = float(os.environ.get("ASSIGNMENT_TIME_LIMIT", 30))   # CPU seconds per test
WALL_FACTOR = 10            # a test may wait this many times its limit for a starved (or sleeping) worker
STARTUP_LIMIT = 600         # seconds for a worker to import torch, not counted against any test

# Under Gradescope the grader runs as root; ASSIGNMENT_WORKER_USER=nobody runs the submission as that
# user, so that it cannot write the grader's files, signal it or read its memory.
WORKER_USER = os.environ.get("ASSIGNMENT_WORKER_USER") or None
_usable: set[tuple[int, int]] = set()   # (uid, gid) found able to run the worker

_budget = {"limit": DEFAULT_LIMIT, "wall": time.monotonic() + WALL_FACTOR * DEFAULT_LIMIT, "cpu": 0.0}


class TimeLimit(Exception):
    """A graded test ran past its time limit."""


class SubmissionError(Exception):
    """The submission raised an exception that is not a builtin one; str() says which and where."""


def tree() -> Path:
    return Path(os.environ.get("ASSIGNMENT_TREE") or Path(__file__).resolve().parents[2])


def set_limit(seconds: float) -> None:
    """A new test: it may spend `seconds` of CPU time in the submission's code."""
    _budget.update(limit=seconds, wall=time.monotonic() + WALL_FACTOR * seconds, cpu=0.0)


def account() -> tuple[int, int] | None:
    """(uid, gid) of WORKER_USER, or None when it is not set; RuntimeError, saying what to do, for
    an unknown user or a grader that is not root (only root can start a process as another user)."""
    if WORKER_USER is None:
        return None
    import pwd
    try:
        entry = pwd.getpwnam(WORKER_USER)
    except KeyError:
        raise RuntimeError(f"ASSIGNMENT_WORKER_USER={WORKER_USER}: no such user; create it "
                           "(useradd) or unset the variable.") from None
    if os.geteuid() != 0:
        raise RuntimeError(f"ASSIGNMENT_WORKER_USER={WORKER_USER} needs the grader to run as root, "
                           "which starts the worker as that user; unset the variable.")
    ids = entry.pw_uid, entry.pw_gid
    if ids not in _usable:     # once: that user can start this Python and read the worker
        try:
            subprocess.run([sys.executable, "-c", f"open({str(RUNNER)!r}).close()"], user=ids[0], group=ids[1],
                           extra_groups=[], cwd="/", check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            raise RuntimeError(f"ASSIGNMENT_WORKER_USER={WORKER_USER} cannot run {sys.executable} on "
                               f"{RUNNER}; install Python and the grader where that user can read "
                               "them, or unset the variable.") from None
        _usable.add(ids)
    return ids


def scratch() -> Path:
    """A new folder the submission may write into (a training run's --out): owned by the
    worker's user when there is one, and readable by the grader either way."""
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="assignment-"))
    _scratch.append(folder)
    if (ids := account()) is not None:
        os.chown(folder, *ids)
    return folder


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process pid and of its children it has waited for (fields
    14-17 of /proc/PID/stat); 0 where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Worker:
    """One child process running runner.py in the graded tree."""

    def __init__(self, where: Path):
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSIGNMENT_", "PYTEST"))}
        env.update(PYTHONPATH=str(where), PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        reaper.become_subreaper()          # what the worker leaves behind comes back here
        ids = account()
        if ids is not None:                # its own home: caches the libraries write go there
            env["HOME"] = str(scratch())
        self.proc = subprocess.Popen([sys.executable, str(RUNNER), str(req_r), str(rep_w), str(os.getpid())],
                                     cwd=where, env=env, user=ids[0] if ids else None,
                                     group=ids[1] if ids else None, extra_groups=[] if ids else None,
                                     pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        os.close(req_r)
        os.close(rep_w)
        self.printed, self.tail, self.flooded = 0, b"", False
        threading.Thread(target=self._drain, daemon=True).start()
        self.ready = select.select([self.rep_r], [], [], STARTUP_LIMIT)[0] and os.read(self.rep_r, 1) == b"R"

    def cpu_seconds(self) -> float:
        """CPU time the submission has used: the worker's, its ended children's, and that of every
        live process under this one (the worker's children, and strays that left its process
        group, which come back to this process, the subreaper), so that work handed to a child
        counts as the worker's own (Linux: /proc; elsewhere 0, and only the wall limit holds)."""
        return sum(_cpu_seconds(pid) for pid in {self.proc.pid} | reaper.descendants(os.getpid()))

    def _drain(self) -> None:
        """Read the worker's output, keep its tail, stop the worker past OUTPUT_LIMIT."""
        while chunk := self.proc.stdout.read1(65536):
            self.printed += len(chunk)
            self.tail = (self.tail + chunk)[-2000:]
            if self.printed > OUTPUT_LIMIT and not self.flooded:
                self.flooded = True
                self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        self.kill()
        self.proc.wait()
        end_test()                          # its strays: children that left its process group
        for fd in (self.req_w, self.rep_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def _wait(self, read: bool, start_cpu: float) -> None:
        """Until the pipe is ready; TimeoutError once the test's CPU or wall budget is spent."""
        while True:
            left_wall = _budget["wall"] - time.monotonic()
            left_cpu = _budget["limit"] - _budget["cpu"] - (self.cpu_seconds() - start_cpu)
            if left_wall <= 0 or left_cpu <= 0:
                raise TimeoutError
            fds = ([self.rep_r], []) if read else ([], [self.req_w])
            if any(select.select(*fds, [], min(left_wall, 0.5))[:2]):
                return

    def _write(self, data: bytes, start_cpu: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(False, start_cpu)
            view = view[os.write(self.req_w, view[:65536]):]

    def _read(self, n: int, start_cpu: float) -> bytes:
        data = b""
        while len(data) < n:
            self._wait(True, start_cpu)
            chunk = os.read(self.rep_r, min(n - len(data), 1 << 20))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def request(self, request: dict) -> dict:
        """One call; its CPU time is added to the test's."""
        buffer = io.BytesIO()
        torch.save(request, buffer)
        data = buffer.getvalue()
        start = self.cpu_seconds()
        try:
            self._write(struct.pack("<Q", len(data)) + data, start)
            (size,) = struct.unpack("<Q", self._read(8, start))
            if size > REPLY_LIMIT:
                raise EOFError
            return torch.load(io.BytesIO(self._read(size, start)), weights_only=True)
        finally:
            _budget["cpu"] += max(self.cpu_seconds() - start, 0.0)

    def died(self, what: str) -> str:
        """Why the worker is gone, in words."""
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        if self.flooded:
            return f"{what}: your code printed more than {OUTPUT_LIMIT >> 20} MB, so it was stopped"
        tail = " ".join(self.tail.decode(errors="replace").split())[-300:]
        how = ("ended the process" if status is None else f"was killed by signal {-status}" if status < 0
               else f"ended the process with exit status {status} (sys.exit or os._exit?)")
        return f"{what}: your code {how}" + (f"; its last output: {tail}" if tail else "")


_worker: list[Worker] = []
_scratch: list[Path] = []      # folders made by `scratch`, removed by `remove_scratch`


def _get() -> Worker:
    if _worker and _worker[0].proc.poll() is None and not _worker[0].flooded:
        return _worker[0]
    shutdown()
    _worker.append(Worker(tree()))
    return _worker[0]


def output_tail(wait: float = 1.0, containing: str = "") -> str:
    """The last output of the worker, waiting up to `wait` seconds for `containing` to arrive."""
    end = time.monotonic() + wait
    while _worker and containing not in _worker[0].tail.decode(errors="replace") and time.monotonic() < end:
        time.sleep(0.05)
    return _worker[0].tail.decode(errors="replace") if _worker else ""


def shutdown() -> None:
    """Stop the worker and everything it started (grade.py calls this before it writes the results)."""
    while _worker:
        _worker.pop().close()


def remove_scratch() -> None:
    """Remove the folders `scratch` made (at the end of the grading, after `shutdown`)."""
    import shutil
    while _scratch:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)


def end_test() -> None:
    """Kill every process the submission started that is still running (a grandchild, one that
    left the worker's process group with os.setsid(), a double fork), sparing the worker itself:
    nothing of a test runs on into the next one or past the grading."""
    reaper.kill_tree(os.getpid(), spare=frozenset(w.proc.pid for w in _worker if w.proc.poll() is None))


def _raise(reply: dict, fn: str):
    kind, message = reply["type"], reply["message"]
    where = f" (at {reply['where']})" if reply.get("where") else ""
    if kind == "NotImplementedError":
        raise NotImplementedError(message)
    if kind in ("SystemExit", "KeyboardInterrupt"):
        raise SubmissionError(f"{fn}: your code raised {kind}({message}){where}; it must return a value")
    error = getattr(builtins, kind, None)
    if isinstance(error, type) and issubclass(error, Exception) and error.__module__ == "builtins":
        try:
            raise error(f"{message}{where}")
        except TypeError:
            pass
    raise SubmissionError(f"{kind}: {message}{where}")


def run(request: dict) -> dict:
    """Send one request to the worker; its successful reply, or the submission's exception raised here."""
    fn = request["fn"].replace(":", ".")
    if _budget["cpu"] >= _budget["limit"] or time.monotonic() >= _budget["wall"]:
        raise TimeLimit("the test's time limit was spent before this call")
    started = time.monotonic()
    worker = _get()
    _budget["wall"] += time.monotonic() - started     # a worker's start is not the test's time
    if not worker.ready:
        message = worker.died(f"{fn}: the worker did not start within {STARTUP_LIMIT} s")
        shutdown()
        raise SubmissionError(message)
    try:
        reply = worker.request(request)
    except TimeoutError:
        shutdown()
        raise TimeLimit(f"{fn} was still running at the test's time limit (an endless loop, or far too slow)") \
            from None
    except (EOFError, OSError, struct.error, RuntimeError):
        message = worker.died(fn)
        shutdown()
        raise SubmissionError(message) from None
    if not reply["ok"]:
        _raise(reply, fn)
    return reply


def call(fn: str, *args, **kwargs):
    """fn(*args, **kwargs) in the worker: its output."""
    return run({"fn": fn, "args": list(args), "kwargs": kwargs})["value"]


def call_grad(fn: str, args, kwargs=None, *, wrt, cotangents):
    """fn's output and the gradients, w.r.t. the arguments at indices wrt, of
    sum_k <cotangents[k], output part k> (k a field, an index, or None for the whole output)."""
    reply = run({"fn": fn, "args": list(args), "kwargs": kwargs or {},
                 "grad": {"wrt": list(wrt), "cotangents": cotangents}})
    return reply["value"], reply["grads"]


def call_full(fn: str, args, kwargs=None, *, largest=False, grad=None) -> dict:
    """The whole reply: value, requires_grad, grads, and with largest the biggest tensor made."""
    return run({"fn": fn, "args": list(args), "kwargs": kwargs or {}, "largest": largest, "grad": grad})


class student:
    """student("entropy").entropy(z) calls entropy.entropy(z) in the worker."""

    def __init__(self, module: str):
        self._module = module

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: call(f"{self._module}:{name}", *args, **kwargs)

"""The grader's slow path: math-verify's symbolic equivalence in a child process, bounded by an
outside timeout (rewards.py calls it only for answers its exact fast path cannot decide).

math-verify's own timeouts use SIGALRM, which fails off the main thread, so they are switched
off and the parent bounds the child instead: it waits for a verdict at most `timeout` seconds
of the child's CPU time (at most WALL_FACTOR times that on the wall clock), and otherwise kills
the child and starts a replacement in the background ('spawn', safe next to
torch and CUDA). `GRADER.equivalent(gold, pred, timeout)` is the one entry point.
"""

import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

logger = logging.getLogger("rewards")   # its warnings read as the grader's
WORKER_START_TIMEOUT = 120.0  # seconds; a spawned child re-imports the main script (torch...)
WALL_FACTOR = 5               # a verdict waits at most this many times the timeout, however loaded


def _worker_main(conn) -> None:
    """Child process loop: receive (gold, pred), send (equivalent, error message or None)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout is disabled"
    from math_verify import parse, verify

    conn.send("ready")
    while True:
        try:
            gold, pred = conn.recv()
        except (EOFError, OSError):  # the parent has gone away
            return
        try:
            # Timeouts off: math-verify's use SIGALRM; this process is killed from outside instead.
            gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
            pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=None)
            equal = bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None))
            conn.send((equal, None))
        except BaseException as error:  # math-verify's TimeoutException derives from BaseException
            conn.send((False, f"{type(error).__name__}: {error}"))


def cpu_seconds(pid: int) -> float | None:
    """The user + system CPU seconds process `pid` has used (Linux's /proc/PID/stat, fields 14
    and 15); None where that cannot be read (another system, a process that has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SymbolicGrader:
    """One persistent math-verify child process, started lazily. On a timeout it is killed and a
    replacement is started at once, without waiting for it: the start (a 'spawn' child imports
    the main script, ~5 s when that imports torch) overlaps the rest of the batch, and only an
    undecided answer that arrives before it is ready waits for the remainder."""

    def __init__(self, worker=_worker_main) -> None:
        self._worker = worker   # the child's loop (tests give their own)
        self._process = None
        self._conn = None
        self._ready = False
        self._lock = threading.Lock()

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=self._worker, args=(child_conn,), daemon=True,
                                        name="math-verify-grader")
        self._process.start()
        child_conn.close()
        self._ready = False

    def _wait_ready(self) -> None:
        try:
            self._ready = self._conn.poll(WORKER_START_TIMEOUT) and self._conn.recv() == "ready"
        except (EOFError, OSError):
            self._ready = False
        if not self._ready:
            self.close()
            raise RuntimeError("the math-verify grading process did not start; a script that grades "
                               "must guard its entry point with `if __name__ == '__main__':` ('spawn')")

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
            self._conn.close()
        self._process = self._conn = None
        self._ready = False

    def _wait(self, timeout: float) -> bool:
        """Whether the child's verdict arrives before it has spent `timeout` seconds of CPU time
        on it, or WALL_FACTOR x `timeout` seconds have passed: on a quiet machine the two
        clocks agree; on one loaded beyond its cores an ordinary answer, which gets only a
        share of a core, is not cut off by the wall clock alone."""
        pid, start = self._process.pid, time.monotonic()
        cpu = cpu_seconds(pid)
        ready = self._conn.poll(timeout)
        while not ready and cpu is not None:
            used, left = cpu_seconds(pid), start + WALL_FACTOR * timeout - time.monotonic()
            if used is None or used - cpu >= timeout or left <= 0:
                break
            ready = self._conn.poll(min(timeout - (used - cpu), left))
        return ready

    def equivalent(self, gold: str, pred: str, timeout: float) -> bool:
        """math_verify.verify(gold, pred) decided within `timeout` seconds of the child's CPU time
        (`_wait`), else False."""
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self.close()
                self._spawn()
            if not self._ready:
                self._wait_ready()
            self._conn.send((gold, pred))
            try:
                ready = self._wait(timeout)
                result = self._conn.recv() if ready else None
            except (EOFError, OSError):  # the child died (out of memory, a crash in sympy)
                ready, result = True, None
            if result is None:
                self.close()
                self._spawn()    # the replacement starts now, in the background
                reason = f"took longer than {timeout} s of CPU time" if not ready else "crashed"
                logger.warning("math-verify %s on gold %.80r vs answer %.80r; reward 0", reason, gold, pred)
                return False
        equal, error = result
        if error is not None:
            logger.warning("math-verify failed on gold %.80r vs answer %.80r (%s); reward 0", gold, pred, error)
        return equal


GRADER = SymbolicGrader()

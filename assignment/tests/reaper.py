"""No process of a submission outlives its test (Linux; elsewhere these are no-ops and only the
worker's process group is killed).

* The grader is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): a process that the worker, or
  any process under it, leaves behind is re-parented to the grader instead of init, even after
  os.setsid() or a double fork, so `kill_tree` finds it by parentage.
* `kill_tree(root)` stops (SIGSTOP) every descendant of root until no new one appears, so that
  none can fork while it is being killed, then kills them (SIGKILL) and reaps those that became
  root's own children.
* The worker dies with the grader, and takes what it started with it (`die_with_parent`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LINUX = sys.platform.startswith("linux")


def _prctl(option: int, value: int) -> bool:
    if not LINUX:
        return False
    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Orphans of this process's descendants come back to it (not to init)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    procs = {}
    for name in os.listdir("/proc") if LINUX else []:
        if name.isdigit():
            try:
                rest = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue        # it ended meanwhile
            procs[int(name)] = (int(rest[1]), rest[0])
    return procs


def descendants(root: int) -> set[int]:
    """The live (not zombie) processes under root, root excluded."""
    children: dict[int, list[int]] = {}
    states = {}
    for pid, (ppid, state) in _table().items():
        children.setdefault(ppid, []).append(pid)
        states[pid] = state
    found, todo = set(), [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            if pid not in found:
                found.add(pid)
                todo.append(pid)
    return {pid for pid in found if states[pid] != "Z"}


def _signal(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(root: int, spare: frozenset[int] = frozenset(), rounds: int = 50) -> set[int]:
    """Kill every descendant of root except the processes in spare (whose own descendants are
    killed); reap those that are root's children. Returns the pids killed."""
    stopped: set[int] = set()
    for _ in range(rounds):              # a forking process is stopped before it forks again
        new = descendants(root) - spare - stopped
        if not new:
            break
        _signal(new, signal.SIGSTOP)
        stopped |= new
    _signal(stopped, signal.SIGKILL)
    if root == os.getpid():
        reap(stopped)
    return stopped


def reap(pids: set[int], wait: float = 2.0) -> None:
    """Collect the exit status of those pids that are this process's children (their zombies)."""
    end = time.monotonic() + wait
    left = set(pids)
    while left and time.monotonic() < end:
        for pid in list(left):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    left.discard(pid)
            except ChildProcessError:   # not (or no longer) ours: its own parent reaps it
                left.discard(pid)
        if left:
            time.sleep(0.01)


def die_with_parent(parent: int, poll: float = 0.2) -> None:
    """In the worker: when `parent` (the grader) ends, kill everything under the worker, then the
    worker. PR_SET_PDEATHSIG delivers SIGUSR2 to the worker at once (its handler runs `_end`;
    with no handler the signal alone kills the worker); a watchdog thread that polls the parent
    does the same for a submission that clears the signal or its handler."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)    # the worker's own orphans stay findable under it
    signal.signal(signal.SIGUSR2, lambda *_: _end())
    _prctl(PR_SET_PDEATHSIG, signal.SIGUSR2)

    def watch():
        while os.getppid() == parent:
            time.sleep(poll)
        _end()

    if os.getppid() != parent:           # the grader ended before the worker got here
        _end()
    threading.Thread(target=watch, daemon=True, name="reaper-watchdog").start()


def _end() -> None:
    kill_tree(os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)

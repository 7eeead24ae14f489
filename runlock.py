"""One run to a folder: the lock a run holds on its --out for its whole life.

A run owns its folder (`lock_run_folder`): an flock on <out>/run.lock, taken before anything
slow and held by the process, so a second run on the folder (a new one or a --resume) is
refused with the holder named, and a killed run's lock dies with it (the kernel releases it),
so it never blocks its own --resume. eval.py holds its output file the same way (`try_lock`).
"""

import fcntl
import os
import shlex
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = "run.lock"        # who runs in the folder: pid, host, start time, command


def write_probe(probe: Path) -> None:
    """Write and remove a small file at `probe`: OSError when the folder cannot be written (or its
    disk is full), and no file left behind either way."""
    try:
        probe.write_text("ok")
    finally:
        probe.unlink(missing_ok=True)


_HELD: dict[Path, object] = {}   # run folders this process holds: their open, flocked lock files


def try_lock(path: Path, holder: str):
    """Take an exclusive flock on the file `path` without waiting and write `holder` into it.
    Returns (the open file, None): the lock lasts while the file stays open, and the kernel
    releases it when the process dies, so a killed holder leaves no stale lock; or (None, the
    text the current holder wrote) when another process has it."""
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        text = f.read().strip()
        f.close()
        return None, text
    f.seek(0)
    f.truncate()
    f.write(holder)
    f.flush()
    return f, None


def lock_run_folder(out: Path) -> None:
    """Take <out>/run.lock for this process (kept until it exits or `release_run_folders`) and
    write the holder into it; raise ValueError naming the holder when another process has it."""
    key = Path(out).resolve()
    if key in _HELD:
        return
    lock, holder = try_lock(key / LOCK_FILE, f"pid {os.getpid()} on {socket.gethostname()}, started "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {shlex.join([sys.executable, *sys.argv])}\n")
    if lock is None:
        raise ValueError(_in_use(out, holder))
    _HELD[key] = lock


def check_free(out: Path) -> None:
    """Raise ValueError naming the holder when a live run holds `out` (--resume checks it before
    it reads the checkpoints that run is writing and pruning). A shared lock, released at once:
    several processes of one torchrun may ask together without seeing each other."""
    if Path(out).resolve() in _HELD:
        return
    try:
        f = open(Path(out) / LOCK_FILE)
    except OSError:        # no folder or no lock file: no run has held it
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(_in_use(out, f.read().strip())) from None


def _in_use(out: Path, holder: str) -> str:
    return (f"--out {out} is in use by another run ({holder or 'another process'}); wait for it to "
            f"end or stop it, or choose another --out.")


def release_run_folders() -> None:
    """Give up the run folders this process holds (the end of train.main; exiting does it too)."""
    while _HELD:
        _HELD.popitem()[1].close()

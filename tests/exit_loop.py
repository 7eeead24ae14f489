"""The exit path of a 2-process run, many times over, counting ranks that abort (not a test).

    OMP_NUM_THREADS=1 python tests/exit_loop.py --runs 200                 # distributed.exit
    OMP_NUM_THREADS=1 python tests/exit_loop.py --runs 200 --old-exit      # close(), then Python's exit
    OMP_NUM_THREADS=1 python tests/exit_loop.py --runs 40 --in-flight --old-exit   # aborts often
    OMP_NUM_THREADS=1 python tests/exit_loop.py --runs 20 --launcher torchrun
    OMP_NUM_THREADS=1 python tests/exit_loop.py --runs 40 --in-flight --fail   # an uncaught error

Each run is two ranks of gloo on the CPU, as under torchrun: the process group
(distributed.init), an FSDP2 forward and backward, the collectives train.py ends a run with
(all_gather_object, a barrier, an all-reduce), then the exit every torchrun entry point takes,
`distributed.run` (or, with --old-exit, `distributed.close()` and the interpreter's own exit). With
--fail each rank raises an uncaught exception after its collectives instead: distributed.run
prints the traceback and exits 1 through distributed.exit; --old-exit lets it leave through the
interpreter, as a rank did before distributed.run.
A rank that aborts at exit ("terminate called without an active exception", SIGABRT) is counted
and the first one's output printed. --in-flight leaves all-reduces running in gloo's worker
threads at the exit, which widens the race at the end of every run into a certainty.

--launcher fork (default): this process imports torch once and forks the two ranks of each run
from itself, so a run costs its own work and exit instead of three imports of torch (~10 s on a
loaded machine); each rank then leaves as a torchrun worker does, through the interpreter's
exit. A separate process hosts the TCPStore, as torchrun's agent does. --launcher torchrun: the
real thing, for comparison.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (imported by the first FSDP2 forward: once here, not in every rank)
import torch.distributed as dist  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

import distributed  # noqa: E402

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
STORE = ("import os, sys, time, torch.distributed as d; s = d.TCPStore('127.0.0.1', int(sys.argv[1]), "
         "is_master=True, wait_for_workers=False); print('up', flush=True)\n"
         "while os.getppid() == int(sys.argv[2]): time.sleep(1)")   # ends with the loop


def work(in_flight: bool, fail: bool) -> int:
    """One rank's run: an FSDP2 step and collectives; its status 0, or (fail) an uncaught error."""
    world = distributed.init(torch.device("cpu"))
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    for module in (model[0], model[1], model):
        fully_shard(module)
    model(torch.ones(2, 4)).sum().backward()
    parts = distributed.gather_objects({"rank": world.rank, "x": torch.arange(4)}, world)
    distributed.barrier(world)
    total = distributed.sum_all({"rank": float(world.rank)}, world)["rank"]
    assert total == 1.0 and [p["rank"] for p in parts] == [0, 1]
    if in_flight:
        for _ in range(20):
            dist.all_reduce(torch.ones(1_000_000), async_op=True)
    print(f"rank {world.rank} done", flush=True)
    if fail:
        raise RuntimeError(f"rank {world.rank}: an uncaught error after the collectives (--fail)")
    return 0


def leave(args) -> None:
    """Run one rank's work and leave as every torchrun entry point does (distributed.run), or,
    with --old-exit, close the group and leave through the interpreter's own exit, also for an
    uncaught exception."""
    if not args.old_exit:
        distributed.run(lambda: work(args.in_flight, args.fail))
    try:
        work(args.in_flight, args.fail)
    finally:
        distributed.close()
    sys.exit(0)   # up through main(): the interpreter's own exit, as at the end of a script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fork_rank(run: int, rank: int, port: int, log: Path, args) -> int:
    """A child that is rank `rank` of run `run` (a client of the store, as a torchrun worker is)."""
    pid = os.fork()
    if pid:
        return pid
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    store = dist.PrefixStore(f"run{run}", dist.TCPStore("127.0.0.1", port, 2, False))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    leave(args)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--launcher", choices=("fork", "torchrun"), default="fork")
    parser.add_argument("--old-exit", action="store_true", help="distributed.close(), then Python's exit")
    parser.add_argument("--in-flight", action="store_true", help="collectives still running at the exit")
    parser.add_argument("--fail", action="store_true", help="each rank ends with an uncaught exception")
    parser.add_argument("--rank-work", action="store_true", help=argparse.SUPPRESS)  # torchrun's ranks
    args = parser.parse_args()
    flags = ["--old-exit"] * args.old_exit + ["--in-flight"] * args.in_flight + ["--fail"] * args.fail
    if args.rank_work:
        return leave(args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = None
    if args.launcher == "fork":
        port = free_port()
        store = subprocess.Popen([sys.executable, "-c", STORE, str(port), str(os.getpid())],
                                 stdout=subprocess.PIPE, text=True)
        store.stdout.readline()
    logs = Path(tempfile.mkdtemp(prefix="exit_loop_"))
    gc.freeze()   # the ranks' final collection skips what they share with this process (copy-on-write)
    failed, aborted, first = 0, 0, None
    start = time.time()
    for i in range(args.runs):
        if args.launcher == "fork":
            pids = [fork_rank(i, rank, port, logs / f"rank{rank}.log", args) for rank in range(2)]
            statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
            text = "".join(f"--- rank {r} (exit {s}):\n" + (logs / f"rank{r}.log").read_text()
                           for r, s in enumerate(statuses))
            ok = statuses == [int(args.fail)] * 2   # --fail: each rank exits 1 with its traceback
            text += "SIGABRT\n" * statuses.count(-6)
        else:
            run = subprocess.run(TORCHRUN + [__file__, "--rank-work", *flags], cwd=REPO, env=env,
                                 capture_output=True, text=True)
            text, ok = run.stdout + run.stderr, run.returncode == int(args.fail)
        ok = ok and "terminate called" not in text and (not args.fail or "(--fail)" in text)
        if not ok:
            failed += 1
            aborted += "terminate called" in text or "SIGABRT" in text
            first = first or text
            print(f"run {i}: failed" + (" (abort)" if "terminate called" in text else ""), flush=True)
    seconds = time.time() - start
    if store:
        store.kill()
    print(f"{args.runs} runs ({args.launcher}, {' '.join(flags) or 'distributed.run'}): {failed} failed, "
          f"{aborted} aborted at exit; "
          f"{seconds:.0f} s, {seconds / args.runs:.2f} s a run")
    if first:
        print("first failure:\n" + first[-6000:])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

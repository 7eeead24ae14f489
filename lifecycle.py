"""The life of a training run around its steps: logs, progress, checkpoints on schedule, signals,
the failure guards and the exit status (train.train runs its steps inside a `Loop`).

    with lifecycle.Loop(cfg, out, world, start, save, device_type) as loop:
        for step in loop.steps():
            loop.log(record)                       # the step's metrics.jsonl record
            loop.end_step(step, record, nonfinite_in_a_row)
    return loop.status

Exit statuses: 0 done; 1 a checkpoint that could not be written, MAX_NONFINITE_IN_A_ROW steps in
a row whose loss or gradient was not finite, or the device out of memory; 128 + the signal's
number after SIGINT / SIGTERM; 130 when a second Ctrl-C abandons the step. Each failure is one
sentence on stderr that names the last checkpoint and the resume command.
* SIGINT / SIGTERM do not kill the step in flight: the first signal asks the loop to finish the
  step and write a checkpoint (`Stop`), a second abandons the step at once. Under torchrun the
  ranks agree on stopping (a collective after every step), so they all save the same step.
"""

from __future__ import annotations

import math
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import checkpoint
import distributed
import memory
import tracking
from distributed import World

MAX_NONFINITE_IN_A_ROW = 3


@dataclass
class Failures:
    """The updates skipped for a non-finite loss or gradient (update_step's "nonfinite"): in
    all, and in consecutive steps (MAX_NONFINITE_IN_A_ROW stops the run). Saved in trainer_state."""
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0

    def count(self, skipped: int) -> None:
        """After a step that skipped `skipped` updates."""
        self.nonfinite_total += skipped
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if skipped else 0

    @classmethod
    def restore(cls, counters: dict) -> Failures:
        return cls(counters["nonfinite_total"], counters["nonfinite_in_a_row"])


def save_error(step: int, err: BaseException, last_saved: int, out: Path) -> str:
    """The one sentence for a checkpoint that could not be written (a full disk, most often)."""
    earlier = (f"checkpoint-{last_saved} is intact; free some space, then resume with: "
               f"{resume_command(out)}" if last_saved else "no earlier checkpoint exists")
    return (f"error: could not write the checkpoint of step {step} ({type(err).__name__}: {err}); "
            f"is the disk full? {earlier}")


def nonfinite_error(in_a_row: int, step: int, last_saved: int) -> str:
    """The one sentence for a run stopped by non-finite losses or gradients in a row."""
    trust = (f"checkpoint-{last_saved} (step {last_saved}) is the last one saved" if last_saved
             else "no checkpoint was saved")
    return (f"error: the loss or gradient was not finite in {in_a_row} steps in a row (up to step "
            f"{step}); those updates were skipped, but earlier ones may already have harmed the "
            f"model, and the run stops; {trust}. Lower --lr or --grad-clip, or use --dtype float32.")


def resume_command(out: Path, world: World = World()) -> str:
    start = ["torchrun", f"--nproc-per-node={world.size}"] if world.size > 1 else ["python"]
    return shlex.join([*start, "train.py", "--out", str(out), "--resume"])


class Stop:
    """SIGINT / SIGTERM handler: the first signal asks the loop to stop after the current step
    (and checkpoint); a second one abandons the step at once."""
    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(f"\n{signal.Signals(signum).name}: finishing this step, then writing a "
                   f"checkpoint (send it again to abandon the step without saving)")


class Exit(Exception):
    """Leave the loop with this exit status; the reason has been said."""
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class Loop:
    """The run's logs (metrics.jsonl and samples.jsonl, teed to the --report-to trackers, rank 0
    only), its progress bar, the signal handler and the checkpoints, from step `start` to
    cfg.steps. `save(step)` writes a checkpoint and returns its folder. Leaving the `with`
    block restores the signal handlers, closes the trackers and sets `status`."""

    def __init__(self, cfg, out: Path, world: World, start: int, save: Callable[[int], Path],
                 device_type: str):
        self.cfg, self.out, self.world, self.save, self.device_type = cfg, out, world, save, device_type
        self.step = self.last_saved = start    # the step in flight; the last checkpoint's step
        self.status, self.warned = 0, False

    def __enter__(self) -> Loop:
        cfg, world = self.cfg, self.world
        self.tracker = tracking.start(cfg.report_to, self.out, self.step, world.main)
        self.write = self.tracker.tee(checkpoint.append_jsonl if world.main else (lambda path, record: None))
        self.stop = Stop()
        handled = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
        self.previous = {s: signal.signal(s, self.stop) for s in handled}
        self.resume = resume_command(self.out, world)
        self.bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.method, dynamic_ncols=True,
                        disable=not world.main)
        return self

    def steps(self) -> Iterator[int]:
        """The steps still to run, start + 1 to cfg.steps."""
        for step in range(self.step + 1, self.cfg.steps + 1):
            self.step = step
            yield step

    def log(self, record: dict) -> None:
        """A metrics.jsonl record (and the trackers')."""
        self.write(self.out / "metrics.jsonl", record)

    def samples(self, step: int, rows: list[dict]) -> None:
        """A step's decoded responses: samples.jsonl rows, and one table for the trackers."""
        for row in rows:
            self.write(self.out / "samples.jsonl", row)
        self.tracker.table(step, rows)

    def end_step(self, step: int, record: dict, nonfinite_in_a_row: int) -> None:
        """After a step is logged: progress, the non-finite guard, the checkpoint (every
        --save-every steps, at the last step, or when a signal came on any rank), and the stop.
        Raises Exit to end the run."""
        self._progress(step, record)
        if nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
            tqdm.write(nonfinite_error(MAX_NONFINITE_IN_A_ROW, step, self.last_saved), file=sys.stderr)
            raise Exit(1)
        stopping = distributed.any_rank(self.stop.signum is not None, self.world)   # all ranks agree
        if step % self.cfg.save_every == 0 or step == self.cfg.steps or stopping:
            path = self._save(step)
        if stopping:
            if self.world.main:
                tqdm.write(f"stopped at step {step}; checkpoint {path}. Resume with:\n  {self.resume}")
            raise Exit(128 + (self.stop.signum or signal.SIGTERM))

    def _progress(self, step: int, record: dict) -> None:
        self.bar.update(1)
        if record["truncated_frac"] == 1 and not self.warned and self.world.main:
            self.warned = True
            tqdm.write(f"warning: every response of step {step} was cut at --max-new-tokens "
                       f"{self.cfg.max_new_tokens}, so none could finish its answer; raise it.")
        self.bar.set_postfix(reward=f"{record['reward']:.3f}", H=f"{record['entropy']:.3f}",
                             masked=f"{record['masked_frac']:.4f}", len=f"{record['response_len']:.0f}",
                             kl=f"{record.get('approx_kl', math.nan):.1e}")

    def _save(self, step: int) -> Path:
        try:
            path = self.save(step)
        except Exception as err:   # OSError, torch's RuntimeError, SafetensorError
            tqdm.write(save_error(step, err, self.last_saved, self.out), file=sys.stderr)
            raise Exit(1) from None
        self.last_saved = step
        return path

    def _failure(self, err: BaseException) -> int | None:
        """The exit status of an exception that ends the loop, its sentence said; None for others."""
        if isinstance(err, Exit):
            return err.status
        if isinstance(err, KeyboardInterrupt):   # a second signal, or Ctrl-C outside the handler
            what = "writing final/ (it is not written)" if self.last_saved == self.cfg.steps else f"step {self.step}"
            tqdm.write(f"abandoned {what}; " + (f"the latest checkpoint is step {self.last_saved}. Resume "
                       f"with:\n  {self.resume}" if self.last_saved else "no checkpoint was written: run "
                       "the same command again to start over (the logs move aside)."))
            return 130
        if isinstance(err, memory.OutOfMemory):
            tqdm.write(f"error: the {self.device_type} device ran out of memory while {err.phase} in "
                       f"step {self.step}: {memory.oom_advice(self.cfg, err.phase)}"
                       + (f"; then resume with: {self.resume}" if self.last_saved else "."), file=sys.stderr)
            return 1
        return None

    def __exit__(self, kind, err, traceback) -> bool:
        status = None if err is None else self._failure(err)
        self.bar.close()
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.tracker.close()
        if err is None and self.world.main:
            tqdm.write(f"done: {self.cfg.steps} steps; final model in {self.out / 'final'}")
        self.status = 0 if err is None else status
        return err is None or status is not None

"""Checkpoints and resume: a run that is stopped, killed or crashes continues where it was.

<out>/checkpoint-<step>/ holds the model (safetensors) and tokenizer as Hugging Face writes
them, and trainer_state.pt: the optimiser, the scheduler, every RNG state (Python, NumPy, torch,
CUDA), the prompt sampler's position, the configuration and the run's counters. Rollouts are
seeded from (seed, step), so a resumed run on CPU repeats a straight run bit for bit.

Choices and why:
* A checkpoint is written into a temporary folder and renamed, so an interrupted save never
  leaves a half-written folder under a checkpoint's name, and never damages the previous one;
  only folders with the final name and a trainer_state.pt count as checkpoints.
* SIGINT / SIGTERM do not kill the step in flight: the first signal asks the loop to finish the
  step and write a checkpoint (`Stop`), a second abandons the step at once.
* Metrics and samples logged after the checkpoint a run resumes from are dropped
  (`truncate_jsonl`): the resumed run logs those steps again.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.pt"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `out`, oldest first, as (step, path)."""
    found = []
    for p in Path(out).glob("checkpoint-*"):
        match = CHECKPOINT_RE.match(p.name)
        if match and (p / STATE_FILE).is_file():
            found.append((int(match.group(1)), p))
    return sorted(found)


def latest(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1][1] if found else None


def atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary folder beside target, then rename it to target. If write
    fails, the temporary folder is removed and target (if it existed) is untouched."""
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".old-{target.name}")
    if target.exists():     # a re-save at the same step: keep the old one until the swap
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_model(out: Path, model, tokenizer) -> None:
    """A Hugging Face folder (safetensors + tokenizer) at `out`, written atomically."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    atomic_dir(out, write)


def save(out: Path, step: int, model, tokenizer, trainer_state: dict, keep_last: int) -> Path:
    """<out>/checkpoint-<step>/: model + tokenizer + trainer_state.pt ({"step", "rng"} added to
    `trainer_state`); keeps the newest keep_last checkpoints. Returns the checkpoint's path."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)

    target = out / f"checkpoint-{step}"
    atomic_dir(target, write)
    for _, old in checkpoints(out)[:-keep_last]:
        shutil.rmtree(old)
    return target


def load_trainer_state(path: Path) -> dict:
    # our own file: it holds python / numpy RNG states, which weights_only refuses
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop records logged after `step` (a resumed run logs those steps again)."""
    if path.exists():
        lines = path.read_text().splitlines()
        path.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= step))


def resume_command(out: Path) -> str:
    return shlex.join(["python", "train.py", "--out", str(out), "--resume"])


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

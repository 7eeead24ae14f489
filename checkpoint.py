"""Checkpoints and resume: a run that is stopped, killed or crashes continues where it was.

<out>/checkpoint-<step>/ holds the model (safetensors) and tokenizer as Hugging Face writes
them, and trainer_state.pt: the optimiser, the scheduler, every RNG state (Python, NumPy, torch,
CUDA), the prompt sampler's position, the configuration and the run's counters. Rollouts are
seeded from (seed, step), so a resumed run on CPU repeats a straight run bit for bit.

Under torchrun (distributed.py) the optimiser state stays sharded: every process writes its
shards with torch.distributed.checkpoint into optimizer/ (no process gathers it), rank 0 writes
the gathered weights and trainer_state.pt, and the folder appears under its name only when every
process has written its part. DCP reshards on load, so such a checkpoint resumes on any number
of processes, one included; a single-process checkpoint resumes under torchrun too (`by_name`).

Choices and why:
* A checkpoint is written into a temporary folder and renamed, so an interrupted save never
  leaves a half-written folder under a checkpoint's name, and never damages the previous one;
  only folders with the final name and a trainer_state.pt count as checkpoints.
* Old checkpoints are pruned by renaming them to a hidden name first, so a kill during the
  deletion leaves nothing that looks like a checkpoint; `clean_leftovers` removes such hidden
  folders (and half-written ones) when a run starts.
* Metrics and samples logged after the checkpoint a run resumes from are dropped
  (`truncate_jsonl`): the resumed run logs those steps again. The file is rewritten beside
  itself and renamed, and a partial last line (a kill mid-write) is dropped, never fatal.
* A new run in a folder that holds metrics but no checkpoint (a run killed before its first
  save) moves the old files aside (`move_aside`) instead of appending to them.
* Flags a --resume changes (config.RESUME_MAY_CHANGE) are logged in <out>/resumes.jsonl with the
  step they took effect (`record_resume`), and config.json lists them under "resumes".
* A run owns its folder for its whole life (runlock.py's `lock_run_folder`, taken by
  `prepare_run_folder` before anything else touches the folder).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

import distributed
import runlock
from distributed import World

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.pt"
OPTIMIZER_DIR = "optimizer"   # the sharded optimiser state of a multi-process checkpoint


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


def finished(out: Path, steps: int) -> bool:
    """Whether the run in out ended at `steps`: its last checkpoint is that step and final/ exists."""
    found = checkpoints(out)
    return bool(found) and found[-1][0] == steps and (Path(out) / "final").is_dir()


def latest(out: Path) -> Path | None:
    found = checkpoints(out)
    return found[-1][1] if found else None


_VERIFIED: dict[Path, tuple[tuple, dict]] = {}   # checkpoints verify passed: (their files' sizes and times, state)


def verify(path: Path) -> dict:
    """The trainer state of checkpoint `path` once every part a resume reads is checked: the
    trainer state loads, config.json loads, every weight file exists and is whole, its tensors
    with the shapes the config asks for, the tokenizer loads and fills the embedding (more than half its rows,
    none beyond it), and a sharded optimiser has its metadata. Raises ValueError naming the
    first part that fails. A resume asks three times (config.resolve_config, prepare_run_folder,
    train.setup): a checkpoint whose files have not changed since it passed is not checked again."""
    path = Path(path)
    stats = ((str(f), f.stat()) for f in path.rglob("*") if f.is_file())
    files = tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    if path in _VERIFIED and _VERIFIED[path][0] == files:
        return _VERIFIED[path][1]
    _VERIFIED[path] = (files, _check(path))
    return _VERIFIED[path][1]


def _check(path: Path) -> dict:
    """verify's checks, in order; the trainer state, or ValueError naming the first that fails."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    try:
        state = load_trainer_state(path)
    except Exception as err:   # a truncated zip, a torn pickle
        raise ValueError(f"{STATE_FILE} does not load ({type(err).__name__})") from None
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:
        raise ValueError(f"config.json does not load ({type(err).__name__})") from None
    saved = _saved_shapes(path)
    with torch.device("meta"):
        expected = {name: list(p.shape) for name, p in AutoModelForCausalLM.from_config(config).named_parameters()}
    if not expected.keys() & saved.keys():   # (names only on one side: a format's own renames)
        raise ValueError("the weight files hold none of the weights config.json describes")
    for name in expected:
        if name in saved and saved[name] != expected[name]:
            raise ValueError(f"weight {name} has shape {saved[name]} where config.json asks for {expected[name]}")
    try:
        tokens = len(AutoTokenizer.from_pretrained(path))
    except Exception as err:
        raise ValueError(f"the tokenizer does not load ({type(err).__name__})") from None
    vocab = getattr(config.get_text_config(), "vocab_size", None) or tokens
    if not vocab // 2 < tokens <= vocab:
        raise ValueError(f"the tokenizer has {tokens} tokens for an embedding of {vocab} rows "
                         f"(a tokenizer file is missing or damaged)")
    if state.get("optimizer") == OPTIMIZER_DIR and not (path / OPTIMIZER_DIR / ".metadata").is_file():
        raise ValueError(f"{OPTIMIZER_DIR}/.metadata is missing")
    return state


def _saved_shapes(path: Path) -> dict[str, list[int]]:
    """{tensor name: shape} of a checkpoint's safetensors files, read from their headers, which
    safetensors checks against each file's size; ValueError for a missing or damaged file."""
    from safetensors import safe_open
    index = path / "model.safetensors.index.json"
    try:
        files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
                 else ["model.safetensors"])
    except (OSError, ValueError, KeyError, AttributeError):
        raise ValueError(f"{index.name} does not load") from None
    shapes = {}
    for name in files:
        if not (path / name).is_file():
            raise ValueError(f"{name} is missing")
        try:
            with safe_open(path / name, "pt") as f:
                shapes.update({key: list(f.get_slice(key).get_shape()) for key in f.keys()})
        except Exception as err:   # SafetensorError: truncated, or not a safetensors file
            raise ValueError(f"{name} is damaged ({type(err).__name__}: {err})") from None
    return shapes


def whole(out: Path) -> tuple[Path | None, dict | None, list[tuple[Path, str]]]:
    """(the newest checkpoint in `out` that `verify` passes and its trainer state, or None, None;
    the newer ones that fail, newest first, each with what is wrong with it)."""
    damaged = []
    for _, path in reversed(checkpoints(out)):
        try:
            return path, verify(path), damaged
        except ValueError as err:
            damaged.append((path, str(err)))
    return None, None, damaged


def damaged_message(out: Path, damaged: list[tuple[Path, str]], found: Path | None) -> str:
    """One sentence on the damaged checkpoints of a --resume and what it does instead."""
    listed = "; ".join(f"{path.name}: {reason}" for path, reason in damaged)
    if found is None:
        return (f"--resume found no whole checkpoint in {out} ({listed}); move the damaged "
                f"checkpoints out of it and drop --resume to start the run again, or choose another --out.")
    return f"--resume: {listed}; resuming from {found.name}, the newest whole checkpoint"


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


def save_model(out: Path, model, tokenizer, dtype: torch.dtype = torch.float32,
               world: World = World()) -> None:
    """A Hugging Face folder (safetensors + tokenizer) at `out`, written atomically, its weights
    in `dtype` (the model's own, e.g. bf16 for Qwen2.5: half the size of the float32 masters).
    Sharded weights are gathered to rank 0, which writes; every rank must call it."""
    weights = distributed.full_state_dict(model, world)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        if dtype != torch.float32:
            _cast_saved(tmp, dtype)

    _on_main(world, lambda: atomic_dir(out, write))


def _on_main(world: World, write: Callable[[], None]) -> None:
    """write() on rank 0; every rank returns when it is done, or raises if it failed there."""
    error = None
    if world.main:
        try:
            write()
        except Exception as err:   # every rank must learn of it, or the others would wait forever
            error = err
    if distributed.any_rank(error is not None, world):
        raise error or RuntimeError("rank 0 could not write the checkpoint")


def _cast_saved(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite a saved model's safetensors shards in `dtype`, one shard at a time, and say so in
    its config.json (and the shard index's total size)."""
    from safetensors.torch import load_file, save_file
    total = 0
    for shard in sorted(folder.glob("*.safetensors")):
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(shard).items()}
        save_file(tensors, shard, metadata={"format": "pt"})
        total += sum(v.numel() * v.element_size() for v in tensors.values())
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2) + "\n")


def _remove(path: Path) -> None:
    """Delete a folder by renaming it to a hidden name first: never a half-deleted checkpoint."""
    doomed = path.with_name(f".del-{path.name}")
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def clean_leftovers(out: Path) -> None:
    """Remove what a killed save or prune left behind: .tmp-*, .old-*, .del-* folders."""
    for pattern in (".tmp-*", ".old-*", ".del-*"):
        for p in Path(out).glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


def save(out: Path, step: int, model, tokenizer, optimizer, trainer_state: dict, keep_last: int,
         world: World = World()) -> Path:
    """<out>/checkpoint-<step>/: model + tokenizer + trainer_state.pt ({"step", "rng",
    "optimizer"} added to `trainer_state`; optimizer None: not saved); keeps the newest
    keep_last checkpoints. Returns the checkpoint's path. Several processes: see the top."""
    target = out / f"checkpoint-{step}"
    sharded = out / f".tmp-{OPTIMIZER_DIR}-{step}"
    if world.size > 1 and optimizer is not None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        dcp.save(get_optimizer_state_dict(model, optimizer), checkpoint_id=sharded)
    optim = (None if optimizer is None else OPTIMIZER_DIR if world.size > 1 else optimizer.state_dict())
    weights = distributed.full_state_dict(model, world)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        if optim == OPTIMIZER_DIR:
            os.replace(sharded, tmp / OPTIMIZER_DIR)
        torch.save({**trainer_state, "optimizer": optim, "step": step, "rng": rng_state(),
                    "world_size": world.size}, tmp / STATE_FILE)

    def write_and_prune() -> None:
        atomic_dir(target, write)
        for _, old in checkpoints(out)[:-keep_last]:
            _remove(old)

    _on_main(world, write_and_prune)
    return target


def restore(path: Path, model, optimizer, scheduler, sampler, world: World = World(),
            state: dict | None = None) -> dict:
    """Resume from checkpoint `path` (its weights are already loaded): the optimiser, scheduler,
    prompt sampler, native dtype and RNG state; metrics.jsonl and samples.jsonl cut back to its
    step. state: its trainer state when already loaded (else read here). Returns the trainer
    state (its "step" and "counters")."""
    state = state or load_trainer_state(path)
    _load_optimizer(path, state, model, optimizer, world)
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    model.native_dtype = getattr(torch, state.get("native_dtype", "float32").removeprefix("torch."))
    set_rng_state(state["rng"])
    if world.main:
        for name in ("metrics.jsonl", "samples.jsonl"):
            truncate_jsonl(path.parent / name, state["step"])
    return state


def _load_optimizer(path: Path, state: dict, model, optimizer, world: World = World()) -> None:
    """The optimiser state of checkpoint `path` (its trainer_state `state`) into `optimizer`:
    the sharded state of a multi-process run, resharded by DCP for this number of processes, or
    a single-process state dict, which under torchrun every process reads whole and keeps its
    shards of. None (saved with --no-save-optimizer) leaves it fresh."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                         set_optimizer_state_dict)
    saved = state["optimizer"]
    if saved is None:
        return
    if saved == OPTIMIZER_DIR:                   # sharded by a multi-process run
        target = get_optimizer_state_dict(model, optimizer)
        dcp.load(target, checkpoint_id=path / OPTIMIZER_DIR)
        set_optimizer_state_dict(model, optimizer, target)
    elif world.size == 1:                        # one process, read by one process
        optimizer.load_state_dict(saved)
    else:                                        # one process, read whole by every rank
        set_optimizer_state_dict(model, optimizer, by_name(saved, model),
                                 options=StateDictOptions(full_state_dict=True))


def by_name(saved: dict, model) -> dict:
    """A single-process optimiser state dict (parameters numbered in model.parameters() order,
    as train.make_optimizer hands them over) keyed by parameter names instead, the form
    torch.distributed.checkpoint.state_dict reads."""
    names = [name for name, _ in model.named_parameters()]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]]
    return {"state": {names[i]: v for i, v in saved["state"].items()}, "param_groups": groups}


def load_trainer_state(path: Path) -> dict:
    """The trainer state of checkpoint `path`, its tensors (the optimiser's moments: 8 bytes a
    parameter) memory-mapped, read from disk only where used. Our own file: it holds python /
    numpy RNG states, which weights_only refuses."""
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False, mmap=True)


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL log; an unparsable line (a kill mid-write leaves a partial last
    line) is skipped."""
    records = []
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the records logged up to `step` (a resumed run logs later steps again). Written to a
    temporary file and renamed, so a kill at any moment leaves the old or the new file whole."""
    if path.exists():
        kept = [r for r in read_jsonl(path) if r.get("step", math.inf) <= step]
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)


RESUMES = "resumes.jsonl"   # one line per --resume that changed flags: {"step", "changed": {flag: [old, new]}}
LOGS = ("metrics.jsonl", "samples.jsonl", "config.json", RESUMES)


def record_resume(out: Path, step: int, changed: dict) -> list[dict]:
    """Log a --resume from checkpoint `step` that changed flags (config.RESUME_MAY_CHANGE) in
    <out>/resumes.jsonl, after dropping the records of earlier resumes from this step or later
    (their steps were not kept: the run died before its next checkpoint). Returns every record."""
    path = Path(out) / RESUMES
    truncate_jsonl(path, step - 1)
    if changed:
        append_jsonl(path, {"step": step, "changed": changed})
    return read_jsonl(path) if path.exists() else []


def move_aside(out: Path) -> Path | None:
    """A new run in `out`: logs of an earlier run that wrote no checkpoint go to
    out/previous-<n>/ (returned), so that the new run does not append to them."""
    found = [Path(out) / name for name in LOGS if (Path(out) / name).exists()]
    if not found:
        return None
    n = 1
    while (Path(out) / f"previous-{n}").exists():
        n += 1
    aside = Path(out) / f"previous-{n}"
    aside.mkdir()
    for p in found:
        os.replace(p, aside / p.name)
    return aside


def prepare_run_folder(out: Path, model: str, resume: bool) -> Path | None:
    """Check and tidy the run folder before anything loads; return the checkpoint to resume from
    (None for a new run). Raises ValueError, saying what to do, for a folder that holds the
    model itself, one that cannot be written, one another run holds (runlock.py), or a
    new run over an existing run's checkpoints."""
    out = Path(out)
    model_dir = Path(model)
    if model_dir.is_dir() and (out.resolve() == model_dir.resolve() or out.resolve() in model_dir.resolve().parents):
        raise ValueError(f"--out {out} holds the model being trained ({model}); writing the run "
                         f"there would overwrite it. Choose another --out.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        runlock.write_probe(out / ".write-test")
    except OSError as err:
        raise ValueError(f"cannot write to --out {out} ({err.strerror or err}); choose a folder "
                         f"you can write to, on a disk with free space.") from None
    runlock.lock_run_folder(out)      # before anything else touches the folder: it may be another run's
    clean_leftovers(out)
    if not resume:
        if (found := latest(out)) is not None:
            raise ValueError(f"{out} already holds a run ({found.name}); pass --resume to continue "
                             f"it, or choose another --out.")
    elif checkpoints(out):
        return resume_point(out)
    else:
        tqdm.write(f"--resume: {out} holds no checkpoint yet; starting the run")
    if (aside := move_aside(out)) is not None:
        tqdm.write(f"{out} held the logs of a run that saved no checkpoint; moved them to {aside}")
    return None


def resume_point(out: Path) -> Path:
    """The checkpoint a --resume continues: the newest whole one (`whole`). Newer damaged ones
    are renamed damaged-checkpoint-N (kept, never resumed or pruned as checkpoints) with one line
    saying which and why; ValueError when none is whole."""
    found, _, damaged = whole(out)
    if found is None:
        raise ValueError(damaged_message(out, damaged, None))
    for path, _ in damaged:
        n = 1
        while (aside := path.with_name(f"damaged-{path.name}" + (f"-{n}" if n > 1 else ""))).exists():
            n += 1
        os.replace(path, aside)
    if damaged:
        tqdm.write(damaged_message(out, damaged, found) + " (the damaged ones are renamed damaged-checkpoint-N)")
    return found

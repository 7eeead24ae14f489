"""Tests for checkpoint.py: what counts as a checkpoint, atomic writes, RNG state, truncation.
(Resume equivalence and failed saves run end to end in test_train.py.)"""

import json
import random

import numpy as np
import pytest
import torch

import checkpoint


def test_only_complete_checkpoints_count(tmp_path):
    for name, complete in (("checkpoint-2", True), ("checkpoint-10", True), ("checkpoint-12", False),
                           (".tmp-checkpoint-14", True), ("checkpoint-x", True)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "trainer_state.pt").write_bytes(b"")
    assert [step for step, _ in checkpoint.checkpoints(tmp_path)] == [2, 10]




def test_atomic_dir_keeps_the_old_folder_when_the_write_fails(tmp_path):
    target = tmp_path / "checkpoint-3"
    checkpoint.atomic_dir(target, lambda tmp: (tmp.mkdir(), (tmp / "a").write_text("old")))

    def fail(tmp):
        tmp.mkdir()
        (tmp / "a").write_text("half")
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        checkpoint.atomic_dir(target, fail)
    assert (target / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]
    checkpoint.atomic_dir(target, lambda tmp: (tmp.mkdir(), (tmp / "a").write_text("new")))
    assert (target / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]


def test_rng_state_round_trip():
    state = checkpoint.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_truncate_jsonl_drops_later_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (0, 1, 2, 3)))
    checkpoint.truncate_jsonl(path, 1)
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [0, 1]

"""Tests for checkpoint.py: what counts as a checkpoint, atomic writes, RNG state, truncation,
damaged checkpoints and where a --resume continues. (Resume equivalence and failed saves run end
to end in test_train.py.)"""

import errno
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint
import train
from test_train import read_jsonl, small


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
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1]


def test_truncate_tolerates_a_partial_last_line_and_a_kill_before_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(10)) + '{"step": 10, "lo')
    assert [r["step"] for r in checkpoint.read_jsonl(path)] == list(range(10))

    def killed(*args):
        raise KeyboardInterrupt            # the process dies between writing and renaming
    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.truncate_jsonl(path, 4)
    assert [r["step"] for r in checkpoint.read_jsonl(path)] == list(range(10))   # intact
    monkeypatch.undo()
    checkpoint.truncate_jsonl(path, 4)
    assert [r["step"] for r in checkpoint.read_jsonl(path)] == [0, 1, 2, 3, 4]


def test_pruning_renames_first_and_leftovers_are_cleaned(tmp_path, monkeypatch):
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / checkpoint.STATE_FILE).write_bytes(b"")

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt            # killed in the middle of deleting the old checkpoint
    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint._remove(tmp_path / "checkpoint-1")
    monkeypatch.undo()
    assert [s for s, _ in checkpoint.checkpoints(tmp_path)] == [2]     # no half-deleted checkpoint
    assert (tmp_path / ".del-checkpoint-1").exists()
    checkpoint.clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_a_new_run_moves_the_logs_of_a_run_without_checkpoint_aside(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint.prepare_run_folder(tmp_path, "some-model", resume=False) is None
    assert not (tmp_path / "metrics.jsonl").exists()
    assert (tmp_path / "previous-1" / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_run_folder_that_holds_the_model_or_cannot_be_written_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for out in (model, tmp_path):
        with pytest.raises(ValueError, match="holds the model being trained"):
            checkpoint.prepare_run_folder(out, str(model), resume=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot write to --out"):
        checkpoint.prepare_run_folder(blocker / "run", str(model), resume=False)


@pytest.fixture(scope="module")
def four_steps(tiny_path, tmp_path_factory) -> Path:
    """A real run of 4 steps with whole checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("four") / "run"
    assert train.main(small(tiny_path, out, "--steps", "4", "--save-every", "2", "--keep-last", "3")) == 0
    return out


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _resize(config: Path) -> None:
    data = json.loads(config.read_text())
    data["intermediate_size"] += 8
    config.write_text(json.dumps(data))


DAMAGE = {
    "tokenizer.json deleted": (lambda p: (p / "tokenizer.json").unlink(), "the tokenizer"),
    "trainer_state.pt truncated": (lambda p: _truncate(p / checkpoint.STATE_FILE), "trainer_state.pt does not load"),
    "model.safetensors truncated": (lambda p: _truncate(p / "model.safetensors"), "model.safetensors is damaged"),
    "config.json sizes changed": (lambda p: _resize(p / "config.json"), "where config.json asks for"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_resume_passes_over_a_damaged_checkpoint_to_the_newest_whole_one(damage, four_steps, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    harm, reason = DAMAGE[damage]
    harm(out / "checkpoint-4")
    with pytest.raises(ValueError, match=reason):
        checkpoint.verify(out / "checkpoint-4")
    capsys.readouterr()
    assert train.main(["--out", str(out), "--resume", "--steps", "5"]) == 0
    printed = capsys.readouterr().out
    said = next(line for line in printed.splitlines() if line.startswith("--resume: checkpoint-4: "))
    assert reason in said and "resuming from checkpoint-2, the newest whole checkpoint" in said
    assert f"resumed from {out / 'checkpoint-2'} at step 2" in printed
    assert (out / "damaged-checkpoint-4").is_dir()                 # kept, never resumed or re-saved
    assert [step for step, _ in checkpoint.checkpoints(out)] == [2, 4, 5]
    for step in (4, 5):                                            # written again, whole
        checkpoint.verify(out / f"checkpoint-{step}")
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]


def test_a_resume_checks_its_checkpoint_once(four_steps, tmp_path, monkeypatch):
    out = tmp_path / "run"      # resolve_config, prepare_run_folder and setup all ask verify
    shutil.copytree(four_steps, out)
    checked = []
    check = checkpoint._check
    monkeypatch.setattr(checkpoint, "_check", lambda path: checked.append(path.name) or check(path))
    assert train.main(["--out", str(out), "--resume", "--steps", "5"]) == 0
    assert checked == ["checkpoint-4"]
    (out / "checkpoint-4" / "tokenizer.json").unlink()    # changed since it passed: checked again
    with pytest.raises(ValueError, match="the tokenizer"):
        checkpoint.verify(out / "checkpoint-4")


def test_resume_with_no_whole_checkpoint_says_so(four_steps, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(four_steps, out)
    for step in (2, 4):
        (out / f"checkpoint-{step}" / "tokenizer.json").unlink()
    assert train.main(["--out", str(out), "--resume", "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume found no whole checkpoint") and err.count("\n") == 1
    assert "checkpoint-4: the tokenizer" in err and "checkpoint-2: the tokenizer" in err


def test_resume_before_the_first_checkpoint_starts_the_run(tiny_path, tmp_path, capsys):
    out = tmp_path / "run"            # a re-queued job that always passes --resume
    assert train.main(small(tiny_path, out, "--resume")) == 0
    assert "holds no checkpoint yet; starting the run" in capsys.readouterr().out
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]


def test_resume_on_a_changed_training_file_is_refused(tiny_path, tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(f'{{"question": "What is {i}+{i}?", "answer": "{2 * i}"}}\n' for i in range(6)))
    out = tmp_path / "run"
    assert train.main(small(tiny_path, out, "--dataset", str(problems))) == 0
    assert train.main(["--out", str(out), "--resume", "--steps", "3"]) == 0     # the same file: no mistake
    problems.write_text(problems.read_text().replace("What is 5+5?", "What is 6+5?"))
    capsys.readouterr()
    assert train.main(["--out", str(out), "--resume", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --dataset {problems} holds other problems than when this run was trained (its "
                   f"content changed), so --resume would continue on new data; restore the original file, "
                   f"or start a new run in another --out.\n")
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]


def test_a_full_disk_leaves_no_write_test_file(tmp_path, monkeypatch):
    real = Path.write_text

    def full(self, *args, **kwargs):       # the file is created; its bytes do not fit
        real(self, "")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(ValueError, match=r"cannot write to --out .*No space left on device"):
        checkpoint.prepare_run_folder(tmp_path / "run", "some-model", resume=False)
    monkeypatch.undo()
    assert list((tmp_path / "run").iterdir()) == []

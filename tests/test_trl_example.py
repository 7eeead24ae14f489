"""Tests for trl_example.py's command line: a flag that cannot work is one sentence with exit
status 2, before TRL or the model loads (its training runs are in test_trl_clip.py)."""

import pytest

import trl_example


@pytest.mark.parametrize("flags, said", [
    (["--mu", "-1"], "--mu must be a positive number, got -1.0."),
    (["--mu", "nan"], "--mu must be a positive number, got nan."),
    (["--group-size", "1"], "--group-size must be at least 2"),
    (["--steps", "0"], "--steps must be at least 1, got 0."),
    (["--prompts", "0"], "--prompts must be at least 1, got 0."),
    (["--lr", "0"], "--lr must be positive"),
    (["--method", "grpo", "--mu", "1"], "--method grpo has no mu (only clipb, clipv read it); drop --mu."),
])
def test_a_flag_that_cannot_work_is_one_sentence(flags, said, capsys):
    with pytest.raises(SystemExit) as ended:
        trl_example.main(flags)
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith(f"error: {said}") and err.count("\n") == 1


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(SystemExit) as ended:
        trl_example.main(["--out", str(taken)])
    assert ended.value.code == 2 and f"--out {taken} is a file" in capsys.readouterr().err
    assert taken.read_text() == "mine"

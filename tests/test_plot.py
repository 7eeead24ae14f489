"""Tests for plot.py: PNGs from a real train.py run (plus hand-written runs for labels and
missing keys), the metric names train.py writes, and the message without matplotlib."""

import json
import sys
from pathlib import Path

import pytest
import torch

import build_tiny_model
import data
import plot
import train


def write_run(folder: Path, config: dict, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def runs(tmp_path):
    grpo = write_run(tmp_path / "grpo", {"method": "grpo", "mu": 1.0},
                     [{"step": s, "entropy": 1.0 / (s + 1), "accuracy": 0.1 * s,
                       "response_len_mean": 20.0 + s} for s in range(5)])
    clipv = write_run(tmp_path / "clipv", {"method": "clipv", "mu": 1.0},
                      [{"step": s, "entropy": 1.0, "accuracy": 0.05 * s, "masked_frac": 0.01,
                        "response_len_mean": 20.0, **({"eval/avg@4": 0.3} if s % 2 else {})}
                       for s in range(5)])
    return grpo, clipv


def test_labels_name_method_and_mu(runs, tmp_path):
    grpo, clipv = runs
    assert plot.run_label(grpo) == "grpo"
    assert plot.run_label(clipv) == "clipv mu=1.0"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert plot.run_label(bare) == "bare"


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """A real run directory: two Clip-V steps of train.py, evaluated every step, on a random
    2-layer Qwen2 built with the project's own tokenizer and model builders."""
    torch.manual_seed(0)
    tokenizer = build_tiny_model.build_tokenizer(
        [e.question for e in data.synthetic_examples("train", n=200)], vocab_size=300)
    model_dir = tmp_path_factory.mktemp("model")
    build_tiny_model.build_model(tokenizer, hidden=32, layers=2).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path_factory.mktemp("runs") / "clipv"
    train.main(["--model", str(model_dir), "--out", str(out), "--device", "cpu", "--steps", "2",
                "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "6",
                "--micro-batch-size", "4", "--method", "clipv", "--mu", "1.0",
                "--eval-every", "1", "--eval-n", "2", "--eval-limit", "2"])
    return out


def test_panel_keys_are_the_ones_train_writes(train_run):
    records = plot.read_metrics(train_run)
    assert [r["step"] for r in records] == [0, 1, 2]     # step 0: the evaluation before training
    for stem, _, keys in plot.PANELS:
        assert any(k in records[1] for k in keys), stem
    assert all(any(plot.EVAL_AVG.match(k) for k in r) for r in records)
    assert plot.run_label(train_run) == "clipv mu=1.0"


def test_writes_non_empty_pngs_from_a_train_run(train_run, runs, tmp_path):
    pytest.importorskip("matplotlib")
    argv = [str(train_run), *map(str, runs), "--out", str(tmp_path / "plots"), "--no-show"]
    written = plot.main(argv)
    names = sorted(p.name for p in written)
    assert names == ["accuracy.png", "entropy.png", "masked_frac.png", "response_len.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_missing_keys_skip_panels_with_a_note(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "r", {"method": "grpo"},
                    [{"step": 0, "entropy": 2.0}, {"step": 1, "entropy": float("nan")},
                     {"step": 2, "entropy": 1.5}])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "entr')  # a run killed mid-write
    written = plot.plot_runs([run], tmp_path / "plots", show=False)
    assert [p.name for p in written] == ["entropy.png"]
    out = capsys.readouterr().out
    assert "skipping the masked_frac plot" in out and "unparsable line 4" in out
    assert plot.series(plot.read_metrics(run), "entropy") == ([0, 2], [2.0, 1.5])


def test_user_errors_are_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        plot.read_metrics(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ValueError, match="pip install matplotlib"):
        plot.plot_runs([tmp_path], tmp_path / "plots")


def test_summary_table_means_and_spreads_over_seeds(tmp_path):
    def run(name, seed_value, probe):
        records = [{"step": 0, "entropy": 9.0, "eval/heldout/avg@4": 0.2, "eval/heldout/pass@4": 0.5}]
        records += [{"step": s, "entropy": seed_value, "masked_frac": 0.1,
                     **({"probe/sign_agreement": seed_value, "probe/sign_agreement_top": 1.0,
                         "probe/corr": 0.5} if probe else {})}
                    for s in range(1, 11)]
        records[-1].update({"eval/heldout/avg@4": seed_value, "eval/heldout/pass@4": 0.9})
        return write_run(tmp_path / name, {"method": "clipv", "mu": 1.0}, records)

    table = plot.summary_table([run("a", 0.4, False), run("b", 0.6, False)]).splitlines()
    assert len(table) == 3 and "probe" not in table[0]
    # avg before 0.2 (both), after 0.5 ± 0.141 (sample std), pass 0.9, entropy over the last 10 steps
    assert table[2] == "| clipv mu=1.0 | 2 | 0.200 ± 0.000 | 0.500 ± 0.141 | 0.900 ± 0.000 | 0.500 ± 0.141 | 0.100 ± 0.000 |"
    probed = plot.summary_table([run("c", 0.4, True), run("d", 0.8, True)]).splitlines()
    assert probed[0].endswith("probe sign agreement | same, top 10% | probe corr |")
    assert probed[1].count("---") == 10
    assert probed[2].endswith("| 0.600 ± 0.283 | 1.000 ± 0.000 | 0.500 ± 0.000 |")

"""Tests for plot.py: PNGs from a real train.py run (plus hand-written runs for labels,
missing keys and the mean ± std over seeds), the metric names train.py writes, and the message
without matplotlib."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import bands
import build_tiny_model
import data
import plot
import rundir
import train


def write_run(folder: Path, config: dict, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.fixture
def runs(tmp_path):
    grpo = write_run(tmp_path / "grpo", {"method": "grpo", "mu": 1.0, "label": "grpo"},
                     [{"step": s, "entropy": 1.0 / (s + 1), "accuracy": 0.1 * s,
                       "response_len_mean": 20.0 + s} for s in range(5)])
    clipv = write_run(tmp_path / "clipv", {"method": "clipv", "mu": 1.0},
                      [{"step": s, "entropy": 1.0, "accuracy": 0.05 * s, "masked_frac": 0.01,
                        "response_len_mean": 20.0, **({"eval/avg@4": 0.3} if s % 2 else {})}
                       for s in range(5)])
    return grpo, clipv


def test_labels_name_method_and_mu(runs, tmp_path):
    grpo, clipv = runs
    assert rundir.run_label(grpo) == "grpo"          # config's "label", though mu is set
    assert rundir.run_label(clipv) == "clipv mu=1.0"  # no "label": method and mu
    bare = tmp_path / "bare"
    bare.mkdir()
    assert rundir.run_label(bare) == "bare"
    assert not hasattr(rundir, "MU_METHODS")          # labels come from the runs, not a list


def test_label_comes_from_config_with_a_fallback_for_old_runs(tmp_path):
    def label(name, config):
        return rundir.run_label(write_run(tmp_path / name, config, [{"step": 0}]))

    assert label("new", {"method": "entropy-up", "mu": None, "label": "entropy-up"}) == "entropy-up"
    assert label("any", {"method": "clipv", "mu": 8.5, "label": "my setting"}) == "my setting"
    assert label("old-mu", {"method": "clipb", "mu": 2.5}) == "clipb mu=2.5"
    assert label("new-method", {"method": "clip-cov", "mu": 3.0}) == "clip-cov mu=3.0"
    assert label("old-none", {"method": "grpo", "mu": None}) == "grpo"
    assert label("old-nomu", {"method": "entropy-down"}) == "entropy-down"
    assert label("nomethod", {"seed": 0}) == "nomethod"


def test_mean_over_runs_at_shared_steps():
    steps, mean, std = plot.mean_over_runs([([1, 2, 3], [1.0, 2.0, 3.0]),
                                            ([1, 2, 3], [3.0, 4.0, 5.0])])
    assert steps == [1, 2, 3] and mean == [2.0, 3.0, 4.0]
    assert std == pytest.approx([math.sqrt(2)] * 3)          # sample std (ddof=1), as the table
    assert bands.cell([1.0, 3.0]) == f"2.000 ± {math.sqrt(2):.3f}"
    steps, mean, std = plot.mean_over_runs([([0, 1, 2], [1.0, 2.0, 4.0]),
                                            ([0, 1, 2], [2.0, 4.0, 6.0]),
                                            ([0, 1, 2], [3.0, 6.0, 8.0])])
    assert mean == pytest.approx([2.0, 4.0, 6.0]) and std == pytest.approx([1.0, 2.0, 2.0])
    # one run: its own curve, no spread; no runs: nothing
    assert plot.mean_over_runs([([0, 5], [1.0, 2.0])]) == ([0, 5], [1.0, 2.0], [0.0, 0.0])
    assert plot.mean_over_runs([]) == ([], [], [])


def test_ci95_band_is_the_t_interval_of_the_mean(tmp_path):
    # three runs, std 1 and 2 at the two steps: half-width t_{0.975,2} * std / sqrt(3)
    curves = [([0, 1], [1.0, 2.0]), ([0, 1], [2.0, 4.0]), ([0, 1], [3.0, 6.0])]
    steps, mean, half = plot.mean_over_runs(curves, "ci95")
    assert mean == pytest.approx([2.0, 4.0])
    assert half == pytest.approx([4.303 / math.sqrt(3), 2 * 4.303 / math.sqrt(3)])
    assert bands.cell([1.0, 2.0, 3.0], "ci95") == f"2.000 ± {4.303 / math.sqrt(3):.3f}"
    assert bands.spread([0.5], "ci95") == (0.5, 0.0)            # one run: no interval
    # the table's quantiles: P(T <= t) = 0.975 for Student's t with df degrees of freedom,
    # integrating its density numerically (Simpson's rule on [0, t], by symmetry)
    def density(x, df):
        return (math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
                * (1 + x * x / df) ** (-(df + 1) / 2))

    for df, t in enumerate(bands.T975, start=1):
        n = 4000
        h = t / n
        area = h / 3 * sum((1 if i in (0, n) else 4 if i % 2 else 2) * density(i * h, df) for i in range(n + 1))
        assert 0.5 + area == pytest.approx(0.975, abs=3e-5), df   # 3 decimals: +-0.0005 in t


def test_mean_over_runs_uses_the_steps_every_run_logged():
    a = ([0, 1, 2, 3, 4], [0.0, 1.0, 2.0, 3.0, 4.0])
    b = ([1, 3, 5], [3.0, 5.0, 7.0])               # logs every other step, one step further
    c = ([3, 1, 0], [1.0, 3.0, 9.0])               # unordered
    steps, mean, std = plot.mean_over_runs([a, b, c])
    assert steps == [1, 3]
    assert mean == pytest.approx([7 / 3, 3.0]) and std == pytest.approx([math.sqrt(4 / 3), 2.0])
    assert plot.mean_over_runs([([0, 2], [1.0, 1.0]), ([1, 3], [1.0, 1.0])]) == ([], [], [])


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
    records = rundir.read_metrics(train_run)
    assert [r["step"] for r in records] == [0, 1, 2]     # step 0: the evaluation before training
    for stem, _, keys in plot.PANELS:
        assert any(k in records[1] for k in keys), stem
    assert all(any(plot.EVAL_AVG.match(k) for k in r) for r in records)
    assert rundir.run_label(train_run) == "clipv mu=1.0"


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
    written = plot.plot_runs(rundir.group_runs([run]), tmp_path / "plots", show=False)
    assert [p.name for p in written] == ["entropy.png"]
    out = capsys.readouterr().out
    assert "skipping the masked_frac plot" in out
    assert f"skipped 1 unparsable line of {run / 'metrics.jsonl'} (line 4)" in out
    assert plot.series(rundir.read_metrics(run), "entropy") == ([0, 2], [2.0, 1.5])


def test_user_errors_are_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        rundir.read_metrics(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ValueError, match="pip install matplotlib"):
        plot.plot_runs({}, tmp_path / "plots")


def test_summary_table_means_and_spreads_over_seeds(tmp_path):
    def run(name, seed_value, probe):
        records = [{"step": 0, "entropy": 9.0, "eval/heldout/avg@4": 0.2, "eval/heldout/pass@4": 0.5}]
        records += [{"step": s, "entropy": seed_value, "masked_frac": 0.1,
                     **({"probe/sign_agreement": seed_value, "probe/sign_agreement_top": 1.0,
                         "probe/corr": 0.5} if probe else {})}
                    for s in range(1, 11)]
        records[-1].update({"eval/heldout/avg@4": seed_value, "eval/heldout/pass@4": 0.9})
        return write_run(tmp_path / name, {"method": "clipv", "mu": 1.0}, records)

    seeds = rundir.group_runs([run("a", 0.4, False), run("b", 0.6, False)])
    table = plot.summary_table(seeds).splitlines()
    assert len(table) == 3 and "probe" not in table[0]
    # avg before 0.2 (both), after 0.5 ± 0.141 (sample std), pass 0.9, entropy over the last 10 steps
    assert table[2] == ("| clipv mu=1.0 | 2 | 0.200 ± 0.000 | 0.500 ± 0.141 | 0.900 ± 0.000 | 0.500 ± 0.141 "
                        "| 0.100 ± 0.000 |")
    probed = plot.summary_table(rundir.group_runs([run("c", 0.4, True), run("d", 0.8, True)])).splitlines()
    assert probed[0].endswith("probe sign agreement | same, top 10% | probe corr |")
    assert probed[1].count("---") == 10
    assert probed[2].endswith("| 0.600 ± 0.283 | 1.000 ± 0.000 | 0.500 ± 0.000 |")
    # the same runs with 95% t intervals: half-width 12.706 * std / sqrt(2) for two seeds
    ci = plot.summary_table(seeds, band="ci95").splitlines()
    assert ci[2] == ("| clipv mu=1.0 | 2 | 0.200 ± 0.000 | 0.500 ± 1.271 | 0.900 ± 0.000 | 0.500 ± 1.271 "
                     "| 0.100 ± 0.000 |")
    # one seed has no spread: its values alone, not "± 0.000"
    single = plot.summary_table(rundir.group_runs([run("e", 0.4, False)])).splitlines()
    assert single[2] == "| clipv mu=1.0 | 1 | 0.200 | 0.400 | 0.900 | 0.400 | 0.100 |"


@pytest.fixture
def seeds(tmp_path):
    """Two seeds of "clipv mu=1.0" (logging at different steps, one with a NaN, both with
    held-out evals) and one "grpo" run."""
    def run(name, label, records):
        return write_run(tmp_path / name, {"method": label.split()[0], "mu": None, "label": label},
                         records)

    return [run("clipv-seed0", "clipv mu=1.0",
                [{"step": s, "entropy": 1.0 + 0.1 * s, "accuracy": 0.1 * s,
                  **({"eval/heldout/avg@4": 0.3 + 0.01 * s} if s % 5 == 0 else {})}
                 for s in range(21)]),
            run("clipv-seed1", "clipv mu=1.0",
                [{"step": s, "entropy": float("nan") if s == 4 else 1.2 + 0.1 * s,
                  "accuracy": 0.1 * s + 0.2,
                  **({"eval/heldout/avg@4": 0.4 + 0.01 * s} if s % 5 == 0 else {})}
                 for s in range(0, 21, 2)]),
            run("grpo-seed0", "grpo",
                [{"step": s, "entropy": 2.0 / (s + 1), "accuracy": 0.05 * s} for s in range(21)])]


def _record_axes(monkeypatch):
    """Patch Figure.savefig to record, per file stem, what its axes hold when saved."""
    import matplotlib.figure
    from matplotlib.collections import PolyCollection

    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        ax = fig.axes[0]
        drawn[Path(path).stem] = {
            "lines": [(ln.get_xdata().tolist(), ln.get_ydata().tolist()) for ln in ax.get_lines()],
            "bands": [c for c in ax.collections if isinstance(c, PolyCollection)],
            "colors": [ln.get_color() for ln in ax.get_lines()],
            "legend": [t.get_text() for t in ax.get_legend().get_texts()],
            "containers": list(ax.containers)}
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return drawn


def test_plot_runs_draws_one_mean_line_and_band_per_label(seeds, tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    drawn = _record_axes(monkeypatch)
    written = plot.plot_runs(rundir.group_runs(seeds), tmp_path / "plots", show=False)
    assert sorted(p.name for p in written) == ["accuracy.png", "entropy.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    entropy = drawn["entropy"]
    assert entropy["legend"] == ["clipv mu=1.0", "grpo"]
    assert len(entropy["lines"]) == 2 and len(entropy["bands"]) == 1  # grpo: one run, no band
    band = entropy["bands"][0]
    assert band.get_facecolor()[0][3] == pytest.approx(0.2)
    assert matplotlib.colors.same_color(band.get_facecolor()[0][:3], entropy["colors"][0])
    steps, values = entropy["lines"][0]
    assert steps == [0, 2, 6, 8, 10, 12, 14, 16, 18, 20]    # shared, step 4 is NaN in seed 1
    assert values == pytest.approx([1.1 + 0.1 * s for s in steps])
    assert entropy["lines"][1][0] == list(range(21))
    accuracy = drawn["accuracy"]
    assert sorted(accuracy["legend"]) == ["clipv mu=1.0", "clipv mu=1.0 (heldout/avg@4)", "grpo"]
    assert len(accuracy["containers"]) == 1             # the held-out mean, with error bars
    line, _, (bar_segments,) = accuracy["containers"][0]
    assert line.get_xdata().tolist() == [0, 10, 20]     # the eval steps both seeds logged
    assert line.get_ydata().tolist() == pytest.approx([0.35, 0.45, 0.55])
    half_widths = [(seg[1][1] - seg[0][1]) / 2 for seg in bar_segments.get_segments()]
    assert half_widths == pytest.approx([0.1 / math.sqrt(2)] * 3)   # sample std of 2 seeds


def test_smoothing_is_per_run_before_the_mean(seeds, tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    drawn = _record_axes(monkeypatch)
    plot.plot_runs(rundir.group_runs(seeds[:2]), tmp_path / "plots", show=False, window=3)
    steps, values = drawn["entropy"]["lines"][0]
    assert steps[:4] == [0, 2, 6, 8]
    # seed 0 over its own last 3 steps (s-2, s-1, s): 1.0 + 0.1 (s - 1); seed 1 (every other
    # step, 4 dropped): at 0: 1.2, at 2: 1.3, at 6: mean(1.2, 1.4, 1.8), at 8: mean(1.4, 1.8, 2.0)
    seed0 = [1.0, 1.1, 1.5, 1.7]
    seed1 = [1.2, 1.3, 4.4 / 3, 5.2 / 3]
    assert values[:4] == pytest.approx([(a + b) / 2 for a, b in zip(seed0, seed1, strict=True)])


def test_plot_runs_per_seed_draws_every_run(seeds, tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    drawn = _record_axes(monkeypatch)
    written = plot.plot_runs(rundir.group_runs(seeds), tmp_path / "plots", show=False, per_seed=True)
    assert sorted(p.name for p in written) == ["accuracy.png", "entropy.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    entropy = drawn["entropy"]
    assert entropy["legend"] == ["clipv mu=1.0", "grpo"]  # seeds share one legend entry
    assert len(entropy["lines"]) == 3 and not entropy["bands"]
    assert [len(steps) for steps, _ in entropy["lines"]] == [21, 10, 21]   # seed 1: NaN dropped
    assert entropy["colors"][0] == entropy["colors"][1] != entropy["colors"][2]
    accuracy = drawn["accuracy"]
    assert len(accuracy["lines"]) == 3 + 2 and not accuracy["containers"]  # 2 held-out lines
    assert accuracy["legend"] == ["clipv mu=1.0", "clipv mu=1.0 (heldout/avg@4)", "grpo"]


def test_main_per_seed_flag(seeds, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    calls = []
    monkeypatch.setattr(plot, "plot_runs", lambda *a, **k: calls.append(k) or [tmp_path / "x.png"])
    (tmp_path / "plots").mkdir()
    plot.main([*map(str, seeds), "--out", str(tmp_path / "plots"), "--no-show", "--per-seed"])
    plot.main([*map(str, seeds), "--out", str(tmp_path / "plots"), "--no-show", "--smooth", "5",
               "--band", "ci95"])
    assert calls == [{"show": False, "window": 1, "per_seed": True, "band": "std"},
                     {"show": False, "window": 5, "per_seed": False, "band": "ci95"}]
    assert (tmp_path / "plots" / "summary.md").read_text().startswith(
        "Mean ± 95% CI of the mean (t) over the runs of each setting.\n\n| method | runs |")


def test_until_reads_runs_up_to_a_step(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "grpo", "label": "grpo"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "entropy": float(s)}) + "\n"
                                               for s in range(1, 21)))
    assert [r["step"] for r in rundir.group_runs([run], until=10)["grpo"][0]] == list(range(1, 11))
    table = plot.summary_table(rundir.group_runs([run], until=10), last=2)
    assert "| grpo | 1 |" in table
    assert "10.500" not in table and "9.500" in table    # mean of steps 9, 10: 9.5


# ----- mistakes: one line, exit status 2 (as train.py and eval.py) -----

def mistake(capsys, argv: list[str]) -> str:
    """Run plot.py's command line on argv; assert it exits 2 with one line; return that line."""
    assert plot.cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_out_that_is_a_file_or_cannot_be_written_is_one_line(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    grpo, _ = runs
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "plots"):
        assert f"--out {out} must be a folder for the PNGs, but {tmp_path / 'a-file'} is a file" in \
            mistake(capsys, [str(grpo), "--out", str(out), "--no-show"])
    blocked = tmp_path / "blocked"
    (blocked / "entropy.png").mkdir(parents=True)   # savefig cannot write there, even as root
    assert f"cannot write to --out {blocked}" in mistake(capsys, [str(grpo), "--out", str(blocked), "--no-show"])


def test_flag_mistakes_are_not_blamed_on_the_runs(runs, tmp_path, capsys):
    grpo, _ = runs
    assert mistake(capsys, [str(grpo), "--until", "-5"]) == "error: --until must be a step (0 or more), got -5."
    assert "--smooth must be at least 1" in mistake(capsys, [str(grpo), "--smooth", "0"])
    assert not (tmp_path / "out").exists()


def test_broken_config_json_names_the_file_and_line(runs, tmp_path, capsys):
    grpo, _ = runs
    out = ["--out", str(tmp_path / "plots"), "--no-show"]
    config = grpo / "config.json"
    config.write_text('{"method": "grpo",\n "label": grpo}\n')
    assert f"{config} is not valid JSON (line 2, column 11" in mistake(capsys, [str(grpo), *out])
    config.write_text('["grpo", 1.0]')
    assert f"{config} holds a JSON list, not the object" in mistake(capsys, [str(grpo), *out])
    config.write_bytes(b'{"method": "grpo",\n "label": "caf\xe9"}')
    assert f"line 2 of {config} is not valid UTF-8" in mistake(capsys, [str(grpo), *out])
    assert not (tmp_path / "plots").exists()


def test_bad_lines_of_metrics_are_skipped_and_counted_once_per_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "r", {"label": "grpo"}, [{"step": s, "entropy": 1.0 + s} for s in range(4)])
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 4, "entropy": 0.5, "note": "caf\xe9"}\n')       # not UTF-8
        f.write(b'{"step": "five", "entropy": 0.5}\n{"step": 6.5, "entropy": 0.5}\n'
                b'{"step": true, "entropy": 0.5}\n[1, 2]\n{"step": 8, "entropy": 0.25}\n')
    assert plot.cli([str(run), "--out", str(tmp_path / "plots"), "--no-show"]) == 0
    out = capsys.readouterr().out
    note = f"note: skipped 5 unparsable lines of {run / 'metrics.jsonl'} (lines 5, 6, 7, 8, 9)"
    assert out.count(note) == 1                                          # read once, noted once
    assert plot.series(rundir.read_metrics(run), "entropy") == ([0, 1, 2, 3, 8], [1.0, 2.0, 3.0, 4.0, 0.25])
    assert (tmp_path / "plots" / "entropy.png").is_file()


def test_runs_are_seeds_of_one_setting_only_when_their_whole_configurations_agree(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    config = {"method": "grpo", "mu": None, "label": "grpo", "lr": 1e-4, "dataset": "synthetic",
              "seed": 0, "out": "runs/a", "device": "cpu", "resumes": []}
    records = [{"step": s, "entropy": 1.0, "eval/heldout/avg@4": 0.5} for s in range(3)]
    a = write_run(tmp_path / "a", config, records)
    # another seed, folder, device and resume history: the same setting
    b = write_run(tmp_path / "b", {**config, "seed": 1, "out": "runs/b", "device": "cuda", "resumes": [[2, {}]]},
                  records)
    c = write_run(tmp_path / "c", {**config, "lr": 3e-4}, records)
    assert {k: len(v) for k, v in rundir.group_runs([a, b, c]).items()} == {"grpo lr=0.0001": 2, "grpo lr=0.0003": 1}
    d = write_run(tmp_path / "d", {**config, "lr": 3e-4, "dataset": "countdown"}, records)
    clipv = write_run(tmp_path / "clipv", {**config, "method": "clipv", "mu": 1.0, "label": "clipv mu=1.0"}, records)
    assert rundir.settings([a, b, c, d, clipv]) == [
        "grpo lr=0.0001 dataset=synthetic", "grpo lr=0.0001 dataset=synthetic", "grpo lr=0.0003 dataset=synthetic",
        "grpo lr=0.0003 dataset=countdown", "clipv mu=1.0"]
    # a run older than a field is not compared on it
    old = write_run(tmp_path / "old", {k: v for k, v in config.items() if k != "dataset"}, records)
    assert rundir.settings([a, old]) == ["grpo", "grpo"]
    assert plot.cli([str(a), str(b), str(c), "--out", str(tmp_path / "plots"), "--no-show"]) == 0
    out = capsys.readouterr().out
    assert "| grpo lr=0.0001 | 2 |" in out and "| grpo lr=0.0003 | 1 |" in out and "| grpo | " not in out


def test_a_step_logged_twice_keeps_its_later_line_and_a_negative_step_is_a_mistake(tmp_path, capsys):
    run = write_run(tmp_path / "r", {"label": "grpo"},   # killed after step 3, resumed from step 1
                    [{"step": s, "entropy": 9.0} for s in range(4)] + [{"step": s, "entropy": 1.0} for s in (2, 3, 4)])
    records = rundir.read_metrics(run)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert plot.series(records, "entropy") == ([0, 1, 2, 3, 4], [9.0, 9.0, 1.0, 1.0, 1.0])
    assert f"note: 2 steps logged twice in {run / 'metrics.jsonl'} (2, 3); the later line of each is kept" \
        in capsys.readouterr().out
    assert plot.summary_table(rundir.group_runs([run]), last=3).splitlines()[2].endswith("| 1.000 | - |")
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": -1, "entropy": 0.0}) + "\n")
    assert mistake(capsys, [str(run), "--out", str(tmp_path / "plots"), "--no-show"]) == (
        f"error: line 8 of {run / 'metrics.jsonl'} logs step -1, and steps count from 0; fix or remove that line.")
    assert not (tmp_path / "plots").exists()


def test_the_same_run_given_twice_counts_once(seeds, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    grpo = seeds[2]
    again = tmp_path / "link"
    again.symlink_to(grpo)
    argv = [str(grpo), f"{grpo}/", str(grpo.parent / ".." / grpo.parent.name / grpo.name), str(again),
            str(seeds[0])]
    assert plot.cli([*argv, "--out", str(tmp_path / "plots"), "--no-show"]) == 0
    out = capsys.readouterr().out
    assert "| grpo | 1 |" in out and "| clipv mu=1.0 | 1 |" in out
    assert out.count("counted once") == 3 and f"note: {grpo} is given twice; counted once" in out
    assert f"note: {again} is the run {grpo} again; counted once" in out


def test_the_command_exits_2_on_a_mistake():
    import subprocess
    proc = subprocess.run([sys.executable, str(Path(plot.__file__)), "nowhere", "--until", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == "error: --until must be a step (0 or more), got -1.\n"


# ----- pass@k against k -----

def _eval_file(run: Path, correct: list[int], n: int = 8) -> Path:
    """An eval.py result file beside a run, its numbers from eval.aggregate."""
    import eval as evaluation
    path = run / "final" / "eval.json"
    path.parent.mkdir(parents=True)
    result = {"num_problems": len(correct), "n": n, **evaluation.aggregate(correct, n), "correct": correct}
    path.write_text(json.dumps({"settings": {"n": n}, "results": {"synthetic": result}}))
    return path


@pytest.fixture
def passk_sources(tmp_path):
    """Two seeds of grpo and one of clipv with eval.py files (n = 8), and the runs' step-0
    evaluations (the base model) logged with n = 4 on two sets."""
    def run(name, label, base_pass):
        records = [{"step": 0, "eval/synthetic/pass@1": base_pass, "eval/synthetic/pass@4": base_pass + 0.2,
                    "eval/heldout/pass@1": 0.0}, {"step": 1, "entropy": 1.0}]
        return write_run(tmp_path / name, {"method": label, "label": label}, records)

    runs = [run("grpo-seed0", "grpo", 0.1), run("grpo-seed1", "grpo", 0.3), run("clipv-seed0", "clipv mu=1.0", 0.2)]
    files = [_eval_file(runs[0], [8, 0, 4, 1]), _eval_file(runs[1], [8, 2, 4, 0]), _eval_file(runs[2], [6, 6, 2, 2])]
    return runs, files


def test_passk_reads_result_files_and_runs(passk_sources):
    import eval as evaluation
    runs, files = passk_sources
    got = rundir.read_result(files[0])
    assert sorted(got) == ["avg@8", "pass@1", "pass@2", "pass@4", "pass@8"]
    assert got["pass@2"] == pytest.approx(evaluation.aggregate([8, 0, 4, 1], 8)["pass@2"])
    assert rundir.run_folder(files[0]) == runs[0] and rundir.run_folder(runs[2]) == runs[2]
    assert rundir.run_folder(runs[0].parent / "x.json") is None
    assert list(plot.passk_curves(files)) == ["grpo", "clipv mu=1.0"]     # named by their run folders
    assert rundir.read_result(runs[0], "synthetic", first=True) == {"pass@1": 0.1, "pass@4": pytest.approx(0.3)}
    with pytest.raises(ValueError, match="several evaluation sets"):
        rundir.read_result(runs[0], first=True)
    with pytest.raises(ValueError, match="no pass@k of evaluation set 'aime24'"):
        rundir.read_result(files[0], "aime24")
    bare = write_run(runs[0].parent / "bare", {"label": "x"}, [{"step": 1, "entropy": 1.0}])
    with pytest.raises(ValueError, match="logged no pass@k"):
        rundir.read_result(bare)


@pytest.mark.parametrize("band", ["std", "ci95"])
def test_passk_figure_mean_band_and_base_line(band, passk_sources, tmp_path, monkeypatch):
    import eval as evaluation
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    drawn = _record_axes(monkeypatch)
    runs, files = passk_sources
    path = plot.plot_passk(plot.passk_curves(files, runs, "synthetic", band), tmp_path / "plots", band, show=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = drawn["passk"]
    assert figure["legend"] == ["grpo", "clipv mu=1.0", "base model"]
    assert len(figure["bands"]) == 2                          # grpo (2 seeds) and the base model (3 runs)
    (ks, grpo_mean), _, (base_ks, base_mean) = figure["lines"]
    assert ks == [1, 2, 4, 8] and base_ks == [1, 4] and figure["colors"][2] == "black"
    seeds = [evaluation.aggregate(c, 8) for c in ([8, 0, 4, 1], [8, 2, 4, 0])]
    assert grpo_mean == pytest.approx([(a[f"pass@{k}"] + b[f"pass@{k}"]) / 2 for k in ks for a, b in [seeds]])
    assert base_mean == pytest.approx([0.2, 0.4])
    curves = plot.passk_curves(files, runs, "synthetic", band)
    half = curves["base model"][2][0]                         # pass@1 of the base: 0.1, 0.3, 0.2 -> std 0.1
    assert half == pytest.approx(0.1 if band == "std" else 4.303 * 0.1 / math.sqrt(3))
    lows = [band_.get_paths()[0].vertices[:, 1].min() for band_ in figure["bands"]]
    highs = [band_.get_paths()[0].vertices[:, 1].max() for band_ in figure["bands"]]
    assert min(lows) >= 0 and max(highs) <= 1                 # the band stays where pass@k lives
    if band == "ci95":                                        # 0.1 - 0.248 at the base's k = 1: cut at 0
        assert lows[1] == 0


def test_main_passk_writes_the_figure_and_the_table(passk_sources, tmp_path):
    pytest.importorskip("matplotlib")
    runs, files = passk_sources
    out = tmp_path / "plots"
    written = plot.main(["--passk", *map(str, files), "--base", *map(str, runs), "--eval-set", "synthetic",
                         "--out", str(out), "--no-show", "--band", "ci95"])
    assert written == [out / "passk.png"] and written[0].stat().st_size > 1000
    table = (out / "passk.md").read_text().splitlines()
    assert table[0] == "Mean ± 95% CI of the mean (t) over the runs of each setting."
    assert table[2] == "| setting | runs | avg@8 | pass@1 | pass@2 | pass@4 | pass@8 |"
    assert table[4].startswith("| base model | 3 | - | 0.200 ± 0.248 | - | 0.400 ± 0.248 | - |")  # first
    assert table[5].startswith("| grpo | 2 | ")
    assert table[6].startswith("| clipv mu=1.0 | 1 | 0.500 | 0.500 | 0.714 |")  # one run: no spread to show


def test_passk_table_of_the_testbed_page_avg_chosen_ks_and_distinct_solutions(tmp_path, capsys):
    """The table docs/testbed.md shows: avg@n, pass@k at the --ks, distinct_correct, mean ± the
    95% t half-width over runs, the base model first (over its sampling seeds), chance last."""
    pytest.importorskip("matplotlib")
    import eval as evaluation

    def result(path, correct, distinct):
        path.parent.mkdir(parents=True, exist_ok=True)
        numbers = {**evaluation.aggregate(correct, 8), "distinct_correct": sum(distinct) / len(distinct)}
        path.write_text(json.dumps({"results": {"countdown:test": {"pass@1": 0.9},
                                                "countdown:hard": {**numbers, "correct": correct}}}))
        return path

    runs = [write_run(tmp_path / f"grpo-seed{s}", {"label": "grpo", "seed": s}, [{"step": 0}]) for s in (0, 1)]
    files = [result(runs[0] / "eval8.json", [8, 0], [2, 0]), result(runs[1] / "eval8.json", [4, 0], [1, 0])]
    base = [result(tmp_path / "base" / f"seed{s}.json", [2, 2], [1, 1]) for s in (0, 1, 2)]
    chance = tmp_path / "chance.json"
    chance.write_text(json.dumps({"countdown:hard": {"chance: random search": {"1": 0.1, "4": 0.3, "8": 0.5}}}))
    out = tmp_path / "plots"
    argv = ["--passk", *map(str, files), "--base", *map(str, base), "--chance", str(chance),
            "--eval-set", "countdown:hard", "--band", "ci95", "--out", str(out), "--no-show"]
    plot.main([*argv, "--ks", "1", "4", "8"])
    grpo_pass4 = [evaluation.aggregate(c, 8)["pass@4"] for c in ([8, 0], [4, 0])]
    half = 12.706 * abs(grpo_pass4[0] - grpo_pass4[1]) / math.sqrt(2) / math.sqrt(2)   # t * std / sqrt(n)
    assert (out / "passk.md").read_text().splitlines() == [
        "Mean ± 95% CI of the mean (t) over the runs of each setting.", "",
        "| setting | runs | avg@8 | pass@1 | pass@4 | pass@8 | distinct_correct |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| base model | 3 | 0.250 ± 0.000 | 0.250 ± 0.000 | 0.786 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |",
        f"| grpo | 2 | 0.375 ± 1.588 | 0.375 ± 1.588 | {sum(grpo_pass4) / 2:.3f} ± {half:.3f} | 0.500 ± 0.000 "
        f"| 0.750 ± 3.176 |",
        "| chance: random search | - | - | 0.100 | 0.300 | 0.500 | - |"]
    plot.main(argv)                                            # every k by default
    assert (out / "passk.md").read_text().splitlines()[2] == (
        "| setting | runs | avg@8 | pass@1 | pass@2 | pass@4 | pass@8 | distinct_correct |")
    assert mistake(capsys, [*argv, "--ks", "1", "16"]) == (
        "error: --ks 16: no source has pass@16; they have 1, 2, 4, 8.")
    assert mistake(capsys, [*argv, "--ks", "0"]) == "error: --ks must be numbers of samples (1 or more), got 0."


def test_passk_table_redraws_the_figure_with_chance_curves(passk_sources, tmp_path, monkeypatch, capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    runs, files = passk_sources
    out = tmp_path / "plots"
    blind = tmp_path / "blind.json"
    blind.write_text(json.dumps({"chance: blind": {"1": 0.01, "8": 0.05}}))
    plot.main(["--passk", *map(str, files), "--base", *map(str, runs), "--eval-set", "synthetic",
               "--chance", str(blind), "--out", str(out), "--no-show", "--band", "ci95"])
    drawn = _record_axes(monkeypatch)
    written = plot.main(["--passk-table", str(out / "passk.md"), "--out", str(out), "--no-show"])
    assert written == [out / "passk.png"] and written[0].stat().st_size > 1000
    again = drawn["passk"]
    curves = plot.passk_curves(files, runs, "synthetic", "ci95")
    assert again["legend"] == ["base model", "grpo", "clipv mu=1.0", "chance: blind"]   # the table's order
    assert again["lines"][1] == (curves["grpo"].ks, pytest.approx(curves["grpo"].means, abs=5e-4))
    assert again["lines"][3] == ([1, 8], [0.01, 0.05])
    assert [again["colors"][i] for i in (0, 3)] == ["black", "grey"]
    assert len(again["bands"]) == 2                                     # one per setting of several runs
    # an older table (no band line: --band names it), and the sign-guessing bound from --chance
    old = tmp_path / "old.md"
    old.write_text("| setting | runs | pass@1 | pass@2 | pass@4 |\n| --- | --- | --- | --- | --- |\n"
                   "| grpo | 5 | 0.908 ± 0.016 | 0.941 ± 0.011 | 0.953 ± 0.009 |\n"
                   "| base model | 5 | 0.200 ± 0.002 | 0.285 ± 0.003 | 0.403 ± 0.005 |\n")
    bound = tmp_path / "sign-guess.json"
    bound.write_text(json.dumps({"chance: random signs": {"1": 0.25, "2": 0.4375, "4": 0.68359375}}))
    plot.main(["--passk-table", str(old), "--chance", str(bound), "--band", "ci95", "--out", str(out), "--no-show"])
    figure = drawn["passk"]
    assert figure["legend"] == ["grpo", "base model", "chance: random signs"]
    assert figure["lines"][0] == ([1, 2, 4], [0.908, 0.941, 0.953])
    assert figure["lines"][2] == ([1, 2, 4], [0.25, 0.4375, 0.68359375])
    assert figure["colors"][1:] == ["black", "grey"] and len(figure["bands"]) == 2
    band = figure["bands"][0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.892) and band.max() == pytest.approx(0.962)   # mean ± the table's h
    assert mistake(capsys, ["--passk-table", str(files[0]), "--out", str(out)]).endswith(
        "holds no pass@k table (\"| setting | runs | pass@1 ...\"); pass a passk.md that plot.py --passk wrote.")
    assert "give it without run directories" in mistake(capsys, [str(runs[0]), "--passk-table", str(old)])
    assert mistake(capsys, ["--out", str(out)]) == (
        "error: give run directories (train.py's --out folders), or --passk-table FILE.md.")

"""Training curves of one or more runs: entropy, accuracy, masked tokens, response length.

    python plot.py runs/grpo-seed* runs/clipv-mu1-seed* [--out DIR] [--smooth N] [--per-seed]

The paper's central figure is the policy entropy against training step: under plain GRPO it
collapses (Theorem 2: rewarding likely tokens, A > 0 with S* above its baseline, lowers H),
while Clip-B / Clip-V, which drop the entropy-lowering tokens, hold it up; accuracy and
response length show what that costs or buys. This script draws those curves, one PNG per
panel, from what train.py writes into a run directory:
  * metrics.jsonl: one JSON object per logged step with "step" and the metrics (evaluation
    numbers from eval.evaluate are logged as "eval/<set>/<key>", e.g. "eval/heldout/avg@8");
  * config.json: the run's flags and its "label" (e.g. "clipv mu=1.0", "grpo"), which names
    the run's setting in legends and tables. Runs written before train.py recorded the label
    fall back to "<method> mu=<mu>" (just the method when mu is null), and a directory without
    config.json to the directory's name; plot.py keeps no list of methods of its own.

Runs with the same label are seeds of one setting. By default each setting is ONE line, the
mean over its runs at each step, with a shaded band over the seeds -- as papers draw them:
`--band std` (the default) is ± one sample standard deviation, `--band ci95` the 95%
confidence interval of the mean (Student t with n - 1 degrees of freedom); the table uses the
same. The mean is taken at the steps
every run of the setting logged (a finite value); `--smooth N` smooths each run's curve (a
trailing moving average) before the mean. The held-out evaluation points (avg@n, dashed with
markers on the accuracy panel) are averaged the same way and drawn with error bars. A setting
with a single run is a plain line (no band, no error bars). `--per-seed` draws every run as its
own thin line instead (runs of one setting share a colour and one legend entry).

It also prints (and writes to <out>/summary.md) a table with one row per label: the held-out
avg@n before and after training and pass@n, mean ± the band's half-width over the runs given
(seeds), under a line that says which band.

    python plot.py --passk runs/methods/*/passk.json --base runs/methods/base-*/passk.json --out DIR

draws instead pass@k against k (log2 axis), the exploration figure of Yue et al. 2025 (arXiv
2504.13837): one line per setting, mean over its seeds with the same band, the base model as a dashed black
line, into <out>/passk.png, and prints (and writes to <out>/passk.md) the same numbers as a
table. Each source is an eval.py result file (named after the run folder it sits in, else its
file name) or a run directory (the last evaluation that logged pass@k; with --base, the first,
i.e. step 0: the model before training). With several evaluation sets, --eval-set picks one.

Choices: a panel whose metric no run logged is skipped with a note (a GRPO run logs no
masked fraction, an old run may lack a key); unparsable lines of metrics.jsonl (a run killed
mid-write, a byte that is not UTF-8, a record without an integer "step") are skipped with one
note per file that counts them, rather than failing. A run directory given twice (or by two
paths, a symlink) counts once. A config.json that cannot be read as a JSON object is a
mistake, named with its file and line: the label it gives decides which runs are averaged.
Mistakes exit with status 2 and one line, as in train.py and eval.py. matplotlib is optional for the project, so it is
imported only here and its absence is one clear message saying how to install it. Figures are
always saved, and also shown when matplotlib has an interactive backend (a display).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

# (file stem, y label, metric keys in order of preference: the first one a run logged is drawn)
PANELS = [
    ("entropy", "mean token entropy (nats)", ["entropy"]),
    ("accuracy", "accuracy", ["accuracy", "reward"]),
    ("masked_frac", "fraction of tokens masked", ["masked_frac"]),
    ("response_len", "mean response length (tokens)", ["response_len", "response_len_mean"]),
]
# eval.evaluate's avg@n as train.py logs it ("eval/<set>/avg@4"): dashed on the accuracy panel
EVAL_AVG = re.compile(r"^eval/(.+/)?avg@\d+$")
NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl: JSON objects with an integer "step". Other lines
    (not UTF-8, not JSON, no integer step) are skipped, with one note naming the file and them."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no metrics.jsonl; pass run directories written by "
                         f"train.py (its --out folder).")
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read {path} ({err.strerror or err}); check its permissions.") from None
    records, skipped = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):
            records.append(record)
        else:
            skipped.append(number)
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        print(f"note: skipped {len(skipped)} unparsable line{'s' * (len(skipped) > 1)} of {path} "
              f"(line{'s' * (len(skipped) > 1)} {shown})")
    return records


def unique_runs(run_dirs: list[Path]) -> list[Path]:
    """run_dirs without repeats (the same folder by two paths counts once: it is one seed)."""
    first: dict[Path, Path] = {}
    for d in run_dirs:
        if d.resolve() in first:
            same = first[d.resolve()]
            print(f"note: {d} is given twice; counted once" if d == same else
                  f"note: {d} is the run {same} again; counted once")
        else:
            first[d.resolve()] = d
    return list(first.values())


def group_runs(run_dirs: list[Path], until: int | None = None) -> dict[str, list[list[dict]]]:
    """{label: [records of each run]}, runs grouped by run_label (the seeds of one setting);
    with `until`, only the records up to that step (a 300-step run read at step 100)."""
    groups: dict[str, list[list[dict]]] = {}
    for d in run_dirs:
        records = [r for r in read_metrics(d) if until is None or r["step"] <= until]
        groups.setdefault(run_label(d), []).append(records)
    return groups


def run_label(run_dir: Path) -> str:
    """Legend label of a run: config.json's "label" (train.py writes it, e.g. "clipv mu=1.0",
    "grpo"); for older runs without one, "<method> mu=<mu>" when mu is set, else the method;
    the directory name when there is no config."""
    path = run_dir / "config.json"
    if not path.is_file():
        return run_dir.name
    advice = "fix it, or move it aside to label the run by its folder's name"
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {path} ({err.strerror or err}); check its permissions.") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise ValueError(f"line {line} of {path} is not valid UTF-8; {advice}.") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                         f"{err.msg}); {advice}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not the object of a run's "
                         f"flags that train.py writes; {advice}.")
    if config.get("label"):
        return str(config["label"])
    method = config.get("method", run_dir.name)
    mu = config.get("mu")
    return f"{method} mu={mu}" if mu is not None else str(method)


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the records that logged a finite number under key."""
    pairs = [(r["step"], r[key]) for r in records
             if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [s for s, _ in pairs], [v for _, v in pairs]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over `window` points (per-step metrics are noisy)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def mean_over_runs(curves: list[tuple[list[float], list[float]]], band: str = "std"
                   ) -> tuple[list[float], list[float], list[float]]:
    """(steps, mean, half-width) of several runs' (steps, values) curves at the steps all of
    them logged, in increasing order; the half-width is the band's (_spread: the sample
    standard deviation, ddof=1, or the 95% t interval of the mean), 0 for a single run. No
    curves, or no shared step: empty lists."""
    if not curves:
        return [], [], []
    by_step = [dict(zip(steps, values, strict=True)) for steps, values in curves]
    shared = sorted(set.intersection(*(set(d) for d in by_step)))
    stats = [_spread([d[step] for d in by_step], band) for step in shared]
    return shared, [m for m, _ in stats], [s for _, s in stats]


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of a non-empty list."""
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, spread


# Student t quantile t_{0.975, df} for df = 1..30 (beyond: the normal 1.960), for 95% intervals
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)
BANDS = ("std", "ci95")
BAND_NAMES = {"std": "1 std (sample)", "ci95": "95% CI of the mean (t)"}


def _spread(values: list[float], band: str) -> tuple[float, float]:
    """Mean and half-width of the band: one sample std, or the 95% t interval of the mean."""
    mean, std = _mean_std(values)
    if band == "ci95" and len(values) > 1:
        df = len(values) - 1
        return mean, (T975[df - 1] if df <= len(T975) else 1.960) * std / math.sqrt(len(values))
    return mean, std


def plot_runs(groups: dict[str, list[list[dict]]], out_dir: Path, show: bool = True, window: int = 1,
              per_seed: bool = False, band: str = "std") -> list[Path]:
    """Write one PNG per panel that some run has data for; return the paths written.

    groups: group_runs' {label: [records of each run]} (the seeds of one setting). Default:
    one line per label, the mean over its runs at their shared steps, with the band over the
    runs (`band`: std or ci95; none for a single run); held-out eval points likewise, with
    error bars. per_seed: every run its own
    thin line, runs of a label sharing a colour and a legend entry. Training curves are
    smoothed per run by a trailing moving average of `window` steps, before the mean."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot.py needs matplotlib, which is not installed: "
                         "run `pip install matplotlib` and try again.") from None
    colors = {label: f"C{i % 10}" for i, label in enumerate(groups)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, ylabel, keys in PANELS:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for label, runs in groups.items():
            color = colors[label]
            # the first key some run of this label logged; the runs that logged it
            key = next((k for k in keys if any(series(rs, k)[0] for rs in runs)), None)
            if key is not None:
                curves = [(s, smooth(v, window)) for s, v in (series(rs, key) for rs in runs) if s]
                drawn |= _draw(ax, curves, label, color, per_seed, stem, key, band)
            if stem == "accuracy":  # held-out accuracy from eval.evaluate, if logged
                for k in sorted({k for rs in runs for r in rs for k in r if EVAL_AVG.match(k)}):
                    curves = [c for c in (series(rs, k) for rs in runs) if c[0]]
                    drawn |= _draw(ax, curves, f"{label} ({k.removeprefix('eval/')})", color,
                                   per_seed, stem, k, band, eval_points=True)
        if not drawn:
            print(f"note: no run logged {' or '.join(keys)}; skipping the {stem} plot")
            plt.close(fig)
            continue
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if not per_seed and any(len(runs) > 1 for runs in groups.values()):
            ax.set_title(f"mean over seeds ± {BAND_NAMES[band]}", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=120)
        written.append(path)
        print(f"wrote {path}")
    if show and written and matplotlib.get_backend().lower() not in NON_INTERACTIVE:
        plt.show()
    plt.close("all")
    return written


def _draw(ax, curves: list[tuple[list[float], list[float]]], label: str, color: str,
          per_seed: bool, stem: str, key: str, band: str, eval_points: bool = False) -> bool:
    """Draw one label's curves of one key on ax (see plot_runs); whether anything was drawn."""
    if not curves:
        return False
    style = dict(linestyle="--", marker="o", markersize=4) if eval_points else {}
    if per_seed:
        for i, (steps, values) in enumerate(curves):
            ax.plot(steps, values, color=color, alpha=0.8, linewidth=1,
                    label=label if i == 0 else None, **style)
        return True
    steps, mean, std = mean_over_runs(curves, band)
    if not steps:
        print(f"note: the runs of {label} share no step with {key} logged; "
              f"not drawn in the {stem} plot (try --per-seed)")
        return False
    if len(curves) == 1:
        ax.plot(steps, mean, color=color, linewidth=1.5, label=label, **style)
    elif eval_points:
        ax.errorbar(steps, mean, yerr=std, color=color, linewidth=1.5, capsize=3,
                    label=label, **style)
    else:
        ax.plot(steps, mean, color=color, linewidth=1.5, label=label)
        ax.fill_between(steps, [m - s for m, s in zip(mean, std, strict=True)],
                        [m + s for m, s in zip(mean, std, strict=True)], color=color, alpha=0.2, linewidth=0)
    return True


def _final_eval(records: list[dict], pattern: str) -> float | None:
    """The last logged value of the first eval key matching pattern (e.g. avg@ or pass@); None
    when it is not a number (a hand-edited file)."""
    for r in reversed(records):
        keys = sorted(k for k in r if k.startswith("eval/") and re.search(pattern, k))
        if keys:
            value = r[keys[-1]]
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return None


def _mean_spread(values: list[float], band: str = "std") -> str:
    """"mean ± half-width" of the band (_spread), the value alone for one run (it has no spread),
    or "-" for no values."""
    if not values:
        return "-"
    mean, spread = _spread(values, band)
    return f"{mean:.3f} ± {spread:.3f}" if len(values) > 1 else f"{mean:.3f}"


def _tail_mean(key: str, last: int | None):
    """records -> mean of the last `last` logged values of key (all of them for None), or None."""
    def fn(records):
        values = series(records, key)[1]
        values = values[-last:] if last else values
        return sum(values) / len(values) if values else None
    return fn


# the entropy probe's metrics (entropy.entropy_probe, default top_frac 0.1) and their columns
PROBE_COLUMNS = (("probe/sign_agreement", "probe sign agreement"),
                 ("probe/sign_agreement_top", "same, top 10%"), ("probe/corr", "probe corr"))


def summary_table(groups: dict[str, list[list[dict]]], last: int = 10, band: str = "std") -> str:
    """Markdown table, one row per label of group_runs' groups, mean ± the band's half-width
    over its runs (seeds; band: std or ci95, see _spread):
    held-out avg@n before and after training, final pass@n, entropy and masked fraction over
    the last `last` training steps, and, when any run logged the entropy probe
    (train.py --probe-every), its sign agreement (all tokens, and the 10% with the largest
    predicted change) and correlation averaged over all probed steps."""
    probed = any(series(rs, PROBE_COLUMNS[0][0])[0] for runs in groups.values() for rs in runs)
    titles = ["method", "runs", "avg@n before", "avg@n after", "pass@n after",
              "entropy (last steps)", "masked frac (last steps)"]
    titles += [title for _, title in PROBE_COLUMNS] if probed else []
    rows = ["| " + " | ".join(titles) + " |", "| --- " * len(titles) + "|"]
    for label, runs in groups.items():
        def collect(fn, runs=runs):
            return [v for v in map(fn, runs) if v is not None and math.isfinite(v)]

        before = collect(lambda rs: _final_eval([r for r in rs if r["step"] == 0], r"/avg@\d+$"))
        after = collect(lambda rs: _final_eval(rs, r"/avg@\d+$"))
        pass_n = collect(lambda rs: _final_eval(rs, r"/pass@\d+$"))
        cells = [_mean_spread(before, band), _mean_spread(after, band), _mean_spread(pass_n, band),
                 _mean_spread(collect(_tail_mean("entropy", last)), band),
                 _mean_spread(collect(_tail_mean("masked_frac", last)), band)]
        if probed:
            cells += [_mean_spread(collect(_tail_mean(key, None)), band) for key, _ in PROBE_COLUMNS]
        rows.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- pass@k against k

PASS_AT = re.compile(r"^(?:eval/(?P<set>.+)/)?pass@(?P<k>\d+)$")


def _by_set(values: dict[str, float], default_set: str) -> dict[str, dict[int, float]]:
    """{set: {k: pass@k}} of the pass@k entries of one record or result."""
    out: dict[str, dict[int, float]] = {}
    for key, value in values.items():
        match = PASS_AT.match(key)
        if match and isinstance(value, (int, float)):
            out.setdefault(match["set"] or default_set, {})[int(match["k"])] = float(value)
    return out


def read_passk(source: Path, eval_set: str | None = None, first: bool = False) -> dict[int, float]:
    """{k: pass@k} of one source: an eval.py result file (its "results" of eval_set) or a run
    directory (the last record of metrics.jsonl that logged pass@k; first: the first one)."""
    if source.is_file():
        try:
            results = json.loads(source.read_text())["results"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{source} is not an eval.py result file (no \"results\"); pass the "
                             f"JSON that eval.py --out writes, or a run directory.") from None
        sets = {name: _by_set(r, name).get(name, {}) for name, r in results.items()}
    else:
        records = [r for r in read_metrics(source) if any(PASS_AT.match(k) for k in r)]
        if not records:
            raise ValueError(f"{source} logged no pass@k; evaluate its runs with eval.py (--n 64) "
                             f"or train with --eval-every.")
        sets = _by_set(records[0] if first else records[-1], "")
    sets = {name: ks for name, ks in sets.items() if ks}
    if eval_set is not None and eval_set not in sets:
        raise ValueError(f"{source} has no pass@k of evaluation set {eval_set!r}; it has "
                         f"{', '.join(sorted(sets)) or 'none'}.")
    if eval_set is None and len(sets) != 1:
        raise ValueError(f"{source} has pass@k of several evaluation sets ({', '.join(sorted(sets))}); "
                         f"choose one with --eval-set.")
    return sets[eval_set if eval_set is not None else next(iter(sets))]


def passk_label(source: Path) -> str:
    """A run directory's run_label; for a result file, that of the run folder it sits in (its
    folder or the one above, e.g. runs/x/final/eval.json), else the file's name."""
    if source.is_dir():
        return run_label(source)
    for folder in (source.parent, source.parent.parent):
        if (folder / "metrics.jsonl").is_file():
            return run_label(folder)
    return source.stem


def passk_curves(sources: list[Path], base: list[Path] = (), eval_set: str | None = None,
                 band: str = "std") -> dict[str, tuple[list[int], list[float], list[float], int]]:
    """{label: (ks, means, half-widths, number of seeds)} at the ks every source of the label
    has; the base model's sources under "base model" (run directories read at their first
    pass@k record, i.e. step 0)."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; choose one of {', '.join(BANDS)}.")
    groups: dict[str, list[dict[int, float]]] = {}
    for source in sources:
        groups.setdefault(passk_label(source), []).append(read_passk(source, eval_set))
    for source in base:
        groups.setdefault("base model", []).append(read_passk(source, eval_set, first=True))
    curves = {}
    for label, runs in groups.items():
        ks = sorted(set.intersection(*(set(r) for r in runs)))
        stats = [_spread([r[k] for r in runs], band) for k in ks]
        curves[label] = (ks, [m for m, _ in stats], [h for _, h in stats], len(runs))
    return curves


def passk_table(curves: dict) -> str:
    """Markdown: one row per label, pass@k as mean ± half-width for every k any label has."""
    ks = sorted({k for c in curves.values() for k in c[0]})
    rows = ["| setting | runs | " + " | ".join(f"pass@{k}" for k in ks) + " |", "| --- " * (len(ks) + 2) + "|"]
    for label, (have, means, halves, n) in curves.items():
        cell = {k: f"{m:.3f} ± {h:.3f}" if n > 1 else f"{m:.3f}" for k, m, h in zip(have, means, halves, strict=True)}
        rows.append(f"| {label} | {n} | " + " | ".join(cell.get(k, "-") for k in ks) + " |")
    return "\n".join(rows)


def read_chance(files: list[Path], eval_set: str | None = None) -> dict[str, tuple]:
    """Chance curves to draw beside pass@k, from JSON files {label: {k: pass@k}} (or, for several
    evaluation sets, {set: {label: {k: pass@k}}}, of which `eval_set` is read), in passk_curves'
    form with no band."""
    curves = {}
    for file in files:
        try:
            content = json.loads(Path(file).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the chance curves {file} ({error}); pass a JSON file "
                             f"{{label: {{k: pass@k}}}}.") from None
        if eval_set is not None and isinstance(content.get(eval_set), dict):
            content = content[eval_set]
        for label, values in content.items():
            ks = sorted(int(k) for k in values)
            curves[label] = (ks, [float(values[str(k)]) for k in ks], [0.0] * len(ks), 1)
    return curves


def plot_passk(sources: list[Path], out_dir: Path, base: list[Path] = (), eval_set: str | None = None,
               band: str = "std", show: bool = True, chance: list[Path] = ()) -> Path:
    """pass@k against k (log2 axis) for the settings of `sources` and the base model (see
    passk_curves), and the `chance` curves (read_chance) as dotted grey lines; a band where a
    setting has several seeds, cut to [0, 1] (a t interval of three seeds can reach past 1).
    Writes and returns out_dir/passk.png."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot.py needs matplotlib, which is not installed: "
                         "run `pip install matplotlib` and try again.") from None
    curves = passk_curves(sources, base, eval_set, band)
    guesses = read_chance(chance, eval_set)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = iter(f"C{i % 10}" for i in range(len(curves)))
    greys = iter(("grey", "darkgrey", "dimgrey", "silver"))
    for label, (ks, means, halves, n) in {**curves, **guesses}.items():
        style = (dict(color=next(greys), linestyle=":") if label in guesses else
                 dict(color="black", linestyle="--") if label == "base model" else dict(color=next(colors)))
        ax.plot(ks, means, marker="o", markersize=4, linewidth=1.5, label=label, **style)
        if n > 1:   # the band drawn within [0, 1], where pass@k lives; the table keeps mean ± h
            ax.fill_between(ks, [max(0.0, m - h) for m, h in zip(means, halves, strict=True)],
                            [min(1.0, m + h) for m, h in zip(means, halves, strict=True)],
                            color=style["color"], alpha=0.2, linewidth=0)
    all_ks = sorted({k for c in curves.values() for k in c[0]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if any(c[3] > 1 for c in curves.values()):
        ax.set_title(f"mean over seeds ± {BAND_NAMES[band]}", fontsize=9)
    fig.tight_layout()
    path = out_dir / "passk.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    if show and matplotlib.get_backend().lower() not in NON_INTERACTIVE:
        plt.show()
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description="Plot entropy, accuracy, masked fraction and "
                                            "response length against step for training runs, or "
                                            "pass@k against k (--passk).")
    p.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by train.py "
                                                           "(with --passk: also eval.py result files)")
    p.add_argument("--out", type=Path, default=Path("out/plots"), help="folder for the PNGs")
    p.add_argument("--no-show", action="store_true", help="only save the PNGs")
    p.add_argument("--smooth", type=int, default=1,
                   help="moving average over this many steps (per run, before the mean)")
    p.add_argument("--per-seed", action="store_true",
                   help="one thin line per run instead of the mean and band per setting")
    p.add_argument("--until", type=int, default=None,
                   help="read the runs only up to this step (figures and table)")
    p.add_argument("--passk", action="store_true",
                   help="draw pass@k against k instead: the paths are eval.py result files or run "
                        "directories")
    p.add_argument("--base", type=Path, nargs="+", default=[],
                   help="with --passk: the base model's result files (or run directories, read at "
                        "step 0), one dashed line")
    p.add_argument("--chance", type=Path, nargs="+", default=[],
                   help="with --passk: JSON files of chance curves {label: {k: pass@k}}, drawn dotted")
    p.add_argument("--eval-set", default=None, help="with --passk: the evaluation set to draw")
    p.add_argument("--band", default="std", choices=BANDS,
                   help="the band over seeds in figures and tables: ± one sample std, or the 95%% "
                        "confidence interval of the mean (Student t)")
    args = p.parse_args(argv)
    if args.until is not None and args.until < 0:
        raise ValueError(f"--until must be a step (0 or more), got {args.until}.")
    if args.smooth < 1:
        raise ValueError(f"--smooth must be at least 1 (1: no smoothing), got {args.smooth}.")
    check_output(args.out)
    if args.passk:
        path = plot_passk(args.run_dirs, args.out, args.base, args.eval_set, args.band,
                          show=not args.no_show, chance=args.chance)
        table = passk_table({**passk_curves(args.run_dirs, args.base, args.eval_set, args.band),
                             **read_chance(args.chance, args.eval_set)})
        (args.out / "passk.md").write_text(table + "\n")
        print(table)
        return [path]
    groups = group_runs(unique_runs(args.run_dirs), args.until)   # read once: notes print once
    try:
        written = plot_runs(groups, args.out, show=not args.no_show, window=args.smooth,
                            per_seed=args.per_seed, band=args.band)
        if not written:
            raise ValueError("none of the runs has any metric to plot"
                             + (f" up to step {args.until} (--until)" if args.until is not None else "")
                             + "; check their metrics.jsonl.")
        table = f"Mean ± {BAND_NAMES[args.band]} over the runs of each setting.\n\n" + summary_table(
            groups, band=args.band)
        (args.out / "summary.md").write_text(table + "\n")
    except OSError as err:   # a folder that turned out not writable, a full disk
        raise ValueError(f"cannot write to --out {args.out} ({err.strerror or err}); pass a "
                         f"writable folder.") from None
    print(table)
    return written


def check_output(folder: Path) -> None:
    """--out must be a folder, or a path where one can be created; checked before any run is
    read, without creating it."""
    existing = next(f for f in [folder, *folder.parents] if f.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {folder} must be a folder for the PNGs, but {existing} is a file; "
                         f"pass another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to --out {folder} ({existing} is not writable); pass a "
                         f"writable folder.")


def cli(argv: list[str] | None = None) -> int:
    """The command line: main, and its exit status (2: a mistake in a flag or an input, said in
    one line; 130: interrupted), as train.py and eval.py."""
    try:
        main(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the figures written so far are kept.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())

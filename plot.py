"""Training curves of one or more runs (entropy, accuracy, masked tokens, response length), and
pass@k against k.

    python plot.py runs/grpo-seed* runs/clipv-mu1-seed* [--out DIR] [--smooth N] [--per-seed]

The paper's central figure is the policy entropy against training step: under plain GRPO it
collapses (Theorem 2: rewarding likely tokens, A > 0 with S* above its baseline, lowers H),
while Clip-B / Clip-V, which drop the entropy-lowering tokens, hold it up; accuracy and
response length show what that costs or buys. One PNG per panel, from the run folders train.py
writes (rundir.py reads them and decides which runs are seeds of one setting). Each setting is
ONE line, the mean over its runs at the steps all of them logged, with a band over the seeds
(bands.py: `--band std`, the default, or `ci95`; the tables use the same); `--smooth N` smooths
each run (a trailing moving average) before the mean; held-out avg@n points are dashed, with
error bars; `--per-seed` draws every run as its own thin line instead. <out>/summary.md: one
row per setting, held-out avg@n before and after training, pass@n, entropy, masked fraction.

    python plot.py --passk runs/methods/*/passk.json --base runs/methods/base-*/passk.json \
        [--chance chance.json] [--eval-set SET] [--ks 1 4 16 32] --out DIR

draws pass@k against k instead (log2 axis; Yue et al. 2025, arXiv 2504.13837): a line per
setting with its band, the base model dashed black, chance curves ({label: {k: pass@k}}) dotted
grey, into <out>/passk.png; <out>/passk.md is a line naming the band, then a row per setting
(the base model first, chance curves last with "-" runs): avg@n, pass@k for every k (or the
--ks), distinct_correct, where the sources have them. A source is an eval.py result file (of
the run folder it sits in) or a run folder (its last pass@k; with --base, its first: step 0).

    python plot.py --passk-table figures/mu-passk/passk.md [--chance chance.json] --out DIR

redraws <out>/passk.png from such a table (a table older than the band line takes --band), with
the chance curves of --chance, and writes no table.

Choices: a panel whose metric no run logged is skipped with a note (a GRPO run logs no masked
fraction). Mistakes exit with status 2 and one line (command.run). matplotlib, optional for the
project, is imported only to draw, and its absence is one line saying how to install it.
Figures are always saved, and also shown when matplotlib has an interactive backend.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

import bands
import command
import rundir

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


def pyplot():
    """(matplotlib, matplotlib.pyplot), or a ValueError saying how to install it."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot.py needs matplotlib, which is not installed: "
                         "run `pip install matplotlib` and try again.") from None
    return matplotlib, plt


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
    them logged, in increasing order; the half-width is the band's (bands.spread: the
    sample standard deviation, or the 95% t interval of the mean), 0 for a single run. No
    curves, or no shared step: empty lists."""
    if not curves:
        return [], [], []
    by_step = [dict(zip(steps, values, strict=True)) for steps, values in curves]
    shared = sorted(set.intersection(*(set(d) for d in by_step)))
    stats = [bands.spread([d[step] for d in by_step], band) for step in shared]
    return shared, [m for m, _ in stats], [s for _, s in stats]


def plot_runs(groups: dict[str, list[list[dict]]], out_dir: Path, show: bool = True, window: int = 1,
              per_seed: bool = False, band: str = "std") -> list[Path]:
    """Write one PNG per panel that some run has data for; return the paths written.

    groups: rundir.group_runs' {setting: [records of each run]} (the seeds of one setting). Default:
    one line per label, the mean over its runs at their shared steps, with the band over the
    runs (`band`: std or ci95; none for a single run); held-out eval points likewise, with
    error bars. per_seed: every run its own
    thin line, runs of a label sharing a colour and a legend entry. Training curves are
    smoothed per run by a trailing moving average of `window` steps, before the mean."""
    matplotlib, plt = pyplot()
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
            ax.set_title(f"mean over seeds ± {bands.NAMES[band]}", fontsize=9)
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
    """Markdown table, one row per setting of rundir.group_runs' groups, mean ± the band's half-width
    over its runs (seeds; band: std or ci95, see bands.spread):
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
        cells = [bands.cell(before, band), bands.cell(after, band), bands.cell(pass_n, band),
                 bands.cell(collect(_tail_mean("entropy", last)), band),
                 bands.cell(collect(_tail_mean("masked_frac", last)), band)]
        if probed:
            cells += [bands.cell(collect(_tail_mean(key, None)), band) for key, _ in PROBE_COLUMNS]
        rows.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- pass@k against k

class Curve(NamedTuple):
    """One line of the pass@k figure and row of its table: pass@k at ks (mean and band half-width
    over `runs` runs; 0 runs: a chance curve), and `extra` {"avg@n" / "distinct_correct":
    (mean, half-width)}."""
    ks: list[int]
    means: list[float]
    halves: list[float]
    runs: int
    extra: dict[str, tuple[float, float]]


def passk_curves(sources: list[Path], base: list[Path] = (), eval_set: str | None = None,
                 band: str = "std") -> dict[str, Curve]:
    """{setting: Curve} of pass@k sources (see rundir.read_result), at the ks every source of the
    setting has; the base model's sources under "base model" (run folders read at step 0)."""
    if band not in bands.BANDS:
        raise ValueError(f"unknown band {band!r}; choose one of {', '.join(bands.BANDS)}.")
    folders = [rundir.run_folder(s) for s in sources]
    names = iter(rundir.settings([f for f in folders if f is not None]))
    groups: dict[str, list[dict[str, float]]] = {}
    for source, folder in zip(sources, folders, strict=True):
        name = next(names) if folder is not None else source.stem
        groups.setdefault(name, []).append(rundir.read_result(source, eval_set))
    for source in base:
        groups.setdefault("base model", []).append(rundir.read_result(source, eval_set, first=True))
    curves = {}
    for label, runs in groups.items():
        shared = set.intersection(*(set(r) for r in runs))
        ks = sorted(int(key[5:]) for key in shared if key.startswith("pass@"))
        stats = [bands.spread([r[f"pass@{k}"] for r in runs], band) for k in ks]
        extra = {key: bands.spread([r[key] for r in runs], band) for key in shared if not key.startswith("pass@")}
        curves[label] = Curve(ks, [m for m, _ in stats], [h for _, h in stats], len(runs), extra)
    return curves


def passk_table(curves: dict[str, Curve], band: str, ks: list[int] | None = None) -> str:
    """Markdown: a line naming the band, then one row per curve (the base model first), avg@n,
    pass@k for every k any curve has (or `ks`) and distinct_correct, as mean ± half-width."""
    ks = ks or sorted({k for c in curves.values() for k in c.ks})
    extras = {key for c in curves.values() for key in c.extra}
    averages = sorted((e for e in extras if e.startswith("avg@")), key=lambda e: int(e[4:]))
    columns = averages + [f"pass@{k}" for k in ks] + sorted(extras - set(averages))
    rows = [bands.LINE.format(bands.NAMES[band]), "",
            "| setting | runs | " + " | ".join(columns) + " |", "| --- " * (len(columns) + 2) + "|"]
    for label in sorted(curves, key=lambda label: label != "base model"):
        c = curves[label]
        cells = {**c.extra, **{f"pass@{k}": (m, h) for k, m, h in zip(c.ks, c.means, c.halves, strict=True)}}
        shown = [bands.text(*cells[column], c.runs) if column in cells else "-" for column in columns]
        rows.append(f"| {label} | {c.runs or '-'} | " + " | ".join(shown) + " |")
    return "\n".join(rows)


def read_passk_table(path: Path) -> tuple[dict[str, Curve], str | None]:
    """The curves of a passk.md that passk_table wrote, and its band (None: a table older than
    the band line); rows with "-" runs are chance curves."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read --passk-table {path} ({err}); pass a passk.md that plot.py "
                         f"--passk wrote.") from None
    table = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines
             if line.startswith("|") and "---" not in line]
    if not table or table[0][:2] != ["setting", "runs"] or not any(c.startswith("pass@") for c in table[0]):
        raise ValueError(f"{path} holds no pass@k table (\"| setting | runs | pass@1 ...\"); pass a "
                         f"passk.md that plot.py --passk wrote.")
    band = next((b for b, name in bands.NAMES.items() if lines[0] == bands.LINE.format(name)), None)
    curves = {}
    for row in table[1:]:
        try:
            cells = {c: tuple(map(float, v.split(" ± ")))
                     for c, v in zip(table[0][2:], row[2:], strict=True) if v != "-"}
            runs = 0 if row[1] == "-" else int(row[1])
        except ValueError:
            raise ValueError(f"the row {row[0]!r} of {path} is not a passk_table row (mean ± "
                             f"half-width cells, a number of runs); fix it.") from None
        passes = sorted((int(c[5:]), v) for c, v in cells.items() if c.startswith("pass@"))
        curves[row[0]] = Curve([k for k, _ in passes], [v[0] for _, v in passes],
                               [v[1] if len(v) > 1 else 0.0 for _, v in passes], runs,
                               {c: v for c, v in cells.items() if not c.startswith("pass@")})
    return curves, band


def read_chance(files: list[Path], eval_set: str | None = None) -> dict[str, Curve]:
    """Chance curves to draw beside pass@k, from JSON files {label: {k: pass@k}} (or, for several
    evaluation sets, {set: {label: {k: pass@k}}}, of which `eval_set` is read), as Curves of 0 runs."""
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
            curves[label] = Curve(ks, [float(values[str(k)]) for k in ks], [0.0] * len(ks), 0, {})
    return curves


def plot_passk(curves: dict[str, Curve], out_dir: Path, band: str = "std", show: bool = True) -> Path:
    """Draw pass@k against k (log2 axis): each setting in its colour with its band where it has
    several runs, cut to [0, 1] (a t interval of three seeds can reach past 1); "base model"
    dashed black; chance curves (0 runs) dotted grey. Writes and returns out_dir/passk.png."""
    matplotlib, plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = iter(f"C{i % 10}" for i in range(len(curves)))
    greys = iter(("grey", "darkgrey", "dimgrey", "silver") * len(curves))
    for label, (ks, means, halves, runs, _) in curves.items():
        style = (dict(color=next(greys), linestyle=":") if runs == 0 else
                 dict(color="black", linestyle="--") if label == "base model" else dict(color=next(colors)))
        ax.plot(ks, means, marker="o", markersize=4, linewidth=1.5, label=label, **style)
        if runs > 1:   # the band drawn within [0, 1], where pass@k lives; the table keeps mean ± h
            ax.fill_between(ks, [max(0.0, m - h) for m, h in zip(means, halves, strict=True)],
                            [min(1.0, m + h) for m, h in zip(means, halves, strict=True)],
                            color=style["color"], alpha=0.2, linewidth=0)
    all_ks = sorted({k for c in curves.values() if c.runs for k in c.ks})
    ax.set_xscale("log", base=2)
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if any(c.runs > 1 for c in curves.values()):
        ax.set_title(f"mean over seeds ± {bands.NAMES[band]}", fontsize=9)
    fig.tight_layout()
    path = out_dir / "passk.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    if show and matplotlib.get_backend().lower() not in NON_INTERACTIVE:
        plt.show()
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """plot.py's flags, checked (one sentence for a mistake) before any run is read."""
    p = argparse.ArgumentParser(description="Plot entropy, accuracy, masked fraction and "
                                            "response length against step for training runs, or "
                                            "pass@k against k (--passk, --passk-table).")
    p.add_argument("run_dirs", nargs="*", type=Path, help="run directories written by train.py "
                                                           "(with --passk: also eval.py result files)")
    p.add_argument("--out", type=Path, default=Path("out/plots"), help="folder for the PNGs")
    p.add_argument("--no-show", action="store_true", help="only save the PNGs")
    p.add_argument("--smooth", type=int, default=1, help="moving average over this many steps "
                                                          "(per run, before the mean)")
    p.add_argument("--per-seed", action="store_true",
                   help="one thin line per run instead of the mean and band per setting")
    p.add_argument("--until", type=int, default=None,
                   help="read the runs only up to this step (figures and table)")
    p.add_argument("--passk", action="store_true", help="draw pass@k against k instead (paths: "
                                                         "eval.py result files or run directories)")
    p.add_argument("--base", type=Path, nargs="+", default=[], help="with --passk: the base model's "
                   "result files (or run directories, read at step 0), one dashed line")
    p.add_argument("--chance", type=Path, nargs="+", default=[], help="with --passk or "
                   "--passk-table: JSON files of chance curves {label: {k: pass@k}}, drawn dotted")
    p.add_argument("--eval-set", default=None, help="with --passk: the evaluation set to draw")
    p.add_argument("--ks", type=int, nargs="+", default=None,
                   help="with --passk: the pass@k columns of passk.md (default: every k)")
    p.add_argument("--passk-table", type=Path, default=None, metavar="FILE.md",
                   help="redraw passk.png from a passk.md that --passk wrote, instead of from runs")
    p.add_argument("--band", default="std", choices=bands.BANDS,
                   help="the band over seeds in figures and tables: ± one sample std, or the 95%% "
                        "confidence interval of the mean (Student t)")
    args = p.parse_args(argv)
    if args.until is not None and args.until < 0:
        raise ValueError(f"--until must be a step (0 or more), got {args.until}.")
    if args.smooth < 1:
        raise ValueError(f"--smooth must be at least 1 (1: no smoothing), got {args.smooth}.")
    if args.ks and min(args.ks) < 1:
        raise ValueError(f"--ks must be numbers of samples (1 or more), got {min(args.ks)}.")
    if args.passk_table is not None and (args.run_dirs or args.base or args.passk):
        raise ValueError("--passk-table redraws a figure from its table alone; give it without run "
                         "directories, --base or --passk.")
    if args.passk_table is None and not args.run_dirs:
        raise ValueError("give run directories (train.py's --out folders), or --passk-table FILE.md.")
    check_output(args.out)
    return args


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.passk_table is not None:
        curves, band = read_passk_table(args.passk_table)
        curves.update(read_chance(args.chance, args.eval_set))
        return [plot_passk(curves, args.out, band or args.band, show=not args.no_show)]
    if args.passk:
        curves = {**passk_curves(args.run_dirs, args.base, args.eval_set, args.band),
                  **read_chance(args.chance, args.eval_set)}
        missing = sorted(set(args.ks or ()) - {k for c in curves.values() for k in c.ks})
        if missing:
            raise ValueError(f"--ks {missing[0]}: no source has pass@{missing[0]}; they have "
                             f"{', '.join(map(str, sorted({k for c in curves.values() for k in c.ks})))}.")
        path = plot_passk(curves, args.out, args.band, show=not args.no_show)
        table = passk_table(curves, args.band, args.ks)
        (args.out / "passk.md").write_text(table + "\n")
        print(table)
        return [path]
    groups = rundir.group_runs(rundir.unique_runs(args.run_dirs), args.until)   # read once: notes print once
    try:
        written = plot_runs(groups, args.out, show=not args.no_show, window=args.smooth,
                            per_seed=args.per_seed, band=args.band)
        if not written:
            raise ValueError("none of the runs has any metric to plot"
                             + (f" up to step {args.until} (--until)" if args.until is not None else "")
                             + "; check their metrics.jsonl.")
        table = bands.LINE.format(bands.NAMES[args.band]) + "\n\n" + summary_table(groups, band=args.band)
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
    """The command line: main, and its exit status (command.run: 2 for a mistake, said in one
    line; 130 when interrupted), as train.py and eval.py."""
    return command.run(main, argv, "interrupted; the figures written so far are kept.")


if __name__ == "__main__":
    sys.exit(cli())

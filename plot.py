"""Training curves of one or more runs: entropy, accuracy, masked tokens, response length.

    python plot.py runs/grpo runs/clipv-mu1 [--out DIR]

The paper's central figure is the policy entropy against training step: under plain GRPO it
collapses (Theorem 2: rewarding likely tokens, A > 0 with S* above its baseline, lowers H),
while Clip-B / Clip-V, which drop the entropy-lowering tokens, hold it up; accuracy and
response length show what that costs or buys. This script draws those curves, one line per
run, one PNG per panel, from what train.py writes into a run directory:
  * metrics.jsonl: one JSON object per logged step with "step" and the metrics (evaluation
    numbers from eval.evaluate are logged as "eval/<set>/<key>", e.g. "eval/heldout/avg@8");
  * config.json: the run's flags, from which the legend label is made (method and mu).

It also prints (and writes to <out>/summary.md) a table with one row per method and mu: the
held-out avg@n before and after training and pass@n, mean ± std over the runs given (seeds).

Choices: runs with the same label (seeds of one setting) share a colour; a panel whose metric no run logged is skipped with a note (a GRPO run logs no
masked fraction, an old run may lack a key); unparsable lines (a run killed mid-write) are
skipped with a note rather than failing. matplotlib is optional for the project, so it is
imported only here and its absence is one clear message saying how to install it. Figures are
always saved, and also shown when matplotlib has an interactive backend (a display).
"""

from __future__ import annotations

import argparse
import json
import math
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
MU_METHODS = ("clipb", "clipv")  # the methods whose threshold mu belongs in the label
NON_INTERACTIVE = {"agg", "pdf", "ps", "svg", "pgf", "cairo", "template"}


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl that have a step (unparsable lines skipped)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no metrics.jsonl; pass run directories written by "
                         f"train.py (its --out folder).")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            print(f"note: skipping unparsable line {number} of {path}")
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def run_label(run_dir: Path) -> str:
    """Legend label from config.json: "clipv mu=1.0" ("grpo" for methods without mu);
    the directory name when there is no config."""
    path = run_dir / "config.json"
    if not path.is_file():
        return run_dir.name
    config = json.loads(path.read_text())
    method = config.get("method", run_dir.name)
    mu = config.get("mu")
    return f"{method} mu={mu}" if method in MU_METHODS and mu is not None else str(method)


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


def plot_runs(run_dirs: list[Path], out_dir: Path, show: bool = True, window: int = 1) -> list[Path]:
    """Write one PNG per panel that some run has data for; return the paths written. Training
    curves are smoothed by a trailing moving average of `window` steps."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot.py needs matplotlib, which is not installed: "
                         "run `pip install matplotlib` and try again.") from None
    runs = [(run_label(d), read_metrics(d)) for d in run_dirs]
    colors = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(l for l, _ in runs))}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, ylabel, keys in PANELS:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        seen = set()   # runs with the same label (seeds) share a colour and a legend entry
        for label, records in runs:
            color, first = colors[label], label not in seen
            seen.add(label)
            key = next((k for k in keys if series(records, k)[0]), None)
            if key is not None:
                steps, values = series(records, key)
                ax.plot(steps, smooth(values, window), color=color, alpha=0.8, linewidth=1,
                        label=label if first else None)
                drawn = True
            if stem == "accuracy":  # held-out accuracy from eval.evaluate, if logged
                for k in sorted({k for r in records for k in r if EVAL_AVG.match(k)}):
                    ax.plot(*series(records, k), color=color, linestyle="--", marker="o",
                            label=f"{label} ({k.removeprefix('eval/')})" if first else None)
                    drawn = True
        if not drawn:
            print(f"note: no run logged {' or '.join(keys)}; skipping the {stem} plot")
            plt.close(fig)
            continue
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=120)
        written.append(path)
        print(f"wrote {path}")
    if show and written and matplotlib.get_backend().lower() not in NON_INTERACTIVE:
        plt.show()
    plt.close("all")
    return written


def _final_eval(records: list[dict], pattern: str) -> float | None:
    """The last logged value of the first eval key matching pattern (e.g. avg@ or pass@)."""
    for r in reversed(records):
        keys = sorted(k for k in r if k.startswith("eval/") and re.search(pattern, k))
        if keys:
            return r[keys[-1]]
    return None


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {spread:.3f}"


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


def summary_table(run_dirs: list[Path], last: int = 10) -> str:
    """Markdown table, one row per label (method and mu), mean ± std over its runs (seeds):
    held-out avg@n before and after training, final pass@n, entropy and masked fraction over
    the last `last` training steps, and, when any run logged the entropy probe
    (train.py --probe-every), its sign agreement (all tokens, and the 10% with the largest
    predicted change) and correlation averaged over all probed steps."""
    groups: dict[str, list[list[dict]]] = {}
    for d in run_dirs:
        groups.setdefault(run_label(d), []).append(read_metrics(d))
    probed = any(series(rs, PROBE_COLUMNS[0][0])[0] for runs in groups.values() for rs in runs)
    titles = ["method", "runs", "avg@n before", "avg@n after", "pass@n after",
              "entropy (last steps)", "masked frac (last steps)"]
    titles += [title for _, title in PROBE_COLUMNS] if probed else []
    rows = ["| " + " | ".join(titles) + " |", "| --- " * len(titles) + "|"]
    for label, runs in groups.items():
        def collect(fn):
            return [v for v in map(fn, runs) if v is not None and math.isfinite(v)]

        before = collect(lambda rs: _final_eval([r for r in rs if r["step"] == 0], r"/avg@\d+$"))
        after = collect(lambda rs: _final_eval(rs, r"/avg@\d+$"))
        pass_n = collect(lambda rs: _final_eval(rs, r"/pass@\d+$"))
        cells = [_mean_spread(before), _mean_spread(after), _mean_spread(pass_n),
                 _mean_spread(collect(_tail_mean("entropy", last))),
                 _mean_spread(collect(_tail_mean("masked_frac", last)))]
        if probed:
            cells += [_mean_spread(collect(_tail_mean(key, None))) for key, _ in PROBE_COLUMNS]
        rows.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description="Plot entropy, accuracy, masked fraction and "
                                            "response length against step for training runs.")
    p.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by train.py")
    p.add_argument("--out", type=Path, default=Path("out/plots"), help="folder for the PNGs")
    p.add_argument("--no-show", action="store_true", help="only save the PNGs")
    p.add_argument("--smooth", type=int, default=1, help="moving average over this many steps")
    args = p.parse_args(argv)
    written = plot_runs(args.run_dirs, args.out, show=not args.no_show, window=max(args.smooth, 1))
    if not written:
        raise ValueError("none of the runs has any metric to plot; check their metrics.jsonl.")
    table = summary_table(args.run_dirs)
    (args.out / "summary.md").write_text(table + "\n")
    print(table)
    return written


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"error: {err}")

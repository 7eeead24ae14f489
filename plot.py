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

Choices: a panel whose metric no run logged is skipped with a note (a GRPO run logs no
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


def plot_runs(run_dirs: list[Path], out_dir: Path, show: bool = True) -> list[Path]:
    """Write one PNG per panel that some run has data for; return the paths written."""
    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot.py needs matplotlib, which is not installed: "
                         "run `pip install matplotlib` and try again.") from None
    runs = [(run_label(d), read_metrics(d)) for d in run_dirs]
    labels = [label for label, _ in runs]
    runs = [(f"{label} [{d.name}]" if labels.count(label) > 1 else label, records)
            for (label, records), d in zip(runs, run_dirs)]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, ylabel, keys in PANELS:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for i, (label, records) in enumerate(runs):
            color = f"C{i % 10}"
            key = next((k for k in keys if series(records, k)[0]), None)
            if key is not None:
                ax.plot(*series(records, key), color=color, label=label)
                drawn = True
            if stem == "accuracy":  # held-out accuracy from eval.evaluate, if logged
                for k in sorted({k for r in records for k in r if EVAL_AVG.match(k)}):
                    ax.plot(*series(records, k), color=color, linestyle="--", marker="o",
                            label=f"{label} ({k.removeprefix('eval/')})")
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


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description="Plot entropy, accuracy, masked fraction and "
                                            "response length against step for training runs.")
    p.add_argument("run_dirs", nargs="+", type=Path, help="run directories written by train.py")
    p.add_argument("--out", type=Path, default=Path("out/plots"), help="folder for the PNGs")
    p.add_argument("--no-show", action="store_true", help="only save the PNGs")
    args = p.parse_args(argv)
    written = plot_runs(args.run_dirs, args.out, show=not args.no_show)
    if not written:
        raise ValueError("none of the runs has any metric to plot; check their metrics.jsonl.")
    return written


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"error: {err}")

"""Reading what plot.py draws: train.py's run folders (metrics.jsonl, config.json) and eval.py's
result files, and which runs are seeds of one setting.

A run folder holds
  * metrics.jsonl: one JSON object per logged step with "step" and the metrics (evaluation
    numbers from eval.evaluate logged as "eval/<set>/<key>", e.g. "eval/heldout/avg@8");
  * config.json: the run's flags and its "label" (e.g. "clipv mu=1.0", "grpo"), which names the
    run's setting. Runs written before train.py recorded the label fall back to
    "<method> mu=<mu>" (just the method when mu is null), and a folder without config.json to
    the folder's name; no list of methods is kept here.

Runs are seeds of one setting when their whole configurations agree: every field of config.json
except the run's identity (seed, folder, resume), what is only saved or reported, and how the
same computation is laid out on the hardware (IDENTITY). Runs with one label whose
configurations differ are separate settings, each named by its label and the fields that differ
("grpo lr=0.0001", "grpo lr=0.0003"); a field that some of them lack (a run older than the flag)
is not compared.

Choices: a line of metrics.jsonl that is not UTF-8, not JSON or has no integer "step" (a run
killed mid-write, a hand edit) is skipped, with one note per file counting them; a negative step
is a mistake, named with its file and line; a step logged twice keeps its later line, with a
note (train.py's --resume cuts the log back to its checkpoint, but an older run resumed past its
checkpoint logged those steps again: the later lines are the history the run went on from). A
folder given twice, or by two paths, counts once. A config.json that is not a JSON object is a
mistake, named with its file and line: it decides which runs are averaged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# config.json fields that do not make another setting: the run's identity, what is saved or
# reported, and the layout of the same computation on the hardware (config.RESUME_MAY_CHANGE)
IDENTITY = {"seed", "out", "resume", "dry_run", "label", "resumes", "world_size", "save_every",
            "keep_last", "save_optimizer", "sample_every", "report_to", "device",
            "micro_batch_size", "chunk_size", "gen_batch_size", "gradient_checkpointing"}
# what an evaluation reports per set: pass@k, avg@n, the mean number of distinct right solutions
NUMBER = re.compile(r"^(?:eval/(?P<set>.+)/)?(?P<key>pass@(?P<k>\d+)|avg@\d+|distinct_correct)$")


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of run_dir/metrics.jsonl, one per step (the later line of a step logged twice).

    Args:
        run_dir: a folder train.py wrote (its --out).
    Returns:
        JSON objects with an integer "step" of 0 or more; other lines are skipped with a note."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no metrics.jsonl; pass run directories written by "
                         f"train.py (its --out folder).")
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise ValueError(f"cannot read {path} ({err.strerror or err}); check its permissions.") from None
    by_step, skipped, twice = {}, [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            skipped.append(number)
            continue
        if step < 0:
            raise ValueError(f"line {number} of {path} logs step {step}, and steps count from 0; "
                             f"fix or remove that line.")
        if by_step.pop(step, None) is not None:
            twice.append(step)
        by_step[step] = record
    if skipped:
        print(f"note: skipped {len(skipped)} unparsable line{'s' * (len(skipped) > 1)} of {path} "
              f"(line{'s' * (len(skipped) > 1)} {_first(skipped)})")
    if twice:
        twice = sorted(set(twice))
        print(f"note: {len(twice)} step{'s' * (len(twice) > 1)} logged twice in {path} "
              f"({_first(twice)}); the later line of each is kept, as a resumed run rewrote them")
    return list(by_step.values())


def _first(numbers: list[int]) -> str:
    """The first five numbers, comma-separated, and "..." when there are more."""
    return ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")


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


def read_config(run_dir: Path) -> dict | None:
    """run_dir/config.json as a dict; None when the folder has none."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
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
    return config


def run_label(run_dir: Path) -> str:
    """A run's label: config.json's "label" (train.py writes it, e.g. "clipv mu=1.0", "grpo");
    for older runs without one, "<method> mu=<mu>" when mu is set, else the method; the
    folder's name when there is no config."""
    config = read_config(run_dir)
    if config is None:
        return run_dir.name
    if config.get("label"):
        return str(config["label"])
    method = config.get("method", run_dir.name)
    mu = config.get("mu")
    return f"{method} mu={mu}" if mu is not None else str(method)


def settings(run_dirs: list[Path]) -> list[str]:
    """The setting of each run: its label, followed, where runs with that label differ in
    configuration, by the fields that differ ("grpo lr=0.0003"); see the module's docstring."""
    configs = [read_config(d) or {} for d in run_dirs]
    labels = [run_label(d) for d in run_dirs]
    names = list(labels)
    for label in dict.fromkeys(labels):
        mine = [configs[i] for i, other in enumerate(labels) if other == label]
        shared = set.intersection(*(set(c) for c in mine)) - IDENTITY
        differ = [k for k in mine[0] if k in shared and len({_text(c[k]) for c in mine}) > 1]
        for i in (i for i, other in enumerate(labels) if other == label and differ):
            names[i] = " ".join([label, *(f"{k}={_text(configs[i][k])}" for k in differ)])
    return names


def _text(value) -> str:
    """A config value as a setting's name shows it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def group_runs(run_dirs: list[Path], until: int | None = None) -> dict[str, list[list[dict]]]:
    """{setting: [records of each run]}, the runs grouped by setting (the seeds of one).

    Args:
        run_dirs: run folders, each given once (unique_runs).
        until: only the records up to this step (a 300-step run read at step 100); None: all.
    Returns:
        The settings in the order of their first run."""
    groups: dict[str, list[list[dict]]] = {}
    for d, name in zip(run_dirs, settings(run_dirs), strict=True):
        records = [r for r in read_metrics(d) if until is None or r["step"] <= until]
        groups.setdefault(name, []).append(records)
    return groups


def numbers_by_set(values: dict, default_set: str) -> dict[str, dict[str, float]]:
    """{set: {"pass@k" / "avg@n" / "distinct_correct": value}} of one record or result."""
    out: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        match = NUMBER.match(key)
        if match and isinstance(value, (int, float)) and not isinstance(value, bool):
            out.setdefault(match["set"] or default_set, {})[match["key"]] = float(value)
    return out


def read_result(source: Path, eval_set: str | None = None, first: bool = False) -> dict[str, float]:
    """The evaluation numbers of one source for one evaluation set.

    Args:
        source: an eval.py result file (its "results"), or a run folder (the last record of
            metrics.jsonl that logged pass@k; with `first`, the first: step 0, before training).
        eval_set: the set to read; None: the source must have one only.
    Returns:
        {"pass@k": value for each k, and "avg@n", "distinct_correct" where logged}."""
    if source.is_file():
        try:
            results = json.loads(source.read_text())["results"]
            sets = {name: numbers_by_set(r, name).get(name, {}) for name, r in results.items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{source} is not an eval.py result file (no \"results\"); pass the "
                             f"JSON that eval.py --out writes, or a run directory.") from None
    else:
        records = [r for r in read_metrics(source) if any((m := NUMBER.match(k)) and m["k"] for k in r)]
        if not records:
            raise ValueError(f"{source} logged no pass@k; evaluate its runs with eval.py (--n 64) "
                             f"or train with --eval-every.")
        sets = numbers_by_set(records[0] if first else records[-1], "")
    sets = {name: got for name, got in sets.items() if any(k.startswith("pass@") for k in got)}
    if eval_set is not None and eval_set not in sets:
        raise ValueError(f"{source} has no pass@k of evaluation set {eval_set!r}; it has "
                         f"{', '.join(sorted(sets)) or 'none'}.")
    if eval_set is None and len(sets) != 1:
        raise ValueError(f"{source} has pass@k of several evaluation sets ({', '.join(sorted(sets))}); "
                         f"choose one with --eval-set.")
    return sets[eval_set if eval_set is not None else next(iter(sets))]


def run_folder(source: Path) -> Path | None:
    """The run folder a pass@k source belongs to: itself, or for a result file its folder or the
    one above (e.g. runs/x/final/eval.json) when that holds a metrics.jsonl; else None."""
    if source.is_dir():
        return source
    return next((f for f in (source.parent, source.parent.parent) if (f / "metrics.jsonl").is_file()), None)

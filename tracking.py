"""Experiment tracking: what train.py writes to metrics.jsonl, also in TensorBoard, Weights &
Biases or trackio (--report-to, any combination; none by default).

    python train.py --report-to tensorboard,wandb       # or: --report-to tensorboard wandb

Every record of metrics.jsonl goes to each tracker at its step: every number in it, the
evaluation numbers ("eval/<set>/avg@n", ...) included, under the same names; the run's
configuration (config.json) goes once when the tracker starts, and the decoded responses of
samples.jsonl as a table (wandb.Table, trackio.Table, a Markdown table in TensorBoard's text
tab). metrics.jsonl stays the source of truth and is always written. Where they go:

* tensorboard: <out>/tensorboard/ (`tensorboard --logdir <out>/tensorboard`);
* wandb: <out>/wandb/, project $WANDB_PROJECT or "entropy-grpo" (WANDB_MODE=offline: no network);
* trackio: its local store ($TRACKIO_DIR, by default ~/.cache/huggingface/trackio), project
  $TRACKIO_PROJECT or "entropy-grpo" (`trackio show`).

Choices and why:
* Each tracker is optional: `check` (called by config.validate) ends a run that asks for one
  that is not installed with one sentence naming the package, before anything slow starts; a
  tracker that cannot start (wandb online without a login) ends it in one sentence too.
* Only rank 0 reports under torchrun: `start` returns a tracker with no backends elsewhere.
* A resumed run continues the same tracker run: the wandb run id (also the trackio run's name)
  is kept in <out>/tracking.json, and wandb resumes it with resume="allow".
* No step is logged twice. A run killed after logging step 7 whose last checkpoint is step 5
  repeats steps 6 and 7 when resumed (checkpoint.truncate_jsonl drops them from
  metrics.jsonl). TensorBoard can forget them: its writer opens with purge_step 6, and its
  reader then hides the earlier events of step 6 onwards, so it ends with exactly the rows of
  metrics.jsonl. wandb and trackio cannot rewrite a run's history (wandb drops a step below its
  last one anyway), so tracking.json also records the last step each of them received and a
  resumed run sends them only later steps: for the steps between the checkpoint and the kill
  they keep what the killed run sent, which differs from metrics.jsonl only in the timings
  (a resume repeats its steps exactly).
* A new run (not --resume) starts new tracker runs; TensorBoard's writer then purges from step
  0, which hides the events an earlier run in the same folder left behind.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}   # name -> package
STATE_FILE = "tracking.json"
PROJECT = "entropy-grpo"
SAMPLE_COLUMNS = ("step", "prompt_index", "question", "answer", "response", "reward", "advantage",
                  "truncated")


def parse(report_to) -> list[str]:
    """--report-to's value (a string, comma-separated, or a list of them; "none" or empty: no
    tracker) -> the tracker names, in order, without repeats."""
    items = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n.strip().lower() for item in items for n in item.split(",")]
    return list(dict.fromkeys(n for n in names if n and n != "none"))


def check(report_to) -> None:
    """Raise ValueError, in one sentence, for an unknown tracker or one whose package is missing."""
    for name in parse(report_to):
        if name not in TRACKERS:
            raise ValueError(f"unknown --report-to {name!r}; choose among {', '.join(TRACKERS)} "
                             f"(comma-separated), or none.")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ValueError(f"--report-to {name} needs the {TRACKERS[name]} package, which is not "
                             f"installed: pip install -r requirements-dev.txt")


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record, without its step (lists such as "prompts" are left out)."""
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def markdown_table(rows: list[dict]) -> str:
    """Sample rows as a Markdown table (TensorBoard's text tab renders it)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")
    lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + " --- |" * len(SAMPLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in SAMPLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


class _TensorBoard:
    rewinds = True    # purge_step hides the events of repeated steps

    def __init__(self, out: Path, run_id: str, config: dict, step: int, resumed: bool):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if step else 0)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", step)
        self.writer.flush()

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()    # a killed run keeps every step it logged

    def table(self, step: int, rows: list[dict]) -> None:
        self.writer.add_text("samples", markdown_table(rows), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _RunTracker:
    """What wandb and trackio share: a run that logs a dict at a step, and the package's Table
    (self.package) for the samples. Neither can rewrite a run's history."""
    rewinds = False

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def table(self, step: int, rows: list[dict]) -> None:
        data = [[r.get(c) for c in SAMPLE_COLUMNS] for r in rows]
        self.run.log({"samples": self.package.Table(columns=list(SAMPLE_COLUMNS), data=data)}, step=step)


class _Wandb(_RunTracker):
    def __init__(self, out: Path, run_id: str, config: dict, step: int, resumed: bool):
        import wandb
        self.package = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=out.name,
                              id=run_id, resume="allow", dir=str(out), config=config,
                              allow_val_change=True)

    def close(self) -> None:
        self.run.finish()


class _Trackio(_RunTracker):
    def __init__(self, out: Path, run_id: str, config: dict, step: int, resumed: bool):
        import trackio
        self.package = trackio
        self.run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT),
                                name=f"{out.name}-{run_id}", resume="allow" if resumed else "never",
                                config=config, embed=False, auto_log_gpu=False, auto_log_cpu=False)

    def close(self) -> None:
        self.package.finish()   # also forgets the run, so that it is not finished again at exit


BACKENDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "trackio": _Trackio}


class Tracker:
    """The trackers of one run (none: every method does nothing). `log` a metrics record, `table`
    the sample rows of a step, `close` at the end; `tee` wraps a JSONL writer so that each
    metrics.jsonl record also goes to the trackers."""

    def __init__(self, backends: dict | None = None, state_path: Path | None = None,
                 state: dict | None = None):
        self.backends = backends or {}
        self.state_path, self.state = state_path, state or {"id": None, "logged": {}}
        self.held = dict(self.state["logged"])    # the last step each backend got before this start

    def _targets(self, step: int):
        """The backends that should get `step`: all but those that got it before this start."""
        return [(name, b) for name, b in self.backends.items()
                if b.rewinds or step > self.held.get(name, -math.inf)]

    def _done(self, targets, step: int) -> None:
        """Record the last step each non-rewinding backend got (atomically: a kill leaves the old
        or the new file)."""
        changed = False
        for name, backend in targets:
            if not backend.rewinds and step > self.state["logged"].get(name, -math.inf):
                self.state["logged"][name] = step
                changed = True
        if changed:
            tmp = self.state_path.with_name(f".tmp-{STATE_FILE}")
            tmp.write_text(json.dumps(self.state, indent=2) + "\n")
            os.replace(tmp, self.state_path)

    def log(self, record: dict) -> None:
        """Every number of a metrics.jsonl record, at its step."""
        if not self.backends:
            return
        step, values = int(record["step"]), scalars(record)
        targets = self._targets(step)
        for _, backend in targets:
            backend.log(step, values)
        self._done(targets, step)

    def table(self, step: int, rows: list[dict]) -> None:
        """The decoded responses of a step (samples.jsonl rows) as one table."""
        if not self.backends or not rows:
            return
        targets = self._targets(step)
        for _, backend in targets:
            backend.table(step, rows)

    def tee(self, write: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
        """write(path, record), and each record written to metrics.jsonl also to the trackers."""
        def write_and_track(path: Path, record: dict) -> None:
            write(path, record)
            if Path(path).name == "metrics.jsonl":
                self.log(record)
        return write_and_track if self.backends else write

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends = {}


def start(report_to, out: Path, step: int, main: bool = True) -> Tracker:
    """The trackers --report-to names, for the run in `out` that starts after `step` (0: a new
    run; otherwise resumed from the checkpoint of that step). The configuration is read from
    <out>/config.json. Ranks other than 0 (main False) get a Tracker with no backends."""
    names = parse(report_to)
    if not names or not main:
        return Tracker()
    check(names)
    out = Path(out)
    state_path = out / STATE_FILE
    resumed = step > 0 and state_path.is_file()
    state = json.loads(state_path.read_text()) if resumed else {"id": secrets.token_hex(4), "logged": {}}
    config_path = out / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    tracker = Tracker({}, state_path, state)
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    for name in names:
        try:
            tracker.backends[name] = BACKENDS[name](out, state["id"], config, step, resumed)
        except Exception as err:   # e.g. wandb online without a login: one sentence, exit status 2
            tracker.close()
            hint = (" Log in (wandb login), or set WANDB_MODE=offline to write the run locally."
                    if name == "wandb" else "")
            raise ValueError(f"--report-to {name} could not start ({type(err).__name__}: "
                             f"{str(err).strip()}).{hint}") from err
    return tracker

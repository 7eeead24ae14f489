"""Tests for tracking.py: --report-to's parsing and its one-sentence errors, the no-duplicate
rule of a resumed run, and real runs with TensorBoard, wandb (offline) and trackio (a local
store in a temporary folder) whose records are read back and compared with metrics.jsonl:
TensorBoard's event files with its own reader, wandb's run file record by record, trackio's
store through its own storage class. No network."""

import json
import math
import shutil
import struct
from pathlib import Path

import pytest

import tracking
import train

SHIPPED = Path(train.__file__).resolve().parent / "tiny-qwen2"
TIMING = ("time_", "tokens_per_s")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def same(a: float, b: float, rel: float = 1e-6) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# ----- flags and errors -----

def test_report_to_accepts_commas_spaces_and_none():
    assert tracking.parse("none") == [] and tracking.parse([]) == []
    assert tracking.parse("tensorboard,wandb") == ["tensorboard", "wandb"]
    assert tracking.parse(["tensorboard", "trackio,tensorboard"]) == ["tensorboard", "trackio"]


def test_a_missing_or_unknown_tracker_is_one_sentence_before_anything_loads(tmp_path, capsys, monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    argv = ["--model", str(tmp_path / "no-model-here"), "--out", str(tmp_path / "run")]
    assert train.main([*argv, "--report-to", "tensorboard", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --report-to wandb needs the wandb package, which is not installed: "
                   "pip install -r requirements-dev.txt")
    assert train.main([*argv, "--report-to", "mlflow"]) == 2
    assert "unknown --report-to 'mlflow'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()          # nothing started


def test_a_tracker_that_cannot_start_is_one_sentence(tmp_path, monkeypatch):
    def no_login(*args):
        raise RuntimeError("No API key configured.")
    monkeypatch.setitem(tracking.BACKENDS, "wandb", no_login)
    with pytest.raises(ValueError, match=r"^--report-to wandb could not start \(RuntimeError: No API "
                                         r"key configured\.\)\. .*WANDB_MODE=offline"):
        tracking.start("wandb", tmp_path, 0)


class _Recorder:
    """A backend that remembers what it was sent."""
    def __init__(self, rewinds: bool):
        self.rewinds, self.steps, self.tables = rewinds, [], []

    def log(self, step, values):
        self.steps.append(step)

    def table(self, step, rows):
        self.tables.append(step)

    def close(self):
        pass


def test_a_resumed_run_sends_no_step_twice(tmp_path):
    """Killed after logging step 7, resumed from checkpoint 5: steps 6 and 7 come again. A
    backend that cannot rewind gets only 8 onwards; one that rewinds (TensorBoard) gets them all."""
    (tmp_path / tracking.STATE_FILE).write_text(json.dumps({"id": "x", "logged": {"keep": 7}}))
    state = json.loads((tmp_path / tracking.STATE_FILE).read_text())
    keep, rewind = _Recorder(False), _Recorder(True)
    tracker = tracking.Tracker({"keep": keep, "rewind": rewind}, tmp_path / tracking.STATE_FILE, state)
    written = []
    log = tracker.tee(lambda path, record: written.append(record["step"]))
    for step in (6, 7, 8, 9):
        log(tmp_path / "metrics.jsonl", {"step": step, "reward": 0.5, "prompts": [1, 2]})
        tracker.table(step, [{"step": step, "response": "x"}])
    assert written == [6, 7, 8, 9] and rewind.steps == [6, 7, 8, 9]
    assert keep.steps == [8, 9] and keep.tables == [8, 9]
    assert json.loads((tmp_path / tracking.STATE_FILE).read_text())["logged"] == {"keep": 9}
    assert tracking.start("none", tmp_path, 5).backends == {}
    assert tracking.start("tensorboard", tmp_path, 5, main=False).backends == {}   # rank > 0


# ----- real runs, read back -----

def wandb_records(path: Path):
    """The records of a wandb run file (<run>.wandb): a LevelDB-style log of 32 KiB blocks whose
    chunks (4-byte CRC, 2-byte length, 1-byte type: full, first, middle, last) hold protobuf
    `Record`s, after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2
    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:                      # a block's tail too short for a header
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:                                   # zero padding up to the block's end
            pos += block - pos % block if pos % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def wandb_history(run_dir: Path) -> list[dict]:
    """Every history row logged to the wandb run(s) under run_dir/wandb, in the order logged."""
    rows = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                rows.append(row)
    return rows


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing import event_accumulator
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0,
                                                                        event_accumulator.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tag}: a step twice {steps}"
        out[tag] = {e.step: e.value for e in events}
    out["__text__"] = {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}
    return out


def test_trackers_hold_every_metric_once_after_a_kill_and_resume(tmp_path, monkeypatch):
    """A run with all three trackers, killed (in effect) after logging step 3 with its last
    checkpoint at step 2, then resumed to step 4: TensorBoard ends with exactly metrics.jsonl's
    numbers; wandb and trackio hold every step once, one run each, continued by the resume."""
    for package in tracking.TRACKERS.values():
        pytest.importorskip(package)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):   # tables are staged there
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name))
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("TRACKIO_PROJECT", "test-project")
    from trackio import sqlite_storage   # TRACKIO_DIR is read at import: set it here too
    monkeypatch.setattr(sqlite_storage, "TRACKIO_DIR", tmp_path / "trackio")
    out = tmp_path / "run"
    argv = ["--model", str(SHIPPED), "--out", str(out), "--device", "cpu", "--prompts-per-step", "2",
            "--group-size", "2", "--max-new-tokens", "6", "--micro-batch-size", "4",
            "--eval-every", "2", "--eval-limit", "2", "--eval-n", "1", "--save-every", "2",
            "--sample-every", "2", "--report-to", "tensorboard,wandb,trackio"]
    assert train.main([*argv, "--steps", "3"]) == 0
    first = {r["step"]: r for r in read_jsonl(out / "metrics.jsonl")}
    assert sorted(first) == [0, 1, 2, 3] and "eval/synthetic:test/avg@1" in first[2]
    shutil.rmtree(out / "checkpoint-3")           # as if killed after logging step 3
    assert train.main(["--out", str(out), "--resume", "--steps", "4"]) == 0
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    state = json.loads((out / tracking.STATE_FILE).read_text())
    assert state["logged"] == {"wandb": 4, "trackio": 4}

    # TensorBoard: the resumed values of steps 3 and 4, every number of every record, once
    scalars = tensorboard_scalars(out / "tensorboard")
    expected: dict[str, dict[int, float]] = {}
    for r in records:
        for key, value in tracking.scalars(r).items():
            expected.setdefault(key, {})[r["step"]] = value
    assert set(expected) == set(scalars) - {"__text__"}
    for key, by_step in expected.items():
        assert sorted(scalars[key]) == sorted(by_step), key
        assert all(same(scalars[key][s], v) for s, v in by_step.items()), key
    assert scalars["__text__"]["config/text_summary"] == [0, 2]     # at each start
    assert scalars["__text__"]["samples/text_summary"] == [2, 4]

    # wandb: one run id, two segments (the resume continues it); every step once
    segments = sorted(out.glob("wandb/offline-run-*"))
    assert len(segments) == 2 and all(p.name.endswith(state["id"]) for p in segments)
    rows = wandb_history(out)
    assert [r["_step"] for r in rows if "reward" in r or "eval/synthetic:test/avg@1" in r] == [0, 1, 2, 3, 4]
    by_step = {}
    for row in rows:
        by_step.setdefault(row["_step"], {}).update(row)
    for r in records:      # step 3 holds the killed run's values: equal but for the timings
        for key, value in tracking.scalars(r).items():
            if r["step"] != 3 or not key.startswith(TIMING):
                assert same(float(by_step[r["step"]][key]), value), (r["step"], key)
    assert by_step[2]["samples/_type"] == "table-file" and by_step[4]["samples/nrows"] == 2
    run_records = [rec for p in segments for rec in wandb_records(next(p.glob("run-*.wandb")))
                   if rec.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run_records[0].run.config.update}
    assert config["method"] == "grpo" and config["steps"] == 3

    # trackio: the same run continued, every step once
    logs = sqlite_storage.SQLiteStorage.get_logs("test-project", f"{out.name}-{state['id']}")
    metric_rows = [row for row in logs if "reward" in row or "eval/synthetic:test/avg@1" in row]
    assert [row["step"] for row in metric_rows] == [0, 1, 2, 3, 4]
    for row, r in zip(metric_rows, records, strict=True):
        for key, value in tracking.scalars(r).items():
            if r["step"] != 3 or not key.startswith(TIMING):
                assert same(row[key], value), (r["step"], key)
    tables = [row for row in logs if "samples" in row]
    assert [t["step"] for t in tables] == [2, 4] and tables[0]["samples"]["_type"] == "trackio.table"

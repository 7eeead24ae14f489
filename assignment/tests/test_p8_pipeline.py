"""P8: the whole pipeline runs on your code: two training steps of Clip-V on the shipped model
(advantages, the chunked statistics, the mask, the loss, the entropy probe and an evaluation
with pass@k), in this process, with its metrics finite. The experiment itself (HANDOUT.md) is
graded by hand."""

import json
import math

import pytest


@pytest.mark.limit(300)
def test_training_runs_on_your_code(tmp_path):
    import train

    out = tmp_path / "run"
    argv = ["--method", "clipv", "--mu", "1.0", "--steps", "2", "--prompts-per-step", "2", "--group-size", "4",
            "--max-new-tokens", "16", "--probe-every", "1", "--eval-every", "2", "--eval-limit", "4",
            "--eval-n", "2", "--out", str(out)]
    status = train.main(argv)
    if status != 0:
        raise AssertionError(f"python train.py {' '.join(argv[:-2])}: expected exit status 0, got {status}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    if len(steps) != 2:
        raise AssertionError(f"metrics.jsonl: expected 2 training steps, got {len(steps)}")
    for key in ("loss", "entropy", "s_star", "masked_frac", "grad_norm"):
        values = [r.get(key) for r in steps]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise AssertionError(f"metrics.jsonl: expected finite {key} at both steps, got {values}")
    evals = [k for r in rows for k in r if k.startswith("eval/") and "pass@" in k]
    if not evals:
        raise AssertionError("metrics.jsonl: expected an evaluation with pass@k, got none")

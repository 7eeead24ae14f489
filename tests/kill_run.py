"""Run train.main with the process SIGKILLed at a chosen point, as a crash or `kill -9` would:

    python tests/kill_run.py POINT N -- <train.py flags>

POINT is where the N-th call dies: "checkpoint-write" (inside a checkpoint's write, after the
model files and before trainer_state.pt) or "metrics-trim" (inside --resume's trim of
metrics.jsonl, after the new file is written and before it replaces the old one). Used by
tests/test_train.py's kill-anywhere test; nothing here is part of training."""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import checkpoint  # noqa: E402
import torch  # noqa: E402
import train  # noqa: E402


def die_on_call(n: int, real):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper


if __name__ == "__main__":
    point, n, flags = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
    if point == "checkpoint-write":
        torch.save = die_on_call(n, torch.save)
    elif point == "metrics-trim":
        real_truncate = checkpoint.truncate_jsonl

        def truncate(path, step):
            real_replace = os.replace
            os.replace = die_on_call(n, real_replace)
            try:
                real_truncate(path, step)
            finally:
                os.replace = real_replace
        checkpoint.truncate_jsonl = truncate
    else:
        sys.exit(f"unknown point {point!r}")
    sys.exit(train.main(flags))

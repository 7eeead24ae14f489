"""The only process that runs a submission's code: a worker that the graded tests start in the
tree being graded (assignment/tests/worker.py). It reads requests (a function "module:name", its
arguments, and optionally the gradients or the largest tensor to measure) from one pipe, calls
the function, and writes back only what came out: tensors detached, gradients, or the exception's
type, message and place. The tests judge those outputs in their own process, which never imports
the submission, so nothing the submission does (atexit hooks, patching pytest, writing files,
exiting) can touch the grade.

    python runner.py READ_FD WRITE_FD GRADER_PID   # started by worker.py, never by hand

It dies with the grader (reaper.die_with_parent), before it imports any of the submission.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import os
import struct
import sys
import traceback
from pathlib import Path

import reaper
import torch
from torch.utils._python_dispatch import TorchDispatchMode

TREE = Path.cwd()


class _Largest(TorchDispatchMode):
    """Records the largest tensor any op returns (the memory bound of the chunked statistics)."""

    def __init__(self):
        super().__init__()
        self.largest, self.op = 0, ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.op = t.numel(), str(func)
        return out


def _plain(value):
    """The output as tensors, numbers, strings, lists and dicts (what the tests may unpickle)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<an object of type {type(value).__name__}>"


def _part(value, key):
    """A field (dataclass, dict) or an index (tuple) of an output; the output itself for None."""
    if key is None:
        return value
    if isinstance(key, int):
        return value[key]
    return value[key] if isinstance(value, dict) else getattr(value, key)


def _requires_grad(value):
    """requires_grad of a tensor output, or of each tensor field of a structured one."""
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): v.requires_grad for k, v in value.items() if isinstance(v, torch.Tensor)}
    return None


def _resolve(spec: str):
    module, qualname = spec.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def execute(request: dict) -> dict:
    """Call request["fn"] on its arguments; the outputs, or the exception, as a plain dict."""
    args, kwargs = list(request.get("args", [])), dict(request.get("kwargs", {}))
    grad = request.get("grad")
    try:
        fn = _resolve(request["fn"])
        inputs = []
        if grad:
            for i in grad["wrt"]:
                args[i] = args[i].detach().clone().requires_grad_(True)
                inputs.append(args[i])
        mode = _Largest() if request.get("largest") else None
        with mode if mode is not None else contextlib.nullcontext():
            value = fn(*args, **kwargs)
            grads = None
            if grad:
                keys = list(grad["cotangents"])
                outputs = [_part(value, k) for k in keys]
                got = torch.autograd.grad(outputs, inputs, [grad["cotangents"][k] for k in keys], allow_unused=True)
                grads = [None if g is None else g.detach().clone() for g in got]
        reply = {"ok": True, "value": _plain(value), "requires_grad": _requires_grad(value), "grads": grads}
        if mode is not None:
            reply["largest"], reply["op"] = mode.largest, mode.op
        return reply
    except BaseException as exc:   # noqa: B036 -- SystemExit and KeyboardInterrupt are the submission's too
        return {"ok": False, "type": type(exc).__name__, "message": " ".join(str(exc).split())[:600],
                "where": _where(exc)}


def _where(exc: BaseException) -> str:
    """The innermost line of the graded tree's own code in the exception's traceback."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(TREE) and path != Path(__file__).resolve():
            return f"{path.relative_to(TREE).as_posix()}:{frame.lineno}"
    return ""


def _read(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def main(read_fd: int, write_fd: int) -> None:
    sys.path.insert(0, str(TREE))
    os.write(write_fd, b"R")        # ready: torch is imported, the submission not yet
    while True:
        try:
            (size,) = struct.unpack("<Q", _read(read_fd, 8))
        except EOFError:              # the grader is gone or done: so is all of this
            reaper.kill_tree(os.getpid())
            return
        request = torch.load(io.BytesIO(_read(read_fd, size)), weights_only=False)
        buffer = io.BytesIO()
        torch.save(execute(request), buffer)
        data = buffer.getvalue()
        os.write(write_fd, struct.pack("<Q", len(data)))
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]


if __name__ == "__main__":
    sys.path.pop(0)    # this folder: the submission imports from the tree only
    reaper.die_with_parent(int(sys.argv[3]))
    main(int(sys.argv[1]), int(sys.argv[2]))

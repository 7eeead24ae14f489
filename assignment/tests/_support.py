"""Helpers of the graded tests: one-line failure messages with what was expected and what came
back, the variant's conventions (assignment/variant.json, or the ASSIGNMENT_VARIANT variable),
and naive float64 statements of the paper's formulas, written independently of the code under
test (a test never compares a function with itself)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def variant_switches() -> set[int]:
    """The switches of this tree's variant (assignment/variants.py); empty for the released conventions."""
    if os.environ.get("ASSIGNMENT_VARIANT"):
        n = int(os.environ["ASSIGNMENT_VARIANT"])
        return {bit for bit in (1, 2) if n & bit}
    path = REPO / "assignment" / "variant.json"
    return set(json.loads(path.read_text())["switches"]) if path.exists() else set()


def fmt(x) -> str:
    """A short rendering of a number or tensor: up to 6 values, 5 significant digits."""
    if isinstance(x, torch.Tensor):
        flat = x.detach().flatten().tolist()
        body = ", ".join(f"{v:.5g}" if isinstance(v, float) else str(v) for v in flat[:6])
        more = f", ... ({x.numel()} values)" if x.numel() > 6 else ""
        return f"[{body}{more}]"
    if isinstance(x, float):
        return f"{x:.5g}"
    return repr(x)


def fail(what: str, expected, got) -> None:
    raise AssertionError(f"{what}: expected {fmt(expected)}, got {fmt(got)}")


def tensor(got, what: str, shape=None, dtype=None) -> torch.Tensor:
    """got must be a tensor of this shape and dtype (None: any)."""
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
    if shape is not None and tuple(got.shape) != tuple(shape):
        raise AssertionError(f"{what}: expected shape {tuple(shape)}, got {tuple(got.shape)}")
    if dtype is not None and got.dtype != dtype:
        raise AssertionError(f"{what}: expected dtype {dtype}, got {got.dtype}")
    return got


def close(got, expected, what: str, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """got == expected within tolerance, with shape, NaN and inf reported as such."""
    if isinstance(expected, torch.Tensor):
        got = tensor(got, what, shape=expected.shape)
        g, e = got.detach().double(), expected.detach().double()
        if not torch.isfinite(g).all() and torch.isfinite(e).all():
            fail(what + " (not finite)", e, g)
        bad = ~torch.isclose(g, e, rtol=rtol, atol=atol)
        if bad.any():
            i = bad.flatten().nonzero()[0].item()
            index = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), e.shape)) if e.dim() else ()
            raise AssertionError(f"{what}: at index {index} expected {e.flatten()[i].item():.6g}, got "
                                 f"{g.flatten()[i].item():.6g} (all: expected {fmt(e)}, got {fmt(g)})")
        return
    g = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if not isinstance(g, (int, float)) or not math.isclose(float(g), float(expected), rel_tol=rtol, abs_tol=atol):
        fail(what, expected, g)


def positions(keep: torch.Tensor) -> list[tuple[int, int]]:
    return sorted(tuple(ix) for ix in keep.nonzero().tolist())


# ----- naive statements of the formulas (float64, Python-level where small) -----

def naive_entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def naive_discriminator(probs: list[float]) -> list[float]:
    h = naive_entropy(probs)
    return [p * (h + math.log(p)) if p > 0 else 0.0 for p in probs]


def entropy64(z: torch.Tensor) -> torch.Tensor:
    """H of softmax(z) in float64 (the tests' own, independent of entropy.py; entr(p) = -p log p)."""
    return torch.special.entr(torch.softmax(z.double(), -1)).sum(-1)

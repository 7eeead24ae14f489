"""Helpers of the graded tests: one-line failure messages with what was expected and what came
back, the variant's conventions (assignment/variant.json, or the ASSIGNMENT_VARIANT variable),
the inputs the tests draw, and the expected values.

Expected values come from `expected(name, *inputs)`: in the instructor's tree, from the float64
statements of the paper's formulas in oracles.py, on inputs drawn afresh at every grading (the
ASSIGNMENT_SEED variable fixes them), so that no stored answer can be replayed; in the student's
tree, which has no oracles.py, from expected.pt, the values make_student.py stored for the inputs
of seed 0. A test never compares a function with itself, nor with code of the student's tree.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import itertools
import json
import math
import os
import secrets
from pathlib import Path

import torch
import worker

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[1]
SNAPSHOT = TESTS / "expected.pt"
INSTRUCTOR = (TESTS / "oracles.py").is_file()
RECORDING: dict | None = None       # make_student.py's snapshot, while it records one
_calls = {"test": "", "n": 0}


def base_seed() -> int:
    """The seed of this grading's inputs: ASSIGNMENT_SEED, else 0 in the student's tree and when
    recording, else a fresh one."""
    if os.environ.get("ASSIGNMENT_SEED"):
        return int(os.environ["ASSIGNMENT_SEED"])
    return secrets.randbelow(10**9) if INSTRUCTOR and RECORDING is None else 0


BASE_SEED = base_seed()


def gen(n: int) -> torch.Generator:
    """A generator for the test's n-th draw of this grading."""
    return torch.Generator().manual_seed(BASE_SEED * 1000 + n)


def begin(nodeid: str) -> None:
    """A new test: its expected values are numbered from 0 (harness.py calls this)."""
    _calls.update(test=nodeid.split("/")[-1], n=0)


def expected(name: str, *args, **kwargs):
    """The expected value oracles.<name>(*args, **kwargs), or its stored snapshot."""
    key = f"{_calls['test']}#{_calls['n']}"
    _calls["n"] += 1
    if INSTRUCTOR:
        value = getattr(_oracles(), name)(*args, **kwargs)
        if RECORDING is not None:
            RECORDING[key] = value
        return value
    if not SNAPSHOT.is_file():
        raise AssertionError(f"assignment/tests/expected.pt is missing; the graded tests need it ({key})")
    table = _snapshot()
    if key not in table:
        raise AssertionError(f"no stored expected value for {key}: the graded tests were edited; restore them")
    return table[key]


@functools.cache
def _oracles():
    spec = importlib.util.spec_from_file_location("oracles", TESTS / "oracles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_table: dict = {}


def _snapshot() -> dict:
    if not _table:
        _table.update(torch.load(SNAPSHOT, weights_only=True))
    return _table


def variant_switches() -> set[int]:
    """The switches of this tree's variant (assignment/variants.py); empty for the released conventions."""
    if os.environ.get("ASSIGNMENT_VARIANT"):
        n = int(os.environ["ASSIGNMENT_VARIANT"])
        return {1 << i for i in range(n.bit_length()) if n >> i & 1}
    path = REPO / "assignment" / "variant.json"
    return set(json.loads(path.read_text())["switches"]) if path.exists() else set()


# ----- messages -----

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


def fmt_exact(x) -> str:
    """A number to 9 significant digits (so that two that differ look different), else repr."""
    return f"{x:.9g}" if isinstance(x, (int, float)) else repr(x)[:80]


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
        infinite = ~torch.isfinite(g) & torch.isfinite(e)
        bad = infinite if infinite.any() else ~torch.isclose(g, e, rtol=rtol, atol=atol)
        if infinite.any():
            what += " (not finite)"
        if bad.any():
            i = bad.flatten().nonzero()[0].item()
            index = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), e.shape)) if e.dim() else ()
            dtype = f"; your dtype {got.dtype}" if got.dtype != expected.dtype else ""
            raise AssertionError(f"{what}: first difference at index {index}: expected {e.flatten()[i].item():.9g}, "
                                 f"got {g.flatten()[i].item():.9g} (all: expected {fmt(e)}, got {fmt(g)}{dtype})")
        return
    g = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if not isinstance(g, (int, float)) or not math.isclose(float(g), float(expected), rel_tol=rtol, abs_tol=atol):
        dtype = f" (your dtype {got.dtype})" if isinstance(got, torch.Tensor) else ""
        raise AssertionError(f"{what}: expected {float(expected):.9g}, got {fmt_exact(g)}{dtype}")


def positions(keep: torch.Tensor) -> list[tuple[int, int]]:
    return sorted(tuple(ix) for ix in keep.nonzero().tolist())


# ----- inputs -----

# (V, probability of the top token): None leaves the random logits as drawn; 1 - 1e-6 is a
# policy about as peaked as a confident language model.
POLICIES = [(V, top) for V in (2, 10, 100, 1000) for top in (None, 0.99, 1 - 1e-6)]
EPSILONS = (2e-2, 1e-2, 5e-3)


def policy(V: int, top: float | None, n: int) -> torch.Tensor:
    """Random float64 logits over V tokens, token 0 raised to probability `top`."""
    z = torch.randn(V, generator=gen(n), dtype=torch.float64) * 2.0
    if top is not None:
        z[0] = math.log(top / (1 - top)) + torch.logsumexp(z[1:], 0)
    return z


def peaked(n: int, v: int, draw: int) -> torch.Tensor:
    """(n, v) float32 logits x 1000 whose top token leads the next by at least 1000: an almost
    deterministic policy in every row."""
    z = torch.randn(n, v, generator=gen(draw)) * 1000
    z[torch.arange(n), z.argmax(-1)] += 1000
    return z


def tokens_to_update(z: torch.Tensor) -> list[int]:
    """The most likely token, the second, and the least likely one whose finite difference is
    still far above float64 noise (pi_k (1 - pi_k) > 1e-8)."""
    pi = torch.softmax(z, -1)
    order = pi.argsort(descending=True).tolist()
    usable = [k for k in order if pi[k] * (1 - pi[k]) > 1e-8]
    return sorted({usable[0], usable[min(1, len(usable) - 1)], usable[-1]})


def quadratic(residuals: list[float]) -> bool:
    """Whether halving the step divides the residual of a first-order formula by about 4 (or the
    residual is float64 rounding)."""
    if residuals[-1] < 1e-13:
        return True
    return all(3.0 < big / small < 5.0 for big, small in itertools.pairwise(residuals))


def residual_message(what: str, residuals: list[float], flipped: list[float], got) -> str:
    """Why a first-order formula fails: a flipped sign, a float32 result, or an error that does not
    fall like eps^2."""
    if quadratic(flipped):
        return f"{what}: the sign is flipped (minus your value passes the eps^2 check)"
    if isinstance(got, torch.Tensor) and got.dtype != torch.float64:
        return f"{what}: your value is {got.dtype} for float64 logits; compute in float64 (got {got.item():.9g})"
    return (f"{what}: the error of your first-order change should fall like eps^2 (by 4x per halving of eps); "
            f"residuals for eps = {EPSILONS}: got {[f'{r:.3g}' for r in residuals]}")


def random_batch(n: int, t: int, draw: int):
    """A loss batch: logp, old_logp (N, T), advantages (N,), and a keep mask (N, T)."""
    g = gen(draw)
    old = -torch.rand(n, t, generator=g) * 3
    logp = old + 0.3 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    keep = (torch.arange(t)[None, :] < lengths[:, None]) & (torch.rand(n, t, generator=g) > 0.2)
    return logp, old, adv, keep


def random_clip_batch(draw: int, n: int = 12, t: int = 20, constant: bool = False):
    """S*, E[S] (N, T) float64, per-token advantages with A = 0 rows, and the valid mask."""
    g = gen(draw)
    s = torch.randn(n, t, generator=g, dtype=torch.float64) * 0.1
    es = torch.randn(n, t, generator=g, dtype=torch.float64) * 0.02
    if constant:
        s, es = torch.full_like(s, 0.3), torch.full_like(es, 0.1)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    adv[: n // 3] = 0.0                            # groups whose rewards were all equal
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    valid = torch.arange(t)[None, :] < lengths[:, None]
    return s, es, adv[:, None].expand(n, t).clone(), valid


def calls_in(module: str, qualname: str) -> set[str]:
    """The names a function of the graded tree calls, read from its source file (never imported)."""
    tree = ast.parse((worker.tree() / f"{module}.py").read_text())
    nodes: list = tree.body
    fn = None
    for part in qualname.split("."):
        fn = next((n for n in nodes if getattr(n, "name", None) == part), None)
        if fn is None:
            return set()
        nodes = fn.body
    return {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            for n in ast.walk(fn) if isinstance(n, ast.Call)}

"""P7: the chunked token statistics (entropy.token_stats, the custom autograd function
entropy._ChunkedTokenStats): values and gradients against the direct full-logit computation,
gradcheck in float64, and memory bounded by the chunk (no tensor of T x V logits is ever built,
forward or backward, recorded op by op with a TorchDispatchMode)."""

import torch
from _support import close, tensor
from torch.autograd.gradcheck import GradcheckError
from torch.utils._python_dispatch import TorchDispatchMode

import entropy as E


def _inputs(n=3, t=7, d=8, v=50, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, t, d, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_(True)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    ids = torch.randint(0, v, (n, t), generator=g)
    return hidden, weight, ids


def _direct(hidden, weight, ids, temperature):
    """All four statistics from the full float64 logits (the tests' own formulas)."""
    logp_all = torch.log_softmax(hidden.double() @ weight.double().T / temperature, -1)
    p = logp_all.exp()
    h = -(p * logp_all).sum(-1)
    logp = logp_all.gather(-1, ids[..., None]).squeeze(-1)
    return logp, h, logp.exp() * (h + logp), (p * p * (h[..., None] + logp_all)).sum(-1)


def test_values_match_the_direct_computation():
    hidden, weight, ids = _inputs()
    expected = _direct(hidden, weight, ids, 0.7)
    for chunk in (1, 4, 21, 256):      # 21 tokens: one chunk that does not divide them, and one for all
        st = E.token_stats(hidden, weight, ids, temperature=0.7, chunk_size=chunk)
        for name, want in zip(("logp", "entropy", "s_star", "es"), expected, strict=True):
            got = tensor(getattr(st, name), f"token_stats(chunk_size={chunk}).{name}", shape=(3, 7),
                         dtype=torch.float32)
            close(got, want, f"token_stats(chunk_size={chunk}, temperature=0.7).{name}", rtol=1e-4, atol=1e-5)


def test_gradients_match_autograd():
    hidden, weight, ids = _inputs(seed=1, dtype=torch.float64)
    coef = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    logp, h, _, _ = _direct(hidden, weight, ids, 1.3)
    want = torch.autograd.grad((coef[0] * logp + coef[1] * h).sum(), (hidden, weight), retain_graph=True)
    for chunk in (2, 5):
        st = E.token_stats(hidden, weight, ids, temperature=1.3, chunk_size=chunk)
        got = torch.autograd.grad((coef[0] * st.logp + coef[1] * st.entropy).sum(), (hidden, weight))
        close(got[0], want[0], f"d(a.logp + b.H)/d hidden (chunk {chunk}, temperature 1.3)", rtol=1e-7, atol=1e-9)
        close(got[1], want[1], f"d(a.logp + b.H)/d weight (chunk {chunk}, temperature 1.3)", rtol=1e-7, atol=1e-9)
    only_logp = torch.autograd.grad(E.token_stats(hidden, weight, ids, 1.3, 4).logp.sum(), hidden)[0]
    close(only_logp, torch.autograd.grad(logp.sum(), hidden)[0], "d(sum logp)/d hidden when H is unused",
          rtol=1e-7, atol=1e-9)


def test_gradcheck_float64():
    hidden, weight, ids = _inputs(n=2, t=3, d=4, v=9, seed=3, dtype=torch.float64)

    def both(h, w):
        st = E.token_stats(h, w, ids, temperature=0.8, chunk_size=2)
        return st.logp, st.entropy

    try:
        torch.autograd.gradcheck(both, (hidden, weight))
        torch.autograd.gradcheck(lambda h, w: both(h, w)[1], (hidden, weight))
    except GradcheckError as err:
        first = " ".join(str(err).split())[:250]
        raise AssertionError(f"gradcheck of token_stats in float64: expected the analytical gradient to match "
                             f"finite differences, got: {first}") from None


class _Largest(TorchDispatchMode):
    """Records the largest tensor any op returns."""

    def __init__(self):
        super().__init__()
        self.largest, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.numel() > self.largest:
                self.largest, self.op = t.numel(), str(func)
        return out


def test_memory_is_bounded_by_the_chunk():
    n, t, d, v, chunk = 4, 24, 6, 400, 8       # T x V = 38,400 logits; a chunk's are 3,200
    hidden, weight, ids = _inputs(n, t, d, v, seed=4)
    bound = max(chunk * v, v * d, n * t * d)
    for what, backward in (("forward", False), ("forward and backward", True)):
        with _Largest() as seen:
            st = E.token_stats(hidden, weight, ids, chunk_size=chunk)
            if backward:
                (st.logp.sum() + st.entropy.sum()).backward()
        if seen.largest > bound:
            raise AssertionError(f"token_stats {what} with chunk_size {chunk}: expected no tensor above "
                                 f"{bound} elements (chunk x V), got {seen.largest} from {seen.op} "
                                 f"(all logits are {n * t * v})")


def test_contract_dtypes_and_detached_outputs():
    hidden, weight, ids = _inputs(seed=5, dtype=torch.bfloat16)
    st = E.token_stats(hidden, weight, ids, chunk_size=4)
    for name in ("logp", "entropy", "s_star", "es"):
        tensor(getattr(st, name), f"token_stats of bfloat16 inputs: {name}", shape=(3, 7), dtype=torch.float32)
    if not (st.logp.requires_grad and st.entropy.requires_grad):
        raise AssertionError("token_stats: expected logp and entropy to carry gradient, got requires_grad False")
    if st.s_star.requires_grad or st.es.requires_grad:
        raise AssertionError("token_stats: expected s_star and es detached (the masks only read them), "
                             "got requires_grad True")
    grads = torch.autograd.grad(st.logp.sum(), (hidden, weight))
    tensor(grads[0], "gradient of bfloat16 hidden", shape=hidden.shape, dtype=torch.bfloat16)
    tensor(grads[1], "gradient of bfloat16 weight", shape=weight.shape, dtype=torch.bfloat16)

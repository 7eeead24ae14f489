"""P7: the chunked token statistics (entropy.token_stats, the custom autograd function
entropy._ChunkedTokenStats): values and gradients against the direct full-logit computation in
float64, and memory bounded by the chunk (no tensor of T x V logits is ever built, forward or
backward, recorded op by op in the worker)."""

import torch
from _support import close, expected, gen, tensor
from worker import call_full, call_grad

FIELDS = ("logp", "entropy", "s_star", "es")


def _inputs(n=3, t=7, d=8, v=50, draw=0, dtype=torch.float32):
    g = gen(draw)
    hidden = (torch.randn(n, t, d, generator=g, dtype=torch.float64) * 2).to(dtype)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype)
    return hidden, weight, torch.randint(0, v, (n, t), generator=g)


def _stats(hidden, weight, ids, temperature=1.0, chunk_size=4) -> dict:
    reply = call_full("entropy:token_stats", (hidden, weight, ids), {"temperature": temperature,
                                                                      "chunk_size": chunk_size})
    if not isinstance(reply["value"], dict) or not set(FIELDS) <= set(reply["value"]):
        raise AssertionError(f"token_stats: expected a TokenStats with fields {FIELDS}, got {reply['value']!r:.100}")
    return reply


def test_values_match_the_direct_computation():
    hidden, weight, ids = _inputs()
    want = expected("token_stats", hidden, weight, ids, 0.7)
    for chunk in (1, 4, 21, 256):      # 21 tokens: one chunk that does not divide them, and one for all
        st = _stats(hidden, weight, ids, 0.7, chunk)["value"]
        for name in FIELDS:
            got = tensor(st[name], f"token_stats(chunk_size={chunk}).{name}", shape=(3, 7), dtype=torch.float32)
            close(got, want[name], f"token_stats(chunk_size={chunk}, temperature=0.7).{name}", rtol=1e-4, atol=1e-5)


def _gradients(hidden, weight, ids, temperature, chunk, coef_logp, coef_h):
    cotangents = {"logp": coef_logp} if coef_h is None else {"logp": coef_logp, "entropy": coef_h}
    return call_grad("entropy:token_stats", (hidden, weight, ids, temperature, chunk), wrt=[0, 1],
                     cotangents=cotangents)[1]


def test_gradients_match_autograd():
    hidden, weight, ids = _inputs(draw=1, dtype=torch.float64)
    coef = torch.randn(2, 3, 7, generator=gen(2), dtype=torch.float64)
    want = expected("token_stats_gradients", hidden, weight, ids, 1.3, coef[0], coef[1])
    for chunk in (2, 5):
        got = _gradients(hidden, weight, ids, 1.3, chunk, coef[0], coef[1])
        close(got[0], want[0], f"d(a.logp + b.H)/d hidden (chunk {chunk}, temperature 1.3)", rtol=1e-7, atol=1e-9)
        close(got[1], want[1], f"d(a.logp + b.H)/d weight (chunk {chunk}, temperature 1.3)", rtol=1e-7, atol=1e-9)
    ones = torch.ones(3, 7, dtype=torch.float64)
    got = _gradients(hidden, weight, ids, 1.3, 4, ones, None)
    close(got[0], expected("token_stats_gradients", hidden, weight, ids, 1.3, ones, None)[0],
          "d(sum logp)/d hidden when H is unused", rtol=1e-7, atol=1e-9)


def test_gradcheck_float64():
    hidden, weight, ids = _inputs(n=2, t=3, d=4, v=9, draw=3, dtype=torch.float64)
    for coef_h in (torch.randn(2, 3, generator=gen(4), dtype=torch.float64), None):
        coef_logp = torch.randn(2, 3, generator=gen(5), dtype=torch.float64)
        got = _gradients(hidden, weight, ids, 0.8, 2, coef_logp, coef_h)
        want = expected("token_stats_gradients", hidden, weight, ids, 0.8, coef_logp, coef_h)
        what = "H used" if coef_h is not None else "H unused (its output gradient is None)"
        close(got[0], want[0], f"float64 gradient w.r.t. hidden, {what}", rtol=1e-10, atol=1e-12)
        close(got[1], want[1], f"float64 gradient w.r.t. weight, {what}", rtol=1e-10, atol=1e-12)


def test_memory_is_bounded_by_the_chunk():
    n, t, d, v, chunk = 4, 24, 6, 400, 8       # T x V = 38,400 logits; a chunk's are 3,200
    hidden, weight, ids = _inputs(n, t, d, v, draw=6)
    bound = max(chunk * v, v * d, n * t * d)
    for what, grad in (("forward", None),
                       ("forward and backward", {"wrt": [0, 1], "cotangents": {"logp": torch.ones(n, t),
                                                                               "entropy": torch.ones(n, t)}})):
        reply = call_full("entropy:token_stats", (hidden, weight, ids), {"chunk_size": chunk}, largest=True,
                          grad=grad)
        if reply["largest"] > bound:
            raise AssertionError(f"token_stats {what} with chunk_size {chunk}: expected no tensor above "
                                 f"{bound} elements (chunk x V), got {reply['largest']} from {reply['op']} "
                                 f"(all logits are {n * t * v})")


def test_contract_dtypes_and_detached_outputs():
    hidden, weight, ids = _inputs(draw=7, dtype=torch.bfloat16)
    reply = _stats(hidden, weight, ids)
    for name in FIELDS:
        tensor(reply["value"][name], f"token_stats of bfloat16 inputs: {name}", shape=(3, 7), dtype=torch.float32)
    grad = {"wrt": [0, 1], "cotangents": {"logp": torch.ones(3, 7)}}
    reply = call_full("entropy:token_stats", (hidden, weight, ids), {"chunk_size": 4}, grad=grad)
    flags = reply["requires_grad"]
    if not (flags.get("logp") and flags.get("entropy")):
        raise AssertionError(f"token_stats: expected logp and entropy to carry gradient, got requires_grad {flags}")
    if flags.get("s_star") or flags.get("es"):
        raise AssertionError("token_stats: expected s_star and es detached (the masks only read them), "
                             f"got requires_grad {flags}")
    tensor(reply["grads"][0], "gradient of bfloat16 hidden", shape=hidden.shape, dtype=torch.bfloat16)
    tensor(reply["grads"][1], "gradient of bfloat16 weight", shape=weight.shape, dtype=torch.bfloat16)

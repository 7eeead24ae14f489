"""Tests for entropy.py: the paper's Lemma 1, Theorems 1 and 2 and Corollary 1 (float64, finite
differences on random softmax policies), the chunked token statistics against the direct
computation on a real Qwen2ForCausalLM, and the entropy probe."""

import itertools
import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

import entropy as E

# (V, probability of the top token): None leaves the random logits as drawn; 1 - 1e-6 is a
# policy about as peaked as a confident language model.
POLICIES = [(V, top) for V in (2, 10, 100, 1000) for top in (None, 0.99, 1 - 1e-6)]
EPSILONS = (2e-2, 1e-2, 5e-3)


def _policy(V: int, top: float | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(V, generator=g, dtype=torch.float64) * 2.0
    if top is not None:  # raise token 0 until it holds probability `top`
        z[0] = math.log(top / (1 - top)) + torch.logsumexp(z[1:], 0)
    return z


def _tokens_to_update(z: torch.Tensor) -> list[int]:
    """The most likely token, the second, and the least likely one whose finite difference is
    still far above float64 noise (pi_k (1 - pi_k) > 1e-8)."""
    pi = torch.softmax(z, -1)
    order = pi.argsort(descending=True).tolist()
    usable = [k for k in order if pi[k] * (1 - pi[k]) > 1e-8]
    return sorted({usable[0], usable[min(1, len(usable) - 1)], usable[-1]})


def _is_quadratic(residuals: list[float]) -> bool:
    """Halving the step divides the residual of a first-order formula by about 4. Returns False,
    checking nothing, when the residual is float64 rounding (e.g. a GRPO step on a token of
    probability 1 - 1e-6 moves the logits by only alpha * 1e-6)."""
    if residuals[-1] < 1e-13:
        return False
    for big, small in itertools.pairwise(residuals):
        assert 3.0 < big / small < 5.0, residuals
    return True


@pytest.mark.parametrize("V,top", POLICIES)
def test_lemma1_first_order_change_of_policy(V, top):
    z = _policy(V, top, seed=V + 7)
    pi = torch.softmax(z, -1)
    for k in _tokens_to_update(z):
        e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
        # Lemma 1: d pi_k = eps pi_k (1 - pi_k), d pi_i = -eps pi_k pi_i.
        lemma = pi[k] * (e_k - pi)
        residuals = [(torch.softmax(z + eps * e_k, -1) - pi - eps * lemma).norm().item() for eps in EPSILONS]
        assert _is_quadratic(residuals)


@pytest.mark.parametrize("V,top", POLICIES)
def test_theorem1_single_logit_update(V, top):
    z = _policy(V, top, seed=2 * V + 7)
    checked = []
    for k in _tokens_to_update(z):
        e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
        residuals = [abs((E.entropy(z + eps * e_k) - E.entropy(z) - E.theorem1_entropy_change(z, k, eps)).item())
                     for eps in EPSILONS]
        checked.append(_is_quadratic(residuals))
    assert any(checked)


@pytest.mark.parametrize("V,top", POLICIES)
def test_theorem2_grpo_update(V, top):
    z = _policy(V, top, seed=3 * V + 7)
    pi = torch.softmax(z, -1)
    checked = []
    for k in _tokens_to_update(z):
        e_k = torch.nn.functional.one_hot(torch.tensor(k), V).double()
        for sign in (1.0, -1.0):  # rewarded and penalised token
            residuals = []
            for eps in EPSILONS:
                alpha = sign * eps
                actual = E.entropy(z + alpha * (e_k - pi)) - E.entropy(z)
                residuals.append(abs((actual - E.theorem2_entropy_change(z, k, alpha)).item()))
            checked.append(_is_quadratic(residuals))
    assert any(checked)


def test_theorem2_agrees_with_autograd_directional_derivative():
    """The first-order terms are exact derivatives: compare with autograd, many policies at once."""
    z = torch.randn(64, 50, dtype=torch.float64) * torch.linspace(0.1, 10, 64, dtype=torch.float64)[:, None]
    k = torch.randint(0, 50, (64,))
    z.requires_grad_(True)
    (grad,) = torch.autograd.grad(E.entropy(z).sum(), z)
    z = z.detach()
    pi = torch.softmax(z, -1)
    e_k = torch.nn.functional.one_hot(k, 50).double()
    torch.testing.assert_close(E.theorem1_entropy_change(z, k, 1.0), grad.gather(-1, k[:, None]).squeeze(-1),
                               rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(E.theorem2_entropy_change(z, k, 1.0), (grad * (e_k - pi)).sum(-1),
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("scale", [0.1, 1.0, 5.0, 30.0])
def test_corollary1_on_policy_expectation_is_zero(scale):
    z = torch.randn(32, 1000, dtype=torch.float64) * scale
    pi = torch.softmax(z, -1)
    s, es = E.discriminator(z), E.expected_discriminator(z)
    deviation = (pi * (s - es[:, None])).sum(-1)
    assert deviation.abs().max() < 1e-15
    torch.testing.assert_close(es, (pi * s).sum(-1), rtol=1e-12, atol=1e-17)


def test_discriminator_sign_marks_relatively_likely_tokens():
    z = torch.randn(16, 300, dtype=torch.float64) * torch.linspace(0.2, 8, 16, dtype=torch.float64)[:, None]
    pi, h, s = torch.softmax(z, -1), E.entropy(z), E.discriminator(z)
    gap = pi - torch.exp(-h)[:, None]
    clear = gap.abs() > 1e-12 * pi  # S is exactly 0 at the boundary; skip rounding-level ties
    assert torch.equal(torch.sign(s)[clear], torch.sign(gap)[clear])
    # S_* of given ids is the same quantity gathered.
    ids = torch.randint(0, 300, (16,))
    torch.testing.assert_close(E.s_star(z, ids), s.gather(-1, ids[:, None]).squeeze(-1))


def test_known_values_and_float32_for_low_precision_input():
    V = 7
    uniform = torch.zeros(3, V)
    torch.testing.assert_close(E.entropy(uniform), torch.full((3,), math.log(V)))
    # Uniform policy: every S_i = (1/V)(log V - log V) = 0.
    assert E.discriminator(uniform).abs().max() < 1e-7
    z = torch.randn(4, 5, 64)
    for f in (E.entropy, E.expected_discriminator):
        out = f(z.bfloat16())
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, f(z.bfloat16().double()).float())
    assert E.discriminator(z.bfloat16()).dtype == torch.float32


def test_entropy_of_a_masked_out_token_is_finite():
    # a logit of -inf (a token masked out) has probability 0 and adds 0 log 0 = 0, not NaN
    assert E.entropy(torch.tensor([0.0, 0.0, -math.inf])).item() == pytest.approx(math.log(2))


# ----- chunked token statistics -----

def _tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # sharpen the random policy so H, S_* and E[S] vary across tokens
        model.get_output_embeddings().weight.mul_(40.0)
    return model


def _direct_stats(hidden, weight, ids, temperature):
    """The unchunked reference: all float32 logits at once, statistics by the full-logit functions."""
    logits = hidden.float() @ weight.float().T / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    return logp, E.entropy(logits), E.s_star(logits, ids), E.expected_discriminator(logits)


def _loss(logp, h, coef):
    return (coef[0] * logp + coef[1] * h).sum()


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 12, 1024])  # N = 2 x 6 = 12 tokens
def test_token_stats_matches_direct_on_qwen2(chunk_size):
    model = _tiny_qwen2()
    input_ids = torch.randint(0, 300, (2, 7))
    temperature = 0.7
    coef = torch.randn(2, 2, 6)
    params = [p for p in model.parameters()]

    def run(chunked: bool):
        hidden = model.get_decoder()(input_ids=input_ids).last_hidden_state[:, :-1]
        weight, targets = model.get_output_embeddings().weight, input_ids[:, 1:]
        if chunked:
            st = E.token_stats(hidden, weight, targets, temperature, chunk_size)
            values = (st.logp, st.entropy, st.s_star, st.es)
        else:
            values = _direct_stats(hidden, weight, targets, temperature)
        grads = torch.autograd.grad(_loss(values[0], values[1], coef), params)
        return [v.detach() for v in values], grads

    (values, grads), (ref_values, ref_grads) = run(True), run(False)
    for v, r in zip(values, ref_values, strict=True):
        assert v.dtype == torch.float32 and v.shape == (2, 6)
        torch.testing.assert_close(v, r, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads, strict=True):  # float32 sums in another order: compare to the gradient's scale
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * r.abs().max().item())
    # logp is the model's own log-probability of the next token.
    own = torch.log_softmax(model(input_ids).logits[:, :-1].float() / temperature, -1)
    torch.testing.assert_close(values[0], own.gather(-1, input_ids[:, 1:, None]).squeeze(-1), rtol=1e-5, atol=1e-5)


def test_token_stats_bf16_hidden_and_autocast():
    torch.manual_seed(1)
    hidden = torch.randn(3, 5, 32).bfloat16().requires_grad_(True)
    weight = (torch.randn(300, 32) * 0.5).bfloat16().requires_grad_(True)
    ids = torch.randint(0, 300, (3, 5))
    coef = torch.randn(2, 3, 5)

    st = E.token_stats(hidden, weight, ids, temperature=1.3, chunk_size=4)
    grads = torch.autograd.grad(_loss(st.logp, st.entropy, coef), (hidden, weight))
    ref = _direct_stats(hidden, weight, ids, 1.3)
    ref_grads = torch.autograd.grad(_loss(ref[0], ref[1], coef), (hidden, weight))
    for v, r in zip((st.logp, st.entropy, st.s_star, st.es), ref, strict=True):
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, r, rtol=1e-5, atol=1e-6)
    for g, r, leaf in zip(grads, ref_grads, (hidden, weight), strict=True):
        assert g.dtype == torch.bfloat16 == leaf.dtype
        torch.testing.assert_close(g.float(), r.float(), rtol=2e-2, atol=1e-2)

    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's mixed precision
        st_ac = E.token_stats(hidden, weight, ids, temperature=1.3, chunk_size=4)
    assert st_ac.logp.dtype == torch.float32
    torch.testing.assert_close(st_ac.logp, st.logp, rtol=0, atol=0)


def test_token_stats_gradcheck_float64():
    torch.manual_seed(2)
    hidden = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5))

    def both(h, w):
        st = E.token_stats(h, w, ids, temperature=0.8, chunk_size=3)
        return st.logp, st.entropy

    assert torch.autograd.gradcheck(both, (hidden, weight))
    # Each output alone: the backward skips the term whose gradient is None.
    assert torch.autograd.gradcheck(lambda h, w: both(h, w)[0], (hidden, weight))
    assert torch.autograd.gradcheck(lambda h, w: both(h, w)[1], (hidden, weight))


def test_token_stats_detached_outputs_and_bad_arguments():
    hidden = torch.randn(1, 3, 4, requires_grad=True)
    weight = torch.randn(9, 4)
    st = E.token_stats(hidden, weight, torch.zeros(1, 3, dtype=torch.long))
    assert st.logp.requires_grad and st.entropy.requires_grad
    assert not st.s_star.requires_grad and not st.es.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        E.token_stats(hidden, weight, torch.zeros(1, 3, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="expects"):
        E.token_stats(hidden, weight, torch.zeros(1, 4, dtype=torch.long))


def test_token_stats_float32_accuracy_at_qwen_vocabulary():
    """At V = 151,936 the float32 statistics stay within 1e-5 (relative to the largest value) of
    a float64 computation: the row sums over the vocabulary must not accumulate sequentially."""
    g = torch.Generator().manual_seed(0)
    V, d, T = 151_936, 16, 6
    hidden = torch.randn(1, T, d, generator=g) * 3.0
    weight = torch.randn(V, d, generator=g)
    ids = torch.randint(0, V, (1, T), generator=g)
    got = E.token_stats(hidden, weight, ids, chunk_size=4)
    ref = E.token_stats(hidden.double(), weight.double(), ids, chunk_size=4)
    for name in ("logp", "entropy", "s_star", "es"):
        a, b = getattr(got, name).double(), getattr(ref, name)
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5, name


def test_entropy_probe_by_hand():
    predicted = torch.tensor([[1.0, -2.0, 0.0, 3.0], [-1.0, 2.0, 5.0, 0.0]])
    measured = torch.tensor([[0.5, 1.0, 1.0, 2.0], [-0.5, -1.0, 9.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    m = E.entropy_probe(predicted, measured, mask)
    # nonzero predictions in the mask: 1, -2, 3, -1, 2 -> signs agree for 1, 3, -1.
    assert set(m) == {"probe/sign_agreement", "probe/sign_agreement_top", "probe/corr"}
    assert m["probe/sign_agreement"] == pytest.approx(3 / 5)
    assert m["probe/sign_agreement_top"] == 1.0           # the largest |prediction|, 3, agrees
    # the top 60% (3 of 5) by |prediction| are 3, -2 and 2, of which only 3 agrees
    assert E.entropy_probe(predicted, measured, mask, top_frac=0.6)["probe/sign_agreement_top"] == (
        pytest.approx(1 / 3))
    p, q = predicted[mask].double(), measured[mask].double()
    assert m["probe/corr"] == pytest.approx(torch.corrcoef(torch.stack([p, q]))[0, 1].item())
    assert E.entropy_probe(2 * predicted, 3 * predicted + 1, mask, prefix="x/") == {
        "x/sign_agreement": 1.0, "x/sign_agreement_top": 1.0, "x/corr": pytest.approx(1.0)}
    empty = E.entropy_probe(predicted, measured, torch.zeros_like(mask))
    assert all(math.isnan(v) for v in empty.values())


def test_entropy_probe_on_independent_positions_matches_theorem2():
    # A "network" whose every position owns its logits: one GRPO gradient step (on-policy, ratio
    # 1) moves position t's logits by eta A_t (e_k - pi_t), exactly Theorem 2's update, so the
    # measured entropy change is eta times the prediction up to O(eta^2).
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(6, 5, 20, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    ids = torch.randint(0, 20, (6, 5), generator=g)
    adv = torch.randn(6, generator=g, dtype=torch.float64)
    logp = torch.log_softmax(z, -1).gather(-1, ids[..., None]).squeeze(-1)
    (grad,) = torch.autograd.grad(-(adv[:, None] * logp).sum(), z)
    eta = 1e-4
    with torch.no_grad():
        predicted = -adv[:, None] * (E.s_star(z, ids) - E.expected_discriminator(z))
        measured = E.entropy(z - eta * grad) - E.entropy(z)
    m = E.entropy_probe(predicted, measured, torch.ones(6, 5, dtype=torch.bool))
    assert m["probe/sign_agreement"] == 1.0 and m["probe/corr"] > 0.999

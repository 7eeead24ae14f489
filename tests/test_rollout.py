"""Tests for rollout.py with a tiny Qwen2ForCausalLM and a word-level tokenizer built here.

The scores are checked against a direct full-logit computation written out in this file
(model(...).logits / T -> log_softmax -> H, S*, E[S]) and against the raw logits that
model.generate itself reported, so they test rollout.py, not entropy.py's internals.
"""

import copy

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rollout import RolloutBatch, generate, response_mask_from_ids, response_stats, score

PAD, EOS = 0, 1
PROMPTS = ["w1 w2 w3 w4 w5", "w7", "w9 w10 w11"]   # different lengths: real left padding
ANSWERS = ["a", "b", "c"]
G = 4
MAX_NEW = 10


def make_tokenizer(pad_is_eos: bool = False) -> PreTrainedTokenizerFast:
    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(61)]   # 64 tokens
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<eos>" if pad_is_eos else "<pad>")


def make_model(eos_bias: float = 0.3, seed: int = 0) -> Qwen2ForCausalLM:
    """A random 2-layer Qwen2 whose EOS probability per step is raised to roughly 1/10: every
    token embedding gets a large constant in dimension 0, which survives the final RMSNorm as a
    near-constant feature, and the EOS row of lm_head reads it. So some responses stop mid-batch
    and some hit the length limit."""
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=EOS, pad_token_id=PAD, bos_token_id=None,
                         tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.lm_head.weight[EOS, 0] = eos_bias
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def batch(model, tokenizer):
    return generate(model, tokenizer, PROMPTS, ANSWERS, group_size=G, max_new_tokens=MAX_NEW,
                    micro_batch_size=5, seed=0)


def direct_logits(model, b: RolloutBatch) -> torch.Tensor:
    """(N, R, V) full logits at the positions that predict the response tokens."""
    ids = torch.cat([b.prompt_ids, b.response_ids], 1)
    mask = torch.cat([b.prompt_mask, b.response_mask], 1).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    p_len = b.prompt_ids.shape[1]
    return logits[:, p_len - 1:p_len - 1 + b.response_ids.shape[1]]


def direct_stats(model, b: RolloutBatch, temperature: float) -> dict[str, torch.Tensor]:
    """The paper's formulas written out on the full logits divided by T."""
    logp_all = torch.log_softmax(direct_logits(model, b).float() / temperature, -1)
    probs = logp_all.exp()
    h = -(probs * logp_all).sum(-1)
    logp = logp_all.gather(-1, b.response_ids[..., None]).squeeze(-1)
    return {"old_logp": logp, "entropy": h, "s_star": logp.exp() * (h + logp),
            "es": (probs * probs * (h[..., None] + logp_all)).sum(-1)}


def test_response_mask_from_ids_uses_positions():
    ids = torch.tensor([[5, 0, 7, 1, 0, 0],    # pad id 0 sampled mid-response stays in
                        [5, 6, 7, 8, 9, 4],    # no EOS: everything, and no EOS flag
                        [1, 0, 0, 0, 0, 0],    # EOS first
                        [5, 1, 1, 1, 1, 1],    # pad == eos: only the first EOS counts
                        [5, 6, 2, 3, 1, 0]])   # second EOS id 2 ends it
    mask, has_eos = response_mask_from_ids(ids, [1, 2])
    assert mask.sum(-1).tolist() == [4, 6, 1, 2, 3]
    assert has_eos.tolist() == [True, False, True, True, True]
    assert mask[0].tolist() == [True, True, True, True, False, False]


def test_generate_shapes_groups_and_padding(batch, tokenizer):
    n = len(PROMPTS) * G
    assert len(batch) == n and len(batch.texts) == n
    assert batch.prompt_ids.shape == batch.prompt_mask.shape == (n, 5)
    assert batch.response_ids.shape == batch.response_mask.shape
    assert batch.response_mask.dtype == torch.bool and batch.prompt_mask.dtype == torch.bool
    assert batch.group_size == G          # group g is rows g*G .. g*G+G-1
    assert batch.by_group(torch.arange(n)).tolist() == [list(range(g * G, g * G + G))
                                                        for g in range(len(PROMPTS))]
    assert batch.answers == [a for a in ANSWERS for _ in range(G)]
    # Left padding: row 4 (prompt "w7") is four pads then the prompt token.
    assert batch.prompt_mask[4].tolist() == [False] * 4 + [True]
    assert batch.prompt_ids[4].tolist() == [PAD] * 4 + tokenizer("w7")["input_ids"]
    assert batch.prompt_ids[8, 2:].tolist() == tokenizer(PROMPTS[2])["input_ids"]
    # Micro-batches of 5 rows have different lengths: padded to the longest, pad after EOS.
    lengths = batch.response_mask.sum(-1)
    assert batch.response_ids.shape[1] == int(lengths.max()) <= MAX_NEW
    assert (batch.response_ids[~batch.response_mask] == PAD).all()
    assert batch.response_mask.long().diff(dim=-1).le(0).all()   # contiguous from column 0
    assert all(t == tokenizer.decode(r[:k], skip_special_tokens=True)
               for t, r, k in zip(batch.texts, batch.response_ids, lengths.tolist(), strict=True))


def test_eos_in_mask_and_truncation(batch):
    lengths = batch.response_mask.sum(-1)
    r_len = batch.response_ids.shape[1]
    # This seed samples EOS mid-batch in some rows while others run to the limit.
    assert batch.truncated.any() and (~batch.truncated).any()
    assert (lengths[~batch.truncated] < r_len).any()
    for row, k, cut in zip(batch.response_ids, lengths.tolist(), batch.truncated.tolist(), strict=True):
        eos_at = (row[:k] == EOS).nonzero().flatten().tolist()
        if cut:   # no EOS within max_new_tokens: every generated token, and the full length
            assert k == MAX_NEW and eos_at == []
        else:     # the EOS is the last masked token and the only EOS in the response
            assert eos_at == [k - 1]


def test_pad_equal_to_eos_keeps_eos_in_mask(model):
    tok = make_tokenizer(pad_is_eos=True)
    b = generate(model, tok, PROMPTS, ANSWERS, group_size=G, max_new_tokens=MAX_NEW, seed=0)
    assert (b.prompt_ids[~b.prompt_mask] == EOS).all()
    lengths = b.response_mask.sum(-1)
    assert (~b.truncated).any()
    for row, k, cut in zip(b.response_ids, lengths.tolist(), b.truncated.tolist(), strict=True):
        if not cut:
            assert row[k - 1] == EOS and (row[:k - 1] != EOS).all()
            assert (row[k:] == EOS).all()


def test_seeded_generate_is_reproducible_and_leaves_global_rng(model, tokenizer):
    model.train()
    state = torch.get_rng_state()
    kwargs = dict(group_size=G, max_new_tokens=MAX_NEW, micro_batch_size=5)
    first = generate(model, tokenizer, PROMPTS, ANSWERS, seed=7, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training   # mode restored
    model.eval()
    again = generate(model, tokenizer, PROMPTS, ANSWERS, seed=7, **kwargs)
    other = generate(model, tokenizer, PROMPTS, ANSWERS, seed=8, **kwargs)
    assert torch.equal(first.response_ids, again.response_ids)
    assert torch.equal(first.response_mask, again.response_mask)
    assert first.texts == again.texts
    assert first.response_ids.shape != other.response_ids.shape or \
        not torch.equal(first.response_ids, other.response_ids)


def test_checkpoint_generation_config_does_not_change_sampling(model, tokenizer):
    """top_k / min_p / repetition penalty from generation_config.json would make the sampled
    distribution differ from softmax(z / T), which score and the loss assume."""
    kwargs = dict(group_size=G, max_new_tokens=MAX_NEW, micro_batch_size=5, seed=3)
    plain = generate(model, tokenizer, PROMPTS, ANSWERS, temperature=0.8, **kwargs)
    greedy = generate(model, tokenizer, PROMPTS, ANSWERS, temperature=0.0, **kwargs)
    saved = model.generation_config
    model.generation_config = copy.deepcopy(saved)
    model.generation_config.update(do_sample=False, temperature=0.3, top_k=1, min_p=0.5,
                                   typical_p=0.5, repetition_penalty=3.0, no_repeat_ngram_size=1)
    try:
        assert torch.equal(generate(model, tokenizer, PROMPTS, ANSWERS, temperature=0.8,
                                    **kwargs).response_ids, plain.response_ids)
        assert torch.equal(generate(model, tokenizer, PROMPTS, ANSWERS, temperature=0.0,
                                    **kwargs).response_ids, greedy.response_ids)
    finally:
        model.generation_config = saved


def test_generate_and_score_run_in_eval_mode_and_restore_it(model, tokenizer):
    modes = []
    hook = model.model.register_forward_hook(lambda mod, args, out: modes.append(mod.training))
    model.train()
    try:
        b = generate(model, tokenizer, PROMPTS[:1], ANSWERS[:1], group_size=2, max_new_tokens=3)
        score(model, b)
    finally:
        hook.remove()
    assert modes and not any(modes) and model.training
    model.eval()


@torch.no_grad()
def test_greedy_takes_argmax_of_the_scored_logits(model, tokenizer):
    b = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=MAX_NEW,
                 temperature=0.0, micro_batch_size=4)
    assert torch.equal(b.response_ids[0::2], b.response_ids[1::2])   # no sampling
    argmax = direct_logits(model, b).argmax(-1)
    assert torch.equal(argmax[b.response_mask], b.response_ids[b.response_mask])


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_score_equals_direct_full_logits(model, batch, temperature):
    model.train()
    stats = score(model, batch, temperature=temperature, micro_batch_size=5, chunk_size=7)
    assert model.training and batch.old_logp is None      # the batch is only read
    with torch.no_grad():
        expected = direct_stats(model.eval(), batch, temperature)
    mask = batch.response_mask
    scored = batch.with_stats(stats, torch.zeros(len(batch)), torch.zeros(len(batch)))
    for name, want in expected.items():
        got = getattr(scored, name)
        assert got.shape == mask.shape and got.dtype == torch.float32
        assert not got.requires_grad
        torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-4)
        assert (got[~mask] == 0).all()
    assert (stats.logp[mask] < 0).all() and (stats.entropy[mask] > 0).all()


@torch.no_grad()
def test_score_matches_the_logits_generate_sampled_from(model, tokenizer):
    """Positions and left padding as generate used them: compare with generate's raw logits."""
    b = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=1, max_new_tokens=MAX_NEW,
                 temperature=0.0)
    out = model.generate(input_ids=b.prompt_ids, attention_mask=b.prompt_mask.long(),
                         do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=PAD,
                         eos_token_id=EOS, output_logits=True, return_dict_in_generate=True)
    temperature = 0.8
    raw = torch.stack(out.logits, 1)[:, :b.response_ids.shape[1]]
    want = torch.log_softmax(raw / temperature, -1).gather(-1, b.response_ids[..., None])[..., 0]
    logp = score(model, b, temperature=temperature).logp
    torch.testing.assert_close(logp[b.response_mask], want[b.response_mask],
                               atol=1e-5, rtol=1e-4)


def test_response_stats_gradients_equal_direct_path(model, batch):
    model.eval()
    mask = batch.response_mask
    params = [model.lm_head.weight, model.model.layers[0].self_attn.q_proj.weight,
              model.model.embed_tokens.weight]

    def grads(logp, ent):
        model.zero_grad()
        ((logp * mask).sum() + 0.1 * (ent * mask).sum()).backward()
        return [p.grad.clone() for p in params]

    stats = response_stats(model, batch.prompt_ids, batch.prompt_mask, batch.response_ids, mask,
                           temperature=0.9, chunk_size=5)
    ours = grads(stats.logp, stats.entropy)
    direct = direct_stats(model, batch, 0.9)
    torch.testing.assert_close(stats.logp[mask], direct["old_logp"][mask].detach(), atol=1e-5,
                               rtol=1e-4)
    theirs = grads(direct["old_logp"], direct["entropy"])
    for a, b in zip(ours, theirs, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_select_trims_to_the_kept_rows(model, batch):
    batch = batch.with_stats(score(model, batch), torch.arange(len(batch), dtype=torch.float32), None)
    lengths = batch.response_mask.sum(-1)
    idx = torch.argsort(lengths)[:3]          # the three shortest responses
    sub = batch.select(idx)
    r = int(lengths[idx].max())
    assert len(sub) == 3 and sub.response_ids.shape == (3, r) and sub.old_logp.shape == (3, r)
    assert torch.equal(sub.response_ids, batch.response_ids[idx, :r])
    assert torch.equal(sub.s_star, batch.s_star[idx, :r])
    assert torch.equal(sub.rewards, batch.rewards[idx]) and sub.advantages is None
    assert sub.texts == [batch.texts[i] for i in idx.tolist()]
    assert sub.group_size == batch.group_size
    # Prompt side: all-pad columns dropped, real tokens kept.
    p = int(batch.prompt_mask[idx].sum(-1).max())
    assert torch.equal(sub.prompt_ids, batch.prompt_ids[idx, -p:])
    # Trimming changes no score: the sub-batch scores to the same values.
    again = score(model, sub.select(torch.arange(3)))
    torch.testing.assert_close(again.logp, sub.old_logp, atol=1e-5, rtol=1e-4)


def test_bad_arguments_raise_value_error(model, tokenizer):
    with pytest.raises(ValueError, match="answers"):
        generate(model, tokenizer, PROMPTS, ANSWERS[:1], group_size=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=4,
                 temperature=-1.0)
    with pytest.raises(ValueError, match="empty"):
        generate(model, tokenizer, [""], ["x"], group_size=2, max_new_tokens=4)


# ----- the sampler's own log-probs, and sampling from a bf16 copy -----

@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logp_equals_the_trainers_in_float32(model, tokenizer, temperature):
    b = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=G, max_new_tokens=MAX_NEW,
                 temperature=temperature, micro_batch_size=5, seed=1)
    mask = b.response_mask
    trainer = score(model, b, temperature=temperature).logp
    assert b.sampler_logp.shape == mask.shape and (b.sampler_logp[~mask] == 0).all()
    torch.testing.assert_close(b.sampler_logp[mask], trainer[mask], atol=1e-5, rtol=0)


def test_top_p_sampler_logp_is_of_the_truncated_distribution(model, tokenizer):
    b = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=G, max_new_tokens=MAX_NEW,
                 top_p=0.3, seed=2)
    mask = b.response_mask
    gap = (b.sampler_logp - score(model, b).logp)[mask]
    assert (gap > -1e-5).all() and gap.max() > 1e-3      # renormalised over the nucleus: likelier


def test_sampling_from_a_bf16_copy_uses_a_bf16_cache_and_gives_valid_batches(model, tokenizer):
    import policy
    sampler = policy.sampling_copy(model, torch.bfloat16)
    assert {p.dtype for p in sampler.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}      # masters untouched
    dtypes = []
    hook = sampler.model.layers[0].self_attn.k_proj.register_forward_hook(
        lambda mod, args, out: dtypes.append(out.dtype))                 # what the cache stores
    try:
        b = generate(sampler, tokenizer, PROMPTS, ANSWERS, group_size=G, max_new_tokens=MAX_NEW, seed=3)
    finally:
        hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    mask, has_eos = response_mask_from_ids(b.response_ids, [EOS])
    assert torch.equal(mask, b.response_mask) and torch.equal(b.truncated, ~has_eos)
    gap = (score(model, b).logp - b.sampler_logp)[b.response_mask].abs()
    assert 0 < gap.max() < 0.5                            # bf16 rounding: a real, small mismatch


# ----- the paged (continuous-batching) engine -----

def test_paged_engine_gives_the_same_greedy_tokens_and_valid_batches(model, tokenizer):
    a = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=MAX_NEW, temperature=0.0)
    b = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=MAX_NEW,
                 temperature=0.0, engine="paged")
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.truncated, b.truncated) and a.texts == b.texts
    s = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=MAX_NEW, seed=4,
                 engine="paged")
    mask, has_eos = response_mask_from_ids(s.response_ids, [EOS])
    assert torch.equal(mask, s.response_mask) and torch.equal(s.truncated, ~has_eos)
    torch.testing.assert_close(s.sampler_logp[mask], score(model, s).logp[mask], atol=1e-4, rtol=0)
    again = generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=MAX_NEW, seed=4,
                     engine="paged")
    assert torch.equal(again.response_ids, s.response_ids)          # seeded
    with pytest.raises(ValueError, match="unknown rollout engine"):
        generate(model, tokenizer, PROMPTS, ANSWERS, group_size=2, max_new_tokens=2, engine="vllm")

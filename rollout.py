"""Rollouts: from templated prompts to sampled and scored batches (the data of one GRPO step).

`generate` draws G responses per prompt with Hugging Face `model.generate`; `score` runs a
policy over them once more, without gradient, and returns per-token statistics of
pi_t = softmax(z_t / T), T the rollout temperature:
    logp_t = log pi_t(a_t),  H_t = -sum_i pi_i log pi_i,
    S*_t = pi_t(a_t) (H_t + logp_t)            (the entropy discriminator of the sampled token),
    ES_t = E_{i~pi_t}[S_i] = sum_i pi_i^2 (H_t + log pi_i)   (Theorem 2's baseline).
Clip-B / Clip-V (clipping.py) and the GRPO loss (grpo.py) consume them.

Layout: prompts left-padded, responses right-padded; the sequence is cat(prompt, response) with
attention_mask = cat(prompt_mask, response_mask) and position_ids = cumsum(mask) - 1 clamped at
0, which is what `generate` uses (GenerationMixin._prepare_position_ids_for_generation, then +1
per new token), so the scores are those of the distribution the tokens were sampled from. The
hidden state at position P-1+j predicts response token j.

Choices and why:
* The response mask is built from positions: every generated token up to and including the
  first EOS (any of the tokenizer's and generation config's EOS ids), nothing after. Comparing
  with pad_token_id instead would drop the EOS when pad == eos, and drop a pad token the model
  happened to sample mid-response. The EOS is a response token and is trained.
* Sampling is plain temperature / top-p: top_k, min_p, typical-p, repetition penalty and n-gram
  bans that a checkpoint's generation_config.json may set (Qwen2.5-Instruct sets top_k=20 and
  repetition_penalty=1.05) are switched off, because they would make the sampling distribution
  differ from the softmax(z / T) that `score` and the loss use. Temperature 0 means greedy.
* Seeding: `model.generate` takes no torch.Generator, so a seeded call runs inside
  torch.random.fork_rng with torch.manual_seed(seed); the CPU and model-device RNG states are
  restored afterwards, so a seeded rollout neither depends on nor disturbs the caller's RNG.
  The same seed and micro_batch_size give the same rollouts on the same hardware.
* Statistics come from the decoder's last hidden state and the output-embedding weight through
  entropy.token_stats, chunk by chunk, so the (N, R, V) logits are never built.
  This assumes logits = lm_head(hidden) with no bias or soft-capping, as in Qwen2 / Llama.
* Data flows one way: `generate` returns a batch, `score` returns statistics and never writes
  into the batch; the trainer builds the scored batch with `with_stats`.
* Tensors of a batch live on the model's device; micro-batches bound the memory of generate and
  score, and `select` trims mini-batches to their longest response.
"""

import contextlib
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

import distributed
from entropy import CHUNK_SIZE, TokenStats, token_stats

# Options that would move the distribution away from softmax(z / T), set to neutral values because
# model.generate fills every unset option from the checkpoint's generation_config.
_NEUTRAL_ALWAYS = dict(repetition_penalty=1.0, no_repeat_ngram_size=0)
_NEUTRAL_SAMPLING = dict(top_k=0, min_p=0.0, typical_p=1.0)   # min_p 0 keeps every token


@dataclass
class RolloutBatch:
    """N = (number of prompts) x group_size responses; group g is rows g*G .. g*G+G-1 (the one
    rule for the group structure: `by_group`)."""
    prompt_ids: Tensor       # (N, P) long, left-padded with pad_token_id
    prompt_mask: Tensor      # (N, P) bool
    response_ids: Tensor     # (N, R) long, right-padded with pad_token_id after EOS
    response_mask: Tensor    # (N, R) bool: generated tokens up to and including EOS
    truncated: Tensor        # (N,) bool: hit max_new_tokens without EOS
    texts: list[str]         # decoded responses (skip_special_tokens=True)
    answers: list[str]       # gold answer of each response's prompt
    group_size: int          # G, responses per prompt
    sampler_logp: Tensor | None = None  # (N, R) float32: log pi(a_t) as the sampler drew it
    rewards: Tensor | None = None       # (N,) float32
    advantages: Tensor | None = None    # (N,) float32
    old_logp: Tensor | None = None      # (N, R) float32: score(...).logp of the sampling policy
    entropy: Tensor | None = None       # (N, R)
    s_star: Tensor | None = None        # (N, R)
    es: Tensor | None = None            # (N, R)
    ref_logp: Tensor | None = None      # (N, R) float32: log pi_ref(a_t), with --kl-coef > 0
    keep: Tensor | None = None          # (N, R) bool: the tokens that train (the method's mask)
    penalised: Tensor | None = None     # (N, R) bool: KL-Cov's tokens priced |logp - old_logp|

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def by_group(self, values: Tensor) -> Tensor:
        """Per-response values (N, ...) -> (N / G, G, ...): one row per prompt."""
        return values.view(-1, self.group_size, *values.shape[1:])

    def with_stats(self, stats: TokenStats, rewards: Tensor, advantages: Tensor,
                   ref_logp: Tensor | None = None) -> "RolloutBatch":
        """A copy with rewards, advantages, the sampling policy's statistics (from `score`) and
        the reference policy's logp (N, R) when given."""
        return replace(self, rewards=rewards, advantages=advantages, old_logp=stats.logp,
                       entropy=stats.entropy, s_star=stats.s_star, es=stats.es, ref_logp=ref_logp)

    def with_mask(self, keep: Tensor, penalised: Tensor | None = None) -> "RolloutBatch":
        """A copy with the tokens that train, keep (N, R) bool, and KL-Cov's penalised tokens
        (N, R) bool when given (methods.METHODS)."""
        return replace(self, keep=keep, penalised=penalised)

    def metrics(self) -> dict[str, float]:
        """Rewards, statistics and lengths of a scored batch, means over response tokens."""
        valid = self.response_mask
        lengths = valid.sum(-1).float()
        return {
            "reward": self.rewards.mean().item(),
            "accuracy": (self.rewards > 0.5).float().mean().item(),
            "entropy": self.entropy[valid].mean().item(),
            "s_star": self.s_star[valid].mean().item(),
            "es": self.es[valid].mean().item(),
            "response_len": lengths.mean().item(),
            "response_len_max": int(lengths.max()),
            "truncated_frac": self.truncated.float().mean().item(),
            "zero_spread_frac": (self.by_group(self.rewards).std(-1) == 0).float().mean().item(),
        }

    def samples(self, step: int, prompt_indices: list[int], questions: list[str], k: int = 4) -> list[dict]:
        """The first response of the first k groups, for samples.jsonl (questions and
        prompt_indices: one per group)."""
        G = self.group_size
        return [{"step": step, "prompt_index": prompt_indices[g], "question": questions[g],
                 "answer": self.answers[g * G], "response": self.texts[g * G],
                 "reward": self.rewards[g * G].item(), "advantage": self.advantages[g * G].item(),
                 "truncated": bool(self.truncated[g * G])}
                for g in range(min(k, len(prompt_indices)))]

    def select(self, idx: Tensor) -> "RolloutBatch":
        """Rows idx (long indices or a bool mask) as a new batch, with the prompt side trimmed of
        all-pad columns and the response side trimmed to the longest kept response."""
        idx = torch.as_tensor(idx, device=self.prompt_ids.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().squeeze(-1)
        rows = idx.tolist()
        prompt_len = int(self.prompt_mask[idx].sum(-1).max()) if rows else 0
        response_len = int(self.response_mask[idx].sum(-1).max()) if rows else 0
        picked = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, int):
                picked[f.name] = value
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in rows]
            elif f.name.startswith("prompt_"):
                picked[f.name] = value[idx, value.shape[1] - prompt_len:]
            elif value.dim() == 2:       # every (N, R) tensor is on the response side
                picked[f.name] = value[idx, :response_len]
            else:
                picked[f.name] = value[idx]
        return RolloutBatch(**picked)


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the generation config's (an int or
    a list, e.g. Qwen2.5-Instruct stops on both <|im_end|> and <|endoftext|>)."""
    ids = [tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)]
    flat = []
    for i in ids:
        flat.extend(i if isinstance(i, (list, tuple)) else [i])
    eos = sorted({int(i) for i in flat if i is not None})
    if not eos:
        raise ValueError("Neither the tokenizer nor model.generation_config defines an EOS token; "
                         "set tokenizer.eos_token or model.generation_config.eos_token_id.")
    return eos


def response_mask_from_ids(response_ids: Tensor, eos_ids: list[int]) -> tuple[Tensor, Tensor]:
    """response_ids: (N, R) as generated. Returns (mask (N, R) bool, has_eos (N,) bool): mask is
    True up to and including the first EOS of each row, and on every column of a row without
    EOS. Built from positions, so it is right whether or not pad_token_id equals an EOS id."""
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    has_eos = is_eos.any(-1)
    length = response_ids.shape[1]
    first_eos = torch.where(has_eos, is_eos.long().argmax(-1), length - 1)   # argmax: first max
    positions = torch.arange(length, device=response_ids.device)
    return positions[None, :] <= first_eos[:, None], has_eos


def _pad_token_id(model, tokenizer, eos_ids: list[int]) -> int:
    """The tokenizer's pad id, else the generation config's, else the first EOS id (safe, since
    masks come from positions)."""
    for pad in (tokenizer.pad_token_id, getattr(model.generation_config, "pad_token_id", None)):
        if pad is not None:
            return int(pad)
    return eos_ids[0]


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Run the body with torch.manual_seed(seed), then restore the CPU and `device` RNG states.
    seed None: the caller's global RNG is used and advanced, as plain `generate` would."""
    accelerator = device.type not in ("cpu", "meta")
    with torch.random.fork_rng(devices=[device] if accelerator else [], enabled=seed is not None,
                               device_type=device.type if accelerator else None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


class _SamplerLogProbs(LogitsProcessor):
    """Records log pi_sampler(a_t) of every sampled token from the scores the sampler used (after
    temperature and top-p), with one (N, V) buffer: generate calls it once per step with the
    tokens so far, so each call gathers, from the log-softmax kept by the previous call, the
    token appended since; `finish` gathers the last one. Scores pass through unchanged."""

    def __init__(self):
        self.previous, self.values = None, []

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.previous is not None:
            self.values.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: Tensor) -> Tensor:
        """(N, steps) float32: the log-prob of each generated token (garbage after an EOS)."""
        self.values.append(self.previous.gather(1, last_tokens[:, None]).squeeze(1))
        return torch.stack(self.values, 1)


def _processors(temperature: float, top_p: float, recorder: _SamplerLogProbs) -> LogitsProcessorList:
    """Temperature and top-p as the sampler's own processors, then the recorder (generate puts
    processors passed to it before the ones it makes from its options)."""
    warpers = [] if temperature == 0 else [TemperatureLogitsWarper(float(temperature))]
    if temperature and top_p < 1:
        warpers.append(TopPLogitsWarper(float(top_p)))
    return LogitsProcessorList([*warpers, recorder])


def _pad_right(t: Tensor, length: int, value) -> Tensor:
    """(N, r) -> (N, length), filled with value on the right."""
    return torch.nn.functional.pad(t, (0, length - t.shape[1]), value=value)


ENGINES = ("generate", "paged")


def generate(model, tokenizer, prompts: list[str], answers: list[str], group_size: int,
             max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
             micro_batch_size: int = 64, seed: int | None = None,
             engine: str = "generate") -> RolloutBatch:
    """group_size sampled responses to each prompt (already templated, e.g. by data.format_prompt).

    Prompts are tokenized without added special tokens and left-padded; prompt i's responses are
    rows i*G .. i*G+G-1 (N = len(prompts) * G). temperature 0 is greedy decoding. The model runs
    in eval mode (its mode is restored). engine "generate": Hugging Face `model.generate` on
    micro_batch_size rows at a time, padded, every row running until the longest ends; "paged":
    transformers' continuous batching (`model.generate_batch`, paged attention), which schedules
    the N requests itself and retires each as it ends (micro_batch_size does not apply). Both
    seed from `seed`, so a seed gives the same rollouts twice, though not the same rollouts in
    both engines. Returns a RolloutBatch with prompt_ids / prompt_mask (N, P), response_ids /
    response_mask / sampler_logp (N, R) with R the longest response (<= max_new_tokens),
    truncated, texts, answers and group_size set; rewards and statistics come from `with_stats`.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"generate got {len(prompts)} prompts but {len(answers)} answers; "
                         "pass one gold answer per prompt.")
    if not prompts:
        raise ValueError("generate got no prompts; pass at least one.")
    for name, value in (("group_size", group_size), ("max_new_tokens", max_new_tokens),
                        ("micro_batch_size", micro_batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if engine not in ENGINES:
        raise ValueError(f"unknown rollout engine {engine!r}; use one of {', '.join(ENGINES)}.")

    device = model.device
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = _pad_token_id(model, tokenizer, eos_ids)
    # Left padding done here rather than by the tokenizer, which refuses to pad without a pad token.
    token_rows = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    if min(len(r) for r in token_rows) == 0:
        raise ValueError("A prompt is empty after tokenization; give every prompt some text.")
    width = max(len(r) for r in token_rows)
    prompt_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, r in enumerate(token_rows):
        prompt_ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        prompt_mask[i, width - len(r):] = True
    # Each prompt G times, contiguously: group g is rows g*G .. g*G+G-1.
    prompt_ids = prompt_ids.repeat_interleave(group_size, 0).to(device)
    prompt_mask = prompt_mask.repeat_interleave(group_size, 0).to(device)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if engine == "generate":
                pieces, logps = _generate_padded(model, prompt_ids, prompt_mask, max_new_tokens,
                                                 temperature, top_p, micro_batch_size, seed,
                                                 eos_ids, pad_id)
            else:
                rows = [r for r in token_rows for _ in range(group_size)]
                pieces, logps = _generate_paged(model, rows, max_new_tokens, temperature, top_p,
                                                seed, eos_ids, pad_id)
    finally:
        model.train(was_training)

    length = max(p.shape[1] for p in pieces)
    response_ids = torch.cat([_pad_right(p, length, pad_id) for p in pieces]).to(device)
    sampler_logp = torch.cat([_pad_right(p, length, 0.0) for p in logps]).to(device)
    # Rows are padded with pad_id after their EOS; the mask stops at that EOS.
    response_mask, has_eos = response_mask_from_ids(response_ids, eos_ids)
    lengths = response_mask.sum(-1).tolist()
    texts = tokenizer.batch_decode([row[:n].tolist() for row, n in zip(response_ids, lengths, strict=True)],
                                   skip_special_tokens=True)
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask,
        response_ids=response_ids, response_mask=response_mask,
        truncated=~has_eos, texts=texts,
        answers=[a for a in answers for _ in range(group_size)], group_size=group_size,
        sampler_logp=torch.where(response_mask, sampler_logp, 0.0),
    )


def _generate_padded(model, prompt_ids, prompt_mask, max_new_tokens, temperature, top_p,
                     micro_batch_size, seed, eos_ids, pad_id) -> tuple[list[Tensor], list[Tensor]]:
    """The "generate" engine: ([response ids (n, r)], [sampler log-probs (n, r)]) per micro-batch."""
    # A sharded model gathers its weights in every forward, a collective: every rank must run
    # as many decoding steps as the slowest (synced_gpus), or the ranks would wait on each other.
    options = dict(_NEUTRAL_ALWAYS, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                   eos_token_id=eos_ids, use_cache=True, synced_gpus=distributed.is_sharded(model))
    if temperature == 0:
        options.update(do_sample=False)
    else:   # temperature and top-p are our own processors, so the recorder runs after them
        options.update(_NEUTRAL_SAMPLING, do_sample=True, temperature=1.0, top_p=1.0)
    pieces, logps = [], []
    with _seeded(seed, prompt_ids.device):
        for start in range(0, len(prompt_ids), micro_batch_size):
            ids = prompt_ids[start:start + micro_batch_size]
            mask = prompt_mask[start:start + micro_batch_size]
            # Drop columns that are padding in every row of this micro-batch.
            first = ids.shape[1] - int(mask.sum(-1).max())
            recorder = _SamplerLogProbs()
            out = model.generate(input_ids=ids[:, first:], attention_mask=mask[:, first:].long(),
                                 logits_processor=_processors(temperature, top_p, recorder),
                                 **options)
            pieces.append(out[:, ids.shape[1] - first:])
            logps.append(recorder.finish(out[:, -1]))
    return pieces, logps


PAGE_SIZE = 64   # tokens per page of the paged engine's cache on a CPU (a GPU sizes it itself)


def _generate_paged(model, rows: list[list[int]], max_new_tokens, temperature, top_p, seed,
                    eos_ids, pad_id) -> tuple[list[Tensor], list[Tensor]]:
    """The "paged" engine: one (1, r) response and its sampler log-probs per request, in order.
    The engine reports the log-prob of each token under the distribution it sampled from."""
    if not hasattr(model, "generate_batch"):
        raise ValueError("--rollout-engine paged needs transformers' continuous batching "
                         "(model.generate_batch, transformers >= 5); upgrade transformers or use "
                         "--rollout-engine generate.")
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    sampling = dict(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0,
                    typical_p=1.0) if temperature else dict(do_sample=False)
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
                              pad_token_id=pad_id, **_NEUTRAL_ALWAYS, **sampling)
    sizes = {}
    if model.device.type == "cpu":   # the engine sizes its cache from free GPU memory otherwise
        pages = sum(-(-(len(r) + max_new_tokens) // PAGE_SIZE) for r in rows) + len(rows)
        sizes = dict(page_size=PAGE_SIZE, num_blocks=pages, max_batch_tokens=max(1024, max(map(len, rows))))
    engine = ContinuousBatchingConfig(return_logprobs=True, seed=seed, **sizes)
    try:
        outputs = model.generate_batch(inputs=rows, generation_config=config,
                                       continuous_batching_config=engine, warmup=False)
    except (NotImplementedError, ValueError, TypeError) as err:
        raise ValueError(f"--rollout-engine paged does not support this model ({err}); use "
                         f"--rollout-engine generate.") from None
    ordered = sorted(outputs.values(), key=lambda o: int(o.request_id.rsplit("_", 1)[-1]))
    pieces = [torch.tensor([o.generated_tokens], dtype=torch.long) for o in ordered]
    logps = [torch.tensor([o.logprobs], dtype=torch.float32) for o in ordered]
    return pieces, logps


def response_stats(model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor,
                   response_mask: Tensor, temperature: float = 1.0,
                   chunk_size: int = CHUNK_SIZE) -> TokenStats:
    """Per-response-token logp, H, S*, E[S] of softmax(logits / temperature), differentiable.

    prompt_ids / prompt_mask: (N, P) left-padded; response_ids / response_mask: (N, R)
    right-padded. One forward of the decoder (model.get_decoder(), no lm_head) over the whole
    sequence, then entropy.token_stats on the R hidden states that predict the response tokens,
    with the output-embedding weight, chunk_size tokens at a time. Returns (N, R) tensors;
    values at padding are meaningless (mask them). logp and entropy carry gradient.
    """
    input_ids = torch.cat([prompt_ids, response_ids], 1)
    attention_mask = torch.cat([prompt_mask, response_mask], 1).long()
    # Same positions as generate: the first real token is 0 whatever the left padding.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    start = prompt_ids.shape[1] - 1   # hidden at P-1+j predicts response token j
    args = (input_ids, attention_mask, position_ids, start, response_ids, temperature, chunk_size)
    return TokenStats(*distributed.as_forward(model, statistics, *args))


def statistics(model, input_ids, attention_mask, position_ids, start: int, response_ids,
               temperature: float, chunk_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The body of response_stats, as a tuple (logp, entropy, s_star, es). It reads the head's
    weight outside the model's forward, so under FSDP2 distributed.shard registers it as a
    forward method of the model (distributed.as_forward calls it so)."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=position_ids, use_cache=False).last_hidden_state
    hidden = hidden[:, start:start + response_ids.shape[1]]
    stats = token_stats(hidden, model.get_output_embeddings().weight, response_ids,
                        temperature, chunk_size)
    return stats.logp, stats.entropy, stats.s_star, stats.es


def score(model, batch: RolloutBatch, temperature: float = 1.0, micro_batch_size: int = 16,
          chunk_size: int = CHUNK_SIZE) -> TokenStats:
    """Per-token logp / entropy / s_star / es of the batch's responses under `model` at the
    rollout temperature: a TokenStats of (N, R) float32 tensors, zeros at padding. No gradient;
    micro_batch_size rows at a time with the model in eval mode (its mode is restored). The
    batch is only read.
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be at least 1, got {micro_batch_size}.")
    out = [torch.zeros(batch.response_ids.shape, dtype=torch.float32, device=batch.response_ids.device)
           for _ in range(4)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(batch), micro_batch_size):
                rows = slice(start, start + micro_batch_size)
                # Only as many response columns as this micro-batch's longest response.
                r = int(batch.response_mask[rows].sum(-1).max())
                if r == 0:
                    continue
                mask = batch.response_mask[rows, :r]
                stats = response_stats(model, batch.prompt_ids[rows], batch.prompt_mask[rows],
                                       batch.response_ids[rows, :r], mask, temperature, chunk_size)
                for buffer, value in zip(out, (stats.logp, stats.entropy, stats.s_star, stats.es), strict=True):
                    buffer[rows, :r] = torch.where(mask, value.float(), 0.0)
    finally:
        model.train(was_training)
    return TokenStats(*out)

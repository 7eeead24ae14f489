"""Benchmarks for a CUDA machine with no hub access, on Qwen2.5-shaped models with random weights
(called by `python bench.py --only gpu` and `--only engines`; docs/scaling.md, "Real models on one GPU", and
docs/benchmarks.md).

* `qwen25_shaped`: a Qwen2ForCausalLM of a Qwen2.5 size (memory.QWEN25_CONFIGS), random weights,
  optionally fewer layers (a CPU smoke test); `long_tailed_eos` makes its EOS likely enough that
  response lengths spread out as a real policy's do.
* `bench_engines`: generated tokens per second of both rollout engines side by side, on any
  model (bench.py's CPU rollout section uses it on the shipped model); `bench_engines_gpu` on a
  Qwen2.5 shape in bf16 with long-tailed lengths.
* `bench_gpu`: the one-GPU acceptance step: one full training step and a small evaluation with
  every response at the token budget, seconds per phase and peak GPU memory against memory.py.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent
VOCAB = 151_936   # Qwen2.5's vocabulary


def qwen25_shaped(name: str, layers: int | None = None):
    """A Qwen2.5-shaped Qwen2ForCausalLM with random weights (memory.QWEN25_CONFIGS)."""
    import memory
    from transformers import Qwen2Config, Qwen2ForCausalLM

    n_layers, hidden, heads, kv_heads, mlp, tied = memory.QWEN25_CONFIGS[name]
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers or n_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=mlp,
        tie_word_embeddings=tied))


@torch.no_grad()
def long_tailed_eos(model, eos_id: int, mean_tokens: float) -> float:
    """Random weights almost never sample the EOS (p ~ 1/V). Scale the EOS row of the output
    embedding by k so that, averaged over the hidden states of random text, p(EOS) per token is
    1 / mean_tokens. The EOS logit then varies strongly between contexts, so the hazard is
    uneven and the lengths that result must be measured (bench_engines reports them; on the
    0.5B shape a target of 256 gave a mean of about 650 with a budget of 1,024), but they
    spread out as a real policy's do instead of all reaching the budget. With tied embeddings this scales
    the EOS's input embedding too, so prompts must not contain the EOS. Returns k."""
    ids = torch.randint(0, model.config.vocab_size, (4, 128), device=model.device)
    ids[ids == eos_id] = 0                   # the EOS row is shared with the input embedding
    hidden = model.model(input_ids=ids).last_hidden_state.flatten(0, 1).float()      # (n, d)
    weight = model.get_output_embeddings().weight
    logits = hidden @ weight.float().T                                               # (n, V)
    eos_dot = logits[:, eos_id].clone()
    logits[:, eos_id] = -math.inf
    rest = torch.logsumexp(logits, -1)                                               # (n,)
    lo, hi = 0.0, 1e3
    for _ in range(60):                      # p(EOS) grows with k (for the hidden states that matter)
        k = (lo + hi) / 2
        p = torch.sigmoid(k * eos_dot - rest).mean().item()
        lo, hi = (k, hi) if p < 1 / mean_tokens else (lo, k)
    weight[eos_id] *= k
    return k


def bench_engines(model, tokenizer, batch_sizes: list[int], max_new_tokens: int,
                  template: bool = True) -> list[dict]:
    """Generated tokens per second of both rollout engines (`rollout.ENGINES`) on the same
    synthetic questions (in the chat template, or raw), at each batch size (rows generated
    together by "generate"; requests handed at once to "paged"), sampling at temperature 1; plus
    the spread of response lengths, which decides how much of padded generation is spent on
    finished rows."""
    import data
    import rollout

    examples = data.synthetic_examples("test", n=max(batch_sizes))
    prompts = [data.format_prompt(tokenizer, e.question) if template else e.question for e in examples]
    answers = [e.answer for e in examples]
    rows = []
    for engine in rollout.ENGINES:
        rollout.generate(model, tokenizer, prompts[:2], answers[:2], 1, 4, seed=0, engine=engine)   # warm-up
        for bs in batch_sizes:
            if model.device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            batch = rollout.generate(model, tokenizer, prompts[:bs], answers[:bs], 1, max_new_tokens,
                                     micro_batch_size=bs, seed=0, engine=engine)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            lengths = batch.response_mask.sum(-1).float()
            rows.append({"engine": engine, "batch_size": bs, "tokens": int(lengths.sum()),
                         "seconds": seconds, "tokens_per_s": float(lengths.sum()) / seconds,
                         "mean_len": float(lengths.mean()), "max_len": int(lengths.max()),
                         "truncated": int(batch.truncated.sum()),
                         "peak_gb": torch.cuda.max_memory_allocated() / 1e9
                         if model.device.type == "cuda" else math.nan})
            print(json.dumps(rows[-1]), flush=True)   # a long section shows each row as it ends
    for r in rows:
        base = next(b for b in rows if b["engine"] == "generate" and b["batch_size"] == r["batch_size"])
        r["ratio_vs_generate"] = r["tokens_per_s"] / base["tokens_per_s"]
    return rows


def bench_engines_gpu(name: str, batch_sizes: list[int], max_new_tokens: int, mean_tokens: float,
                      layers: int | None = None) -> list[dict]:
    """Both engines on a Qwen2.5-shaped model with random weights in bf16 (as rollouts sample on
    CUDA), the EOS made likely enough for long, variable-length responses (long_tailed_eos)."""
    import config
    import policy
    import rollout

    device = policy.pick_device("auto")
    _, tokenizer = policy.load_policy(config.parse_args([]).model, torch.device("cpu"))
    model = qwen25_shaped(name, layers).to(device)
    scale = long_tailed_eos(model, rollout.eos_token_ids(model, tokenizer)[0], mean_tokens)
    model = model.to(policy.compute_dtype("auto", device))
    rows = bench_engines(model, tokenizer, batch_sizes, max_new_tokens, template=False)
    for r in rows:
        r.update(model=name, device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 dtype=str(model.dtype).removeprefix("torch."), eos_scale=scale)
    return rows


def bench_gpu(names: list[str], max_new_tokens: int, prompts: int = 8, group: int = 8,
              layers: int | None = None) -> list[dict]:
    """One full training step (generate, score, update) and one small evaluation of
    Qwen2.5-shaped models with random weights and the EOS suppressed, so every response is
    max_new_tokens long: seconds per phase and peak device memory against memory.py. Meant for
    a CUDA machine without hub access; on a CPU it runs too (`layers` shrinks the models for a
    smoke test)."""
    import config
    import data
    import memory
    import policy
    import train

    device = policy.pick_device("auto")
    cfg = config.parse_args(["--prompts-per-step", str(prompts), "--group-size", str(group),
                             "--max-new-tokens", str(max_new_tokens), "--micro-batch-size", "4",
                             "--gen-batch-size", str(prompts * group), "--gradient-checkpointing",
                             "--eval-n", "4", "--eval-batch-size", str(prompts * group)])
    amp = policy.autocast(device, policy.compute_dtype(cfg.dtype, device))
    _, tokenizer = policy.load_policy(str(REPO / "tiny-qwen2"), torch.device("cpu"))
    examples = data.synthetic_examples("train", n=prompts)
    rows = []
    for name in names:
        model = qwen25_shaped(name, layers).to(device)
        model.generation_config.suppress_tokens = [tokenizer.eos_token_id]   # full-length responses
        policy.enable_checkpointing(model)
        optimizer, _ = train.make_optimizer(model, cfg)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        batch, metrics = train.rollout_step(model, tokenizer, examples, list(range(prompts)),
                                                    cfg, 1, amp)
        t1 = time.perf_counter()
        train.update_step(model, optimizer, batch, cfg, amp)
        t2 = time.perf_counter()
        train.run_evaluation(model, tokenizer, {"probe": examples[:prompts]}, cfg, amp, 1)
        t3 = time.perf_counter()
        params = sum(p.numel() for p in model.parameters())
        shape = memory.shape_of(model.config, params)
        estimate = memory.gpu_bytes(shape, gen_batch=cfg.gen_batch_size,
                                    seq_len=batch.prompt_ids.shape[1] + max_new_tokens,
                                    micro_batch=cfg.micro_batch_size, chunk=cfg.chunk_size,
                                    gradient_checkpointing=True, bf16=device.type == "cuda")
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else math.nan
        rows.append({"model": name, "layers": shape.layers, "device": str(device),
                     "response_tokens": int(batch.response_mask.sum()),
                     "generate_s": metrics["time_generate"], "score_s": metrics["time_score"],
                     "update_s": t2 - t1, "evaluate_s": t3 - t2, "step_s": t2 - t0,
                     "peak_gb": peak / 1e9, "estimate_gb": estimate["total"] / 1e9})
        del model, optimizer, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows

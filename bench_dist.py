"""How FSDP2-sharded ranks should sample their rollouts, measured side by side under torchrun
(docs/scaling.md, "Many GPUs").

    torchrun --nproc-per-node 2 bench_dist.py                       # the shipped model, CPU, gloo
    torchrun --nproc-per-node 2 bench_dist.py --model Qwen2.5-0.5B --layers 4 --tokens 32

Under torchrun the float32 masters are sharded (distributed.shard); each rank generates its own
prompts. Two ways to do that, timed here on the same prompts and seed:
  copy:     gather the weights once per step into an unsharded copy (policy.sampling_copy and
            policy.refresh) and generate from it, as train.py does;
  sharded:  generate through the sharded model (rollout.generate passes synced_gpus), which
            all-gathers every layer again in every forward, i.e. at every decoding step.
Both give the same tokens (checked: with float32 weights the forward is the same arithmetic).
The memory each holds and the bytes each all-gathers per training step, for the measured model
and for Qwen2.5-7B on 8 GPUs under `--preset paper --method clipb`, come from memory.py's
arithmetic (memory.sampling_bytes). Rank 0 prints one JSON line per row and writes
bench_dist.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import config
import data
import distributed
import memory
import policy
import rollout
from bench_gpu import long_tailed_eos, qwen25_shaped


def unit_params(model) -> tuple[int, int, int]:
    """(all parameters, the root unit's: embeddings, final norm, head; one decoder layer's)."""
    total = sum(p.numel() for p in model.parameters())
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    return total, total - layer * len(model.model.layers), layer


def paper_7b_row() -> dict:
    """memory.sampling_bytes for Qwen2.5-7B on 8 GPUs under --preset paper --method clipb."""
    cfg = config.parse_args(["--preset", "paper", "--method", "clipb"])
    with torch.device("meta"):
        model = qwen25_shaped("Qwen2.5-7B")
    world_size = 8
    rows = cfg.prompts_per_step * cfg.group_size // world_size
    forwards = math.ceil(rows / cfg.gen_batch_size) * cfg.max_new_tokens
    costs = memory.sampling_bytes(*unit_params(model), world_size, forwards)
    return {"model": "Qwen2.5-7B (arithmetic)", "world_size": world_size, "decode_forwards": forwards,
            **{f"{way}_{k}_gb": v / memory.GB for way, c in costs.items() for k, v in c.items()}}


def time_generation(model, sampler, tokenizer, prompts: list[str], answers: list[str],
                    tokens: int, world) -> dict:
    """Seconds of each way (the slowest rank's), whether both sampled the same tokens, and each
    rank's longest response (ranks that stop at different steps need synced_gpus)."""
    def timed(fn):
        distributed.barrier(world)
        t0 = time.perf_counter()
        out = fn()
        distributed.barrier(world)
        return out, time.perf_counter() - t0

    def sample(m):
        return rollout.generate(m, tokenizer, prompts, answers, 1, tokens, seed=world.rank,
                                micro_batch_size=len(prompts))

    _, refresh_s = timed(lambda: policy.refresh(sampler, model))
    from_copy, copy_s = timed(lambda: sample(sampler))
    from_shards, sharded_s = timed(lambda: sample(model))
    distributed.reshard(model)
    same = bool(torch.equal(from_copy.response_ids, from_shards.response_ids))
    return {"refresh_s": refresh_s, "copy_generate_s": copy_s, "sharded_generate_s": sharded_s,
            "copy_total_s": refresh_s + copy_s, "same_tokens": all(distributed.gather_objects(same, world)),
            "tokens_per_rank": int(from_copy.response_mask.sum()),
            "longest_per_rank": distributed.gather_objects(int(from_copy.response_mask.sum(-1).max()), world)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (the shipped model) or a Qwen2.5 "
                        "size of memory.QWEN25_CONFIGS, built with random weights")
    parser.add_argument("--layers", type=int, default=None, help="decoder layers of a Qwen2.5 shape")
    parser.add_argument("--eos-mean", type=float, default=None, help="the EOS made likely enough "
                        "for responses of about this many tokens (bench_gpu.long_tailed_eos), so that "
                        "ranks stop at different steps (default: as the model is; random weights "
                        "almost never end a response)")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per rank")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per response")
    parser.add_argument("--out", default="bench_dist.json")
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    world = distributed.init(device)
    model, tokenizer = policy.load_policy(config.parse_args([]).model, device)
    if args.model != "tiny":
        model = qwen25_shaped(args.model, args.layers)
    if args.eos_mean:
        long_tailed_eos(model, rollout.eos_token_ids(model, tokenizer)[0], args.eos_mean)
    counts = unit_params(model)
    sampler = policy.sampling_copy(model, torch.float32, always=True)
    distributed.shard(model)
    examples = data.synthetic_examples("test", n=args.prompts * world.size)[world.rank::world.size]
    prompts = [data.format_prompt(tokenizer, e.question) for e in examples]
    answers = [e.answer for e in examples]
    time_generation(model, sampler, tokenizer, prompts[:2], answers[:2], 2, world)   # warm-up
    measured = time_generation(model, sampler, tokenizer, prompts, answers, args.tokens, world)
    costs = memory.sampling_bytes(*counts, world.size, args.tokens)
    rows = [{"model": args.model if args.layers is None else f"{args.model}, {args.layers} layers",
             "world_size": world.size, "params": counts[0], "decode_forwards": args.tokens, **measured,
             "sharded_vs_copy": measured["sharded_generate_s"] / measured["copy_total_s"],
             **{f"{way}_{k}_gb": v / memory.GB for way, c in costs.items() for k, v in c.items()}},
            paper_7b_row()]
    if world.main:
        for row in rows:
            print(json.dumps(row))
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    distributed.close()
    return rows


if __name__ == "__main__":
    distributed.run(lambda: main() and 0)   # main returns the (two) rows; the status is 0

"""Speed and memory benchmarks, measured side by side in one run (docs/benchmarks.md).

    python bench.py                 # everything; prints a table of ratios, writes bench.json
    python bench.py --only stats    # one section: stats | step | rollout | memory
    python bench.py --only gpu      # on a CUDA machine: the one-GPU acceptance step
    python bench.py --only engines  # on a CUDA machine: both rollout engines, Qwen2.5-0.5B-shaped

1. Token statistics (logp, H, S*, E[S]; forward and backward through logp) at the Qwen2.5
   vocabulary (V = 151,936, hidden 896), T = 1,024 and 2,048 tokens: the chunked
   `entropy.token_stats` against the direct path that materialises the float32 (T, V) logits.
   A third variant, "logp only", is what a plain GRPO implementation computes (log_softmax and
   gather, no statistics): the chunked path's time against it is the whole price of having
   H, S* and E[S] for every token. Each variant runs in a fresh process, so its peak resident
   memory (ru_maxrss) is its own; "peak above fixed" subtracts what the process held after
   allocating the fixed inputs (weight, hidden states and their gradients).
2. One training step (score, mask, update) of the shipped model on one fixed rollout batch, for
   `--method grpo`, `clipb` and `clipv`. Every method computes the statistics (they are logged),
   so the difference is the cost of the masks.
3. Rollout throughput of both engines of `rollout.generate` ("generate": padded
   `model.generate`; "paged": continuous batching; bench_gpu.bench_engines) on the shipped
   model, generated tokens per second at two batch sizes. (--only engines, for a CUDA machine) the same on a
   Qwen2.5-0.5B-shaped model with random weights in bf16 whose EOS is tuned for long,
   variable-length responses.
4. The memory arithmetic of memory.py against a measurement: the peak resident memory of one
   update (gradient checkpointing, AdamW) of a Qwen2.5-0.5B-shaped model with random weights,
   float32 on the CPU, in a fresh process.
5. (--only gpu, for a CUDA machine; bench_gpu.bench_gpu) one full training step and a small
   evaluation of Qwen2.5-0.5B- and 1.5B-shaped models with random weights, the EOS suppressed so
   that every response reaches --gpu-tokens: seconds per phase and peak GPU memory against
   memory.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import bench_gpu
import entropy

REPO = Path(__file__).resolve().parent
VOCAB, HIDDEN = bench_gpu.VOCAB, 896


# ----------------------------------------------------------------------------- 1. token statistics

def _direct_stats(hidden, weight, ids, with_stats: bool):
    """The path that materialises float32 logits (T, V): logp with gradient, and (with_stats)
    H, S*, E[S] from the same log-softmax, without gradient, as token_stats returns them."""
    logp_all = torch.log_softmax(hidden.float() @ weight.float().T, dim=-1)
    logp = logp_all.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    if not with_stats:
        return (logp,)
    with torch.no_grad():
        p = logp_all.exp()
        h = -(p * logp_all).sum(-1)
        es = (p * p * (h.unsqueeze(-1) + logp_all)).sum(-1)   # E_{i~pi}[S_i]
        return logp, h, logp.exp() * (h + logp), es


def _max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: KiB


def stats_child(variant: str, tokens: int, repeats: int, dump: str) -> dict:
    """Runs in a fresh process: one variant at one length. Returns time, peak memory and the
    results (saved to `dump` for the parent's comparison)."""
    torch.manual_seed(0)
    weight = (torch.randn(VOCAB, HIDDEN) * 0.02).requires_grad_()
    hidden = (torch.randn(tokens, HIDDEN) * 2.0).requires_grad_()
    ids = torch.randint(0, VOCAB, (tokens,))
    g = torch.randn(tokens)                         # an arbitrary upstream gradient for logp
    weight.grad, hidden.grad = torch.zeros_like(weight), torch.zeros_like(hidden)
    fixed = _max_rss_gb()

    def once():
        weight.grad.zero_(), hidden.grad.zero_()
        if variant == "chunked":
            s = entropy.token_stats(hidden.unsqueeze(0), weight, ids.unsqueeze(0))
            out = (s.logp[0], s.entropy[0].detach(), s.s_star[0], s.es[0])
        else:
            out = _direct_stats(hidden, weight, ids, with_stats=variant == "direct")
        (out[0] * g).sum().backward()
        return out

    out = once()                                     # the first call sets the high-water mark
    peak = _max_rss_gb() - fixed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    rows = ids[:64]                                  # gradient rows that the targets touch
    torch.save({"out": [o.detach() for o in out], "grad_hidden": hidden.grad,
                "grad_weight_rows": weight.grad[rows]}, dump)
    return {"time_s": min(times), "peak_above_fixed_gb": peak, "fixed_gb": fixed}


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def bench_stats(lengths: list[int], repeats: int, workdir: Path) -> list[dict]:
    rows = []
    for tokens in lengths:
        res, dumps = {}, {}
        for variant in ("direct", "chunked", "logp-only"):
            dumps[variant] = workdir / f"stats-{variant}-{tokens}.pt"
            cmd = [sys.executable, __file__, "--child", variant, "--tokens", str(tokens),
                   "--repeats", str(repeats), "--dump", str(dumps[variant])]
            res[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                     text=True).stdout.strip().splitlines()[-1])
            print(f"  T={tokens} {variant}: {res[variant]}", flush=True)
        d, c = torch.load(dumps["direct"]), torch.load(dumps["chunked"])
        diff = max([_rel_diff(x, y) for x, y in zip(c["out"], d["out"], strict=True)]
                   + [_rel_diff(c["grad_hidden"], d["grad_hidden"]),
                      _rel_diff(c["grad_weight_rows"], d["grad_weight_rows"])])
        rows.append({
            "tokens": tokens,
            "direct_time_s": res["direct"]["time_s"], "chunked_time_s": res["chunked"]["time_s"],
            "logp_only_time_s": res["logp-only"]["time_s"],
            "direct_peak_gb": res["direct"]["peak_above_fixed_gb"],
            "chunked_peak_gb": res["chunked"]["peak_above_fixed_gb"],
            "time_ratio": res["chunked"]["time_s"] / res["direct"]["time_s"],
            "time_ratio_vs_logp_only": res["chunked"]["time_s"] / res["logp-only"]["time_s"],
            "memory_ratio": res["chunked"]["peak_above_fixed_gb"] / res["direct"]["peak_above_fixed_gb"],
            "max_rel_diff": diff,
        })
        for p in dumps.values():
            p.unlink()
    return rows


# ----------------------------------------------------------------------------- 2. one training step

def bench_step(repeats: int) -> list[dict]:
    """score + mask + update on one fixed rollout batch of the shipped model, per method.
    Every method starts from the same weights and optimiser state."""
    import copy

    import config
    import data
    import policy
    import rollout
    import train
    from methods import METHODS

    cfg = config.parse_args([])
    cpu = torch.device("cpu")
    model, tokenizer = policy.load_policy(cfg.model, cpu)
    amp = policy.autocast(cpu, torch.float32)
    examples, _ = data.load_run_sets(cfg)
    batch, _ = train.rollout_step(model, tokenizer, examples, list(range(cfg.prompts_per_step)),
                                  cfg, step=1, amp=amp)
    state = copy.deepcopy(model.state_dict())
    rows = []
    for method in ("grpo", "clipb", "clipv"):
        mcfg = config.parse_args(["--method", method])
        times = []
        for _ in range(repeats + 1):                 # the first repeat warms up
            model.load_state_dict(state)
            optimizer, _ = train.make_optimizer(model, mcfg)
            t0 = time.perf_counter()
            stats = rollout.score(model, batch, mcfg.temperature, mcfg.micro_batch_size,
                                  mcfg.chunk_size)
            scored = batch.with_stats(stats, batch.rewards, batch.advantages)
            keep, _ = METHODS[method].mask(scored, mcfg)
            train.update_step(model, optimizer, scored.with_mask(keep), mcfg, amp)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()                     # the mask alone, averaged over 100 calls
        for _ in range(100):
            METHODS[method].mask(scored, mcfg)
        mask_s = (time.perf_counter() - t0) / 100
        step_s = min(times[1:])
        rows.append({"method": method, "step_time_s": step_s, "mask_time_s": mask_s,
                     "mask_share": mask_s / step_s, "tokens": int(batch.response_mask.sum())})
    base = rows[0]["step_time_s"]
    for r in rows:
        r["ratio_vs_grpo"] = r["step_time_s"] / base
    return rows


# ----------------------------------------------------------------------------- 3. rollout engines

def bench_rollout(batch_sizes: list[int], max_new_tokens: int) -> list[dict]:
    """Both engines on the shipped model, float32 on the CPU (as the default run samples)."""
    import config
    import policy

    cfg = config.parse_args([])
    model, tokenizer = policy.load_policy(cfg.model, torch.device("cpu"))
    return bench_gpu.bench_engines(model, tokenizer, batch_sizes, max_new_tokens)


# ----------------------------------------------------------------------------- 4. memory arithmetic

def memory_child(tokens: int, micro_batch: int) -> dict:
    """Runs in a fresh process: one update (statistics, loss, backward with gradient
    checkpointing, AdamW step) of a Qwen2.5-0.5B-shaped model with random weights, float32 on
    the CPU; peak resident memory above the process before the model, against memory.py."""
    import memory
    import policy
    import rollout

    before = _max_rss_gb()
    model = bench_gpu.qwen25_shaped("Qwen2.5-0.5B")
    policy.enable_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ids = torch.randint(0, VOCAB, (micro_batch, tokens))
    mask = torch.ones_like(ids, dtype=torch.bool)
    t0 = time.perf_counter()
    stats = rollout.response_stats(model, ids[:, :1], mask[:, :1], ids[:, 1:], mask[:, 1:])
    stats.logp.sum().backward()
    optimizer.step()
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    shape = memory.shape_of(model.config, params)
    parts = memory.gpu_bytes(shape, gen_batch=0, seq_len=tokens, micro_batch=micro_batch,
                             chunk=entropy.CHUNK_SIZE, gradient_checkpointing=True, bf16=False)
    return {"params": params, "tokens": micro_batch * tokens, "seconds": seconds,
            "measured_gb": _max_rss_gb() - before, "arithmetic_gb": parts["total"] / 1e9,
            "states_gb": parts["weights, gradients, AdamW"] / 1e9}


def bench_memory(tokens: int, micro_batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "memory", "--tokens", str(tokens),
           "--micro-batch", str(micro_batch)]
    row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    row["ratio"] = row["measured_gb"] / row["arithmetic_gb"]
    return row


# ----------------------------------------------------------------------------- report

def print_tables(results: dict) -> None:
    if "stats" in results:
        print("\nToken statistics, V=151,936, d=896 (targets at T=2048: memory ratio <= 0.125, "
              "time ratio <= 1.4, diff <= 1e-5)")
        print(f"{'T':>6} {'direct s':>9} {'chunked s':>10} {'time ratio':>11} {'vs logp-only':>13} "
              f"{'direct GB':>10} {'chunked GB':>11} {'mem ratio':>10} {'max rel diff':>13}")
        for r in results["stats"]:
            print(f"{r['tokens']:>6} {r['direct_time_s']:>9.2f} {r['chunked_time_s']:>10.2f} "
                  f"{r['time_ratio']:>11.2f} {r['time_ratio_vs_logp_only']:>13.2f} "
                  f"{r['direct_peak_gb']:>10.2f} {r['chunked_peak_gb']:>11.2f} "
                  f"{r['memory_ratio']:>10.3f} {r['max_rel_diff']:>13.1e}")
    if "step" in results:
        print("\nOne training step of the shipped model (score + mask + update; target: the mask's "
              "share <= 5%)")
        for r in results["step"]:
            print(f"{r['method']:>6} step {r['step_time_s']:>7.3f} s  ratio vs grpo "
                  f"{r['ratio_vs_grpo']:.3f}  mask {r['mask_time_s'] * 1e3:.2f} ms = "
                  f"{100 * r['mask_share']:.2f}% of the step")
    if "memory" in results:
        r = results["memory"]
        print(f"\nMemory of one update of a Qwen2.5-0.5B-shaped model ({r['params']:,} parameters, "
              f"{r['tokens']} tokens, float32, CPU): measured {r['measured_gb']:.2f} GB, memory.py "
              f"{r['arithmetic_gb']:.2f} GB (of which weights, gradients, AdamW {r['states_gb']:.2f}), "
              f"ratio {r['ratio']:.2f}; {r['seconds']:.0f} s")
    if "gpu" in results:
        print("\nOne training step of Qwen2.5-shaped models with random weights, every response "
              "at the token budget (peak memory against memory.py)")
        for r in results["gpu"]:
            print(f"{r['model']} ({r['layers']} layers, {r['device']}): {r['response_tokens']} "
                  f"response tokens; generate {r['generate_s']:.1f} s, score {r['score_s']:.1f} s, "
                  f"update {r['update_s']:.1f} s, evaluate {r['evaluate_s']:.1f} s; peak "
                  f"{r['peak_gb']:.1f} GB, memory.py {r['estimate_gb']:.1f} GB")
    for key, title in (("rollout", "the shipped model, float32, CPU"),
                       ("engines", "a Qwen2.5-shaped model with random weights, long-tailed lengths")):
        if key not in results:
            continue
        print(f"\nRollout engines on {title}: generated tokens/s side by side")
        for r in results[key]:
            where = f" [{r['model']}, {r['dtype']}, {r['device']}]" if "model" in r else ""
            print(f"{r['engine']:>8} batch {r['batch_size']:>4}: {r['tokens_per_s']:>8.0f} tokens/s, "
                  f"ratio vs generate {r['ratio_vs_generate']:.2f} ({r['tokens']} tokens in "
                  f"{r['seconds']:.1f} s; length mean {r['mean_len']:.0f}, max {r['max_len']}, "
                  f"{r['truncated']} at the budget; peak {r['peak_gb']:.1f} GB){where}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", choices=["stats", "step", "rollout", "memory", "gpu", "engines"],
                        help="run one section (gpu, engines: for a CUDA machine, not in the default set)")
    parser.add_argument("--gpu-tokens", type=int, default=4096,
                        help="response budget of the gpu and engines sections")
    parser.add_argument("--gpu-models", nargs="+", default=["Qwen2.5-0.5B", "Qwen2.5-1.5B"],
                        help="models of the gpu section (engines: the first)")
    parser.add_argument("--engine-batch-sizes", type=int, nargs=2, default=[64, 256],
                        help="batch sizes of the engines section")
    parser.add_argument("--mean-tokens", type=float, default=1024,
                        help="engines section: mean response length the EOS is tuned to")
    parser.add_argument("--layers", type=int, help="shrink the gpu / engines models (a CPU smoke test)")
    parser.add_argument("--micro-batch", type=int, default=2, help="rows of the memory section's update")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048],
                        help="sequence lengths of the token-statistics section")
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats (the best counts)")
    parser.add_argument("--out", default="bench.json", help="JSON file of the results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "memory":
        print(json.dumps(memory_child(args.tokens[0], args.micro_batch)))
        return {}
    if args.child:
        print(json.dumps(stats_child(args.child, args.tokens[0], args.repeats, args.dump)))
        return {}
    results = {"machine": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                           "cuda": torch.cuda.is_available()}}
    sections = [args.only] if args.only else ["stats", "step", "rollout", "memory"]
    if "stats" in sections:
        results["stats"] = bench_stats(args.tokens, args.repeats, Path(args.out).resolve().parent)
    if "step" in sections:
        results["step"] = bench_step(args.repeats)
    if "rollout" in sections:
        results["rollout"] = bench_rollout([8, 64], max_new_tokens=64)
    if "gpu" in sections:
        results["gpu"] = bench_gpu.bench_gpu(args.gpu_models, args.gpu_tokens, layers=args.layers)
    if "engines" in sections:
        results["engines"] = bench_gpu.bench_engines_gpu(args.gpu_models[0], args.engine_batch_sizes,
                                               args.gpu_tokens, args.mean_tokens, args.layers)
    if "memory" in sections:
        results["memory"] = bench_memory(args.tokens[0] // 4, args.micro_batch)
    print_tables(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()

"""GRPO reinforcement fine-tuning with the entropy-discriminator masks Clip-B / Clip-V.

    python train.py --method clipv --mu 1.0                  # tiny-qwen2 on the synthetic task, CPU
    python train.py --preset paper --method clipb            # the authors' released configuration
    python train.py --out runs/x --resume                    # continue the latest checkpoint

One training step, in the order of the functions below:
  1. sample group_size responses to each of prompts_per_step prompts (data.PromptSampler,
     rollout.generate; in bf16 from policy.sampling_copy), seeded by (seed, step);
  2. grade them (rewards.batch_rewards);
  3. turn the rewards into group advantages A = (r - mean) / (std + 1e-6) (methods.advantages);
  4. score the responses under the policy's float32 weights (rollout.score): logp, H, S* and
     E[S] per token, S* = pi(a) (H + log pi(a)) the entropy discriminator; the gap to the
     sampler's own log-probs is logged (and corrected with --tis-cap);
  5. mask: the method's token mask (methods.METHODS): GRPO keeps every token; Clip-B / Clip-V
     drop the tokens whose update Theorem 2, dH ~ -alpha (S* - E[S]), says lowers entropy the
     most, with the statistics of the whole rollout batch;
  6. update: mini_batches optimiser steps on the clipped surrogate plus penalties (grpo.py), each
     over micro-batches whose losses are normalised by the counts of the whole mini-batch, so
     micro-batching never changes the gradient.
Then metrics, samples, evaluation (eval.evaluate) and checkpoints (lifecycle.py, checkpoint.py).

Flags: config.py; precision: policy.py. With mini_batches = 1 the update is on-policy (ratio 1).
--probe-every N compares each token's measured entropy change after the update with Theorem 2's
prediction (`probe`; first order for SGD on the logits, measured here for AdamW on weights)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from torch import Tensor
from tqdm import tqdm

import checkpoint
import data
import distributed
import entropy
import eval as evaluation
import grpo
import lifecycle
import memory
import methods
import policy
import rewards
import rollout
import runlock
from config import Config, flag_mistake, resolve_config, resume_changes
from distributed import World


# ----------------------------------------------------------------------------- steps 1-5

def sample(model, tokenizer, examples: list, indices: list[int], cfg: Config, step: int, amp,
           world: World = World()) -> rollout.RolloutBatch:
    """Step 1: group_size responses to each prompt examples[i], i in indices (under torchrun:
    this process's share of them), seeded by (seed, step)."""
    mine = distributed.my_prompts(indices, cfg.mini_batches, world)
    prompts = [data.format_prompt(tokenizer, examples[i].question, cfg.prompt_style) for i in mine]
    with amp, memory.phase("generating"):
        return rollout.generate(model, tokenizer, prompts, [examples[i].answer for i in mine],
                                cfg.group_size, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                cfg.gen_batch_size, seed=distributed.rank_seed(cfg.seed * 1_000_003 + step, world),
                                engine=cfg.rollout_engine)


def grade(batch: rollout.RolloutBatch, cfg: Config) -> Tensor:
    """Step 2: the rule-based reward of each response (rewards.batch_rewards). Returns (N,) float32."""
    scores = rewards.batch_rewards(batch.texts, batch.answers, style=data.reward_style(cfg.prompt_style),
                                   boxes=cfg.box_rule)
    return torch.tensor(scores, dtype=torch.float32, device=batch.response_ids.device)


def score(model, batch: rollout.RolloutBatch, reward: Tensor, advantages: Tensor, cfg: Config, amp,
          ref_model=None) -> rollout.RolloutBatch:
    """Step 4: logp, H, S* and E[S] per response token under the policy's float32 weights
    (rollout.score), and the reference model's logp when one is given (--kl-coef > 0).
    Args: batch of N responses, R response columns; reward, advantages: (N,) float32.
    Returns the batch with rewards, advantages, old_logp / entropy / s_star / es (N, R) float32
    (0 at padding) and ref_logp (N, R) float32 or None."""
    with amp, memory.phase("scoring"):
        stats = rollout.score(model, batch, cfg.temperature, cfg.micro_batch_size, cfg.chunk_size)
        ref_logp = None if ref_model is None else rollout.score(
            ref_model, batch, cfg.temperature, cfg.micro_batch_size, cfg.chunk_size).logp
    distributed.reshard(model)
    return batch.with_stats(stats, reward, advantages, ref_logp)


def mask(batch: rollout.RolloutBatch, cfg: Config) -> tuple[rollout.RolloutBatch, dict]:
    """Step 5: the method's keep mask over the whole batch (methods.METHODS), KL-Cov's penalised
    tokens, and the sampler-mismatch rejection on top. Returns (the batch with keep (N, R) bool
    and, for KL-Cov, penalised (N, R) bool; the masks' metrics)."""
    method = methods.METHODS[cfg.method]
    keep, metrics = method.mask(batch, cfg)
    penalised = None
    if method.penalty is not None:
        penalised, metrics = method.penalty(batch, cfg)
    if cfg.mismatch_reject != "none":
        inside, rejected = methods.reject_mismatch(batch, cfg)
        keep, metrics = keep & inside, {**metrics, **rejected}
    return batch.with_mask(keep, penalised), metrics


def rollout_step(model, tokenizer, examples: list, indices: list[int], cfg: Config, step: int,
                 amp, ref_model=None, sampler=None,
                 world: World = World()) -> tuple[rollout.RolloutBatch, dict]:
    """Steps 1-5 for the prompts examples[indices], sampled from `sampler` (the bf16 copy of
    policy.sampling_copy) when given, else from the model itself. Under torchrun each rank
    samples, grades and scores its groups and the batch is then assembled whole on every rank
    (distributed.gather_batch, before the masks), so the masks and metrics see the whole batch.

    Returns (the whole scored and masked batch: rewards, advantages, old_logp, entropy, s_star,
    es, keep; ref_logp (N, R) when --kl-coef > 0, penalised (N, R) bool for KL-Cov; metrics)."""
    t0 = time.perf_counter()
    batch = sample(sampler or model, tokenizer, examples, indices, cfg, step, amp, world)      # 1
    t1 = time.perf_counter()
    reward = grade(batch, cfg)                                                                 # 2
    advantages = methods.advantages(cfg, reward, batch.group_size)                             # 3
    batch = score(model, batch, reward, advantages, cfg, amp, ref_model)                       # 4
    batch = distributed.gather_batch(batch, cfg.mini_batches, world)   # one process: the batch itself
    t2 = time.perf_counter()
    batch, mask_metrics = mask(batch, cfg)                                                     # 5
    mismatch = grpo.sampler_mismatch(batch.old_logp, batch.sampler_logp, batch.response_mask)
    return batch, {**batch.metrics(), **mask_metrics, **mismatch, "time_generate": t1 - t0, "time_score": t2 - t1}


# ----------------------------------------------------------------------------- step 6

def token_loss(stats: entropy.TokenStats, mb: rollout.RolloutBatch, cfg: Config) -> Tensor:
    """The per-token loss of a micro-batch: the policy surrogate (--policy-loss) on the method's
    token advantages, importance-weighted against the sampler with --tis-cap, plus the penalties
    switched on. Returns (n, R) float32, n the micro-batch's rows."""
    adv = methods.token_advantages(stats, mb, cfg)   # (n,), or (n, R) for entropy-adv
    surrogate = grpo.policy_surrogate(cfg.policy_loss, stats.logp, mb.old_logp, adv, mb.response_mask,
                                      cfg.eps_low, cfg.eps_high, cfg.dual_clip)
    if cfg.tis_cap is not None:
        surrogate = surrogate * grpo.tis_weights(mb.old_logp, mb.sampler_logp, cfg.tis_cap)
    terms = grpo.penalty_terms(
        stats.logp, mb.old_logp, kl_coef=cfg.kl_coef, ref_logp=mb.ref_logp,
        kl_cov_coef=cfg.kl_cov_coef if mb.penalised is not None else 0.0, kl_cov_mask=mb.penalised,
        entropy_coef=cfg.entropy_coef, entropy=stats.entropy)
    return surrogate + sum(terms.values())


def update_step(model, optimizer, batch: rollout.RolloutBatch, cfg: Config, amp,
                world: World = World()) -> dict:
    """Step 6: cfg.mini_batches optimiser updates over contiguous slices of the (whole) batch.

    Each mini-batch is processed micro_batch_size rows at a time; every micro-batch loss is
    normalised by the kept-token (and sequence) count of its whole mini-batch, so the
    accumulated gradient equals that of one pass over the mini-batch. Under torchrun each rank
    processes its own rows of each mini-batch, and its loss is scaled by the world size because
    FSDP averages gradients over ranks (distributed.py). A non-finite loss or gradient norm
    skips that update (the gradient is discarded) and is reported.
    Returns metrics: loss, grad_norm (means over updates), grpo.loss_metrics (means over kept
    tokens), nonfinite (updates skipped)."""
    params = [p for p in model.parameters() if p.requires_grad]
    totals: dict[str, float] = {}
    weight, losses, norms, skipped = 0, [], [], 0
    model.train()
    for mini, mine in distributed.mini_batches(batch, cfg.mini_batches, world):   # whole, this rank's part
        keep = batch.keep[mini]
        # denominators over the whole mini-batch (every rank's rows), so the micro-batch losses add up to
        # its loss: kept tokens, responses with a kept token, the length budget (seq-mean-token-sum-norm);
        # at least 1, so a mini-batch whose every token was removed has loss 0, not 0 / 0
        counts = dict(num_tokens=max(int(keep.sum()), 1), num_seqs=max(int(keep.any(-1).sum()), 1),
                      max_len=cfg.max_new_tokens)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in mine.split(cfg.micro_batch_size):   # this rank's rows, the last slice may be shorter
            mb = batch.select(micro)       # its rows; every (N, R) field, keep included, cut to their longest response
            with amp:
                stats = rollout.response_stats(model, mb.prompt_ids, mb.prompt_mask, mb.response_ids,
                                               mb.response_mask, cfg.temperature, cfg.chunk_size)
            loss = grpo.aggregate(token_loss(stats, mb, cfg), mb.keep, cfg.loss_agg, **counts)
            distributed.backward(loss, world)
            loss_sum += loss.item()
            n = int(mb.keep.sum())
            m = grpo.loss_metrics(stats.logp, mb.old_logp, mb.advantages, mb.keep, cfg.eps_low,
                                  cfg.eps_high, cfg.dual_clip, mb.ref_logp)
            m.update(methods.loss_metrics(stats, mb, mb.keep, cfg))
            for k, v in m.items():   # weighted by kept tokens: means over the whole batch's kept tokens
                totals[k] = totals.get(k, 0.0) + v * n
            weight += n
        norm = distributed.global_grad_norm(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        loss_sum = distributed.sum_all({"loss": loss_sum}, world)["loss"]
        if math.isfinite(loss_sum) and torch.isfinite(norm):
            optimizer.step()
            losses.append(loss_sum)
            norms.append(norm.item())
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
    metrics = distributed.weighted_means(totals, weight, world)
    metrics.update(loss=float(np.mean(losses)) if losses else math.nan,
                   grad_norm=float(np.mean(norms)) if norms else math.nan, nonfinite=skipped)
    return metrics


def probe(model, batch, keep: Tensor, cfg: Config, amp, world: World = World()) -> dict[str, float]:
    """The entropy probe: score the step's batch again under the updated model and compare, token
    by token, the measured change of H_t with Theorem 2's prediction from the rollout policy
    (entropy.entropy_probe): over all response tokens ("probe/..."), and, when the method
    removed some, over the kept ("probe/kept/...") and removed ("probe/removed/...") ones."""
    mine = distributed.my_rows(batch, cfg.mini_batches, world)
    with amp, memory.phase("scoring"):
        after = rollout.score(model, mine, cfg.temperature, cfg.micro_batch_size, cfg.chunk_size)
    distributed.reshard(model)
    after_entropy = distributed.gather_rows(after.entropy, batch.group_size, cfg.mini_batches, world)
    predicted = entropy.predicted_entropy_change(batch.s_star, batch.es, batch.advantages)
    measured = after_entropy[:, :batch.entropy.shape[1]] - batch.entropy
    valid = batch.response_mask
    out = entropy.entropy_probe(predicted, measured, valid)
    kept, removed = valid & keep, valid & ~keep
    if kept.any() and removed.any():
        out.update(entropy.entropy_probe(predicted, measured, kept, "probe/kept/"))
        out.update(entropy.entropy_probe(predicted, measured, removed, "probe/removed/"))
    return out


# ----------------------------------------------------------------------------- evaluation

def run_evaluation(model, tokenizer, eval_sets: dict[str, list], cfg: Config, amp,
                   step: int, world: World = World()) -> dict[str, float]:
    """eval.evaluate on each set; its numbers as {"eval/<set>/<key>": value, "time_eval": s},
    and one printed line per set with its avg@n. Under torchrun each rank evaluates every
    world-size-th problem and the results are pooled (eval.merge)."""
    t0 = time.perf_counter()
    out = {}
    for name, examples in eval_sets.items():
        share, result = distributed.my_share(examples, world), None
        if share:
            with amp, memory.phase("evaluating"):
                result = evaluation.evaluate(
                    model, tokenizer, share, n=cfg.eval_n, temperature=cfg.eval_temperature,
                    top_p=cfg.eval_top_p, max_new_tokens=cfg.eval_max_new_tokens or cfg.max_new_tokens,
                    batch_size=cfg.eval_batch_size, seed=cfg.seed, prompt_style=cfg.prompt_style,
                    boxes=cfg.box_rule, engine=cfg.rollout_engine)
        result = distributed.pooled(result, world, lambda parts: evaluation.merge(parts, cfg.eval_n))
        out.update({f"eval/{name}/{k}": v for k, v in result.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
        avg = f"avg@{cfg.eval_n}"
        if world.main:
            tqdm.write(f"step {step}: {name} {avg} {result[avg]:.3f} over {len(examples)} problems "
                       f"(T={cfg.eval_temperature:g})")
    out["time_eval"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- the run

@dataclass
class Run:
    """Everything the loop needs, built by `setup`."""
    cfg: Config
    out: Path
    device: torch.device
    amp: object                 # the autocast context of forward passes
    model: object
    tokenizer: object
    ref_model: object | None    # frozen initial policy, only when --kl-coef > 0
    sampling_model: object | None   # bf16 copy rollouts are sampled from (policy.sampling_copy)
    optimizer: torch.optim.Optimizer
    scheduler: object
    sampler: data.PromptSampler
    examples: list
    eval_sets: dict[str, list]
    failures: lifecycle.Failures            # the skipped updates, counted
    entropy_control: methods.EntropyControl | None   # --adaptive-entropy's controller
    step: int                   # steps done
    world: World = World()      # this process among those torchrun started (distributed.py)


def make_optimizer(model, cfg: Config):
    """AdamW on the float32 weights; a linear warm-up to a constant rate, stepped once a step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = cfg.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


def setup(cfg: Config) -> Run:
    """Data, model, optimiser and run directory for a validated cfg; with --resume, the state of
    the latest checkpoint (weights, optimiser, scheduler, sampler, RNG) restored. Errors a user
    can cause raise ValueError."""
    out = Path(cfg.out)
    device = policy.pick_device(cfg.device)
    world = distributed.init(device)
    device = distributed.local_device(device, world)
    latest = distributed.on_main(lambda: checkpoint.prepare_run_folder(out, cfg.model, cfg.resume), world)
    examples, eval_sets = data.load_run_sets(cfg)
    data.check_context({cfg.dataset: examples, **eval_sets}, str(latest or cfg.model), cfg.prompt_style)
    saved = checkpoint.verify(latest) if latest is not None else None   # verified: not read again
    if saved is not None:    # the problems it trained on, before the model loads
        data.check_unchanged(examples, saved.get("data_sha256"), cfg.dataset)
    transformers.set_seed(cfg.seed)   # python, numpy and torch
    model, tokenizer = policy.load_policy(str(latest or cfg.model), device,
                                          gradient_checkpointing=cfg.gradient_checkpointing)
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model, _ = policy.load_policy(cfg.model, device)
        ref_model.requires_grad_(False).eval()
    dtype = policy.compute_dtype(cfg.dtype, device)
    sampling_model = policy.sampling_copy(model, dtype, always=world.size > 1)
    if world.size > 1:
        distributed.shard(model, dtype, (rollout.statistics,))
    optimizer, scheduler = make_optimizer(model, cfg)
    amp = policy.autocast(device, dtype if world.size == 1 else torch.float32)   # FSDP2 casts itself
    run = Run(cfg, out, device, amp, model, tokenizer, ref_model, sampling_model,
              optimizer, scheduler,
              data.PromptSampler(len(examples), cfg.seed), examples, eval_sets, lifecycle.Failures(),
              methods.EntropyControl(cfg.entropy_coef) if cfg.adaptive_entropy else None, 0, world)
    changed = {}    # flags this --resume changes (config.RESUME_MAY_CHANGE): {flag: [old, new]}
    if latest is not None:
        state = checkpoint.restore(latest, model, optimizer, scheduler, run.sampler, world, saved)
        run.failures = lifecycle.Failures.restore(state["counters"])
        run.entropy_control = methods.EntropyControl.restore(state["counters"], run.entropy_control)
        run.step = state["step"]
        changed = resume_changes(state["config"], cfg)
        if world.main:
            tqdm.write(f"resumed from {latest} at step {run.step}" + (f"; changed {changed}" if changed else ""))
    if world.main:
        tqdm.write(memory.plan(cfg, model.config, sum(p.numel() for p in model.parameters()),
                               eval_sets, model.native_dtype, world.size))
        record = {**dataclasses.asdict(cfg), "label": methods.label(cfg.method, cfg.mu),
                  "world_size": world.size, "resumes": checkpoint.record_resume(out, run.step, changed)}
        (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    return run


def train_step(run: Run, step: int) -> tuple[dict, rollout.RolloutBatch, list[int]]:
    """Steps 1-6 (rollout_step, update_step), then the step's metrics record, the entropy probe
    and the evaluation when they are due. Returns (metrics record, batch, prompt indices)."""
    cfg = run.cfg
    if run.entropy_control:   # the coefficient the controller set after the previous step
        cfg = methods.adaptive_entropy_config(run.entropy_control, cfg)
    t0 = time.perf_counter()
    indices = run.sampler.next(cfg.prompts_per_step)
    batch, metrics = rollout_step(run.model, run.tokenizer, run.examples, indices, cfg,
                                  step, run.amp, run.ref_model, run.sampling_model, run.world)
    t1 = time.perf_counter()
    lr = run.scheduler.get_last_lr()[0]
    with memory.phase("updating"):
        metrics.update(update_step(run.model, run.optimizer, batch, cfg, run.amp, run.world))
    if run.sampling_model is not None:
        policy.refresh(run.sampling_model, run.model)
    run.scheduler.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    if run.entropy_control:   # saved in trainer_state, so a resumed run continues it
        metrics.update(methods.adaptive_entropy_step(run.entropy_control, metrics["entropy"], cfg))
    run.failures.count(metrics["nonfinite"])
    record = {"step": step, "epoch": run.sampler.epoch, **metrics, "lr": lr,
              "time_update": t2 - t1, "time_step": t2 - t0,
              "tokens_per_s": int(batch.response_mask.sum()) / (t2 - t0),
              "nonfinite_total": run.failures.nonfinite_total, "prompts": indices}
    if cfg.probe_every and step % cfg.probe_every == 0:
        t3 = time.perf_counter()
        record.update(probe(run.model, batch, batch.keep, cfg, run.amp, run.world))
        record["time_probe"] = time.perf_counter() - t3
    if cfg.eval_every and run.eval_sets and (step % cfg.eval_every == 0 or step == cfg.steps):
        record.update(run_evaluation(run.sampling_model or run.model, run.tokenizer, run.eval_sets,
                                     cfg, run.amp, step, run.world))
    return record, batch, indices


def save(run: Run, step: int) -> Path:
    state = {"scheduler": run.scheduler.state_dict(),
             "sampler": run.sampler.state_dict(), "config": dataclasses.asdict(run.cfg),
             "counters": {**dataclasses.asdict(run.failures),
                          **(dataclasses.asdict(run.entropy_control) if run.entropy_control else {})},
             "native_dtype": str(run.model.native_dtype), "data_sha256": data.fingerprint(run.examples)}
    return checkpoint.save(run.out, step, run.model, run.tokenizer,
                           run.optimizer if run.cfg.save_optimizer else None, state,
                           run.cfg.keep_last, run.world)


def train(run: Run) -> int:
    """The loop from run.step to cfg.steps: each training step, its record and samples logged;
    checkpoints, signals and the failure guards in lifecycle.Loop. Returns the exit status."""
    cfg = run.cfg
    with lifecycle.Loop(cfg, run.out, run.world, run.step, lambda step: save(run, step),
                        run.device.type) as loop:
        if run.step == 0 and cfg.eval_every and run.eval_sets:   # the baseline the run improves on
            loop.log({"step": 0, **run_evaluation(run.sampling_model or run.model, run.tokenizer,
                                                  run.eval_sets, cfg, run.amp, 0, run.world)})
        for step in loop.steps():
            record, batch, indices = train_step(run, step)
            run.step = step
            loop.log(record)
            if step % cfg.sample_every == 0:
                loop.samples(step, batch.samples(step, indices, [run.examples[i].question for i in indices]))
            loop.end_step(step, record, run.failures.nonfinite_in_a_row)
        # a first Ctrl-C lets final/ be written (minutes on 7B), a second abandons it
        checkpoint.save_model(run.out / "final", run.model, run.tokenizer, run.model.native_dtype, run.world)
    return loop.status


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (2: a bad flag or input, with one
    line saying what to do)."""
    planned, mistake = distributed.planned(), None   # under torchrun: checked before the group starts
    if not planned.main:   # torchrun stops this rank once rank 0 has said a mistake: leave with its status
        signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(2 if flag_mistake(argv) else 128 + signum))
    try:
        cfg = resolve_config(argv)
        distributed.check_split(cfg.prompts_per_step, cfg.mini_batches, planned)
        missing = methods.unimplemented(cfg)
        if missing:
            raise ValueError(f"this run needs {', '.join(missing)} of the assignment, not implemented yet (their "
                             "functions raise NotImplementedError); python assignment/grade.py shows them.")
        if cfg.resume and checkpoint.finished(Path(cfg.out), cfg.steps):   # a re-queued job: no mistake
            if planned.main:
                print(f"{cfg.out} already finished its {cfg.steps} steps (final/ is written); nothing "
                      f"to do. Give --steps above {cfg.steps} to train it further.")
            return 0
        if cfg.dry_run:   # no weights: the configuration and a meta-device model
            if planned.main:   # under torchrun: per GPU, printed once
                print(memory.plan(cfg, *policy.describe(cfg.model), data.load_run_sets(cfg)[1],
                                  world_size=planned.size))
            return 0
        return train(setup(cfg))
    except ValueError as err:   # every rank finds it (rank 0's folder checks are broadcast): exit 2
        mistake = f"error: {err}"
        if planned.main:
            print(mistake, file=sys.stderr)
        return 2
    finally:
        runlock.release_run_folders()
        distributed.close()
        if mistake and not planned.main:   # said once, by rank 0; every rank exits 2
            distributed.leave_after_rank0(mistake, 2)
        elif mistake:
            distributed.hold_rank0(planned)


if __name__ == "__main__":
    distributed.run(main)

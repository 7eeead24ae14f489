"""One training step (steps 2-5: grade, score, mask, update) of the shipped model on a fixed
rollout batch, for several methods, in one process or under torchrun; writes what the step
computed so that tests/test_distributed.py can compare N processes with one:

    python tests/dist_equivalence.py OUT.pt                       # one process, the whole batch
    torchrun --nproc-per-node 2 tests/dist_equivalence.py OUT.pt  # each rank half of the groups
    ... OUT.pt --local-statistics      # the masks from each rank's own rows: must NOT match
    ... OUT.pt --die-on-rank 1         # rank 1 crashes; the others must not hang

The batch is generated once, identically on every rank, before any sharding; rollout.generate
is then replaced by a function that hands each rank its groups of it, so everything after
generation runs through train.rollout_step and train.update_step as in training. Nothing here
is part of training."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import config  # noqa: E402
import data  # noqa: E402
import distributed  # noqa: E402
import policy  # noqa: E402
import rollout  # noqa: E402
import train  # noqa: E402

CONFIGS = {   # name: flags; 8 prompts x 4 samples, 2 mini-batches, micro-batches of 3 rows.
              # float64 and SGD with lr 1, so that the parameter update is the gradient itself,
              # free of float32 cancellation (AdamW's first step is about lr * sign(g))
    "grpo": ["--method", "grpo"],
    "clipb": ["--method", "clipb", "--mu", "0.5"],
    "clipv": ["--method", "clipv", "--mu", "0.5"],
    "clipv-cap": ["--method", "clipv", "--mu", "0.05", "--clip-max-frac", "0.002"],
    "forking": ["--method", "forking"],
    "clip-cov": ["--method", "clip-cov", "--clip-cov-ratio", "0.02", "--clip-cov-lb", "-5"],
    "kl-cov": ["--method", "kl-cov", "--kl-cov-ratio", "0.02"],
    "entropy-up": ["--method", "entropy-up"],
    "seq-mean": ["--method", "clipb", "--mu", "0.5", "--loss-agg", "seq-mean-token-mean"],
    "untied": ["--method", "clipb", "--mu", "0.5"],   # its own output head, as Qwen2.5-7B
    # the peers' methods: group-wise pass@k advantages, GSPO's per-sequence ratio, entropy-shaped advantages
    # and their metrics, summed over ranks
    "peers": ["--method", "passk", "--pass-k", "2", "--policy-loss", "gspo", "--entropy-adv-alpha", "0.4",
              "--mismatch-reject", "token"],
}
UNTIED = {"untied"}
GENERATE = rollout.generate   # the real one: one_step replaces rollout.generate
COMMON = ["--prompts-per-step", "8", "--group-size", "4", "--mini-batches", "2",
          "--micro-batch-size", "3", "--temperature", "1.0"]


def fixed_batch(cfg, tokenizer, examples):
    """The whole rollout batch, the same on every rank: the shipped model, seeded."""
    model, _ = policy.load_policy(cfg.model, torch.device("cpu"))
    prompts = [data.format_prompt(tokenizer, e.question, cfg.prompt_style) for e in examples]
    return GENERATE(model, tokenizer, prompts, [e.answer for e in examples],
                            cfg.group_size, cfg.max_new_tokens, cfg.temperature, seed=123)


def untie(model) -> None:
    """Give the model an output head of its own (a copy of the embedding), as the 7B has."""
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())


def one_step(flags: list[str], world, whole, local_statistics: bool, untied: bool = False) -> dict:
    """The step for one configuration on `whole`, the fixed batch of every configuration."""
    cfg = config.parse_args(COMMON + flags)
    _, tokenizer = policy.load_policy(cfg.model, torch.device("cpu"))
    examples = data.synthetic_examples("train", n=cfg.prompts_per_step)
    mine = distributed.local_rows(cfg.prompts_per_step, cfg.group_size, cfg.mini_batches, world)
    rollout.generate = lambda *args, **kwargs: whole.select(mine)
    if local_statistics:   # the mistake the test must catch: statistics of this rank's rows only
        distributed.gather_batch = lambda batch, mini_batches, world: batch

    torch.manual_seed(0)
    model, _ = policy.load_policy(cfg.model, torch.device("cpu"), torch.float64)
    if untied:
        untie(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if world.size > 1:
        distributed.shard(model, methods=(rollout.statistics,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)   # the update is the gradient
    amp = policy.autocast(torch.device("cpu"), torch.float32)
    batch, metrics = train.rollout_step(model, tokenizer, examples, list(range(len(examples))),
                                                cfg, 1, amp, world=world)
    metrics.update(train.update_step(model, optimizer, batch, cfg, amp, world))
    after = distributed.full_state_dict(model, world) if world.size > 1 else model.state_dict()
    return {"keep": batch.keep, "penalised": batch.penalised,
            "metrics": {k: v for k, v in metrics.items() if not k.startswith("time_")},
            "update": None if after is None else {k: after[k] - before[k] for k in before}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--local-statistics", action="store_true")
    parser.add_argument("--die-on-rank", type=int, help="this rank exits at once (a crashed rank)")
    args = parser.parse_args()
    world = distributed.init(torch.device("cpu"))
    if args.die_on_rank == world.rank:
        sys.exit(f"rank {world.rank} dies on purpose")
    cfg = config.parse_args(COMMON)          # the flags that shape the batch are all in COMMON
    _, tokenizer = policy.load_policy(cfg.model, torch.device("cpu"))
    whole = fixed_batch(cfg, tokenizer, data.synthetic_examples("train", n=cfg.prompts_per_step))
    results = {name: one_step(CONFIGS[name], world, whole, args.local_statistics, name in UNTIED)
               for name in args.configs}
    if world.main:
        torch.save(results, args.out)
    return 0


if __name__ == "__main__":
    distributed.run(main)

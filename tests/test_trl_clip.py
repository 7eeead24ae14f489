"""Tests for trl_clip.py (TRL's GRPOTrainer with Clip-B / Clip-V) and trl_example.py, on the CPU
with the shipped tiny-qwen2 and the synthetic task: on a fixed batch the TRL path's S*, E[S]
and keep mask equal this repository's (rollout.score, then clipping.clip_b_mask /
clip_v_mask); short training runs with each mask, through TRL's own old-policy pass and through
the pass trl_clip makes itself, and with a LoRA adapter. Skipped when TRL is not installed."""

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("peft")

import clipping  # noqa: E402
import data  # noqa: E402
import rewards  # noqa: E402
import rollout  # noqa: E402
import trl_clip  # noqa: E402
import trl_example  # noqa: E402

SHIPPED = Path(trl_clip.__file__).resolve().parent / "tiny-qwen2"


def synthetic_dataset(tokenizer, n: int):
    from datasets import Dataset
    return Dataset.from_list([{"prompt": data.format_prompt(tokenizer, e.question), "answer": e.answer}
                              for e in data.synthetic_examples("train", n=n)])


def correct(completions, answer, **kwargs):
    return rewards.batch_rewards(completions, answer, style="boxed")


def make_trainer(tmp_path, **config):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED)
    args = trl_clip.ClipGRPOConfig(**{
        "output_dir": str(tmp_path / "trl"), "max_steps": 2, "per_device_train_batch_size": 8,
        "num_generations": 4, "max_completion_length": 24, "learning_rate": 1e-3, "logging_steps": 1,
        "save_strategy": "no", "report_to": "none", "use_cpu": True, "bf16": False, "seed": 0,
        **config})
    return trl_clip.ClipGRPOTrainer(model=str(SHIPPED), reward_funcs=correct, args=args,
                                    train_dataset=synthetic_dataset(tokenizer, 16),
                                    processing_class=tokenizer)


# ----- the mask on a fixed batch -----

def fixed_batch(model, tokenizer) -> tuple[rollout.RolloutBatch, torch.Tensor]:
    """Responses of this repository's sampler to prompts of different lengths (so the prompt
    side is left-padded), with advantages of both signs and zeros."""
    questions = [e.question for e in data.synthetic_examples("test", n=3)]
    questions[1] = questions[1] + " Think about it carefully before answering."
    prompts = [data.format_prompt(tokenizer, q) for q in questions]
    batch = rollout.generate(model, tokenizer, prompts, ["0"] * 3, group_size=4, max_new_tokens=16,
                             seed=1)
    advantages = torch.tensor([1.0, -1.0, -0.5, 0.5, 0.0, 0.0, -1.5, 1.5, -1.0, -1.0, 2.0, 0.0])
    return batch, advantages


def as_trl(batch: rollout.RolloutBatch, advantages: torch.Tensor) -> dict:
    """The batch as TRL's _generate_and_score_completions hands it to the loss."""
    return {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask.long(),
            "completion_ids": batch.response_ids, "completion_mask": batch.response_mask.long(),
            "advantages": advantages}


@pytest.mark.parametrize("method, mu, max_frac", [("clipv", 0.5, None), ("clipb", 0.5, None),
                                                  ("clipv", 0.5, 0.01)])
def test_the_trl_path_gives_this_repositorys_statistics_and_mask(tmp_path, trainer, method, mu, max_frac):
    trainer.args.method, trainer.args.mu, trainer.args.clip_max_frac = method, mu, max_frac
    model, tokenizer = trainer.model, trainer.processing_class
    batch, advantages = fixed_batch(model, tokenizer)
    out = trainer.mask_batch(as_trl(batch, advantages))
    ours = rollout.score(model, batch, trainer.temperature, micro_batch_size=4)
    valid = batch.response_mask
    theirs = trainer.statistics
    for name in ("s_star", "es", "entropy", "logp"):
        torch.testing.assert_close(theirs[name][valid], getattr(ours, name)[valid], rtol=1e-5, atol=2e-6)
    if method == "clipb":
        keep, metrics = clipping.clip_b_mask(ours.s_star, advantages, valid, mu, math.inf, max_frac)
    else:
        keep, metrics = clipping.clip_v_mask(ours.s_star, ours.es, advantages, valid, mu, math.inf, max_frac)
    assert torch.equal(theirs["keep"], keep) and torch.equal(out["tool_mask"].bool(), keep)
    assert 0 < int((valid & ~keep).sum()) and int(out["num_items_in_batch"]) == int(keep.sum())
    assert trainer._metrics["train"]["masked_frac"][-1] == metrics["masked_frac"]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return make_trainer(tmp_path_factory.mktemp("trl"), method="clipv")


class TwoProcesses:
    """accelerate's pad_across_processes and gather as process `index` of two sees them, the
    other process holding `other`: its tensors in the order keep_mask gathers them."""
    def __init__(self, index: int, other: list[torch.Tensor]):
        self.process_index, self.queue = index, list(other)

    def pad_across_processes(self, t, dim=1, pad_index=0):
        width = max(t.shape[1], self.queue[0].shape[1])
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad_index)

    def gather(self, t):
        other = self.queue.pop(0)
        if t.dim() == 2:
            other = torch.nn.functional.pad(other, (0, t.shape[1] - other.shape[1]))
        return torch.cat([t, other] if self.process_index == 0 else [other, t])


@pytest.mark.parametrize("method", ["clipb", "clipv"])
def test_each_process_gets_its_rows_of_the_whole_batch_mask(method):
    """Two processes whose rows have different widths: each one's mask is its rows of the mask
    of the whole batch, with the whole batch's statistics."""
    from types import SimpleNamespace
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([9, 3, 7, 5, 2, 4, 6, 3])
    valid = torch.arange(9)[None, :] < lengths[:, None]
    s_star, es = torch.randn(8, 9, generator=g) * 0.1, torch.randn(8, 9, generator=g) * 0.05
    advantages = torch.tensor([1.0, -1.0, 0.0, -2.0, 1.5, -0.5, 0.0, -1.0])
    keep, _ = (clipping.clip_b_mask(s_star, advantages, valid, 0.7) if method == "clipb" else
               clipping.clip_v_mask(s_star, es, advantages, valid, 0.7))
    assert not torch.equal(keep, valid)
    halves = [slice(0, 4), slice(4, 8)]
    local = [(s_star[h, :int(lengths[h].max())], es[h, :int(lengths[h].max())], advantages[h],
              valid[h, :int(lengths[h].max())]) for h in halves]
    args = SimpleNamespace(method=method, mu=0.7, mu_pos=math.inf, clip_max_frac=None)
    for index, (s, e, a, v) in enumerate(local):
        o = local[1 - index]
        fake = SimpleNamespace(accelerator=TwoProcesses(index, [o[0], o[1], o[3].float(), o[2]]), args=args)
        mine, metrics = trl_clip.ClipGRPOTrainer.keep_mask(fake, s, e, a, v)
        assert torch.equal(mine, keep[halves[index], :v.shape[1]])
        assert metrics["masked_frac"] == pytest.approx(int((valid & ~keep).sum()) / int(valid.sum()))


# ----- training runs -----

def test_clipb_reads_the_old_policy_pass_trl_makes(tmp_path):
    """Two micro-batches per generation: TRL scores the sampling policy itself (old log-probs),
    and the statistics come from that pass (its log-probs are TRL's), with no pass of our own."""
    trainer = make_trainer(tmp_path, method="clipb", mu=1.0, steps_per_generation=2,
                           per_device_train_batch_size=4)
    seen, own_passes = [], []
    real_mask, real_pass = trainer.mask_batch, trainer._policy_pass
    trainer.mask_batch = lambda batch, rows=None: seen.append((batch, rows)) or real_mask(batch, rows)
    trainer._policy_pass = lambda batch: own_passes.append(1) or real_pass(batch)
    trainer.train()
    assert own_passes == [] and len(seen) == 1
    batch, rows = seen[0]
    valid = batch["completion_mask"].bool()
    logp = torch.cat([r[0] for r in rows])
    torch.testing.assert_close(logp[valid], batch["old_per_token_logps"][valid], rtol=1e-5, atol=1e-5)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)   # one generation, two updates
    assert any("masked_frac" in log for log in trainer.state.log_history)


def test_the_example_trains_with_clipv_and_with_a_lora_adapter(tmp_path, capsys):
    flags = ["--steps", "2", "--prompts", "2", "--group-size", "4", "--max-new-tokens", "24"]
    assert trl_example.main([*flags, "--out", str(tmp_path / "full"), "--mu", "1.0"]) == 0
    assert "masked_frac" in capsys.readouterr().out
    assert (tmp_path / "full" / "model.safetensors").is_file()
    assert trl_example.main([*flags, "--out", str(tmp_path / "lora"), "--lora", "--method", "clipb"]) == 0
    assert "masked_frac" in capsys.readouterr().out
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()


def test_a_model_whose_logits_are_not_the_head_is_refused():
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(SHIPPED)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping"):
        trl_clip._check_head(model)
    with pytest.raises(ValueError, match="method must be one of"):
        trl_clip.ClipGRPOConfig(output_dir="unused", method="forking", use_cpu=True)

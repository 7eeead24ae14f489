"""Clip-B and Clip-V inside TRL's GRPOTrainer: the paper's masks for TRL users (docs/trl.md).

    from trl_clip import ClipGRPOConfig, ClipGRPOTrainer       # instead of GRPOConfig, GRPOTrainer
    args = ClipGRPOConfig(method="clipv", mu=8.5, ...)          # GRPOConfig's fields, plus the mask's
    trainer = ClipGRPOTrainer(model=..., reward_funcs=..., args=args, train_dataset=...)

What it adds to TRL (tested with TRL 1.16; requirements-dev.txt pins the tested range), and nothing
else: for each generation batch, before any of its loss is computed,

1. S*, E[S] and H per completion token under the policy that sampled it. They come from the
   forward pass TRL makes anyway when it computes the old policy's log-probs (a generation
   batch that feeds more than one optimizer step, or vLLM's importance-sampling correction): a
   hook on the decoder keeps that pass's last hidden states, and `entropy.token_stats` turns
   them into the statistics chunk by chunk with the output embedding, so the full float32
   logits are never built (TRL's fused head is chunked too, but yields no E[S]). When TRL makes
   no such pass (one on-policy update per generation batch, its default), one no-grad pass
   through TRL's own `_get_per_token_logps_and_entropies` supplies them: the statistics of the
   whole generation batch must be known before the first micro-batch's loss.
2. The Clip-B / Clip-V keep mask (`clipping.clip_b_mask` / `clipping.clip_v_mask`, the code
   train.py uses) with the statistics of the whole generation batch: under accelerate each
   process gathers every process's rows (padded to one width, as TRL's own entropy quantile
   gathers its entropies), computes the same mask and keeps its own rows.
3. The mask joins TRL's per-token loss mask (the "tool_mask" entry of the batch, which TRL
   multiplies into the completion mask of every loss type and metric), and the batch's token
   count `num_items_in_batch` is recounted: removed tokens leave the loss and its normaliser,
   as in train.py. TRL's loss, clipping, KL, entropy bonus, vLLM, PEFT / LoRA, DeepSpeed and
   loss types run unchanged.
4. The method's numbers in TRL's logs: masked_frac, masked_frac_pos, masked_frac_neg,
   clip_center, clip_sigma (as in metrics.jsonl), and s_star, es (means over the batch).

Evaluation batches (TRL's eval loss) are not masked. The statistics assume logits =
lm_head(hidden) / temperature with no bias, soft-capping or logit scale (Qwen2, Llama, ...),
and an lm_head without a LoRA adapter; other models are refused with one sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

try:
    from trl import GRPOConfig, GRPOTrainer
except ModuleNotFoundError:
    raise ModuleNotFoundError("trl_clip.py needs TRL, which is not installed: "
                              "pip install -r requirements-dev.txt") from None

import clipping
import entropy
from methods import METHODS

MASKS = ("grpo", "clipb", "clipv")   # grpo: TRL unchanged


@dataclass
class ClipGRPOConfig(GRPOConfig):
    """GRPOConfig plus the mask's settings, named as train.py's flags (config.Config)."""

    method: str = field(default="clipv", metadata={
        "help": "clipb / clipv: the paper's masks; grpo: TRL's GRPOTrainer unchanged.",
        "choices": list(MASKS)})
    mu: float | None = field(default=None, metadata={
        "help": "Threshold in sigmas (default: the method's released value, clipb 2.5, clipv 8.5); "
                "smaller removes more tokens."})
    mu_pos: float = field(default=math.inf, metadata={
        "help": "Upper-side threshold for A > 0 tokens (inf: off, as released)."})
    clip_max_frac: float | None = field(default=None, metadata={
        "help": "Cap on the A < 0 tokens a mask removes, as a fraction of the batch's tokens "
                "(the release: 1e-4 for clipv)."})
    chunk_size: int = field(default=entropy.CHUNK_SIZE, metadata={
        "help": "Tokens per chunk of the vocabulary-wide statistics (entropy.token_stats)."})

    def __post_init__(self):
        super().__post_init__()
        if self.method not in MASKS:
            raise ValueError(f"method must be one of {', '.join(MASKS)}, got {self.method!r}.")
        if self.mu is None:
            self.mu = METHODS[self.method].defaults.get("mu")
        checks = [(self.mu is None or self.mu > 0, f"mu must be positive, got {self.mu}."),
                  (self.mu_pos > 0, f"mu_pos must be positive (inf turns it off), got {self.mu_pos}."),
                  (self.clip_max_frac is None or 0 < self.clip_max_frac <= 1,
                   f"clip_max_frac must be in (0, 1], got {self.clip_max_frac}."),
                  (self.chunk_size >= 1, f"chunk_size must be at least 1, got {self.chunk_size}.")]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class ClipGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose generation batches carry the Clip-B / Clip-V mask of ClipGRPOConfig."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ClipGRPOConfig):
            raise TypeError("ClipGRPOTrainer needs its args as a ClipGRPOConfig (GRPOConfig's fields "
                            "plus method, mu, mu_pos, clip_max_frac).")
        self._capture = None            # while set: the statistics of the next policy pass go here
        self.statistics = {}            # of the last generation batch (mask_batch)
        if self.args.method != "grpo":
            _check_head(self._causal_lm())

    # ------------------------------------------------------------------ statistics

    def _causal_lm(self):
        """The Hugging Face causal LM inside the trainer's model (under PEFT, its base model)."""
        from accelerate.utils import is_peft_model
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if is_peft_model(model) else model

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           *args, **kwargs):
        """TRL's forward; when a capture is open and this is the policy's pass, the last hidden
        states of each of its chunks also give S*, E[S], H (and logp) per completion token."""
        if self._capture is None or self._capture["rows"] is not None or model is not self.model:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                              logits_to_keep, *args, **kwargs)
        lm = self._causal_lm()
        rows = self._capture["rows"] = []

        def on_hidden(module, hook_args, hook_kwargs, output):
            ids = hook_kwargs.get("input_ids", hook_args[0] if hook_args else None)
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            rows.append(completion_stats(lm, hidden, ids, logits_to_keep, self.temperature,
                                         self.args.chunk_size))

        hook = lm.base_model.register_forward_hook(on_hidden, with_kwargs=True)
        try:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                              logits_to_keep, *args, **kwargs)
        finally:
            hook.remove()

    def _policy_pass(self, batch: dict) -> list:
        """The no-grad pass TRL skips when its update is on-policy: TRL's own forward over the
        generation batch, as it computes old log-probs, with the capture open. Returns its rows."""
        from trl.models.utils import disable_gradient_checkpointing
        forward = {k: batch[k] for k in ("pixel_values", "image_grid_thw", "num_images", "num_tiles",
                                         "pixel_attention_mask", "spatial_shapes", "image_sizes",
                                         "token_type_ids", "mm_token_type_ids", "image_position_ids")
                   if k in batch}
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
        self._capture = {"rows": None}
        try:
            no_checkpointing = disable_gradient_checkpointing(self.model,
                                                              self.args.gradient_checkpointing_kwargs)
            with torch.no_grad(), no_checkpointing:
                self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, batch["completion_ids"].size(1),
                    batch_size=self.args.per_device_train_batch_size, **forward)
            return self._capture["rows"]
        finally:
            self._capture = None

    # ------------------------------------------------------------------ the mask

    def _generate_and_score_completions(self, inputs):
        if self.args.method == "grpo" or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._capture = {"rows": None}
        try:
            batch = super()._generate_and_score_completions(inputs)
            # TRL scored the sampling policy itself (old log-probs): that pass was captured first
            rows = self._capture["rows"] if "old_per_token_logps" in batch else None
        finally:
            self._capture = None
        return self.mask_batch(batch, rows)

    def mask_batch(self, batch: dict, rows: list | None = None) -> dict:
        """A generation batch of TRL (prompt_ids / prompt_mask left-padded, completion_ids /
        completion_mask right-padded, advantages; this process's rows) with the method's mask
        folded into its loss mask ("tool_mask") and its token count recounted. rows: the
        captured statistics of TRL's own pass of the sampling policy (None: one pass is made
        here). The statistics and the mask stay in `self.statistics` (logp, entropy, s_star, es,
        keep; (B, T)) until the next batch; the metrics go to TRL's logs."""
        if rows is None:
            rows = self._policy_pass(batch)
        logp, entropies, s_star, es = (torch.cat(parts) for parts in zip(*rows, strict=True))
        valid = batch["completion_mask"].bool()
        if "tool_mask" in batch:
            valid = valid & batch["tool_mask"].bool()
        keep, metrics = self.keep_mask(s_star, es, batch["advantages"], valid)
        batch["tool_mask"] = keep.to(batch["completion_mask"].dtype)   # valid and kept: the loss mask
        loss_mask = batch["completion_mask"] * batch["tool_mask"]
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self.statistics = {"logp": logp, "entropy": entropies, "s_star": s_star, "es": es, "keep": keep}
        for name, value in metrics.items():
            self._metrics["train"][name].append(value)
        return batch

    def keep_mask(self, s_star: torch.Tensor, es: torch.Tensor, advantages: torch.Tensor,
                  valid: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """This process's keep mask (B, T) bool, from the statistics of the whole generation batch:
        every process's rows gathered (widths padded, padding invalid), the mask of
        clipping.clip_b_mask / clip_v_mask computed on them, this process's rows returned; with
        the metrics (masked fractions, clip_center, clip_sigma, mean s_star and es)."""
        rows, width = valid.shape
        whole = [self.accelerator.gather(self.accelerator.pad_across_processes(t, dim=1, pad_index=0))
                 for t in (s_star, es, valid.to(s_star.dtype))]
        s_all, es_all, valid_all = whole[0].cpu(), whole[1].cpu(), whole[2].cpu().bool()
        adv_all = self.accelerator.gather(advantages.float()).cpu()
        args = self.args
        if args.method == "clipb":
            keep, metrics = clipping.clip_b_mask(s_all, adv_all, valid_all, args.mu, args.mu_pos,
                                                 args.clip_max_frac)
        else:
            keep, metrics = clipping.clip_v_mask(s_all, es_all, adv_all, valid_all, args.mu,
                                                 args.mu_pos, args.clip_max_frac)
        n = max(int(valid_all.sum()), 1)
        metrics.update(s_star=float(s_all[valid_all].double().sum()) / n,
                       es=float(es_all[valid_all].double().sum()) / n)
        start = self.accelerator.process_index * rows
        return keep[start:start + rows, :width].to(valid.device), metrics


def _check_head(lm) -> None:
    """Refuse, in one sentence, a model whose logits are not lm_head(hidden) with a plain weight."""
    head = lm.get_output_embeddings()
    text = lm.config.get_text_config()
    scaled = [name for name in ("final_logit_softcapping", "logit_scale", "output_multiplier",
                                "lm_head_multiplier", "logits_scaling")
              if getattr(text, name, None) not in (None, 1, 1.0)]
    if getattr(head, "bias", None) is not None or scaled or not hasattr(head, "weight") \
            or hasattr(head, "base_layer"):
        why = (f"its config sets {', '.join(scaled)}" if scaled else
               "its lm_head carries a LoRA adapter" if hasattr(head, "base_layer") else
               "its lm_head has a bias or no plain weight")
        raise ValueError(f"ClipGRPOTrainer computes S* and E[S] from lm_head(hidden) with a plain "
                         f"weight, and this model's logits are not that ({why}); use a model such "
                         f"as Qwen2 / Llama, and leave lm_head out of the adapter's target modules.")


@torch.no_grad()
def completion_stats(lm, hidden: torch.Tensor, input_ids: torch.Tensor, completion_len: int,
                     temperature: float, chunk_size: int = entropy.CHUNK_SIZE):
    """(logp, H, S*, E[S]) per completion token, each (B, completion_len) float32, from the
    decoder's last hidden states (B, L, d) of prompt + completion ids (B, L): the hidden state at
    L - completion_len - 1 + j predicts completion token j (entropy.token_stats, chunked). The
    head's weight is read whole (gathered under DeepSpeed ZeRO-3 or FSDP2, as TRL's head does)."""
    from trl.trainer.utils import maybe_gather_lm_head_ctx
    weight = lm.get_output_embeddings().weight
    start = hidden.shape[1] - completion_len - 1
    with maybe_gather_lm_head_ctx(weight):
        full = weight.full_tensor() if hasattr(weight, "full_tensor") else weight
        stats = entropy.token_stats(hidden[:, start:start + completion_len].detach(), full.detach(),
                                    input_ids[:, -completion_len:].to(hidden.device), temperature,
                                    chunk_size)
    return stats.logp, stats.entropy, stats.s_star, stats.es

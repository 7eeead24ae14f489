"""What a run costs in memory and disk, by arithmetic: the one place the numbers come from.

`train.py` prints the disk and the generation load of a run at start and, with --dry-run, the
memory estimate below without loading any weights; the tables of docs/scaling.md are this module's output.
Per GPU (world size W for the sharded states), in bytes:

    weights, gradients, AdamW m and v     16 x params / W      (float32 masters, always)
    bf16 weight copies                    4 x params           (with bf16: the copy rollouts are
                                          sampled from, policy.sampling_copy, and the bf16 copy
                                          of each weight autocast caches during a forward pass;
                                          2 x params for W > 1: FSDP2 gathers a layer at a time)
    KV cache of one generate call         layers x 2 x kv_heads x head_dim x kv_bytes
                                          x gen_batch x (prompt + max_new_tokens)
    statistics' chunk buffers             3 x chunk x vocab x 4 (two (C, V) float32 buffers,
                                          one transient logits matmul output)
    activations of one micro-batch        with --gradient-checkpointing: layers x tokens x
                                          hidden x 2 bytes (the saved layer inputs, bf16) plus one
                                          layer's recompute, ~ 20 x tokens x hidden x 2 bytes;
                                          without: ~ 20 x layers x tokens x hidden x 2 bytes

kv_bytes is 2 with bf16 (sampling from the bf16 copy builds a bf16 cache) and 4 in float32.
The activation terms are rough (the factor 20 covers attention, MLP and norms of a Qwen2 layer
in bf16); they are an estimate to size --micro-batch-size, not a guarantee. When the device runs
out of memory anyway, `phase` names the phase and `oom_advice` the flags that bound it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

GB = 1e9
ADAM_TRAINING_BYTES = 16     # float32 weight + gradient + two AdamW moments per parameter
ACTIVATION_FACTOR = 20       # bytes per token x hidden of one Qwen2 layer's activations, bf16 ~ x2
PROMPT_TOKENS = 256          # a typical math prompt with its chat template, for the estimate


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs to know about a model."""
    params: int
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int


# Qwen2.5 Instruct sizes: (layers, hidden, attention heads, KV heads, MLP size, tied embeddings)
# as in their config.json; tests/test_memory.py counts the parameters of each on the meta device.
QWEN25_CONFIGS = {
    "Qwen2.5-0.5B": (24, 896, 14, 2, 4864, True),
    "Qwen2.5-1.5B": (28, 1536, 12, 2, 8960, True),
    "Qwen2.5-3B": (36, 2048, 16, 2, 11008, True),
    "Qwen2.5-7B": (28, 3584, 28, 4, 18944, False),
}
QWEN25 = {
    "Qwen2.5-0.5B": Shape(494_032_768, 24, 896, 2, 64, 151_936),
    "Qwen2.5-1.5B": Shape(1_543_714_304, 28, 1536, 2, 128, 151_936),
    "Qwen2.5-3B": Shape(3_085_938_688, 36, 2048, 2, 128, 151_936),
    "Qwen2.5-7B": Shape(7_614_699_008, 28, 3584, 4, 128, 151_936),
}


def shape_of(config, params: int) -> Shape:
    """The Shape of a Hugging Face config with `params` parameters."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return Shape(params, config.num_hidden_layers, config.hidden_size, kv_heads, head_dim,
                 config.vocab_size)


def gpu_bytes(shape: Shape, *, world_size: int = 1, gen_batch: int, seq_len: int,
              micro_batch: int, chunk: int, gradient_checkpointing: bool,
              bf16: bool = True) -> dict[str, float]:
    """Bytes per GPU of each part (module docstring); seq_len = prompt + max_new_tokens.
    Activations are bf16 under bf16 autocast, float32 otherwise."""
    tokens = micro_batch * seq_len
    act = kv_bytes = 2 if bf16 else 4
    if gradient_checkpointing:
        activations = shape.layers * tokens * shape.hidden * act + ACTIVATION_FACTOR * tokens * shape.hidden * act
    else:
        activations = ACTIVATION_FACTOR * shape.layers * tokens * shape.hidden * act
    parts = {
        "weights, gradients, AdamW": ADAM_TRAINING_BYTES * shape.params / world_size,
        # one process: autocast's cast of the weights + the sampling copy; under FSDP2 the bf16
        # all-gather holds one layer at a time, so only the sampling copy (distributed.py)
        "bf16 weight copies": (4 if world_size == 1 else 2) * shape.params if bf16 else 0,
        "KV cache": shape.layers * 2 * shape.kv_heads * shape.head_dim * kv_bytes * gen_batch * seq_len,
        "statistics' chunks": 3 * chunk * shape.vocab * 4,
        "activations": activations,
    }
    parts["total"] = sum(parts.values())
    return parts


def sampling_bytes(params: int, root_params: int, layer_params: int, world_size: int,
                   decode_forwards: int) -> dict[str, dict[str, float]]:
    """Per GPU, the two ways FSDP2-sharded ranks can sample their rollouts (docs/scaling.md, "Many GPUs"),
    in bf16: "copy" gathers the weights once per step into an unsharded copy and generates from
    it (policy.sampling_copy, what train.py does); "sharded" generates through the sharded model,
    which gathers the root (embeddings, head) and a layer at a time, the next one prefetched, in
    every forward, i.e. once per decoding step (decode_forwards per training step).
    Returns {way: {"held": bytes whole at once, "received": bytes all-gathered per step}}."""
    gather = 2 * params * (world_size - 1) / world_size
    whole_layers = min(2, round((params - root_params) / layer_params))
    return {"copy": {"held": 2 * params, "received": gather},
            "sharded": {"held": 2 * (root_params + whole_layers * layer_params),
                        "received": gather * decode_forwards}}


def disk_bytes(params: int, *, keep_last: int, native_bytes: int = 4,
               save_optimizer: bool = True) -> dict[str, float]:
    """Disk of a run: one checkpoint (float32 weights, AdamW moments unless save_optimizer is
    False), final/ in the model's own dtype, and the most a run holds at once: keep_last
    checkpoints, one more being written, and final/."""
    one = params * (4 + (8 if save_optimizer else 0))
    final = params * native_bytes
    return {"checkpoint": one, "final": final, "run": (keep_last + 1) * one + final}


def table(parts: dict[str, float]) -> str:
    """One line, GB with one decimal: 'weights, gradients, AdamW 8.0 GB, KV cache ... total 9.1 GB'."""
    return ", ".join(f"{name} {value / GB:.1f} GB" for name, value in parts.items())


def plan(cfg, model_config, params: int, eval_sets: dict, native_dtype=None,
         world_size: int = 1) -> str:
    """What a run will do, in three lines: what one step and one evaluation generate, its disk,
    and (an estimate) its memory per GPU. cfg: config.Config, read only; model_config: the
    model's Hugging Face config; eval_sets: {name: problems}; native_dtype: the dtype final/ is
    saved in (default: the config's); world_size: processes (each generates its share)."""
    shape = shape_of(model_config, params)
    native = native_dtype or getattr(model_config, "dtype", None)
    native_bytes = torch.finfo(native).bits // 8 if isinstance(native, torch.dtype) else 4
    eval_problems = sum(len(problems) for problems in eval_sets.values())
    eval_line = (f"an evaluation {eval_problems * cfg.eval_n} sequences of up to "
                 f"{cfg.eval_max_new_tokens or cfg.max_new_tokens}, every {cfg.eval_every} steps"
                 if eval_problems else "no evaluation")
    disk = disk_bytes(shape.params, keep_last=cfg.keep_last, native_bytes=native_bytes,
                      save_optimizer=cfg.save_optimizer)
    local_rows = cfg.prompts_per_step * cfg.group_size // world_size   # each process generates its share
    parts = gpu_bytes(shape, world_size=world_size,   # a batch of fewer rows than asked is that batch
                      gen_batch=min(cfg.gen_batch_size, local_rows),
                      seq_len=cfg.max_new_tokens + PROMPT_TOKENS,
                      micro_batch=min(cfg.micro_batch_size, local_rows), chunk=cfg.chunk_size,
                      gradient_checkpointing=cfg.gradient_checkpointing,
                      bf16=cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and torch.cuda.is_available()))
    eval_tokens = eval_problems * cfg.eval_n * (cfg.eval_max_new_tokens or cfg.max_new_tokens)
    train_tokens = cfg.eval_every * cfg.prompts_per_step * cfg.group_size * cfg.max_new_tokens
    warning = (f"\nwarning: each evaluation generates up to {eval_tokens:,} tokens, more than the "
               f"{train_tokens:,} of the {cfg.eval_every} training steps between evaluations; "
               f"lower --eval-limit, --eval-n or raise --eval-every"
               if cfg.eval_every and eval_tokens > train_tokens else "")
    return (f"plan: a step generates {cfg.prompts_per_step * cfg.group_size} sequences of up to "
            f"{cfg.max_new_tokens} tokens, {eval_line}\n"
            f"disk: a checkpoint {disk['checkpoint'] / GB:.2f} GB, final/ {disk['final'] / GB:.2f} GB, "
            f"the run at most {disk['run'] / GB:.2f} GB (--keep-last {cfg.keep_last}, one more "
            f"being written, final/)\nmemory per device, estimated (memory.py; prompts of "
            f"{PROMPT_TOKENS} tokens): {table(parts)}{warning}")


# ----------------------------------------------------------------------------- out of memory

PHASE_FLAGS = {   # the flags that bound each phase's memory, named by an out-of-memory error
    "generating": ("gen_batch_size", "max_new_tokens", "group_size"),
    "scoring": ("micro_batch_size", "chunk_size"),
    "updating": ("micro_batch_size", "chunk_size", "gradient_checkpointing"),
    "evaluating": ("eval_batch_size", "eval_max_new_tokens", "eval_limit"),
}


class OutOfMemory(Exception):
    """A device out-of-memory error, with the phase it happened in (PHASE_FLAGS)."""
    def __init__(self, phase: str):
        super().__init__(phase)
        self.phase = phase


@contextlib.contextmanager
def phase(name: str):
    try:
        yield
    except torch.OutOfMemoryError:
        raise OutOfMemory(name) from None


def oom_advice(cfg, name: str) -> str:
    """'lower --gen-batch-size (64), --max-new-tokens (48) ...' for the phase's flags."""
    shown = {"eval_max_new_tokens": cfg.eval_max_new_tokens or cfg.max_new_tokens,
             "eval_limit": cfg.eval_limit or "all"}
    flags = [f"--{f.replace('_', '-')} ({shown.get(f, getattr(cfg, f))})" for f in PHASE_FLAGS[name]
             if not isinstance(getattr(cfg, f), bool)]
    add = [f"add --{f.replace('_', '-')}" for f in PHASE_FLAGS[name] if getattr(cfg, f) is False]
    return "lower " + ", ".join(flags) + "".join(f", or {a}" for a in add)

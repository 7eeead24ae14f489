"""The policy: a Hugging Face causal LM and its tokenizer, on one device, in one precision rule.

train.py and eval.py load models here, so both follow the same rule:
* device "auto": CUDA, then Apple MPS, then the CPU;
* compute dtype "auto": bfloat16 on CUDA, float32 elsewhere (CPU bf16 matmuls are slow and
  imprecise). The trainer keeps float32 master weights and AdamW state and runs its forward
  passes under autocast to the compute dtype: weights held in bf16 silently drop updates at the
  paper's lr 1e-6 (bf16 keeps 8 bits of mantissa, so w + 1e-6 == w for any |w| > ~3e-4).
  Evaluation only reads the weights, so it loads them in the compute dtype directly.
* dropout off: every policy is loaded without it, so a strictly on-policy update sees exactly
  the log-probs its rollouts were scored with (ratio 1).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

DTYPES = ("auto", "bfloat16", "float16", "float32")


def pick_device(name: str = "auto") -> torch.device:
    """"auto": cuda, then mps, then cpu; any other name as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype forward passes run in: "auto" is bfloat16 on CUDA, float32 elsewhere."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    if name == "auto":
        name = "bfloat16" if device.type == "cuda" else "float32"
    return getattr(torch, name)


def autocast(device: torch.device, dtype: torch.dtype):
    """The context forward passes of the float32 master weights run in (off for float32)."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def is_run_folder(path: Path) -> bool:
    """A training run's folder (train.py's --out: checkpoints, final/ or metrics.jsonl) rather
    than a model folder: its config.json, if any, is the run's configuration, with no model_type
    (a Hugging Face Trainer's output folder holds a model beside its checkpoints: not a run's)."""
    if not (any(path.glob("checkpoint-*")) or (path / "final").is_dir() or (path / "metrics.jsonl").is_file()):
        return False
    try:
        return "model_type" not in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):   # none, unreadable, not JSON or not an object
        return True


def check_model_folder(model: str) -> None:
    """A local --model must be a Hugging Face model folder; say what it is instead (a run folder,
    a folder without config.json). Hub ids (not local folders) pass. train.py, its --dry-run and
    eval.py call it before anything slow."""
    path = Path(model)
    if not path.is_dir():
        return
    if is_run_folder(path):
        raise ValueError(f"{path} is a run folder, not a model: pass its final/ (or one of its "
                         f"checkpoint-N/ folders) as the model.")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json, so it is not a Hugging Face model folder; pass "
                         f"a folder written by save_pretrained (e.g. a run's final/) or a hub id.")


def load_policy(path: str, device: torch.device, dtype: torch.dtype = torch.float32,
                gradient_checkpointing: bool = False):
    """(model, tokenizer) from a local folder or a hub id, weights in `dtype` on `device`,
    whatever dtype was saved, dropout off (`without_dropout`); model.native_dtype is the dtype it
    was saved in (final/ goes back to it). Anything that keeps it from loading (not a model
    folder, damaged weights, an unreachable hub) raises ValueError saying what to do."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer   # ~2 s; --help needs none of it
    local = Path(path).is_dir()
    check_model_folder(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        native = config.dtype
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, config=without_dropout(config))
    except OSError as err:
        if local:
            raise ValueError(f"could not load the model in {path} ({err}); its files are "
                             f"incomplete or damaged: save it again, or use another checkpoint.") from None
        raise ValueError(f"could not load the model {path!r}: it is not a local model folder and "
                         f"could not be fetched from the Hugging Face hub ({err}). Pass a local "
                         f"folder (--model), or check the id and your network.") from None
    except Exception as err:   # safetensors' own error for a truncated file, a bad config value
        if not local:
            raise
        raise ValueError(f"could not load the model in {path} ({type(err).__name__}: {err}); its "
                         f"files are incomplete or damaged: save it again, or use another "
                         f"checkpoint.") from None
    model.native_dtype = native if isinstance(native, torch.dtype) else torch.float32
    for module in model.modules():   # rates fixed in code rather than read from the config
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.to(device)
    if gradient_checkpointing:
        enable_checkpointing(model)
    return model, tokenizer


def without_dropout(config):
    """`config` with every dropout rate 0 (attention_dropout, attn_pdrop, resid_pdrop, embd_pdrop,
    hidden_dropout, layerdrop, ...), as RL fine-tuning frameworks do (TRL's disable_dropout): the update
    runs in train mode (gradient checkpointing needs it), and with dropout on, a strictly
    on-policy step would not see the log-probs it was scored with (ratio != 1) and its gradient
    would be noisy. Attention's functional dropout reads these rates, so nn.Dropout alone is not
    enough. final/ is saved with this config: the rates the policy was trained with."""
    for name, value in vars(config).items():
        if "drop" in name and isinstance(value, float):   # OPT's layerdrop skips whole layers
            setattr(config, name, 0.0)
    return config


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing, non-reentrant: `activation_checkpointing_enable` where
    transformers has it (it deprecates the old name), `gradient_checkpointing_enable` before
    (transformers 5.17, for one, has only the old name)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def sampling_copy(model, dtype: torch.dtype, always: bool = False):
    """The policy in `dtype` to sample from, or None for float32 (sample from the masters)
    unless `always` (several processes sample from an unsharded copy: distributed.py).

    Sampling from a bf16 copy gives a bf16 KV cache (under autocast, generate builds it from the
    float32 weights in float32: twice the memory) and costs 2 bytes per parameter, what
    autocast's own weight cache costs during a forward pass. Made without a float32 duplicate:
    the parameters are cast one by one and the rest of the module deep-copied around them;
    tied weights stay tied. Keep it current with `refresh` after every optimiser step."""
    if dtype == torch.float32 and not always:
        return None
    memo = {id(p): torch.nn.Parameter(p.detach().to(dtype, copy=True), requires_grad=False)
            for p in model.parameters()}
    return copy.deepcopy(model, memo).eval()


@torch.no_grad()
def refresh(sampler, model) -> None:
    """Copy the master weights into the sampling copy (cast to its dtype), in place. Sharded
    (FSDP2) masters are gathered one parameter at a time: every rank must call it."""
    for theirs, ours in zip(sampler.parameters(), model.parameters(), strict=True):
        theirs.copy_(ours.full_tensor() if hasattr(ours, "full_tensor") else ours)


def describe(path: str):
    """(config, parameter count) of a model without loading its weights (built on the meta
    device). Raises ValueError like load_policy when the config cannot be read."""
    from transformers import AutoConfig, AutoModelForCausalLM
    check_model_folder(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise ValueError(f"could not read the configuration of {path!r} ({err}); pass a local "
                         f"model folder, or check the id and your network.") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return config, sum(p.numel() for p in model.parameters())

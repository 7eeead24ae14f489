"""Several processes: torchrun, FSDP2, and the rollout batch seen whole by every rank.

    python train.py ...                                   # one process (World() below)
    torchrun --nproc-per-node 8 train.py --preset paper   # 8 processes, one per GPU

The authors' release (verl) computes the Clip-B / Clip-V statistics once over the whole rollout
batch, on its driver, before the batch is split across GPUs. This file keeps that model:

* Each rank takes whole prompt groups (`rank_groups`), generates, grades and scores them.
* `gather_batch` assembles the whole rollout batch on every rank, in the order one process would
  have it. Every mask (Clip-B's mean and sigma of S*, Clip-V's sigma of d, the cap's top-k, the
  forking / Clip-Cov / KL-Cov selections) and every logged metric is computed from it by the
  same code as in one process, so the result cannot differ; each rank then keeps its own rows.
* Mini-batch i of the whole batch is the union of every rank's local mini-batch i: rank r holds
  the r-th part of each mini-batch. The token-mean / sequence-mean denominators are those of the
  whole mini-batch, and each rank's loss is multiplied by the world size, because FSDP2 averages
  gradients over ranks: the summed gradient equals one process's.
* Parameters, gradients and AdamW state are sharded by FSDP2 (`fully_shard` on every decoder
  layer and the root; tied embeddings live in the root). With bf16 compute (on CUDA, or
  --dtype bfloat16) the forward runs in bf16 through FSDP2's mixed-precision policy and
  gradients are reduced in float32.
* Rollouts are sampled from an unsharded copy of the weights on every rank (bf16 on CUDA),
  refreshed after each update by gathering each parameter once (`refresh`): generation then
  needs no collective, so ranks whose responses end early do not wait for the others inside
  `generate`. It costs 2 bytes per parameter per GPU (15 GB for 7B).

Gathering uses all_gather_object (pickled CPU tensors): (N, R) tensors of a rollout batch are
small beside the model. Backend: NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import Tensor

TIMEOUT_S = 1800   # a collective that waits longer ends the run instead of hanging


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes; World() is one process."""
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def planned() -> World:
    """This process's place among those torchrun started, read from its environment before the
    process group exists: what can be checked is checked before it starts, and a mistake every
    rank finds alike is printed by rank 0 alone."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def hold_rank0(world: World, seconds: float = 5.0) -> None:
    """Rank 0, having said a mistake every rank finds alike, waits before exiting: torchrun stops
    the other ranks as soon as it exits, and one still importing would die by SIGTERM (-15)
    instead of leaving with rank 0's status (seen under load; a rank that has reached train.main
    leaves with it either way)."""
    if world.main and world.size > 1:
        time.sleep(seconds)


def leave_after_rank0(message: str, status: int, wait_s: float = 30.0) -> None:
    """How a rank other than 0 leaves on a mistake every rank finds alike (a bad flag, a folder
    in use): rank 0 prints it and exits with `status`; this rank waits for torchrun, seeing rank
    0 gone, to stop it, and exits with the same status. Leaving at once it could be first, and
    torchrun would stop rank 0 before it printed (and report SIGTERM for it). If rank 0 has not
    gone within wait_s (it did not find the mistake), this rank says it itself."""
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(status))
    time.sleep(wait_s)
    print(f"{message} (rank {planned().rank})", file=sys.stderr)


def init(device: torch.device) -> World:
    """The process group when started by torchrun (WORLD_SIZE > 1), else World()."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=TIMEOUT_S))
    return World(dist.get_rank(), dist.get_world_size())


def close() -> None:
    """Tear the process group down at the end of a process, as PyTorch asks of every process
    that created one (one process: nothing to do). A torchrun rank then leaves by `exit`."""
    if dist.is_initialized():
        dist.destroy_process_group()


def exit(status: int) -> NoReturn:
    """End this process with `status`: sys.exit in one process; a torchrun rank closes its
    process group, runs the atexit handlers, flushes its output and leaves by os._exit.

    Why not the interpreter's own exit: FSDP2 keeps the gloo process group alive after
    destroy_process_group (its DeviceMesh holds the group, cached DTensor specs the mesh), so the
    group's worker threads live on into interpreter finalisation. A worker thread releases the
    work of the last collective after waking the caller; when that release drops the last
    reference to a tensor Python created, it takes the GIL, which during finalisation makes
    Python end the thread (pthread_exit); the unwind meets a noexcept C++ frame and the rank
    aborts: "terminate called without an active exception", SIGABRT, after a finished run
    (stack: ProcessGroupGloo::runLoop -> TensorImpl::decref_pyobject -> PyEval_RestoreThread ->
    pthread_exit -> std::terminate; docs/limitations.md). os._exit skips finalisation."""
    close()
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        sys.exit(status)
    atexit._run_exitfuncs()   # logging, trackers, child processes: what a normal exit would run
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


def run(entry: Callable[[], int]) -> NoReturn:
    """A script's entry point under `exit`: entry()'s status, or 1 after printing the traceback
    of an uncaught exception, which would otherwise leave through the interpreter's own exit
    (and so could meet the abort `exit` describes)."""
    try:
        status = entry()
    except Exception:
        traceback.print_exc()
        status = 1
    exit(status)


def local_device(device: torch.device, world: World) -> torch.device:
    """cuda:<LOCAL_RANK> for a CUDA run under torchrun, the device itself otherwise."""
    if device.type != "cuda" or world.size == 1:
        return device
    index = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def check_split(prompts_per_step: int, mini_batches: int, world: World) -> None:
    """Every rank must hold whole groups of every mini-batch: raise ValueError otherwise."""
    if world.size > 1 and prompts_per_step % (mini_batches * world.size):
        raise ValueError(f"--prompts-per-step ({prompts_per_step}) must be divisible by "
                         f"--mini-batches x processes ({mini_batches} x {world.size}), so that every "
                         f"process holds whole prompt groups of every mini-batch; change one of them.")


def rank_groups(num_groups: int, mini_batches: int, world: World) -> list[int]:
    """The groups (prompt positions in the step) this rank generates: the rank-th part of each
    mini-batch. One process: all of them, in order."""
    per_mini = num_groups // mini_batches
    part = per_mini // world.size
    return [i * per_mini + world.rank * part + j for i in range(mini_batches) for j in range(part)]


def local_rows(num_groups: int, group_size: int, mini_batches: int, world: World) -> Tensor:
    """This rank's rows of the whole batch (its `rank_groups`), in the order of its local batch."""
    groups = rank_groups(num_groups, mini_batches, world)
    return torch.tensor([g * group_size + k for g in groups for k in range(group_size)], dtype=torch.long)


def batch_rows(batch, mini_batches: int, world: World) -> Tensor:
    """This rank's rows of a whole rollout batch (`local_rows` of its groups)."""
    return local_rows(len(batch) // batch.group_size, batch.group_size, mini_batches, world)


def my_prompts(indices: list[int], mini_batches: int, world: World) -> list[int]:
    """This rank's prompts of a step's indices (its `rank_groups`); one process: all of them."""
    return [indices[g] for g in rank_groups(len(indices), mini_batches, world)]


def rank_seed(seed: int, world: World) -> int:
    """The sampling seed of this rank: `seed` itself on rank 0 (and in one process)."""
    return seed + 7919 * world.rank


def my_rows(batch, mini_batches: int, world: World):
    """This rank's rows of a whole rollout batch, as a batch; one process: all of them."""
    return batch.select(batch_rows(batch, mini_batches, world))


def mini_batches(batch, mini_batches: int, world: World) -> list[tuple[Tensor, Tensor]]:
    """[(rows of mini-batch i of the whole batch, this rank's rows of it)] for each of the
    mini_batches contiguous slices; one process: the slice twice. The first sets the loss's
    token and sequence counts (the whole mini-batch), the second what this rank computes.
    rank_groups gives each rank the same part of every mini-batch, so its rows, in order, split
    into mini_batches equal slices, one per mini-batch."""
    whole = torch.arange(len(batch)).chunk(mini_batches)
    return list(zip(whole, batch_rows(batch, mini_batches, world).chunk(mini_batches), strict=True))


def backward(loss: Tensor, world: World) -> None:
    """loss.backward() with the loss scaled by the world size: FSDP2 averages the ranks'
    gradients, and the loss of the whole mini-batch is the sum of the ranks' parts."""
    (loss * world.size).backward()


def global_grad_norm(params: list, max_norm: float) -> Tensor:
    """Clip the gradients of params to max_norm (inf: no clipping) and return their total norm
    over every rank, a 0-d tensor (FSDP2 returns it as a DTensor, made whole here)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def weighted_means(totals: dict[str, float], weight: float, world: World) -> dict[str, float]:
    """{name: sum over ranks of totals[name] / sum over ranks of weight} (0 weight counts as 1):
    token-weighted metric means of the whole batch from each rank's weighted sums."""
    totals = sum_all({**totals, "weight": weight}, world)
    weight = totals.pop("weight")
    return {k: v / max(weight, 1) for k, v in totals.items()}


def my_share(items: list, world: World) -> list:
    """Every world-size-th item from this rank's (evaluation problems); one process: all."""
    return items[world.rank::world.size]


def pooled(result, world: World, merge: Callable[[list], object]):
    """merge([each rank's result]) on every rank; one process: result itself."""
    return result if world.size == 1 else merge(gather_objects(result, world))


def _assemble(parts: list, group_size: int, mini_batches: int, world: World, left: bool = False):
    """Each rank's rows (tensors (n, ...) or lists) -> the whole batch's, in one process's row
    order; 2-D tensors padded to the widest with zeros (on the left for the prompt side)."""
    n = len(parts[0])
    num_groups = n * world.size // group_size
    order = torch.cat([local_rows(num_groups, group_size, mini_batches, World(r, world.size))
                       for r in range(world.size)])
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))   # whole-batch row -> row of the concatenation
    if isinstance(parts[0], list):
        flat = [x for part in parts for x in part]
        return [flat[i] for i in position.tolist()]
    if parts[0].dim() == 2:
        width = max(t.shape[1] for t in parts)
        pad = [torch.zeros((t.shape[0], width - t.shape[1]), dtype=t.dtype) for t in parts]
        parts = [torch.cat([z, t] if left else [t, z], 1) for t, z in zip(parts, pad, strict=True)]
    return torch.cat(parts)[position]


def gather_rows(t: Tensor, group_size: int, mini_batches: int, world: World) -> Tensor:
    """A per-row tensor (n_local, ...) of each rank -> (N, ...) of the whole batch on every rank
    (response-side padding on the right). One process: t itself."""
    if world.size == 1:
        return t
    return _assemble(gather_objects(t.cpu(), world), group_size, mini_batches, world).to(t.device)


def gather_batch(batch, mini_batches: int, world: World):
    """The whole rollout batch (rollout.RolloutBatch) on every rank, rows in one process's order,
    from each rank's local batch (its `rank_groups`). Padding added to align widths is masked
    out (prompt side on the left, response side on the right). One process: `batch` itself."""
    if world.size == 1:
        return batch
    local = {f.name: getattr(batch, f.name) for f in fields(batch)}
    parts = gather_objects({k: v.cpu() if isinstance(v, Tensor) else v for k, v in local.items()}, world)
    merged = {}
    for name, value in local.items():
        if value is None or isinstance(value, int):
            merged[name] = value
            continue
        whole = _assemble([p[name] for p in parts], batch.group_size, mini_batches, world,
                          left=name.startswith("prompt_"))
        merged[name] = whole if isinstance(value, list) else whole.to(value.device)
    return type(batch)(**merged)


def sum_all(values: dict[str, float], world: World) -> dict[str, float]:
    """Each value summed over the ranks (one all-reduce)."""
    if world.size == 1 or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(values, t.tolist(), strict=True))


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is True on some rank (a collective decision, e.g. to stop)."""
    return bool(sum_all({"flag": float(flag)}, world)["flag"]) if world.size > 1 else flag


def gather_objects(obj, world: World) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects)."""
    if world.size == 1:
        return [obj]
    parts = [None] * world.size
    dist.all_gather_object(parts, obj)
    return parts


def on_main(fn, world: World):
    """fn() on rank 0, its result (or its ValueError, raised again) on every rank."""
    if world.size == 1:
        return fn()
    outcome = None
    if world.main:
        try:
            outcome = ("ok", fn())
        except ValueError as err:
            outcome = ("error", str(err))
    kind, value = gather_objects(outcome, world)[0]
    if kind == "error":
        raise ValueError(value)
    return value


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shard(model, dtype: torch.dtype = torch.float32, methods: tuple = ()) -> None:
    """FSDP2 in place: every decoder layer, then the root (embeddings, tied or not, final norm,
    head). With a compute dtype other than float32 (bf16: on CUDA, or --dtype bfloat16),
    parameters are all-gathered and used in it and gradients reduced in float32 (FSDP2's
    mixed-precision policy, in place of autocast; the statistics, float32 arithmetic, then read
    a bf16-rounded head); the sharded masters and AdamW state stay float32.
    methods [fn(model, ...)]: functions that use the model other than through its forward
    (rollout.statistics reads the head's weight directly), attached as methods under their names
    and registered so that FSDP2 gathers the root's weights for them as for a forward
    (`as_forward` calls them)."""
    from types import MethodType

    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = (MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
              if dtype != torch.float32 else MixedPrecisionPolicy())
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    for fn in methods or ():
        setattr(model, fn.__name__, MethodType(fn, model))
        register_fsdp_forward_method(model, fn.__name__)


def as_forward(model, fn, *args):
    """fn(model, *args); on a model `shard` gave fn as a method, through that method, so that
    FSDP2 gathers the root's weights for it and its backward as for a forward. One process: fn
    itself."""
    method = getattr(model, fn.__name__, None) if is_sharded(model) else None
    return method(*args) if method is not None else fn(model, *args)


def is_sharded(model) -> bool:
    """True for a model sharded by `shard` (FSDP2)."""
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def reshard(model) -> None:
    """After a forward with no backward (scoring): FSDP2 keeps the root's weights gathered after
    its forward for the backward that normally follows; left so, the next forward under autograd
    skips their gather and their gradients are never reduced (measured: the embedding gradient
    missing, the gradient norm 5 times too small). No-op for an unsharded model."""
    if is_sharded(model):
        model.reshard()


def full_state_dict(model, world: World) -> dict[str, Tensor] | None:
    """The model's weights whole, on the CPU, on rank 0 (None elsewhere); every rank must call
    it. The optimiser state is never gathered."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if world.size == 1:
        return None
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if world.main else None

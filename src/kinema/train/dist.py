"""Parallel training from outside the model: `torchrun`, the model code unchanged.

    torchrun --nproc_per_node 2 -m kinema.cli train configs/shapes.yaml    # gloo on CPUs, NCCL on GPUs

Every process draws the *global* batch and its noise from (seed, step), exactly as one process
does, and keeps its own contiguous share (`share`), cut further into micro-batches when the stage
accumulates gradients. DDP (or FSDP2, `wrap(shard=True)`) averages the gradients over processes,
so N processes take the step one process takes with the same global batch, up to the order of
float sums (tests/test_dist.py). Under sequence parallelism every process takes the same samples
and splits their tokens instead (kinema.nn.sequence_parallel). Process 0 alone writes logs,
samples and checkpoints; every process resumes from the same checkpoint.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from kinema.errors import KinemaError


def init_from_env() -> None:
    """Join torchrun's process group when WORLD_SIZE > 1 (gloo on the CPU, NCCL with CUDA, each
    rank on its LOCAL_RANK's GPU); a no-op in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def finish() -> None:
    """Leave torchrun's process group together (gloo aborts a process whose peer tore it down first)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abort() -> None:
    """Leave the process group at once, without waiting for the others (after an error: another
    process may still wait in a collective)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_initialized()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def any_true(flag: bool) -> bool:
    """True if `flag` is true on any process (a collective under torchrun)."""
    if world() == 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over processes (itself in one process)."""
    if world() == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world()


def average_grads(module: torch.nn.Module) -> None:
    """Average a module's gradients over processes by hand (a module DDP does not wrap)."""
    if world() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world()


def check_batch(batch_size: int, where: str, accumulate: int = 1) -> None:
    n = world() * accumulate
    if batch_size % n:
        what = f"{world()} processes" + (f" x {accumulate} micro-batches" if accumulate > 1 else "")
        raise KinemaError(f"{where} {batch_size} does not split over {what}; use a multiple of {n}")


_MICRO = (0, 1)  # (micro-batch index, micro-batches per step): gradient accumulation, set by `micro`


@contextmanager
def micro(index: int, count: int):
    """Inside: `share` gives micro-batch `index` of `count` (the trainer accumulates their gradients)."""
    global _MICRO
    before, _MICRO = _MICRO, (index, count)
    try:
        yield
    finally:
        _MICRO = before


def parts() -> int:
    """Into how many shares a global batch is cut: processes x micro-batches (micro-batches alone
    under sequence parallelism, where every process holds the same samples)."""
    from kinema.nn import sequence_parallel

    return _MICRO[1] * (1 if sequence_parallel.group() is not None else world())


def share(batch: int) -> slice:
    """This process's contiguous share of a global batch of `batch` samples, in this micro-batch:
    all of it in one process without accumulation. Under sequence parallelism every process takes
    the same samples (and splits their tokens)."""
    from kinema.nn import sequence_parallel

    index, count = _MICRO
    split = sequence_parallel.group() is None
    part = index * (world() if split else 1) + (rank() if split else 0)
    size = batch // parts()
    return slice(part * size, (part + 1) * size)


def blocks_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's blocks: each child of its ModuleLists (the units FSDP2 shards and activation
    checkpointing recomputes)."""
    return [child for m in model.modules() if isinstance(m, torch.nn.ModuleList)
            for child in m if not isinstance(child, torch.nn.ModuleList)]


def checkpoint_blocks(model: torch.nn.Module) -> torch.nn.Module:
    """Activation checkpointing from outside the model: each block keeps only its inputs in the
    forward and runs again in the backward (PyTorch's composable `checkpoint`, hooks on the block:
    the code and the state_dict keys do not change). Less memory for about one more forward."""
    from torch.distributed._composable import checkpoint

    for block in blocks_of(model):
        checkpoint(block)
    return model


def wrap(model: torch.nn.Module, shard: bool = False) -> torch.nn.Module:
    """With several processes: DDP around the model, or (`shard`) FSDP2: every block (each child
    of a ModuleList) and then the model itself `fully_shard`ed in place, so each process holds a
    1 / N slice of the weights, gradients and optimizer state and gathers a block's weights just
    before it runs. The model's code does not change either way."""
    if world() == 1:
        return model
    if shard:
        from torch.distributed.fsdp import fully_shard

        for block in blocks_of(model):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return DistributedDataParallel(model, device_ids=ids)


def full(state: dict) -> dict:
    """A state dict with every sharded tensor (DTensor) gathered whole: a collective, every process
    calls it."""
    from torch.distributed.tensor import DTensor

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}


def shaped_like(state: dict, template: dict) -> dict:
    """Whole tensors from disk sharded as `template`'s are (DTensor), or kept as they are."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    return {k: distribute_tensor(v.to(template[k].device), template[k].device_mesh, template[k].placements)
            if isinstance(template.get(k), DTensor) else v for k, v in state.items()}

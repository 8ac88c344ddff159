"""Multi-process training under ``torchrun``: DDP (gloo on CPU, NCCL on GPU) or FSDP.

We never spawn processes ourselves: ``torchrun --nproc_per_node N -m scratchlm.cli pretrain ...`` sets
RANK/WORLD_SIZE/LOCAL_RANK and this module joins the process group they describe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def wrap(module: nn.Module, info: DistInfo, mode: str, device: torch.device) -> nn.Module:
    """DDP by default; FSDP (per-block sharding, torch.distributed.fsdp.fully_shard) when asked."""
    if not info.enabled:
        return module
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for sub in module.modules():
            if sub.__class__.__name__ == "Block":
                fully_shard(sub)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0 decides (time budget, early stopping) so every rank stops at the same step."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_int(value: int, info: DistInfo, device: torch.device) -> int:
    if not info.enabled:
        return value
    t = torch.tensor([value], device=device, dtype=torch.long)
    dist.broadcast(t, src=0)
    return int(t.item())


def all_gather_object(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

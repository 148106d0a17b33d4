"""DDP through torchrun: one process per GPU (or per CPU worker, gloo), on one node or many.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the run
is a single process and nothing here touches torch.distributed. The contrastive loss sees the
whole global batch through open_clip's feature gathering (loss.create_loss), so DDP with N ranks
of B/N samples optimises the same objective as one process with B.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from schemas.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """'auto' takes the GPU when there is one; 'cuda' without one is an input error."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("device='cuda' but no CUDA GPU is visible here")
        return torch.device("cuda", local_rank)
    if choice not in ("auto", "cpu"):
        raise InputError(f"unknown device {choice!r}; known: auto, cpu, cuda")
    return torch.device("cpu")


def planned_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun), known before joining them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_choice: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one (nccl on GPUs, gloo on CPU)."""
    world_size = planned_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
            log.info("joined process group: rank %d of %d (%s)", rank, world_size, backend)
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a tensor over ranks (itself when single-process)."""
    if not info.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()

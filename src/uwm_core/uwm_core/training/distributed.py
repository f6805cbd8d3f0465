"""The processes of one run: torchrun's ranks (DDP over NCCL, gloo on CPU) and what they exchange."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def say(self, message: str) -> None:
        """Print from rank 0 only, above the progress bar."""
        if self.main:
            tqdm.write(message)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def from_rank0(self, value):
        """Rank 0's ``value`` on every rank."""
        box = [value]
        if self.world_size > 1:
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        values = [value] * self.world_size
        if self.world_size > 1:
            dist.all_gather_object(values, value)
        return values

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def setup_distributed(device: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: NCCL on GPUs, gloo on CPU."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was requested but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    d = Dist(int(os.environ.get("RANK", 0)), world_size, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
             torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu"))
    if use_cuda:
        torch.cuda.set_device(d.device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=d.device if use_cuda else None)
    return d


def teardown_distributed(d: Dist) -> None:
    if d.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()

"""This process's place in a training run: one process, or one of several under torchrun (gloo on
CPU, NCCL on GPUs); its device, the DistributedDataParallel wrapper, sums over processes and a clean
shutdown."""

from __future__ import annotations

import os

import torch
from torch import nn


class Parallel:
    """This process's place in a run: rank and world size under torchrun (1 process otherwise),
    and its device (a GPU when there is one; then bfloat16 autocast)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all processes (the values themselves in a single process)."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.world > 1:
            import gc

            import torch.distributed as dist

            # A DistributedDataParallel wrapper left in a reference cycle and freed after the group
            # is gone aborts the process at exit ("terminate called without an active exception",
            # 1 run in 4 on CPU/gloo): free it first, and let no process leave while another works.
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()

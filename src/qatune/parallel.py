"""Training on several processes (`torchrun --nproc_per_node N -m qatune train ...` or
`accelerate launch -m qatune train ...`): DDP through accelerate, gloo on CPUs, NCCL on GPUs.

Every process walks the same batches in the same order; each global batch (batch_size items
per process) is dealt out among the processes, each answers for its share, and the gradients
are averaged. Each share's loss is weighted by its size, so a global batch counts every item
once, as one process with the whole batch would: N processes with batch B train as one process
with batch N*B, up to float rounding (each share is padded as the whole batch is, since a
window's loss counts its padding's logits). The logged loss is the whole batch's, exchanged
when it is logged. Only the main process logs, evaluates, shows progress and
writes checkpoints and the model; the others wait for it where it matters.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

# How long a process waits for the others in one exchange. The others wait while the main
# process evaluates on the dev data and writes checkpoints and the model, which on a large dev
# set takes longer than torch's defaults (30 minutes for gloo, 10 for NCCL) and would end the
# run. A process that dies ends the launch at once all the same (torchrun and accelerate stop
# the others): the limit only bounds a process that hangs.
WAIT_FOR_OTHERS = timedelta(hours=24)


def process_rank() -> int:
    """This process's rank in a multi-process launch (RANK, set by torchrun and accelerate), 0 alone."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True unless this is a non-main process of a multi-process launch (RANK set and not 0)."""
    return process_rank() == 0


def process_count() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Processes:
    """The processes of one run, as accelerate sees them."""

    count: int
    rank: int

    @classmethod
    def joined(cls, accelerator) -> "Processes":
        """The processes of an accelerator that has joined them; the group is left at exit."""
        if accelerator.num_processes > 1:
            leave_process_group_at_exit()
        return cls(count=accelerator.num_processes, rank=accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """This process's items of a global batch, and the weight of their mean loss so that
        the processes' averaged gradients are those of the whole batch's mean loss.

        A process with no item of a (last, small) batch still takes part in the gradient
        exchange: it answers one item with weight 0.

            >>> Processes(2, 1).share(np.array([7, 8, 9]))
            (array([8]), 0.6666666666666666)
        """
        mine = batch[self.own_part(batch.size)]
        if mine.size == 0:
            return batch[:1], 0.0
        return mine, mine.size * self.count / batch.size

    def own_part(self, count: int) -> np.ndarray:
        """The indices of `count` items that this process computes when they share work (one
        in `self.count`, so that long and short windows spread evenly)."""
        return np.arange(self.rank, count, self.count)

    def fill_from_all(self, values: list, mine: np.ndarray) -> None:
        """Each process has filled `values` at its own part (`own_part`): fill in everyone
        else's, so that every process holds all of them."""
        if self.count == 1:
            return
        for part in self.gather([(int(index), values[index]) for index in mine]):
            for index, value in part:
                values[index] = value

    def batch_mean(self, weighted_share_loss) -> float:
        """The whole global batch's mean loss, from this process's share's loss weighted as
        `share` says (the loss its gradients come from): the processes' mean. One scalar
        exchanged (on the loss's device, which NCCL needs); one process: its loss as it is."""
        if self.count == 1:
            return float(weighted_share_loss)
        import torch.distributed as distributed

        total = weighted_share_loss.detach().float() / self.count
        distributed.all_reduce(total)
        return float(total)

    def gather(self, value: Any) -> list:
        """Every process's `value`, in rank order, on every process."""
        if self.count == 1:
            return [value]
        import torch.distributed as distributed

        values: list = [None] * self.count
        distributed.all_gather_object(values, value)
        return values

    def wait(self) -> None:
        if self.count > 1:
            import torch.distributed as distributed

            distributed.barrier()

    def from_main(self, value: Any) -> Any:
        """The main process's `value`, on every process."""
        if self.count == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]


def answered_share(count: int) -> tuple[int, int]:
    """The range of `count` questions this process answers in a multi-process predict: one
    contiguous part each, so that joining the parts in rank order keeps the questions' order."""
    processes, rank = process_count(), process_rank()
    size, extra = divmod(count, processes)
    first = rank * size + min(rank, extra)
    return first, first + size + (1 if rank < extra else 0)


def gather_in_order(part: list) -> list | None:
    """Every process's list joined in rank order, on the main process (None elsewhere)."""
    if process_count() == 1:
        return part
    import torch.distributed as distributed

    _init_process_group()
    parts: list = [None] * process_count()
    distributed.all_gather_object(parts, part)
    return [item for chunk in parts for item in chunk] if is_main_process() else None


def predict_across_processes(model, examples: list, **predict_options) -> list | None:
    """`model.predict(examples)` under a multi-process launch: each process answers one
    contiguous share, and the main process gets every answer in the examples' order (the
    others get None). One process: `model.predict` itself."""
    if process_count() == 1:
        return model.predict(examples, **predict_options)
    first, last = answered_share(len(examples))
    predict_options["progress"] = predict_options.get("progress", False) and is_main_process()
    return gather_in_order(model.predict(examples[first:last], **predict_options))


def _init_process_group() -> None:
    import torch.distributed as distributed

    if not distributed.is_initialized():
        import torch

        distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=WAIT_FOR_OTHERS)
        leave_process_group_at_exit()


def leave_process_group() -> None:
    """Destroy this process's group of processes, if it joined one."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def leave_process_group_at_exit() -> None:
    """Leave the group while Python is still whole: a gloo group left to the interpreter's
    teardown may abort the process after its work is done ("terminate called without an active
    exception", exit -6), its worker threads outliving the objects they hold."""
    atexit.unregister(leave_process_group)  # once, however many times a group is joined
    atexit.register(leave_process_group)


__all__ = [
    "Processes", "answered_share", "gather_in_order", "is_main_process", "leave_process_group",
    "leave_process_group_at_exit", "predict_across_processes", "process_count", "process_rank",
]

"""Padded model inputs for some windows: numpy arrays, padded to the longest of them.

Plain numpy, no torch: every answering engine takes these arrays as they are, and training
moves them to its device (`as_tensors`).

    >>> from qatune.features import Windows
    >>> import numpy as np
    >>> windows = Windows([np.array([2, 7, 3]), np.array([2, 3])], None, [], [], np.array([0, 1]))
    >>> pad_windows(windows, [0, 1], pad_token_id=0)["input_ids"].tolist()
    [[2, 7, 3], [2, 3, 0]]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from qatune.features import Windows


def pad_windows(
    windows: Windows,
    indices: Sequence[int],
    pad_token_id: int,
    multiple_of: int = 1,
    max_length: int | None = None,
    longest: int = 0,
) -> dict[str, np.ndarray]:
    """`input_ids`, `attention_mask` (and `token_type_ids` where the windows have them), int64,
    shape (len(indices), longest window among them, rounded up to `multiple_of` but not past
    `max_length`: a model has no position past its longest window). `longest`: pad as if a
    window of that many tokens were among them (a process's share of a batch is padded as the
    whole batch is)."""
    longest = max(longest, *(len(windows.input_ids[i]) for i in indices))
    length = -(-longest // multiple_of) * multiple_of
    if max_length is not None:
        length = max(longest, min(length, max_length))
    input_ids = np.full((len(indices), length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(indices), length), dtype=np.int64)
    token_types = np.zeros((len(indices), length), dtype=np.int64) if windows.token_type_ids is not None else None
    for row, window in enumerate(indices):
        ids = windows.input_ids[window]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        if token_types is not None:
            token_types[row, : len(ids)] = windows.token_type_ids[window]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_types is not None:
        batch["token_type_ids"] = token_types
    return batch


def as_tensors(batch: dict[str, np.ndarray], device) -> dict:
    """The same inputs as torch tensors on `device` (shares memory with the arrays on the CPU)."""
    import torch

    return {name: torch.from_numpy(array).to(device) for name, array in batch.items()}

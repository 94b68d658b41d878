"""What every answering engine does: start and end logits for a padded batch of windows.

An engine takes the arrays of `qatune.batching.pad_windows` (int64 `input_ids`,
`attention_mask` and, where the tokenizer makes them, `token_type_ids`, all of shape
(batch, length)) and returns two float32 arrays of that shape. It knows nothing of questions,
windows or decoding: `qatune.inference.QAModel` does that, the same way for every engine.

An engine that computes in less than float32 (bf16, int8) moves logits by a little. Where
two answers are closer than `recheck_margin` (a log-probability ratio), `QAModel` asks its
`rechecker()` again: its `float32()` twin, or for int8 where bf16 is native a bf16 twin whose own
close calls go on to float32, so that such an engine gives the answers float32 gives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from qatune.errors import ModelError

PRECISIONS = ("float32", "bf16", "int8")
OUTPUT_NAMES = ("start_logits", "end_logits")  # what every exported or converted graph returns
# Answers whose probabilities are within this log-ratio (about 5%) of each other are close
# calls: bf16 rounding moves logits by up to ~0.15 and can swap them. Re-checked in float32.
BF16_RECHECK_MARGIN = 0.05


class UnreadableGraph(ModelError):
    """A runtime cannot load a graph file (cut short, overwritten): an export is exported again,
    a cache entry is converted again (`qatune.engines.cache.load_entry`)."""

    def __init__(self, file: Path, runtime: str, reason: str, format: str) -> None:
        super().__init__(
            f"{file}: {runtime} cannot load this file ({reason}); export the model again with "
            f"`qatune export MODEL --format {format} -o DIR`"
        )
        self.file, self.reason = file, reason


class Engine(ABC):
    """Start/end logits of padded batches of windows, by one runtime at one precision."""

    name: str = ""  # "torch", "onnx" or "openvino"
    precision: str = "float32"  # one of PRECISIONS
    recheck_margin: float = 0.0  # > 0: close calls within this log-ratio are asked again
    recheck_in: str = "float32"  # the precision of `rechecker()`
    # Whether a window's logits are the same to the bit whatever else is in its batch (other
    # windows, more padding). The server batches different callers' windows together only then,
    # so that batching never changes an answer.
    batch_invariant: bool = False

    @property
    @abstractmethod
    def input_names(self) -> tuple[str, ...]:
        """The inputs the engine takes, e.g. ("input_ids", "attention_mask")."""

    @abstractmethod
    def logits(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits, float32, shape (batch, length) like `inputs["input_ids"]`."""

    def float32(self) -> "Engine | None":
        """The same model computing in float32 (self when it does already), or None where this
        engine has no float32 form (an int8 export without its float32 graph)."""
        return self if self.precision == "float32" else None

    def rechecker(self) -> "Engine | None":
        """The engine that answers this one's close calls again (None: none does). If it
        re-checks close calls too, `QAModel` asks its own rechecker in turn."""
        return self.float32() if self.recheck_margin > 0 else None

    def describe(self) -> str:
        """A short text for logs and `--json`, e.g. 'openvino bf16, close calls re-checked in float32'."""
        text = f"{self.name} {self.precision}"
        if self.recheck_margin > 0:
            text += f", close calls re-checked in {self.recheck_in}"
            if self.recheck_in != "float32":
                text += " (and theirs in float32)"
        return text

    def to_dict(self) -> dict:
        return {"name": self.name, "precision": self.precision, "recheck_close_calls": self.recheck_margin > 0}


def check_inputs(engine: Engine, inputs: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The inputs the engine takes (others, such as token_type_ids for a model without them, are
    left out, as PyTorch leaves them out), or a ModelError when one it needs is missing."""
    names = engine.input_names
    missing = sorted(set(names) - set(inputs))
    if missing:
        raise ModelError(
            f"{where}: the model takes {sorted(names)}, but the tokenizer gave {sorted(inputs)}; "
            f"use the tokenizer saved with the model"
        )
    return {name: inputs[name] for name in names}

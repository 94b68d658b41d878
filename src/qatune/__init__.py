"""qatune: fine-tune, evaluate and run extractive question-answering models.

The public API is imported lazily, so that `import qatune` (and the data and metrics
commands) stay light and never import torch.

    >>> from qatune import load_examples
    >>> examples = load_examples("data.json")            # doctest: +SKIP
    >>> from qatune import QAModel
    >>> QAModel.from_pretrained("./qatune-model").ask("Who?", "Ada wrote it.")  # doctest: +SKIP
    [Answer(text='Ada', start=0, end=3, score=0.93)]
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "QATuneError": "qatune.errors",
    "DataError": "qatune.errors",
    "SettingsError": "qatune.errors",
    "ModelError": "qatune.errors",
    "Example": "qatune.data",
    "GoldAnswer": "qatune.data",
    "load_examples": "qatune.data",
    "read_dataset": "qatune.data",
    "Answer": "qatune.decoding",
    "QASettings": "qatune.settings",
    "TrainingArguments": "qatune.training",
    "train": "qatune.training",
    "QAModel": "qatune.inference",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'qatune' has no attribute {name!r}")

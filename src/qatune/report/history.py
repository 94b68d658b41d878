"""What a training run logged in `metrics.jsonl`, read for the report: the loss of every batch,
each dev evaluation, the dev scores before training and of the kept model.

Lines that cannot be read (cut short by a crash, not JSON, not an object) are skipped and
counted, never dropped silently.

    >>> history = read_history("qatune-model/metrics.jsonl")  # doctest: +SKIP
    >>> len(history.steps), history.skipped_lines, history.best_epoch(card={"best_epoch": 2})  # doctest: +SKIP
    (36, 0, 2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from qatune.metrics import exact_of

# Weight of the running value in the smoothed loss: an exponential moving average.
SMOOTHING = 0.9


@dataclass
class History:
    """The records of one run, by type, in the order they were written."""

    path: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    skipped_lines: int = 0
    other_records: int = 0  # objects of a type the report does not know

    def best_epoch(self, card: dict[str, Any]) -> int | None:
        """The epoch whose weights were kept: `best_epoch` of qatune.json, else the kept record's."""
        epoch = card.get("best_epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            return epoch
        if self.kept is not None and isinstance(self.kept.get("epoch"), int):
            return self.kept["epoch"]
        return None


def read_history(path: str | Path) -> History:
    """The records of a `metrics.jsonl` file (which must exist)."""
    history = History(Path(path))
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            history.skipped_lines += 1
            continue
        if not isinstance(record, dict):
            history.skipped_lines += 1
            continue
        kind = record.get("type")
        if kind == "step" and _is_number(record.get("loss")):
            history.steps.append(record)
        elif kind == "eval" and has_scores(record):
            history.evals.append(record)
        elif kind == "kept" and has_scores(record):
            history.kept = record  # a resumed run writes its own: the last one is the run's end
        elif kind == "baseline" and has_scores(record):
            history.baseline = record
        elif kind in ("step", "eval", "kept", "baseline"):
            history.skipped_lines += 1  # a known record without its numbers: unreadable
        else:
            history.other_records += 1
    return history


def has_scores(record: dict[str, Any]) -> bool:
    """Whether a record holds an EM (either version's key) and an F1."""
    try:
        return _is_number(exact_of(record)) and _is_number(record.get("f1"))
    except KeyError:
        return False


def smoothed(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """The exponential moving average of `values`, corrected for its start at zero (as
    TensorBoard draws it), so that the first points are not pulled towards 0.

        >>> [round(v, 3) for v in smoothed([1.0, 0.0, 0.0], weight=0.5)]
        [1.0, 0.333, 0.143]
    """
    result, running = [], 0.0
    for number, value in enumerate(values, start=1):
        running = weight * running + (1 - weight) * value
        result.append(running / (1 - weight**number))
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

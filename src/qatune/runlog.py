"""What a training run tells as it goes: `metrics.jsonl` (every step and evaluation) and one
progress line for the whole run (epoch k of N, elapsed and remaining time)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


class MetricsLog:
    """Appends one JSON object per line. A resumed run first drops the records of epochs after
    its checkpoint (they are trained again) and any line torn by a crash, then appends."""

    def __init__(self, path: Path, keep_through_epoch: int, log: Callable[[str], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            records, torn = _read_records(path)
            if torn:
                log(f"{path}: dropped {torn} unreadable line{'s' if torn > 1 else ''} (cut short when the run was stopped)")
            # "kept" describes the end of a run: a resumed run ends anew and writes its own
            kept = [r for r in records if r.get("epoch", 0) <= keep_through_epoch and r.get("type") != "kept"]
            # Replaced whole, so that a kill now loses nothing of what was kept.
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
            os.replace(temporary, path)
        self._file = path.open("a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class NoLog:
    """What the processes other than the main one write: nothing."""

    def write(self, **record: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _read_records(path: Path) -> tuple[list[dict], int]:
    """The JSON objects of a log file, and how many lines could not be read."""
    records, torn = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


class RunProgress:
    """One bar over every batch of the run: "epoch 3/20", elapsed and remaining time, loss.

    Messages written while it shows go above it (`write`), so the bar stays one line.
    """

    def __init__(self, total_batches: int, done_batches: int, enabled: bool, log: Callable[[str], None]) -> None:
        self._log = log
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_batches, initial=done_batches, unit="batch", dynamic_ncols=True)

    def epoch(self, epoch: int, epochs: int) -> None:
        if self._bar is not None:
            self._bar.set_description(f"epoch {epoch}/{epochs}")

    def advance(self, running_loss: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{running_loss:.3f}", refresh=False)

    def write(self, message: str) -> None:
        if self._bar is None:
            self._log(message)
        else:
            with self._bar.external_write_mode():
                self._log(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

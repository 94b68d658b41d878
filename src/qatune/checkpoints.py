"""Checkpoints of a training run, written atomically, and the state a resumed run continues from.

    OUTPUT/checkpoints/epoch-0003/   model.safetensors, trainer_state.pt, state.json, training_args.json
    OUTPUT/checkpoints/latest        the name of the newest complete checkpoint (older ones are removed)
    OUTPUT/checkpoints/best/         model.safetensors of the best epoch by dev F1

A checkpoint is written into a temporary folder and renamed into place, and `latest` is
replaced only after that: a crash while writing never spoils the last good checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from qatune.errors import SettingsError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
# Arguments that may differ between a run and its resumption.
RESUMABLE_CHANGES = {"resume", "overwrite", "cache_dir"}


@dataclass
class TrainingState:
    """Where a run stands after an epoch: what a resume needs besides weights and optimizer."""

    epoch: int = 0
    step: int = 0
    train_seconds: float = 0.0
    best_epoch: int | None = None
    best_f1: float = -1.0
    best_metrics: dict[str, float] | None = None
    null_threshold: float = 1.0
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def record_evaluation(self, epoch: int, metrics: dict[str, float], null_threshold: float, patience: int | None) -> None:
        """Keep the best epoch by dev F1; stop after `patience` epochs without improvement."""
        self.history.append({"epoch": epoch, **metrics})
        if metrics["f1"] > self.best_f1:
            self.best_epoch, self.best_f1, self.best_metrics = epoch, metrics["f1"], dict(metrics)
            self.null_threshold = null_threshold
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
            self.stopped_early = patience is not None and self.epochs_without_improvement >= patience


def start_fresh(output_dir: Path, overwrite: bool) -> None:
    """Refuse to mix a new run with an earlier one's checkpoints, unless asked to replace them."""
    folder = output_dir / CHECKPOINTS
    if folder.exists() or (output_dir / "metrics.jsonl").exists():
        if not overwrite:
            raise SettingsError(
                f"{output_dir} holds an earlier training run (checkpoints, metrics.jsonl): pass --resume "
                f"to continue it, --overwrite to start over there, or choose another --output"
            )
        shutil.rmtree(folder, ignore_errors=True)
        (output_dir / "metrics.jsonl").unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


def save(output_dir: Path, model, optimizer, schedule, state: TrainingState, arguments: dict[str, Any]) -> Path:
    folder = output_dir / CHECKPOINTS
    final = folder / f"epoch-{state.epoch:04d}"
    temporary = _fresh_temporary(final)
    _save_weights(model, temporary)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        temporary / "trainer_state.pt",
    )
    _write_json(temporary / "state.json", asdict(state))
    _write_json(temporary / "training_args.json", arguments)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    _write_atomically(folder / LATEST, final.name)
    # Only the newest checkpoint is needed to resume; older ones would fill the disk.
    for older in folder.glob("epoch-*"):
        if older.name != final.name:
            shutil.rmtree(older, ignore_errors=True)
    return final


def load_latest(output_dir: Path, arguments: dict[str, Any], model, optimizer, schedule) -> TrainingState:
    """Restore weights, optimizer, schedule and random state of the newest checkpoint."""
    folder = output_dir / CHECKPOINTS
    pointer = folder / LATEST
    if not pointer.is_file():
        raise SettingsError(
            f"--resume: {output_dir} has no checkpoint to resume from (expected {pointer}); "
            f"train without --resume, or check --output"
        )
    checkpoint = folder / pointer.read_text(encoding="utf-8").strip()
    saved_arguments = json.loads((checkpoint / "training_args.json").read_text(encoding="utf-8"))
    changed = sorted(
        key for key in set(saved_arguments) | set(arguments)
        if key not in RESUMABLE_CHANGES and saved_arguments.get(key) != arguments.get(key)
    )
    if changed:
        details = "; ".join(f"{key}: was {saved_arguments.get(key)!r}, now {arguments.get(key)!r}" for key in changed)
        raise SettingsError(
            f"--resume: the run in {output_dir} was started with other settings ({details}); "
            f"resume with the same settings, or start a new run with --overwrite"
        )
    _load_weights(model, checkpoint)
    trainer_state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(trainer_state["optimizer"])
    schedule.load_state_dict(trainer_state["schedule"])
    torch.set_rng_state(trainer_state["torch_rng"])
    if trainer_state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(trainer_state["cuda_rng"])
    return TrainingState(**json.loads((checkpoint / "state.json").read_text(encoding="utf-8")))


def save_best(output_dir: Path, model) -> None:
    final = output_dir / CHECKPOINTS / BEST
    temporary = _fresh_temporary(final)
    _save_weights(model, temporary)
    old = final.with_name(BEST + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(temporary, final)
    shutil.rmtree(old, ignore_errors=True)


def load_best(output_dir: Path, model) -> None:
    final = output_dir / CHECKPOINTS / BEST
    _load_weights(model, final if final.exists() else final.with_name(BEST + ".old"))


def _save_weights(model, folder: Path) -> None:
    from safetensors.torch import save_model

    save_model(model, str(folder / "model.safetensors"))


def _load_weights(model, folder: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(folder / "model.safetensors"), device=str(next(model.parameters()).device))


def _fresh_temporary(final: Path) -> Path:
    temporary = final.with_name(final.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)

"""Checkpoints of a training run, written atomically, and the state a resumed run continues from.

    OUTPUT/checkpoints/epoch-0003/   model.safetensors, trainer_state.pt, state.json,
                                     training_args.json, and best.safetensors when the best
                                     epoch by dev F1 is an earlier one
    OUTPUT/checkpoints/latest        the name of the newest complete checkpoint (older ones are removed)

A checkpoint is written into a temporary folder and renamed into place, and `latest` is
replaced only after that: a crash while writing never spoils the last good checkpoint, and a
checkpoint holds everything a resume needs (the best weights included). A run that finishes
removes its checkpoints unless asked to keep them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from qatune.errors import SettingsError, first_line
from qatune.files import (
    MODEL_MARKERS, check_not_holding_source, folder_contents, holds_a_model, shown_contents, with_default_permissions,
)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
METRICS_LOG = "metrics.jsonl"
BEST_WEIGHTS = "best.safetensors"
# Arguments that may differ between a run and its resumption: where files go, how often it
# checkpoints and evaluates, when it gives up (epochs may grow: see `_check_resumable`).
RESUMABLE_CHANGES = {
    "resume", "overwrite", "cache_dir", "output_dir", "save_every", "keep_checkpoints", "eval_every", "patience",
    "evaluate_untrained",  # the untrained model is scored before epoch 1 only: never on a resume
}
# The data a run learns from and is judged on, by digest: a resume with other data is another run.
DATA_DIGESTS = {"train_sha256": "training data", "dev_sha256": "dev data", "transfer_sha256": "transfer questions"}


@dataclass(frozen=True)
class OptionNames:
    """How messages name what a user can change: command-line flags or TrainingArguments fields."""

    resume: str
    overwrite: str
    output: str
    epochs: str
    keep_checkpoints: str
    max_answer_length: str
    dev: str
    teacher: str = "teacher"
    transfer: str = "transfer_examples"


PYTHON_OPTIONS = OptionNames(
    resume="TrainingArguments(resume=True)",
    overwrite="TrainingArguments(overwrite=True)",
    output="output_dir",
    epochs="epochs",
    keep_checkpoints="TrainingArguments(keep_checkpoints=True)",
    max_answer_length="QASettings(max_answer_length=N)",
    dev="dev_examples",
)
CLI_OPTIONS = OptionNames(
    resume="--resume",
    overwrite="--overwrite",
    output="--output",
    epochs="--epochs",
    keep_checkpoints="--keep-checkpoints",
    max_answer_length="--max-answer-length",
    dev="--dev data",
    teacher="--teacher",
    transfer="--transfer",
)


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

    def record_evaluation(self, epoch: int, metrics: dict[str, float], null_threshold: float, patience: int | None) -> bool:
        """Keep the best epoch by dev F1; stop after `patience` evaluations without improvement.
        Returns whether this epoch is the new best."""
        self.history.append({"epoch": epoch, **metrics})
        if metrics["f1"] > self.best_f1:
            self.best_epoch, self.best_f1, self.best_metrics = epoch, metrics["f1"], dict(metrics)
            self.null_threshold = null_threshold
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        self.stopped_early = patience is not None and self.epochs_without_improvement >= patience
        return False


# --- before anything is loaded --------------------------------------------------------------


def check_output_dir(
    output_dir: Path,
    *,
    resume: bool,
    overwrite: bool,
    options: OptionNames,
    arguments: dict[str, Any] | None = None,
) -> None:
    """Refuse at once what cannot work, before the model is loaded and the data tokenized.

    A folder holds an earlier run when it has checkpoints or a metrics log. Each refusal
    names the one way out that works for that folder. With `arguments` (the new run's), a
    resume with other settings is refused here too, as far as they are known before the data
    is read (the number of epochs and an automatic max_answer_length are checked later).
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise SettingsError(
            f"{output_dir}: expected a folder for the model, found a file; choose another {options.output}"
        )
    for source in ("model", "teacher"):  # never written over, whatever else is asked
        check_not_holding_source(options.output, output_dir, (arguments or {}).get(source))
    earlier_run = (output_dir / CHECKPOINTS).exists() or (output_dir / METRICS_LOG).exists()
    resumable = latest_checkpoint(output_dir) is not None
    if not earlier_run and not resume and output_dir.is_dir():
        _check_folder_without_a_run(output_dir, overwrite, options)
    if resume and not resumable:
        if earlier_run:
            raise SettingsError(
                f"{output_dir} holds an earlier training run that left no checkpoint to resume from "
                f"(it stopped before its first checkpoint, or it finished and removed its checkpoints: "
                f"{options.keep_checkpoints} keeps them); pass {options.overwrite} to start over there, "
                f"or choose another {options.output}"
            )
        raise SettingsError(
            f"{output_dir} has no checkpoint to resume from (expected {output_dir / CHECKPOINTS / LATEST}); "
            f"train without {options.resume}, or check {options.output}"
        )
    if resume and arguments is not None:
        checkpoint = latest_checkpoint(output_dir)
        with _damaged_checkpoint_is_an_error(checkpoint, options):
            saved = json.loads((checkpoint / "training_args.json").read_text(encoding="utf-8"))
        current = dict(arguments)
        if current.get("settings", {}).get("max_answer_length", 0) is None:  # chosen from the data, later
            current["settings"] = {**current["settings"], "max_answer_length": saved.get("settings", {}).get("max_answer_length")}
        # known once the processes have started and the data is read: compared then
        for key in ("processes", "effective_batch_size", *DATA_DIGESTS):
            current.setdefault(key, saved.get(key))
        if "teacher_sha256" in saved:  # a teacher changed in place: refused before anything is loaded
            current["teacher_sha256"] = model_digest(current.get("teacher"))
        _refuse_changed_settings(output_dir, saved, current | {"epochs": saved.get("epochs")}, options)
    if not resume and earlier_run and not overwrite:
        if resumable:
            raise SettingsError(
                f"{output_dir} holds an earlier training run (checkpoints, {METRICS_LOG}): pass {options.resume} "
                f"to continue it, {options.overwrite} to start over there, or choose another {options.output}"
            )
        raise SettingsError(
            f"{output_dir} holds an earlier training run that left no checkpoint to resume from: pass "
            f"{options.overwrite} to start over there, or choose another {options.output}"
        )


def _check_folder_without_a_run(output_dir: Path, overwrite: bool, options: OptionNames) -> None:
    """A folder that holds files but no earlier run: its files are the user's, or an older model's.
    Written into only with overwrite, and only when it holds a model (whose files the new one replaces)."""
    contents = folder_contents(output_dir)
    if not contents:
        return
    if not overwrite:
        raise SettingsError(
            f"{output_dir} is not empty (it holds {shown_contents(contents)}) and holds no earlier training run: "
            f"pass {options.overwrite} to write the model there (files of the same names are replaced), "
            f"or choose another {options.output}"
        )
    if not holds_a_model(output_dir):
        raise SettingsError(
            f"{output_dir} holds files but no model (no {' or '.join(MODEL_MARKERS)}), and {options.overwrite} "
            f"replaces only an earlier model or run; empty the folder yourself or choose another {options.output}"
        )


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None.

    A checkpoint folder is renamed into place whole, so every `epoch-NNNN` folder is complete;
    the newest one is used even when a kill came before `latest` was written to name it.
    """
    folders = sorted((output_dir / CHECKPOINTS).glob("epoch-[0-9][0-9][0-9][0-9]"))
    complete = [folder for folder in folders if (folder / "state.json").is_file()]
    return complete[-1] if complete else None


def model_identity(model: str | None) -> str | None:
    """A model as a resumed run compares it: a local folder by its resolved path (`m`, `./m`
    and `/abs/m` are one model, wherever the run is resumed from), a hub id as it is."""
    if model is None:
        return None
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def model_digest(model: str | None) -> str | None:
    """A digest of a model's content (weights and config.json, as the engine cache keys it): a
    model folder changed in place is another model. None without a model, or for a hub id
    that is not in the local cache."""
    if model is None:
        return None
    from qatune.engines.cache import content_key

    folder = Path(model).expanduser()
    if not folder.is_dir():
        folder = _hub_snapshot(model)
    return content_key(folder) if folder is not None else None


def _hub_snapshot(model_id: str) -> Path | None:
    """The local folder of a hub model's cached snapshot, or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except (OSError, ValueError):  # not cached, or not a hub id: no digest to compare
        return None


def start_fresh(output_dir: Path, overwrite: bool) -> None:
    """Clear an earlier run's checkpoints and log (`check_output_dir` has allowed it)."""
    if overwrite:
        shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)
        (output_dir / METRICS_LOG).unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)


# --- writing and reading checkpoints ----------------------------------------------------------


def save(
    output_dir: Path,
    model,
    optimizer,
    schedule,
    state: TrainingState,
    arguments: dict[str, Any],
    best_weights: dict[str, torch.Tensor] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint after `state.epoch`; `best_weights` when the best epoch is an earlier one;
    `rng_states`: every process's random state (`rng_state`) in rank order (None: this one's)."""
    folder = output_dir / CHECKPOINTS
    final = folder / f"epoch-{state.epoch:04d}"
    temporary = _fresh_temporary(final)
    _save_weights(model, temporary)
    if best_weights is not None and state.best_epoch != state.epoch:
        from safetensors.torch import save_file

        save_file(best_weights, str(temporary / BEST_WEIGHTS))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng_states": rng_states or [rng_state()],
        },
        temporary / "trainer_state.pt",
    )
    _write_json(temporary / "state.json", asdict(state))
    _write_json(temporary / "training_args.json", arguments)
    with_default_permissions(*temporary.iterdir())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    _write_atomically(folder / LATEST, final.name)
    # Only the newest checkpoint is needed to resume; older ones would fill the disk.
    for older in folder.glob("epoch-*"):
        if older.name != final.name:
            shutil.rmtree(older, ignore_errors=True)
    return final


def load_latest(
    output_dir: Path, arguments: dict[str, Any], model, optimizer, schedule, options: OptionNames, rank: int = 0
) -> tuple[TrainingState, dict[str, torch.Tensor] | None]:
    """Restore weights, optimizer, schedule and the random state of process `rank` of the newest
    checkpoint; return the run's state and the best weights so far (None before the first dev
    evaluation)."""
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:  # check_output_dir has refused this already; a race with another process
        raise SettingsError(f"{output_dir}: the checkpoint to resume from is gone; train without {options.resume}")
    with _damaged_checkpoint_is_an_error(checkpoint, options):
        state = TrainingState(**json.loads((checkpoint / "state.json").read_text(encoding="utf-8")))
        saved_arguments = json.loads((checkpoint / "training_args.json").read_text(encoding="utf-8"))
    if _check_resumable(output_dir, saved_arguments, arguments, state, options):
        # More epochs than planned: a run that patience had stopped goes on, as asked.
        state.stopped_early, state.epochs_without_improvement = False, 0
    with _damaged_checkpoint_is_an_error(checkpoint, options):
        _load_weights(model, checkpoint)
        trainer_state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
        best_weights = _best_weights(checkpoint, state, model)
    optimizer.load_state_dict(trainer_state["optimizer"])
    schedule.load_state_dict(trainer_state["schedule"])
    _follow_schedule(schedule)
    restore_rng_state(_own_rng_state(trainer_state, rank))
    return state, best_weights


def rng_state() -> dict[str, Any]:
    """This process's random state: torch's, on the CPU and each GPU, which draws the dropout
    masks (the batches' order comes from the seed and the epoch; nothing else draws at random)."""
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(saved: dict[str, Any]) -> None:
    """Set this process's random state to `saved` (`rng_state`)."""
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] and torch.cuda.is_available():
        visible = torch.cuda.device_count()  # a machine with fewer GPUs restores what it has
        for device, state in enumerate(saved["cuda_rng"][:visible]):
            torch.cuda.set_rng_state(state, device)


def _own_rng_state(trainer_state: dict[str, Any], rank: int) -> dict[str, Any]:
    """Process `rank`'s saved random state. Earlier checkpoints hold the main process's alone
    (`torch_rng`, `cuda_rng`): every process restores that one, as qatune then did."""
    if "rng_states" not in trainer_state:
        return trainer_state
    states = trainer_state["rng_states"]
    return states[rank] if rank < len(states) else states[0]


def _follow_schedule(schedule) -> None:
    """Set the optimizer's learning rates to what the schedule gives at its step. The saved
    optimizer holds the rates of the run's own schedule; a run given more epochs has a longer
    one (for the same schedule the values are the same)."""
    rates = [base * rate(schedule.last_epoch) for base, rate in zip(schedule.base_lrs, schedule.lr_lambdas)]
    for group, rate in zip(schedule.optimizer.param_groups, rates):
        group["lr"] = rate
    schedule._last_lr = rates


@contextmanager
def _damaged_checkpoint_is_an_error(checkpoint: Path, options: OptionNames) -> Iterator[None]:
    """A checkpoint damaged after it was written (a copy cut short, a full disk) cannot be
    resumed: say so, with the way out, instead of a traceback."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
        raise SettingsError(
            f"{checkpoint}: the checkpoint cannot be read ({first_line(error)}); it is damaged or incomplete, so "
            f"the run cannot be resumed: pass {options.overwrite} to start over"
        ) from None


def remove(output_dir: Path) -> None:
    """Remove a finished run's checkpoints (the model folder holds what it produced)."""
    shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)


def copy_weights(model) -> dict[str, torch.Tensor]:
    """The model's weights, copied to the CPU (the best epoch's, kept while training goes on)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def _check_resumable(
    output_dir: Path, saved: dict[str, Any], current: dict[str, Any], state: TrainingState, options: OptionNames
) -> bool:
    """A resume continues the same run: only arguments that do not change what is trained may
    differ, and the number of epochs may grow, never shrink below the plan (its last epoch is
    the one evaluated and checkpointed last). Returns whether the run gets more epochs."""
    _refuse_changed_settings(output_dir, saved, current, options)
    planned = saved.get("epochs") or state.epoch
    if current["epochs"] < planned:
        raise SettingsError(
            f"{options.resume}: the run in {output_dir} was planned for {planned} epochs ({state.epoch} trained), "
            f"but {options.epochs} is {current['epochs']}; ask for at least {planned} epochs to continue it"
        )
    return current["epochs"] > planned


def _refuse_changed_settings(output_dir: Path, saved: dict[str, Any], current: dict[str, Any], options: OptionNames) -> None:
    details = []
    for key in sorted(set(saved) | set(current)):
        before, now = _comparable(key, saved.get(key)), _comparable(key, current.get(key))
        if key in RESUMABLE_CHANGES | {"epochs"} or before == now:
            continue
        if key in ("train_sha256", "dev_sha256") and "train_sha256" not in saved:
            continue  # a run started before qatune recorded its data: not known
        if key == "teacher_sha256":
            same_path = _comparable("teacher", saved.get("teacher")) == _comparable("teacher", current.get("teacher"))
            if key in saved and same_path:  # another path is named as such above
                details.append(f"{options.teacher}: {current.get('teacher')} holds another model than the run's "
                               "(its weights or config.json changed since the run started)")
            continue  # a run started before qatune recorded its teacher's content: not known
        if key in DATA_DIGESTS:
            details.append(_data_change(DATA_DIGESTS[key], before, now))
        elif key == "settings" and isinstance(before, dict) and isinstance(now, dict):  # each setting by name
            details += [
                f"{name}: was {before.get(name)!r}, now {now.get(name)!r}"
                for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)
            ]
        else:
            details.append(f"{key}: was {before!r}, now {now!r}")
    if details:
        details = "; ".join(details)
        raise SettingsError(
            f"{options.resume}: the run in {output_dir} was started with other settings ({details}); "
            f"resume with the same settings, or start a new run with {options.overwrite}"
        )


def _data_change(what: str, before: str | None, now: str | None) -> str:
    if before is None:
        return f"{what} given now, none before"
    if now is None:
        return f"{what} given before, none now"
    return f"other {what} than the run's (its questions, answers or contexts differ)"


def planned_epochs(output_dir: Path) -> int | None:
    """The number of epochs the run in `output_dir` was planned for, from its newest checkpoint
    (None without one): a resume that does not ask for more keeps that plan."""
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        return None
    try:
        return json.loads((checkpoint / "training_args.json").read_text(encoding="utf-8")).get("epochs")
    except (OSError, ValueError):  # a damaged checkpoint is refused, with its fix, when it is loaded
        return None


def _comparable(key: str, value: Any) -> Any:
    return model_identity(value) if key in ("model", "teacher") and isinstance(value, str) else value


def _best_weights(checkpoint: Path, state: TrainingState, model) -> dict[str, torch.Tensor] | None:
    if (checkpoint / BEST_WEIGHTS).is_file():
        from safetensors.torch import load_file

        return load_file(str(checkpoint / BEST_WEIGHTS))
    return copy_weights(model) if state.best_epoch == state.epoch else None


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

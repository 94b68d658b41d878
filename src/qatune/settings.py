"""Windowing and decoding settings that travel with a model (`qatune.json`).

Training, evaluation, the CLI and the server read the same file, so that every entry point
cuts windows and picks spans the same way.

    >>> QASettings(max_seq_length=256, doc_stride=64).context_room
    189
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from qatune.errors import ModelError, SettingsError

SETTINGS_FILE = "qatune.json"

# Special tokens around a question/context pair: [CLS] question [SEP] context [SEP].
# RoBERTa-style tokenizers use one more ("<s> q </s></s> c </s>"); features.py checks the
# real count of the tokenizer in use.
PAIR_SPECIAL_TOKENS = 3
# The longest answer (in tokens) of a model that does not say: the SQuAD examples' value.
DEFAULT_MAX_ANSWER_LENGTH = 30


@dataclass
class QASettings:
    """How questions and contexts are cut into windows and how answers are picked.

    max_seq_length: tokens per window, question and special tokens included.
    doc_stride: tokens of overlap between two consecutive windows of one context.
    max_question_length: longer questions are cut to this many tokens (and counted).
    max_answer_length: the longest answer span considered, in tokens. None (before training
        only) lets training choose it from the training answers; a model without it uses
        DEFAULT_MAX_ANSWER_LENGTH.
    n_best: start and end positions considered per window.
    null_threshold: a question is answered "no answer" when its no-answer probability
        exceeds this; 1.0 means always answer. Tuned on dev data that has unanswerable
        questions.
    align_to_words: answers start and end at word borders ("troughs", never the sub-word
        "trough"), the tokenizer's words; False gives the tokens' own spans.
    temperature: the model's logits are divided by this before scores are formed, so that a
        score of 0.8 is right about 80% of the time; fitted on the dev data at the end of
        training (`qatune.calibration`), 1.0 (the model's own scores) without dev data.
    """

    max_seq_length: int = 384
    doc_stride: int = 128
    max_question_length: int = 64
    max_answer_length: int | None = None
    n_best: int = 20
    null_threshold: float = 1.0
    align_to_words: bool = True
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.align_to_words, bool):
            raise SettingsError(f"align_to_words must be true or false, got {self.align_to_words!r}")
        for name in ("max_seq_length", "doc_stride", "max_question_length", "max_answer_length", "n_best"):
            value = getattr(self, name)
            if value is None and name == "max_answer_length":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingsError(f"{name} must be a whole number of at least 1, got {value!r}")
        is_number = isinstance(self.null_threshold, (int, float)) and not isinstance(self.null_threshold, bool)
        if not is_number or not 0.0 <= self.null_threshold <= 1.0:  # also rejects NaN
            raise SettingsError(
                f"null_threshold must be a probability between 0 and 1, got {self.null_threshold!r}"
            )
        is_number = isinstance(self.temperature, (int, float)) and not isinstance(self.temperature, bool)
        if not is_number or not 0.0 < self.temperature < float("inf"):
            raise SettingsError(f"temperature must be a positive number (1.0: scores as the model gives them), got {self.temperature!r}")
        if self.context_room < 1:
            raise SettingsError(
                f"max_seq_length ({self.max_seq_length}) leaves no room for the context after a "
                f"question of up to max_question_length ({self.max_question_length}) tokens and "
                f"{PAIR_SPECIAL_TOKENS} special tokens; raise max_seq_length or lower max_question_length"
            )
        if self.doc_stride >= self.context_room:
            raise SettingsError(
                f"doc_stride ({self.doc_stride}) must be smaller than the room left for the context "
                f"in a window ({self.context_room} tokens = max_seq_length {self.max_seq_length} - "
                f"max_question_length {self.max_question_length} - {PAIR_SPECIAL_TOKENS} special "
                f"tokens); use a doc_stride below {self.context_room}, e.g. {self.context_room // 3}"
            )

    @property
    def context_room(self) -> int:
        """Context tokens a window holds when the question is as long as allowed."""
        return self.max_seq_length - self.max_question_length - PAIR_SPECIAL_TOKENS

    @property
    def answer_length(self) -> int:
        """The longest answer span in tokens that decoding considers."""
        return DEFAULT_MAX_ANSWER_LENGTH if self.max_answer_length is None else self.max_answer_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "QASettings":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def write_model_card(directory: str | Path, settings: QASettings, **extra: Any) -> Path:
    """Write `qatune.json`: the settings plus whatever else describes the model
    (training arguments, data hashes and counts, final metrics)."""
    path = Path(directory) / SETTINGS_FILE
    payload = {"qatune_version": _version(), "settings": settings.to_dict(), **extra}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_model_card(directory: str | Path) -> dict[str, Any]:
    """Read `qatune.json` of a model directory; a model without one gets the default settings."""
    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        return {"settings": QASettings().to_dict()}
    fix = "copy it again from the trained model, or delete it to use the default settings"
    try:
        card = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte order mark, as editors may add, is skipped
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(
            f"{path}: expected the JSON settings file qatune writes, but it cannot be read ({error}); {fix}"
        ) from None
    if not isinstance(card, dict):
        raise ModelError(f"{path}: expected a JSON object with a 'settings' object; found a {_json_type(card)}; {fix}")
    if not isinstance(card.get("settings"), dict):
        found = "none" if "settings" not in card else f"a {_json_type(card['settings'])}"
        raise ModelError(f"{path}: expected a 'settings' object (what qatune writes there); found {found}; {fix}")
    return card


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "true or false", type(None): "null"}
    return names.get(type(value), "number")


def read_settings(directory: str | Path) -> QASettings:
    """The settings saved in a model directory (the defaults when it has no `qatune.json`);
    a bad value is an error that names the file."""
    saved = read_model_card(directory)["settings"]
    unknown = sorted(set(saved) - {f.name for f in fields(QASettings)})
    if unknown:  # from a later qatune, or mistyped: said, since they change nothing here
        logging.getLogger("qatune").warning(
            "%s: settings this qatune does not know are ignored: %s", Path(directory) / SETTINGS_FILE, ", ".join(unknown)
        )
    try:
        return QASettings.from_dict(saved)
    except (SettingsError, TypeError) as error:
        raise ModelError(
            f"{Path(directory) / SETTINGS_FILE}: the saved settings are not valid ({error}); fix the "
            f"value there, or copy the file again from the trained model"
        ) from None


def _version() -> str:
    from qatune import __version__

    return __version__


__all__ = ["QASettings", "SETTINGS_FILE", "DEFAULT_MAX_ANSWER_LENGTH", "read_model_card", "read_settings", "write_model_card"]

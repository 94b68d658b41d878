"""The official SQuAD metrics: exact match (EM) and F1, for SQuAD v1.1 and v2.0.

Plain Python: this module never imports torch. Every number equals what the official
evaluation scripts (evaluate-v1.1.py, evaluate-v2.0.py) print for the same data and
predictions, to the last digit, with one difference: a question with no prediction is
counted and scored as wrong (EM 0, F1 0) in both versions and at every no-answer
threshold, and `score` reports those questions instead of skipping them.

    >>> m = squad_v2({"q1": ["Denver Broncos"], "q2": []}, {"q1": "the Broncos", "q2": ""})
    >>> m["exact"], m["f1"], m["total"], m["HasAns_f1"], m["NoAns_exact"]
    (50.0, 83.33333333333333, 2, 66.66666666666666, 100.0)

File formats (the official ones): predictions are a JSON object mapping each question id
to its predicted answer text ("" for no answer); no-answer probabilities are a JSON object
mapping each question id to the probability, from 0 to 1, that it has no answer.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qatune.data.examples import check_unique_ids
from qatune.data.reading import read_text_file
from qatune.errors import DataError, SettingsError
from qatune.wording import counted

if TYPE_CHECKING:
    from qatune.data import Example

VERSIONS = ("v1.1", "v2.0")
_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as the official scripts
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_SHOWN_IDS = 5  # how many ids a warning lists


# --- one prediction against one gold answer -------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    >>> normalize_answer("  The Denver-Broncos!  ")
    'denverbroncos'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str, *, version: str = "v2.0") -> int:
    """1 when both texts normalize to the same string, else 0 (the same in v1.1 and v2.0).

    >>> exact_match("the Broncos.", "Broncos")
    1
    """
    _check_version(version)
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, *, version: str = "v2.0") -> float:
    """Token-overlap F1 of the normalized texts.

    The versions differ only when a text normalizes to nothing: v2.0 gives 1 when both are
    empty and 0 when one is; v1.1 gives 0 whenever no token is shared, so 0 for two empties.

    >>> f1("Denver Broncos", "the Broncos")
    0.6666666666666666
    >>> f1("", "", version="v2.0"), f1("", "", version="v1.1")
    (1, 0)
    """
    _check_version(version)
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if version == "v2.0" and (not pred_tokens or not gold_tokens):
        return int(pred_tokens == gold_tokens)
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


# --- whole data sets -------------------------------------------------------------------


def squad_v1(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict:
    """SQuAD v1.1 metrics: `{"exact_match": ..., "f1": ...}` in percent.

    `gold` maps each question id to its gold answer texts (at least one each).

    >>> squad_v1({"q1": ["Broncos"], "q2": ["1990"]}, {"q1": "the Broncos"})
    {'exact_match': 50.0, 'f1': 50.0}
    """
    total = _check_gold(gold)
    exact_sum = f1_sum = 0
    # A running `+=` in question order, as the official script: from Python 3.12 on,
    # `sum()` of floats rounds differently.
    for qid, answers in gold.items():
        if not answers:
            raise DataError(
                f"question {qid!r} has no gold answer; SQuAD v1.1 metrics need at least one "
                "gold answer per question; score unanswerable questions with SQuAD v2.0"
            )
        if qid not in predictions:
            continue  # counted in `total`, scored 0
        prediction = predictions[qid]
        exact_sum += max(exact_match(prediction, a, version="v1.1") for a in answers)
        f1_sum += max(f1(prediction, a, version="v1.1") for a in answers)
    return {"exact_match": 100.0 * exact_sum / total, "f1": 100.0 * f1_sum / total}


def squad_v2(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """SQuAD v2.0 metrics in percent, keys in the official order.

    `gold` maps each question id to its gold answer texts (an empty list: unanswerable).
    A question counts as answered "no answer" when its no-answer probability is above
    `na_prob_thresh`. With `na_probs`, also the best EM/F1 over all thresholds
    (`best_exact`, `best_exact_thresh`, `best_f1`, `best_f1_thresh`).

    >>> squad_v2({"q1": ["Broncos"], "q2": []}, {"q1": "Broncos", "q2": "Panthers"},
    ...          na_probs={"q1": 0.1, "q2": 0.8}, na_prob_thresh=0.5)["exact"]
    100.0
    """
    total = _check_gold(gold)
    _check_thresh(na_prob_thresh, "na_prob_thresh")
    has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw = raw_scores_v2(gold, predictions)
    if na_probs is None:
        probs: Mapping[str, float] = {qid: 0.0 for qid in predictions}
    else:
        check_na_probs(na_probs, exact_raw)
        probs = na_probs
    exact_thr = _apply_threshold(exact_raw, probs, has_ans, na_prob_thresh)
    f1_thr = _apply_threshold(f1_raw, probs, has_ans, na_prob_thresh)

    metrics = _eval_dict(exact_thr, f1_thr, list(gold), "")
    for prefix, wanted in (("HasAns_", True), ("NoAns_", False)):
        qids = [qid for qid, answerable in has_ans.items() if answerable == wanted]
        if qids:
            metrics.update(_eval_dict(exact_thr, f1_thr, qids, prefix))
    if na_probs is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            best, thresh = _best_threshold(predictions, raw, na_probs, has_ans, total)
            metrics[f"best_{name}"] = best
            metrics[f"best_{name}_thresh"] = thresh
    return metrics


def check_na_probs(
    na_probs: Mapping[str, float], question_ids: Iterable[str], *, source: str = "na_probs"
) -> None:
    """Raise DataError unless `na_probs` has a probability for every id in `question_ids`."""
    lacking = [qid for qid in question_ids if qid not in na_probs]
    if lacking:
        raise DataError(
            f"{source}: no no-answer probability for {counted(len(lacking), 'predicted question')} "
            f"({_first_ids(lacking)}); expected one for every question that has a prediction; "
            "write the probabilities and the predictions from the same run"
        )


def raw_scores_v2(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]):
    """Best EM and F1 over the gold answers, for each question that has a prediction."""
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, float] = {}
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        # Gold answers that normalize to nothing do not count; none left: "" is the answer.
        golds = [a for a in answers if normalize_answer(a)] or [""]
        prediction = predictions[qid]
        exact_scores[qid] = max(exact_match(prediction, a) for a in golds)
        f1_scores[qid] = max(f1(prediction, a) for a in golds)
    return exact_scores, f1_scores


def _apply_threshold(scores, na_probs, has_ans, thresh) -> dict[str, float]:
    """Questions whose no-answer probability is above `thresh` are answered "no answer"."""
    return {
        qid: float(not has_ans[qid]) if na_probs[qid] > thresh else score
        for qid, score in scores.items()
    }


def _eval_dict(exact_scores, f1_scores, qids: list[str], prefix: str) -> dict:
    """Mean EM and F1 in percent over `qids`; a question without a score counts as 0."""
    total = len(qids)
    return {
        f"{prefix}exact": 100.0 * sum(exact_scores.get(q, 0) for q in qids) / total,
        f"{prefix}f1": 100.0 * sum(f1_scores.get(q, 0) for q in qids) / total,
        f"{prefix}total": total,
    }


def _best_threshold(predictions, scores, na_probs, has_ans, total: int):
    """The official walk: start with every question answered "no answer", then answer
    them one by one in order of rising no-answer probability, keeping the best score."""
    current = sum(1 for qid in scores if not has_ans[qid])
    best, best_thresh = current, 0.0
    # A stable sort over na_probs' own order, so that ties walk as the official script.
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            current += scores[qid]
        elif predictions[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / total, best_thresh


# --- qatune examples -------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreResult:
    """Metrics (official keys), the SQuAD version used, and the ids that did not match."""

    metrics: dict
    version: str
    missing: tuple[str, ...] = ()  # questions with no prediction, scored as wrong
    unknown: tuple[str, ...] = ()  # prediction ids that are no question of the data

    def warnings(self) -> list[str]:
        """One line for the missing ids and one for the unknown ids, when there are any."""
        lines = []
        if self.missing:
            lines.append(
                f"{counted(len(self.missing), 'question')} without a prediction, scored as "
                f"wrong (EM 0, F1 0): {_first_ids(self.missing)}"
            )
        if self.unknown:
            lines.append(
                f"{counted(len(self.unknown), 'prediction')} for ids not in the data, "
                f"ignored: {_first_ids(self.unknown)}"
            )
        return lines


def score(
    examples: Sequence[Example],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    *,
    na_prob_thresh: float = 1.0,
    version: str = "auto",
) -> ScoreResult:
    """Score predictions against examples with the official SQuAD metrics.

    `version="auto"` goes by the data: v2.0 when a question is unanswerable, else v1.1, which
    has no no-answer threshold, so `na_probs` are then not used (`qatune evaluate`, which always
    has them, and `qatune score` give the same metrics for the same files).

    >>> from qatune.data import Example, GoldAnswer
    >>> ex = Example("q1", "Who won?", "The Broncos won.", (GoldAnswer("Broncos", 4),))
    >>> result = score([ex], {"q1": "Broncos", "zz": "?"})
    >>> result.version, result.metrics, result.unknown
    ('v1.1', {'exact_match': 100.0, 'f1': 100.0}, ('zz',))
    """
    gold = gold_texts(examples)
    if version == "auto":
        version = "v2.0" if any(not answers for answers in gold.values()) else "v1.1"
        if version == "v1.1":
            na_probs = None
    _check_version(version)
    if version == "v1.1":
        if na_probs is not None:
            raise SettingsError(
                "na_probs were given but version is 'v1.1', which has no no-answer "
                "threshold; use version='v2.0' or leave na_probs out"
            )
        metrics = squad_v1(gold, predictions)
    else:
        metrics = squad_v2(gold, predictions, na_probs, na_prob_thresh)
    return ScoreResult(
        metrics=metrics,
        version=version,
        missing=tuple(qid for qid in gold if qid not in predictions),
        unknown=tuple(qid for qid in predictions if qid not in gold),
    )


def exact_of(metrics: Mapping[str, float]) -> float:
    """The exact-match score of either version's metrics (v1.1 `exact_match`, v2.0 `exact`)."""
    return metrics["exact_match"] if "exact_match" in metrics else metrics["exact"]


def gold_texts(examples: Sequence[Example]) -> dict[str, list[str]]:
    """Question id -> gold answer texts; a question id may appear only once."""
    check_unique_ids(examples)
    gold: dict[str, list[str]] = {}
    for example in examples:
        gold[example.id] = [answer.text for answer in example.answers]
    return gold


# --- the official file formats ---------------------------------------------------------


def read_predictions(path: str | Path) -> dict[str, str]:
    """Read a predictions file: a JSON object mapping question id -> predicted answer text."""
    pairs = _read_json_object(path, "question ids to predicted answer texts")
    predictions: dict[str, str] = {}
    for qid, value in pairs:
        if not isinstance(value, str):
            raise DataError(
                f'{path}, key {json.dumps(qid)}: expected the predicted answer text (a string, '
                f'"" for no answer), found {_describe(value)}; fix that value'
            )
        predictions[qid] = value
    return predictions


def read_na_probs(path: str | Path) -> dict[str, float]:
    """Read a no-answer probability file: a JSON object mapping question id -> number in [0, 1]."""
    pairs = _read_json_object(path, "question ids to no-answer probabilities")
    na_probs: dict[str, float] = {}
    for qid, value in pairs:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (is_number and 0 <= value <= 1):  # also rejects NaN
            raise DataError(
                f"{path}, key {json.dumps(qid)}: expected the probability that the question "
                f"has no answer (a number from 0 to 1), found {_describe(value)}; if these "
                "are scores or logits, turn them into probabilities (e.g. with a sigmoid) first"
            )
        na_probs[qid] = value  # kept as written: the thresholds are reported as given
    return na_probs


class _Pairs(list):
    """A JSON object as the list of its (key, value) pairs, to see repeated keys."""


def _read_json_object(path: str | Path, meaning: str) -> list[tuple[str, Any]]:
    if not os.path.exists(path):  # worded here for this file; read_text_file words it for a data file
        raise DataError(f"{path}: no such file; give the path of a JSON file that maps {meaning}")
    text = read_text_file(Path(path))  # decoded as data files are: a UTF-8 BOM skipped, a bad byte named
    try:
        document = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            f"expected a JSON object that maps {meaning}; fix the file there"
        ) from None
    except RecursionError:
        raise DataError(
            f"{path}: expected a JSON object that maps {meaning}, found JSON nested too deeply to "
            'read; write it as one flat object: {"question id": value, ...}'
        ) from None
    except ValueError as error:  # an integer of 4300+ digits
        raise DataError(
            f"{path}: expected a JSON object that maps {meaning}, found JSON that cannot be read "
            f"({error}); write each value as a short string or number"
        ) from None
    if not isinstance(document, _Pairs):
        raise DataError(
            f"{path}: expected a JSON object that maps {meaning}, found {_describe(document)}; "
            'write it as {"question id": value, ...}'
        )
    if any(key == "data" and isinstance(value, list) for key, value in document):
        raise DataError(
            f"{path}: this looks like a SQuAD data file (it has a \"data\" list); expected a "
            f"JSON object that maps {meaning}; check the order of the files"
        )
    seen: set[str] = set()
    for key, _ in document:
        if key in seen:
            raise DataError(
                f"{path}, key {json.dumps(key)}: appears more than once; expected each "
                "question id once; keep one of them"
            )
        seen.add(key)
    return list(document)


# --- small helpers ---------------------------------------------------------------------


def _check_gold(gold: Mapping[str, Sequence[str]]) -> int:
    if not gold:
        raise DataError("no questions to score: the gold data is empty; give data with questions")
    return len(gold)


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise SettingsError(f"version: expected one of {', '.join(VERSIONS)}, found {version!r}")


def _check_thresh(value: float, name: str) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and 0 <= value <= 1):
        raise SettingsError(
            f"{name}: expected a no-answer probability threshold from 0 to 1, found {value!r}; "
            "a question counts as unanswered when its no-answer probability is above it"
        )


def _describe(value: Any) -> str:
    if isinstance(value, _Pairs):
        return "an object"
    if isinstance(value, list):
        return f"a list of {counted(len(value), 'item')}"
    kinds = {bool: "a boolean", type(None): "null", str: "a string"}
    kind = kinds.get(type(value), "a number")
    # json.dumps would write NaN and Infinity the JavaScript way; show them as Python does.
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})"


def _first_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    return shown if len(ids) <= _SHOWN_IDS else f"{shown}, ... ({len(ids) - _SHOWN_IDS} more)"

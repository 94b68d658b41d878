"""qatune.metrics: hand-checked cases, file reading, and a comparison with a second,
literal implementation of the official SQuAD v1.1 and v2.0 definitions."""

from __future__ import annotations

import collections
import json
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qatune.data import Example, GoldAnswer
from qatune.errors import DataError, SettingsError
from qatune.metrics import (
    ScoreResult,
    check_na_probs,
    exact_match,
    f1,
    normalize_answer,
    read_na_probs,
    read_predictions,
    score,
    squad_v1,
    squad_v2,
)

# --- normalization and per-pair scores, checked by hand ---------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Cat", "cat"),
        ("  Hello,   World!! ", "hello world"),
        ("theater", "theater"),  # an article only as a whole word
        ("an apple a day", "apple day"),
        ("A.B.C.", "abc"),  # punctuation goes before articles are looked for
        ("the—end", "—end"),  # non-ASCII punctuation stays
        ("l'a", "la"),
        ("Café", "café"),
        ("東京 the 大学", "東京 大学"),
        ("x\t\n y\u3000z", "x y z"),
        ("éa", "éa"),  # precomposed é is a letter: no word boundary before "a"
        ("e\u0301a", "e\u0301"),  # a combining mark is no word character: "a" is a word
        ("The", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match():
    assert exact_match("The Broncos!", "broncos") == 1
    assert exact_match("Denver Broncos", "Broncos") == 0
    assert exact_match("", "the", version="v1.1") == 1


def test_f1_partial_overlap():
    assert f1("Denver Broncos", "Broncos") == 2 * 0.5 * 1.0 / 1.5
    assert f1("x y", "x z") == 0.5
    # repeated tokens count at most as often as they appear on the other side
    assert f1("x x y", "x z") == 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)
    assert f1("x y", "z w") == 0


@pytest.mark.parametrize(
    "prediction, gold, v2, v1",
    [
        ("", "", 1, 0),
        ("the", "", 1, 0),  # normalizes to empty
        ("x", "", 0, 0),
        ("", "x", 0, 0),
    ],
)
def test_f1_with_empty_texts_differs_between_versions(prediction, gold, v2, v1):
    assert f1(prediction, gold, version="v2.0") == v2
    assert f1(prediction, gold, version="v1.1") == v1


def test_unknown_version_is_a_settings_error():
    with pytest.raises(SettingsError) as error:
        f1("x", "x", version="2.0")
    assert str(error.value) == "version: expected one of v1.1, v2.0, found '2.0'"


# --- whole data sets, checked by hand ---------------------------------------------------


def test_squad_v1_counts_a_missing_prediction_as_wrong_and_ignores_unknown_ids():
    gold = {"q1": ["Denver Broncos", "Broncos"], "q2": ["1990"], "q3": ["Santa Clara"]}
    predictions = {"q1": "the Broncos", "q2": "in 1990", "zz": "x"}  # q3 has none
    assert squad_v1(gold, predictions) == {
        "exact_match": 100.0 * 1 / 3,
        "f1": 100.0 * (1 + 2 * 0.5 * 1.0 / 1.5) / 3,
    }


def test_squad_v1_needs_a_gold_answer_per_question():
    with pytest.raises(DataError) as error:
        squad_v1({"q1": []}, {"q1": ""})
    assert str(error.value) == (
        "question 'q1' has no gold answer; SQuAD v1.1 metrics need at least one gold answer "
        "per question; score unanswerable questions with SQuAD v2.0"
    )


V2_GOLD = {"q1": ["Broncos"], "q2": [], "q3": ["Santa Clara", "Levi's Stadium"], "q4": []}
V2_PREDICTIONS = {"q1": "Broncos", "q2": "Panthers", "q3": "Levi's", "q4": ""}
V2_NA_PROBS = {"q1": 0.2, "q2": 0.7, "q3": 0.4, "q4": 0.9}


def test_squad_v2_without_na_probs():
    metrics = squad_v2(V2_GOLD, V2_PREDICTIONS)
    levis_f1 = 2 * 1.0 * 0.5 / 1.5  # "levis" against "levis stadium"
    assert list(metrics.items()) == [
        ("exact", 100.0 * 2 / 4),
        ("f1", 100.0 * (1 + 0 + levis_f1 + 1) / 4),
        ("total", 4),
        ("HasAns_exact", 50.0),
        ("HasAns_f1", 100.0 * (1 + levis_f1) / 2),
        ("HasAns_total", 2),
        ("NoAns_exact", 50.0),
        ("NoAns_f1", 50.0),
        ("NoAns_total", 2),
    ]


def test_squad_v2_with_na_probs_and_threshold():
    metrics = squad_v2(V2_GOLD, V2_PREDICTIONS, V2_NA_PROBS, na_prob_thresh=0.5)
    levis_f1 = 2 * 1.0 * 0.5 / 1.5
    # q2 and q4 are above 0.5: answered "no answer", which is right for both
    assert metrics["exact"] == 75.0
    assert metrics["f1"] == 100.0 * (1 + 1 + levis_f1 + 1) / 4
    assert metrics["NoAns_exact"] == metrics["NoAns_f1"] == 100.0
    # walk: start at 2 (both no-answer questions right), q1 +1, q3 +0 (EM) or +2/3 (F1),
    # q2 -1 (it predicted an answer), q4 +0
    assert metrics["best_exact"] == 75.0
    assert metrics["best_exact_thresh"] == 0.2
    assert metrics["best_f1"] == 100.0 * (3 + levis_f1) / 4
    assert metrics["best_f1_thresh"] == 0.4
    assert list(metrics)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def test_squad_v2_leaves_out_groups_that_have_no_question():
    assert list(squad_v2({"q1": ["x"]}, {"q1": "x"})) == [
        "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
    ]
    assert list(squad_v2({"q1": []}, {"q1": ""})) == [
        "exact", "f1", "total", "NoAns_exact", "NoAns_f1", "NoAns_total",
    ]


@pytest.mark.parametrize(
    "order, best, thresh",
    [(["a", "b"], 100.0, 0.5), (["b", "a"], 50.0, 0.0)],
)
def test_best_threshold_walks_ties_in_the_order_of_na_probs(order, best, thresh):
    gold = {"a": ["x"], "b": []}
    predictions = {"a": "x", "b": "y"}
    na_probs = {qid: 0.5 for qid in order}
    metrics = squad_v2(gold, predictions, na_probs)
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (best, thresh)


def test_squad_v2_scores_missing_predictions_as_wrong_whatever_the_gold():
    gold = {"q1": ["x"], "q2": []}
    metrics = squad_v2(gold, {"q2": ""}, {"q2": 0.9}, na_prob_thresh=0.5)
    assert (metrics["exact"], metrics["total"], metrics["HasAns_exact"]) == (50.0, 2, 0.0)
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (50.0, 0.0)
    # the unanswerable q2 without a prediction is wrong too, at every threshold
    metrics = squad_v2(gold, {"q1": "x"}, {"q1": 0.3})
    assert (metrics["exact"], metrics["NoAns_exact"]) == (50.0, 0.0)
    assert (metrics["best_exact"], metrics["best_exact_thresh"]) == (50.0, 0.3)


def test_squad_v2_needs_a_probability_for_every_predicted_question():
    with pytest.raises(DataError) as error:
        squad_v2(V2_GOLD, V2_PREDICTIONS, {"q1": 0.5, "q4": 0.1})
    assert str(error.value) == (
        "na_probs: no no-answer probability for 2 predicted questions (q2, q3); expected one "
        "for every question that has a prediction; write the probabilities and the "
        "predictions from the same run"
    )
    check_na_probs({"q1": 0.5}, ["q1"])  # complete: no error


@pytest.mark.parametrize("thresh", [-0.1, 1.5, float("nan"), True])
def test_squad_v2_threshold_must_be_a_probability(thresh):
    with pytest.raises(SettingsError, match=r"^na_prob_thresh: expected a no-answer prob"):
        squad_v2(V2_GOLD, V2_PREDICTIONS, na_prob_thresh=thresh)


def test_empty_gold_is_a_data_error():
    for metric in (squad_v1, squad_v2):
        with pytest.raises(DataError, match=r"^no questions to score: the gold data is empty"):
            metric({}, {"q1": "x"})


# --- score(): qatune examples ------------------------------------------------------------


def _example(qid, *answers, place=""):
    context = "The Denver Broncos won in 1990."
    gold = tuple(GoldAnswer(a, context.index(a)) for a in answers)
    return Example(qid, "Who?", context, gold, is_impossible=not answers, place=place)


def test_score_uses_v1_when_every_question_has_an_answer():
    examples = [_example("q1", "Denver Broncos", "Broncos"), _example("q2", "1990")]
    predictions = {"q1": "Broncos", "q2": "1990"}
    result = score(examples, predictions)
    assert result == ScoreResult(
        metrics=squad_v1({"q1": ["Denver Broncos", "Broncos"], "q2": ["1990"]}, predictions),
        version="v1.1",
    )
    assert result.metrics == {"exact_match": 100.0, "f1": 100.0}
    assert result.warnings() == []


def test_score_goes_by_the_data_for_its_version():
    answerable = [_example("q1", "Broncos")]
    assert score(answerable + [_example("q2")], {"q1": "x", "q2": ""}).version == "v2.0"
    # no-answer probabilities alone do not change the metrics (evaluate always has them)
    result = score(answerable, {"q1": "Broncos"}, {"q1": 0.9}, na_prob_thresh=0.5)
    assert (result.version, result.metrics) == ("v1.1", {"exact_match": 100.0, "f1": 100.0})
    result = score(answerable, {"q1": "Broncos"}, {"q1": 0.9}, na_prob_thresh=0.5, version="v2.0")
    assert result.metrics["exact"] == 0.0  # answered "no answer" to an answerable question
    with pytest.raises(SettingsError, match=r"^na_probs were given but version is 'v1.1'"):
        score(answerable, {"q1": "Broncos"}, {"q1": 0.9}, version="v1.1")


def test_score_reports_missing_and_unknown_ids():
    examples = [_example(f"q{i}", "Broncos") for i in range(8)]
    predictions = {"q0": "Broncos", "zz": "x"}
    result = score(examples, predictions)
    assert result.missing == tuple(f"q{i}" for i in range(1, 8))
    assert result.unknown == ("zz",)
    assert result.metrics == {"exact_match": 100.0 / 8, "f1": 100.0 / 8}
    assert result.warnings() == [
        "7 questions without a prediction, scored as wrong (EM 0, F1 0): "
        "q1, q2, q3, q4, q5, ... (2 more)",
        "1 prediction for ids not in the data, ignored: zz",
    ]


def test_score_rejects_a_repeated_question_id():
    examples = [_example("q1", "Broncos", place="data[0].paragraphs[0].qas[0]"),
                _example("q1", "1990", place="data[1].paragraphs[0].qas[2]")]
    with pytest.raises(DataError) as error:
        score(examples, {"q1": "x"})
    assert str(error.value) == (
        "question id 'q1' appears twice, at data[0].paragraphs[0].qas[0] and at "
        "data[1].paragraphs[0].qas[2]; expected each question id once; give one of them a new id"
    )


# --- reading the official file formats ----------------------------------------------------


def test_read_predictions_and_na_probs(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"q1": "Broncos", "q2": ""}), encoding="utf-8")
    (tmp_path / "n.json").write_text('{"q1": 0.25, "q2": 1}', encoding="utf-8")
    assert read_predictions(tmp_path / "p.json") == {"q1": "Broncos", "q2": ""}
    na_probs = read_na_probs(tmp_path / "n.json")
    assert na_probs == {"q1": 0.25, "q2": 1}
    assert type(na_probs["q2"]) is int  # kept as written, so thresholds print as given


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"q1": 3}', ', key "q1": expected the predicted answer text (a string, "" for no '
         'answer), found a number (3); fix that value'),
        ('{"q1": ["a", "b"]}', ', key "q1": expected the predicted answer text (a string, "" '
         'for no answer), found a list of 2 items; fix that value'),
        ('{"q1": "a", "q1": "b"}', ', key "q1": appears more than once; expected each question '
         'id once; keep one of them'),
        ('["a"]', ": expected a JSON object that maps question ids to predicted answer texts, "
         'found a list of 1 item; write it as {"question id": value, ...}'),
        ('{"q1": "a",}', ": not valid JSON (line 1, column 12: Expecting property name enclosed "
         "in double quotes); expected a JSON object that maps question ids to predicted answer "
         "texts; fix the file there"),
        ('{"version": "v2.0", "data": []}', ': this looks like a SQuAD data file (it has a '
         '"data" list); expected a JSON object that maps question ids to predicted answer '
         "texts; check the order of the files"),
    ],
)
def test_read_predictions_errors(tmp_path, text, message):
    path = tmp_path / "predictions.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_predictions(path)
    assert str(error.value) == f"{path}{message}"


def test_read_predictions_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(DataError) as error:
        read_predictions(path)
    assert str(error.value) == (
        f"{path}: no such file; give the path of a JSON file that maps question ids to "
        "predicted answer texts"
    )


@pytest.mark.parametrize(
    "value, found",
    [("1.5", "a number (1.5)"), ('"0.3"', 'a string ("0.3")'), ("true", "a boolean (true)"),
     ("NaN", "a number (nan)"), ("-2", "a number (-2)"), ("null", "null (null)")],
)
def test_read_na_probs_errors(tmp_path, value, found):
    path = tmp_path / "na.json"
    path.write_text(f'{{"q1": 0.5, "q2": {value}}}', encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_na_probs(path)
    assert str(error.value) == (
        f'{path}, key "q2": expected the probability that the question has no answer (a '
        f"number from 0 to 1), found {found}; if these are scores or logits, turn them into "
        "probabilities (e.g. with a sigmoid) first"
    )


# --- a second, literal implementation of the published definitions ---------------------
# Laid out step by step as the official evaluation scripts, on data in the SQuAD layout.


def ref_normalize_answer(s):
    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


# v1.1


def ref_v1_f1_score(prediction, ground_truth):
    prediction_tokens = ref_normalize_answer(prediction).split()
    ground_truth_tokens = ref_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def ref_v1_exact_match_score(prediction, ground_truth):
    return ref_normalize_answer(prediction) == ref_normalize_answer(ground_truth)


def ref_v1_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def ref_v1_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += ref_v1_metric_max_over_ground_truths(
                    ref_v1_exact_match_score, prediction, ground_truths
                )
                f1 += ref_v1_metric_max_over_ground_truths(
                    ref_v1_f1_score, prediction, ground_truths
                )
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


# v2.0


def ref_make_qid_to_has_ans(dataset):
    qid_to_has_ans = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid_to_has_ans[qa["id"]] = bool(qa["answers"])
    return qid_to_has_ans


def ref_get_tokens(s):
    if not s:
        return []
    return ref_normalize_answer(s).split()


def ref_compute_exact(a_gold, a_pred):
    return int(ref_normalize_answer(a_gold) == ref_normalize_answer(a_pred))


def ref_compute_f1(a_gold, a_pred):
    gold_toks = ref_get_tokens(a_gold)
    pred_toks = ref_get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def ref_get_raw_scores(dataset, preds):
    exact_scores = {}
    f1_scores = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = qa["id"]
                gold_answers = [a["text"] for a in qa["answers"] if ref_normalize_answer(a["text"])]
                if not gold_answers:
                    gold_answers = [""]
                if qid not in preds:
                    continue
                a_pred = preds[qid]
                exact_scores[qid] = max(ref_compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(ref_compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def ref_apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        if pred_na:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def ref_make_eval_dict(exact_scores, f1_scores, qid_list=None):
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    else:
        total = len(qid_list)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
                ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
                ("total", total),
            ]
        )


def ref_merge_eval(main_eval, new_eval, prefix):
    for k in new_eval:
        main_eval["%s_%s" % (prefix, k)] = new_eval[k]


def ref_find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for i, qid in enumerate(qid_list):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            if preds[qid]:
                diff = -1
            else:
                diff = 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def ref_find_all_best_thresh(main_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans):
    best_exact, exact_thresh = ref_find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = ref_find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def ref_v2_main(dataset, preds, na_prob_file_contents, na_prob_thresh):
    if na_prob_file_contents is not None:
        na_probs = na_prob_file_contents
    else:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = ref_make_qid_to_has_ans(dataset)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = ref_get_raw_scores(dataset, preds)
    exact_thresh = ref_apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = ref_apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = ref_make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        has_ans_eval = ref_make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids)
        ref_merge_eval(out_eval, has_ans_eval, "HasAns")
    if no_ans_qids:
        no_ans_eval = ref_make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids)
        ref_merge_eval(out_eval, no_ans_eval, "NoAns")
    if na_prob_file_contents is not None:
        ref_find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return out_eval


def to_squad_layout(gold, split):
    """Gold texts in the SQuAD layout, the questions spread over articles and paragraphs."""
    qas = [{"id": qid, "answers": [{"text": t} for t in texts]} for qid, texts in gold.items()]
    paragraphs = [{"qas": qas[i : i + split]} for i in range(0, len(qas), split)]
    return [{"paragraphs": paragraphs[i : i + 2]} for i in range(0, len(paragraphs), 2)]


# --- generated cases ------------------------------------------------------------------------

WORDS = [
    "x", "y", "z", "Denver", "broncos", "1990", "a", "an", "the", "The", "AN", "theater",
    "café", "e\u0301a", "a\u0301", "Ünï", "東京", "大学", "ß", "İ", "ǅ",
    "x.", "(y)", "'z'", "a-b", "$5", "—", "«x»", "¿", "。", "...",
]
SEPARATORS = [" ", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "", "-", ", "]
phrases = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=6).map(
    lambda pairs: "".join(word + sep for word, sep in pairs)
)
texts = st.one_of(phrases, st.text(max_size=12))
# few distinct values, so that ties are common
probabilities = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 0, 1]), st.floats(0.0, 1.0))


def predictions_for(answers):
    """Often a gold text, part of one or empty: exact, partial and no-answer predictions."""
    if not answers:
        return st.one_of(st.just(""), texts)
    gold = st.sampled_from(answers)
    overlapping = st.tuples(gold, texts, st.booleans()).map(
        lambda t: f"{t[0]} {t[1]}" if t[2] else f"{t[1]} {t[0]}"
    )
    partial = st.tuples(gold, st.integers(0, 6), st.integers(0, 6)).map(
        lambda t: " ".join(t[0].split()[t[1] : t[1] + t[2]])
    )
    return st.one_of(st.just(""), texts, gold, overlapping, partial)
thresholds = st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 1.0))


@st.composite
def v2_cases(draw):
    n = draw(st.integers(1, 16))
    gold = {
        f"q{i}": draw(st.lists(texts, max_size=3) | st.just([]))  # often unanswerable
        for i in range(n)
    }
    predictions = {qid: draw(predictions_for(answers)) for qid, answers in gold.items()}
    for j in range(draw(st.integers(0, 2))):  # ids that are not in the data
        predictions[f"unknown{j}"] = draw(texts)
    predictions = dict(draw(st.permutations(list(predictions.items()))))
    na_probs = None
    if draw(st.booleans()):
        order = draw(st.permutations(list(predictions)))
        na_probs = {qid: draw(probabilities) for qid in order}
    return gold, predictions, na_probs, draw(thresholds), draw(st.integers(1, 4))


@st.composite
def v1_cases(draw):
    n = draw(st.integers(1, 12))
    gold = {f"q{i}": draw(st.lists(texts, min_size=1, max_size=3)) for i in range(n)}
    predictions = {  # some missing
        qid: draw(predictions_for(answers))
        for qid, answers in gold.items()
        if draw(st.integers(0, 5))
    }
    return gold, predictions, draw(st.integers(1, 4))


def assert_same_output(ours, reference):
    assert list(ours.items()) == list(reference.items())
    assert json.dumps(ours, indent=2) == json.dumps(reference, indent=2)  # what gets printed


@settings(max_examples=300, deadline=None)
@given(st.one_of(texts, st.text()))
def test_normalize_answer_matches_the_reference(text):
    assert normalize_answer(text) == ref_normalize_answer(text)


@settings(max_examples=300, deadline=None)
@given(texts, texts)
def test_pair_scores_match_the_reference(prediction, gold):
    assert exact_match(prediction, gold) == ref_compute_exact(gold, prediction)
    v1_exact = ref_v1_exact_match_score(prediction, gold)
    assert exact_match(prediction, gold, version="v1.1") == v1_exact
    assert f1(prediction, gold) == ref_compute_f1(gold, prediction)
    assert f1(prediction, gold, version="v1.1") == ref_v1_f1_score(prediction, gold)


@settings(max_examples=300, deadline=None)
@given(v2_cases())
def test_squad_v2_matches_the_reference(case):
    gold, predictions, na_probs, thresh, split = case
    reference = ref_v2_main(to_squad_layout(gold, split), predictions, na_probs, thresh)
    assert_same_output(squad_v2(gold, predictions, na_probs, thresh), reference)


@settings(max_examples=300, deadline=None)
@given(v1_cases())
def test_squad_v1_matches_the_reference(case):
    gold, predictions, split = case
    reference = ref_v1_evaluate(to_squad_layout(gold, split), predictions)
    assert_same_output(squad_v1(gold, predictions), reference)

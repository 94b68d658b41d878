"""`qatune report`: the HTML file of a tiny model trained here, checked against what the model
answers and the official metrics computed independently; the CLI; the excerpt highlighting.

The page in a real browser is tests/test_report_page.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from qatune.data import Example, GoldAnswer, read_dataset
from qatune.decoding import best_answer
from qatune.errors import ModelError
from qatune.inference import QAModel
from qatune.metrics import exact_match, f1, normalize_answer
from qatune.report import GROUPS, write_report
from qatune.report.analysis import excerpts, group_of
from qatune.report.page import context_html
from qatune.settings import QASettings
from qatune.training import TrainingArguments, train

from conftest import DATA, TINY_QA

DEV = DATA / "data_squad_v2.json"  # 6 questions, 2 unanswerable
WINDOWS = QASettings(max_seq_length=48, doc_stride=8, max_question_length=12)


def train_tiny(base: Path, output: Path) -> Path:
    from qatune.data import load_examples

    arguments = TrainingArguments(
        output_dir=str(output), model=str(base), epochs=2, batch_size=4, learning_rate=3e-3,
        warmup_ratio=0.0, bf16=False, settings=WINDOWS, seed=7,
    )
    train(load_examples(TINY_QA), load_examples(DEV), arguments, progress=False)
    return output


_TRAINED: dict[str, Path] = {}


def trained_once(base: Path, tmp_path_factory) -> Path:
    """The tiny model trained once per test session (this file and test_report_page.py share it);
    tests copy what they change."""
    if str(base) not in _TRAINED:
        _TRAINED[str(base)] = train_tiny(base, tmp_path_factory.mktemp("report-model") / "model")
    return _TRAINED[str(base)]


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory) -> Path:
    return trained_once(tiny_bert, tmp_path_factory)


@pytest.fixture(scope="module")
def model(trained) -> QAModel:
    return QAModel.from_pretrained(trained, engine="torch", bf16=False)


@pytest.fixture(scope="module")
def dev():
    return read_dataset(DEV)


@pytest.fixture(scope="module")
def report(trained, model, dev, tmp_path_factory) -> str:
    examples, validation = dev
    path = write_report(trained, tmp_path_factory.mktemp("report") / "report.html",
                        examples=examples, validation=validation, model=model)
    return path.read_text(encoding="utf-8")


# --- reading the page back ----------------------------------------------------------------------


class Questions(HTMLParser):
    """The question elements of a report: their data-* attributes, and per question the text of
    every <mark> segment with its classes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.questions: list[dict] = []
        self.counts: dict[str, int] = {}
        self._mark: list[str] | None = None
        self._count: str | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "article" and "question" in attributes.get("class", "").split():
            self.questions.append({**attributes, "marks": []})
        elif tag == "mark" and self.questions:
            self._mark = attributes.get("class", "").split()
            self.questions[-1]["marks"].append((self._mark, ""))
        elif "data-group-count" in attributes:
            self._count = attributes["data-group-count"]

    def handle_endtag(self, tag):
        if tag == "mark":
            self._mark = None

    def handle_data(self, data):
        if self._mark is not None:
            classes, text = self.questions[-1]["marks"][-1]
            self.questions[-1]["marks"][-1] = (classes, text + data)
        if self._count is not None:
            self.counts[self._count] = int(data)
            self._count = None

    def marked(self, question: dict, name: str) -> str:
        return "".join(text for classes, text in question["marks"] if name in classes)


def parse(page: str) -> Questions:
    parser = Questions()
    parser.feed(page)
    return parser


def expected(example: Example, decoded, threshold: float) -> dict:
    """What the report should say of one question, computed here from the official metrics."""
    answer = best_answer(decoded, threshold)
    text = answer.text if answer else ""
    golds = [a for a in example.answers if normalize_answer(a.text)]  # the v2.0 rule
    if golds:
        em = max(exact_match(text, g.text) for g in golds)
        best_f1 = max(f1(text, g.text) for g in golds)
        gold = max(golds, key=lambda g: (f1(text, g.text), exact_match(text, g.text)))
    else:
        em, best_f1, gold = exact_match(text, ""), f1(text, ""), None
    if em == 1:
        group = "correct"
    elif not example.answers:
        group = "answered-unanswerable"
    elif answer is None:
        group = "unanswered-answerable"
    else:
        group = "partial" if best_f1 > 0 else "wrong"
    return {"group": group, "em": em, "f1": best_f1, "answer": answer, "gold": gold}


# --- the report of a trained model ---------------------------------------------------------------


def test_every_question_is_in_the_group_its_scores_give(report, model, dev):
    examples, _ = dev
    decoded = model.predict(examples, top_k=1)
    page = parse(report)
    assert len(page.questions) == len(examples)
    assert sum(page.counts[g] for g in GROUPS) == len(examples) == page.counts["all"]
    by_id = {q["data-id"]: q for q in page.questions}
    assert set(by_id) == {example.id for example in examples}
    for example, result in zip(examples, decoded):
        want = expected(example, result, model.settings.null_threshold)
        shown = by_id[example.id]
        assert shown["data-group"] == want["group"], example.id
        assert int(shown["data-exact"]) == want["em"]
        assert float(shown["data-f1"]) == pytest.approx(want["f1"])
        assert shown["data-answered"] == ("true" if want["answer"] else "false")
        assert page.marked(shown, "pred") == (want["answer"].text if want["answer"] else "")
        assert page.marked(shown, "gold") == (want["gold"].text if want["gold"] else "")
    for group in GROUPS:
        assert page.counts[group] == sum(q["data-group"] == group for q in page.questions)


def test_questions_are_listed_worst_first(report):
    questions = parse(report).questions
    keys = []
    for q in questions:
        confidence = float(q["data-score"]) if q["data-answered"] == "true" else float(q["data-null-prob"])
        keys.append((float(q["data-f1"]), -confidence))
    assert keys == sorted(keys)


def test_the_page_needs_nothing_from_outside(report):
    assert "<link" not in report
    assert not re.search(r"<script[^>]*\bsrc\s*=", report)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", report)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", report)
    assert "@import" not in report
    for source in re.findall(r"""<img[^>]*\bsrc\s*=\s*"([^"]*)""", report):
        assert source.startswith("data:image/png;base64,")
    assert "Content-Security-Policy" in report


def test_the_page_has_every_section(report, trained):
    for name in ("summary", "learning-curves", "before-after", "data", "questions", "calibration"):
        assert f'id="{name}"' in report
    card = json.loads((trained / "qatune.json").read_text())
    assert f"<code>{card['base_model']}</code>" in report or card["base_model"] in report
    assert report.count('<img class="plot"') >= 4  # loss, dev scores, reliability, F1 by threshold
    assert "expected calibration error" in report
    assert "ROC AUC of the no-answer probability" in report
    assert "scores calibrated with temperature" in report or "not calibrated" in report


def test_a_report_without_data_says_how_to_get_the_questions(trained, tmp_path):
    path = write_report(trained, tmp_path / "r.html")
    page = path.read_text(encoding="utf-8")
    assert page.count("run with --data DEV to see every question") >= 2
    assert "<article" not in page
    assert 'id="learning-curves"' in page and "<img" in page


def test_a_torn_metrics_line_is_skipped_and_counted(trained, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(trained / "qatune.json", folder)
    lines = (trained / "metrics.jsonl").read_text().splitlines()
    baseline = {"type": "baseline", "epoch": 0, "step": 0, "exact": 12.5, "f1": 20.0}
    torn = lines[-1][: len(lines[-1]) // 2]
    (folder / "metrics.jsonl").write_text("\n".join([json.dumps(baseline), *lines, torn]) + "\n")
    told = []
    page = write_report(folder, tmp_path / "r.html", log=told.append).read_text(encoding="utf-8")
    assert "skipped 1 unreadable line of metrics.jsonl" in page
    assert any("skipped 1 unreadable line" in line for line in told)
    assert 'id="before-after"' in page and "<td>12.50</td>" in page and "<td>20.00</td>" in page


def test_a_folder_without_metrics_says_so(trained, tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    shutil.copy(trained / "qatune.json", folder)
    page = write_report(folder, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No metrics.jsonl in this folder" in page
    assert "not evaluated before training (train with --report to get it)" in page


def test_a_missing_or_empty_folder_is_an_error_that_says_what_to_pass(tmp_path):
    with pytest.raises(ModelError, match=r"no-such: no such folder; expected the model folder `qatune train` wrote"):
        write_report(tmp_path / "no-such", tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty: holds neither qatune.json nor metrics.jsonl.*its --output"):
        write_report(tmp_path / "empty", tmp_path / "r.html")


# --- the command line ---------------------------------------------------------------------------


def qatune(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qatune", *arguments], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_command_writes_the_report(trained, tmp_path):
    (tmp_path / "out").mkdir()  # qatune creates no folder for an output file
    done = qatune("report", str(trained), "--data", str(DEV), "-o", "out/r.html", "--engine", "torch", "--no-bf16",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote out/r.html (6 questions)" in done.stderr
    page = (tmp_path / "out" / "r.html").read_text(encoding="utf-8")
    assert len(parse(page).questions) == 6


def test_the_command_refuses_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "empty").mkdir()
    done = qatune("report", "empty", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: empty: holds neither qatune.json nor metrics.jsonl")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "report.html").exists()


# --- excerpts and highlighting: code points, overlaps, ends ----------------------------------------


def marked_text(segments_of, name: str) -> str:
    return "".join(text for excerpt in segments_of for text, classes in excerpt.segments if name in classes)


CONTEXTS = [
    "🚀 東京 left 😀 from the pad 👩\u200d🚀 at dawn 𝕍.",
    "東京タワーは1958年に完成した。高さは333メートルです。",
    "ab",
]


@pytest.mark.parametrize("context", CONTEXTS)
def test_every_pair_of_spans_is_highlighted_exactly(context):
    n = len(context)
    spans = [(s, e) for s in range(n) for e in range(s + 1, n + 1)]
    for pred in spans[:: max(1, len(spans) // 40)] + [(0, 1), (n - 1, n), (0, n)]:
        for gold in spans[:: max(1, len(spans) // 40)] + [(0, n), None]:
            pieces = excerpts(context, {"pred": pred, "gold": gold})
            assert marked_text(pieces, "pred") == context[pred[0]:pred[1]]
            assert marked_text(pieces, "gold") == (context[gold[0]:gold[1]] if gold else "")
            # short contexts are shown whole, in order
            assert "".join(text for p in pieces for text, _ in p.segments) == context


def test_overlapping_spans_get_three_styles():
    context = "🚀 rocket 東京 left"
    pieces = excerpts(context, {"pred": (2, 11), "gold": (9, 16)})
    assert pieces[0].segments == [
        ("🚀 ", ()), ("rocket ", ("pred",)), ("東京", ("pred", "gold")), (" left", ("gold",)),
    ]
    assert context_html(context, {"pred": (0, 1), "gold": (0, 1)}) == '<mark class="pred gold">🚀</mark> rocket 東京 left'


def test_long_contexts_are_cut_around_the_spans():
    filler = "語" * 1000
    context = "😀" + filler + "ANSWER" + filler + "GOLD" + filler + "end"
    start = 1 + 1000
    gold_start = start + 6 + 1000
    pieces = excerpts(context, {"pred": (start, start + 6), "gold": (gold_start, gold_start + 4)})
    assert len(pieces) == 2
    assert [(p.start, p.end) for p in pieces] == [(start - 300, start + 306), (gold_start - 300, gold_start + 304)]
    assert marked_text(pieces, "pred") == "ANSWER" and marked_text(pieces, "gold") == "GOLD"
    shown = context_html(context, {"pred": (start, start + 6), "gold": (gold_start, gold_start + 4)})
    assert shown.startswith('<span class="gap">…</span>') and shown.endswith('<span class="gap">…</span>')
    assert shown.count("…") == 3 and len(shown) < 1000 * 3
    near = excerpts(context, {"pred": (start, start + 6), "gold": (start + 10, start + 20)})
    assert len(near) == 1  # close spans share one excerpt
    at_ends = excerpts(context, {"pred": (0, 1), "gold": (len(context) - 3, len(context))})
    assert marked_text(at_ends, "pred") == "😀" and marked_text(at_ends, "gold") == "end"
    assert at_ends[0].start == 0 and at_ends[-1].end == len(context)


def test_the_context_is_escaped():
    shown = context_html('<script>alert("x")</script> & co', {"pred": (0, 8), "gold": None})
    assert shown == '<mark class="pred">&lt;script&gt;</mark>alert(&quot;x&quot;)&lt;/script&gt; &amp; co'


def test_groups_follow_the_scores():
    assert group_of(1, 1.0, answered=False, unanswerable=True) == "correct"
    assert group_of(1, 1.0, answered=True, unanswerable=False) == "correct"
    assert group_of(0, 0.5, answered=True, unanswerable=False) == "partial"
    assert group_of(0, 0.0, answered=True, unanswerable=False) == "wrong"
    assert group_of(0, 0.0, answered=True, unanswerable=True) == "answered-unanswerable"
    assert group_of(0, 0.0, answered=False, unanswerable=False) == "unanswered-answerable"


def test_hand_made_questions_with_emoji_are_highlighted_as_answered(trained, model, tmp_path):
    """Questions about contexts with emoji and CJK, answered by the model (always answering):
    the marks hold exactly the predicted text and the best gold text."""
    always = dataclasses.replace(model, settings=dataclasses.replace(model.settings, null_threshold=1.0))
    context = "🚀 The rocket 東京 left 😀 from the pad at dawn, and 🌕 the crew 👩\u200d🚀 reached orbit."
    examples = [
        Example("e1", "What left?", context, (GoldAnswer("rocket", context.index("rocket")),)),
        Example("e2", "Who reached orbit?", context, (GoldAnswer("the crew", context.index("the crew")),)),
        Example("e3", "What color was it?", context),
    ]
    page = parse(write_report(trained, tmp_path / "r.html", examples=examples, model=always).read_text(encoding="utf-8"))
    decoded = always.predict(examples, top_k=1)
    for example, result in zip(examples, decoded):
        want = expected(example, result, 1.0)
        shown = next(q for q in page.questions if q["data-id"] == example.id)
        assert want["answer"] is not None
        assert page.marked(shown, "pred") == want["answer"].text == context[want["answer"].start:want["answer"].end]
        assert page.marked(shown, "gold") == (want["gold"].text if want["gold"] else "")
        assert shown["data-group"] == want["group"]


def test_f1_by_no_answer_threshold_is_the_official_f1_at_each_threshold():
    """Every point of the curve equals squad_v2's F1 of the answers at that threshold."""
    import random

    from qatune.decoding import Answer
    from qatune.metrics import squad_v2
    from qatune.report.analysis import QuestionResult, threshold_curve

    rng = random.Random(0)
    context = "alpha beta gamma delta"
    rows = []
    for number in range(60):
        answers = () if rng.random() < 0.3 else (GoldAnswer("beta", 6),)
        span = Answer(rng.choice(["beta", "gamma", "beta gamma"]), 0, 0, 0.5) if rng.random() < 0.9 else None
        example = Example(str(number), "q", context, answers)
        rows.append(QuestionResult(example, None, span, round(rng.random(), 2), 0, 0.0, None, "?"))
    curve, at_saved = threshold_curve(rows, 0.37)
    gold = {row.example.id: [a.text for a in row.example.answers] for row in rows}
    predictions = {row.example.id: row.best_span.text if row.best_span else "" for row in rows}
    na_probs = {row.example.id: row.null_prob for row in rows}
    for threshold, value in curve:
        assert value == pytest.approx(squad_v2(gold, predictions, na_probs, threshold)["f1"])
    assert at_saved == pytest.approx(squad_v2(gold, predictions, na_probs, 0.37)["f1"])
    assert [t for t, _ in curve][:1] == [0.0] and curve[-1][0] == 1.0


def test_the_dev_score_plot_has_whole_epochs_and_its_legend_beside_the_curves(tmp_path):
    from qatune.report import plots
    from qatune.report.history import History

    # Two epochs of a small model: low scores, where a legend inside the plot would sit on them.
    history = History(path=tmp_path / "metrics.jsonl",
                      baseline={"epoch": 0, "exact_match": 0.0, "f1": 1.6},
                      evals=[{"epoch": 1, "exact_match": 10.0, "f1": 15.0}, {"epoch": 2, "exact_match": 20.0, "f1": 30.0}],
                      kept={"epoch": 2, "exact_match": 20.0, "f1": 30.5})
    figure = plots.dev_scores_figure(history, best_epoch=2)
    axes = figure.axes[0]
    low, high = axes.get_xlim()
    ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    figure.canvas.draw()
    legend_box = axes.get_legend().get_window_extent()
    assert legend_box.x0 >= axes.get_window_extent().x1  # beside the plot, over no curve
    plots._pyplot().close(figure)


def test_calibration_errors_are_in_points_as_training_and_the_model_card_give_them(report, trained):
    card = json.loads((trained / "qatune.json").read_text())
    ece = re.search(r"expected calibration error <strong>([0-9.]+) points</strong>", report)
    assert ece is not None and 0.0 <= float(ece.group(1)) <= 100.0
    calibration = card["calibration"]  # trained with dev data: calibrated
    assert (f"calibration error {100 * calibration['ece_before']:.1f} → "
            f"{100 * calibration['ece_after']:.1f} points") in report
    assert "of them unanswerable" not in report


def test_the_data_table_names_every_count_in_words_and_the_fingerprints_last(report, trained):
    card = json.loads((trained / "qatune.json").read_text())
    section = report[report.index('id="data"'):report.index("What windowing did")]
    labels = re.findall(r"<dt>([^<]+)</dt>", section)
    recorded = [key for key in card["data"] if key not in ("train_coverage", "validation")]
    assert "train_sha256" in recorded and "dev_sha256" in recorded
    assert len(labels) == len(recorded) and not set(labels) & set(recorded)  # every key, none by its raw name
    fingerprints = [i for i, label in enumerate(labels) if "fingerprint (SHA-256)" in label]
    counts = [i for i, label in enumerate(labels) if label in ("training questions", "unanswerable dev questions")]
    assert len(fingerprints) == 2 and len(counts) == 2 and max(counts) < min(fingerprints)
    assert card["data"]["train_sha256"][:37] in section

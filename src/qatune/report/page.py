"""The report as one self-contained HTML page: figures as base64 PNG, the CSS and JavaScript of
`static/` inlined, nothing fetched (a Content-Security-Policy forbids it), so that the file
works opened from disk, mailed, or archived next to the model.

Every text from the data or the model folder goes through `html.escape`.
"""

from __future__ import annotations

import datetime
import html
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from qatune.metrics import exact_of
from qatune.report import plots
from qatune.report.analysis import (
    GROUP_MEANINGS,
    GROUPS,
    CalibrationStats,
    QuestionResult,
    cutoff_table,
    excerpts,
    group_counts,
    worst_first,
)
from qatune.report.history import SMOOTHING, History, has_scores
from qatune.wording import counted

ASK_FOR_DATA = "run with --data DEV to see every question"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
SHOWN_NOTES = 10  # repairs and skips listed by place, the rest counted

# Labels of the training counts in qatune.json's "data"; other keys are shown as they are named.
DATA_LABELS = {
    "train_questions": "training questions",
    "train_unanswerable": "unanswerable training questions",
    "train_windows": "training windows",
    "train_items": "training items (window, answer)",
    "answers_outside_windows": "answers no window holds whole (not trained on)",
    "truncated_questions": "questions cut to max_question_length",
    "answers_longer_than_max_answer_length": "answers longer than max_answer_length",
    "dev_questions": "dev questions",
    "dev_unanswerable": "unanswerable dev questions",
}
# The data files' fingerprints (what `--resume` compares), shown after the counts
FINGERPRINT_LABELS = {
    "train_sha256": "training data fingerprint (SHA-256)",
    "dev_sha256": "dev data fingerprint (SHA-256)",
    "transfer_sha256": "transfer questions fingerprint (SHA-256)",
}
COVERAGE_LABELS = {
    "windows": "windows",
    "multi_window_questions": "questions that need several windows",
    "answers_outside_windows": "answers no window holds whole",
    "items": "items (window, answer)",
    "no_answer_items": "items labelled \"no answer\" (unanswerable, or the window misses the answer)",
    "truncated_questions": "questions cut to max_question_length",
}


@dataclass
class ReportInputs:
    """Everything the page shows, gathered by `write_report`."""

    folder: Path
    card: dict[str, Any]
    history: History | None
    engine: str | None = None
    results: list[QuestionResult] | None = None
    stats: CalibrationStats | None = None
    coverage: dict[str, int] | None = None
    validation: Any = None  # qatune.data.ValidationReport of the --data file
    null_threshold: float = 1.0
    data_name: str | None = None
    notes: list[str] = field(default_factory=list)


def render(inputs: ReportInputs) -> str:
    """The whole HTML page."""
    from qatune import __version__

    sections = [
        _header(inputs, __version__),
        _learning_curves(inputs),
        _before_after(inputs),
        _data(inputs),
        _questions(inputs),
        _calibration(inputs),
    ]
    title = f"qatune report: {inputs.folder.name}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>\n{_static('report.css')}\n</style>",
            "</head>",
            "<body>",
            *sections,
            f"<footer>written by qatune {_e(__version__)} on {_e(_now())}</footer>",
            f"<script>\n{_static('report.js')}\n</script>",
            "</body>",
            "</html>",
        ]
    )


# --- 1. header --------------------------------------------------------------------------------


def _header(inputs: ReportInputs, version: str) -> str:
    card = inputs.card
    rows = [
        ("model folder", _e(str(inputs.folder))),
        ("base model", _e(str(card.get("base_model", "not recorded (no qatune.json)")))),
        ("written by", _e(f"qatune {card.get('qatune_version', '?')}") + f" (this report: qatune {_e(version)})"),
        ("trained", _e(_trained(inputs))),
        ("kept epoch", _e(str(card.get("best_epoch", "not recorded")))),
        ("answers in this report", _e(inputs.engine or "none computed: " + ASK_FOR_DATA)),
    ]
    metrics = card.get("dev_metrics")
    rows.append(("dev metrics (kept model)", _metrics_table(metrics) if isinstance(metrics, dict) else "not recorded"))
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in inputs.notes)
    return (
        f'<header id="summary"><h1>qatune report: {_e(inputs.folder.name)}</h1>'
        f"{_key_values(rows)}{notes}</header>"
    )


def _trained(inputs: ReportInputs) -> str:
    seconds = inputs.card.get("train_seconds")
    parts = []
    if isinstance(seconds, (int, float)):
        parts.append(f"for {_duration(seconds)}")
    card_file = inputs.folder / "qatune.json"
    if card_file.is_file():
        written = datetime.datetime.fromtimestamp(card_file.stat().st_mtime).astimezone()
        parts.append(f"finished {written:%Y-%m-%d %H:%M %Z}".strip())
    return ", ".join(parts) or "not recorded"


# --- 2. learning curves -----------------------------------------------------------------------


def _learning_curves(inputs: ReportInputs) -> str:
    body = ["<h2>Learning curves</h2>"]
    history = inputs.history
    if history is None:
        body.append(
            f"<p>No {_e('metrics.jsonl')} in this folder (an exported folder, or a model not trained by "
            "qatune): no learning curves to show.</p>"
        )
        return _section("learning-curves", body)
    if history.skipped_lines:
        body.append(
            f'<p class="warning" id="skipped-lines">skipped {counted(history.skipped_lines, "unreadable line")} '
            f"of metrics.jsonl (cut short or not a record)</p>"
        )
    loss = plots.loss_png(history)
    if loss:
        body.append(_figure(
            loss, "training loss",
            f"Loss of every training batch (thin, light) and its exponential moving average (weight {SMOOTHING} "
            "on the running value, corrected for its start).",
        ))
    else:
        body.append("<p>metrics.jsonl holds no training steps.</p>")
    best = history.best_epoch(inputs.card)
    scores = plots.dev_scores_png(history, best)
    if scores:
        caption = "Dev exact match and F1 after each evaluated epoch"
        caption += "; epoch 0: before training" if history.baseline else ""
        caption += f"; dashed line: the kept epoch ({best})" if best is not None else ""
        caption += "; star: the kept model scored by its answering engine." if history.kept else "."
        body.append(_figure(scores, "dev scores per epoch", caption))
    else:
        body.append("<p>No dev evaluations were logged (trained without --dev).</p>")
    return _section("learning-curves", body)


# --- 3. before / after ------------------------------------------------------------------------


def _before_after(inputs: ReportInputs) -> str:
    body = ["<h2>Before and after training</h2>"]
    history = inputs.history
    after = history.kept if history and history.kept else inputs.card.get("dev_metrics")
    if history is None or history.baseline is None:
        body.append("<p>not evaluated before training (train with --report to get it)</p>")
    elif not isinstance(after, dict) or not has_scores(after):
        body.append("<p>The dev scores before training were logged, but none of the kept model.</p>")
    else:
        before = history.baseline
        rows = []
        for name, key in (("exact match", None), ("F1", "f1")):
            old = exact_of(before) if key is None else before[key]
            new = exact_of(after) if key is None else after[key]
            rows.append(f"<tr><th>{name}</th><td>{old:.2f}</td><td>{new:.2f}</td><td>{new - old:+.2f}</td></tr>")
        body.append(
            '<table id="before-after"><thead><tr><th></th><th>before training</th><th>kept model</th>'
            f"<th>change</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return _section("before-after", body)


# --- 4. the data ------------------------------------------------------------------------------


def _data(inputs: ReportInputs) -> str:
    body = ["<h2>The data</h2>", "<h3>Training (from qatune.json)</h3>"]
    data = inputs.card.get("data")
    if isinstance(data, dict) and data:
        plain = {k: v for k, v in data.items() if k not in ("train_coverage", "validation")}
        counts = [key for key in plain if key not in FINGERPRINT_LABELS]
        fingerprints = [key for key in FINGERPRINT_LABELS if plain.get(key) is not None]
        rows = [(DATA_LABELS.get(key, key), _e(_short(plain[key]))) for key in counts]
        rows += [(FINGERPRINT_LABELS[key], _e(_short(plain[key]))) for key in fingerprints]
        body.append(_key_values(rows))
        if isinstance(data.get("train_coverage"), dict):
            body.append("<h4>What windowing did to the training labels</h4>")
            body.append(_coverage(data["train_coverage"]))
        if isinstance(data.get("validation"), dict):
            for name, report in data["validation"].items():
                if isinstance(report, dict):
                    body.append(f"<h4>Reading the {_e(name)} file</h4>{_validation_dict(report)}")
    else:
        body.append("<p>No training counts recorded (no qatune.json, or a model qatune did not train).</p>")
    body.append(f"<h3>The report's questions{' (' + _e(inputs.data_name) + ')' if inputs.data_name else ''}</h3>")
    if inputs.validation is not None:
        body.append(_validation_dict(inputs.validation.to_dict()))
    if inputs.coverage is not None:
        body.append("<h4>Windows cut with the model's tokenizer and settings</h4>")
        body.append(_coverage(inputs.coverage))
    if inputs.validation is None and inputs.coverage is None:
        body.append(f"<p>{ASK_FOR_DATA}</p>")
    return _section("data", body)


def _validation_dict(report: dict[str, Any]) -> str:
    rows = []
    for key in ("path", "layout", "on_error", "contexts", "questions", "answers", "unanswerable", "kept_questions",
                "duplicate_ids", "generated_ids"):
        if key in report:
            rows.append((key.replace("_", " "), _e(str(report[key]))))
    repaired = report.get("repaired")
    if isinstance(repaired, dict):
        kinds = ", ".join(f"{count} {kind}" for kind, count in repaired.items())
        total = sum(v for v in repaired.values() if isinstance(v, int))
        shift = f" (largest shift {report['max_shift']} characters)" if report.get("max_shift") else ""
        rows.append(("answers repaired", _e(f"{total}: {kinds}{shift}")))
    skipped = report.get("skipped")
    if isinstance(skipped, dict):
        rows.append(("skipped", _e(f"{skipped.get('questions', 0)} questions, {skipped.get('answers', 0)} answers")))
    parts = [_key_values(rows)]
    for key, label in (("skips", "skipped"), ("repairs", "repaired"), ("errors", "error")):
        notes = report.get(key)
        if isinstance(notes, list) and notes:
            items = "".join(
                f"<li><code>{_e(str(n.get('place', '')))}</code>: {_e(str(n.get('message', '')))}</li>"
                for n in notes[:SHOWN_NOTES] if isinstance(n, dict)
            )
            more = f"<li>... and {len(notes) - SHOWN_NOTES} more</li>" if len(notes) > SHOWN_NOTES else ""
            parts.append(f'<details><summary>{len(notes)} {label}</summary><ul class="notes">{items}{more}</ul></details>')
    return "".join(parts)


def _coverage(coverage: dict[str, Any]) -> str:
    rows = [(COVERAGE_LABELS.get(key, key), _e(_short(value))) for key, value in coverage.items()]
    items, no_answer = coverage.get("items"), coverage.get("no_answer_items")
    if isinstance(items, int) and isinstance(no_answer, int) and items:
        rows.append(("share of items labelled \"no answer\"", _e(f"{100 * no_answer / items:.1f}%")))
    return f'<div class="coverage">{_key_values(rows)}</div>'


# --- 5. every question ------------------------------------------------------------------------


def _questions(inputs: ReportInputs) -> str:
    body = ["<h2>Every question</h2>"]
    results = inputs.results
    if results is None:
        body.append(f"<p>{ASK_FOR_DATA}</p>")
        return _section("questions", body)
    counts = group_counts(results)
    buttons = [f'<button type="button" class="filter active" data-filter="all">all <span class="count" '
               f'data-group-count="all">{len(results)}</span></button>']
    for group in GROUPS:
        buttons.append(
            f'<button type="button" class="filter group-{group}" data-filter="{group}" title="{_e(GROUP_MEANINGS[group])}">'
            f'{group} <span class="count" data-group-count="{group}">{counts[group]}</span></button>'
        )
    body.append(
        f'<p>{len(results)} questions, answered with the model\'s no-answer threshold '
        f"{inputs.null_threshold:.4g}; worst first (lowest F1, then the most confident).</p>"
        f'<div class="controls"><div class="filters" role="group" aria-label="show one group">{"".join(buttons)}</div>'
        '<input type="search" id="search" placeholder="search questions, answers, contexts, ids" '
        'aria-label="search questions"><span id="shown"></span></div>'
    )
    legend = ('<p class="legend">context: <mark class="pred">predicted answer</mark> '
              '<mark class="gold">best-matching gold answer</mark> <mark class="pred gold">both</mark></p>')
    body.append(legend)
    body.append('<div id="question-list">' + "".join(_question(row) for row in worst_first(results)) + "</div>")
    return _section("questions", body)


def _question(row: QuestionResult) -> str:
    example = row.example
    predicted = _e(row.answer.text) if row.answer else '<span class="none">no answer</span>'
    gold = _e(row.gold.text) if row.gold else '<span class="none">no answer</span>'
    others = [a.text for a in example.answers if row.gold is None or a is not row.gold]
    facts = [
        ("predicted", f'<span class="pred-text">{predicted}</span>'),
        ("gold", f'<span class="gold-text">{gold}</span>'
         + (f' <span class="other-gold">(also: {_e(" | ".join(dict.fromkeys(others)))})</span>' if others else "")),
        ("EM / F1", f"{row.exact} / {row.f1:.2f}"),
        ("score", f"{row.answer.score:.3f}" if row.answer else (f"best span {row.best_span.score:.3f}" if row.best_span else "no span")),
        ("no-answer probability", f"{row.null_prob:.3f}"),
    ]
    spans = {
        "pred": (row.answer.start, row.answer.end) if row.answer else None,
        "gold": (row.gold.start, row.gold.end) if row.gold else None,
    }
    attributes = {
        "data-id": example.id,
        "data-group": row.group,
        "data-exact": str(row.exact),
        "data-f1": repr(float(row.f1)),
        "data-answered": "true" if row.answered else "false",
        "data-score": repr(float(row.answer.score)) if row.answer else "",
        "data-null-prob": repr(float(row.null_prob)),
    }
    attribute_text = " ".join(f'{name}="{_e(value)}"' for name, value in attributes.items())
    title = f' <span class="title">{_e(example.title)}</span>' if example.title else ""
    return (
        f'<article class="question group-{row.group}" {attribute_text}>'
        f'<h3><span class="badge group-{row.group}">{row.group}</span> <code>{_e(example.id)}</code>{title}</h3>'
        f'<p class="question-text">{_e(example.question)}</p>'
        f"{_key_values(facts, css='facts')}"
        f'<p class="context">{context_html(example.context, spans)}</p>'
        "</article>"
    )


def context_html(context: str, spans: dict[str, tuple[int, int] | None]) -> str:
    """The excerpts of `context` around `spans` as HTML: each span's segments in
    `<mark class="NAME">` (`class="pred gold"` where they overlap), "…" where text is left out.

        >>> context_html("a <b> c", {"pred": (2, 5), "gold": None})
        'a <mark class="pred">&lt;b&gt;</mark> c'
    """
    parts = []
    pieces = excerpts(context, spans)
    for number, piece in enumerate(pieces):
        if number > 0:
            parts.append('<span class="gap"> … </span>')
        elif piece.start > 0:
            parts.append('<span class="gap">…</span>')
        for text, classes in piece.segments:
            parts.append(f'<mark class="{" ".join(classes)}">{_e(text)}</mark>' if classes else _e(text))
    if pieces and pieces[-1].end < len(context):
        parts.append('<span class="gap">…</span>')
    return "".join(parts)


# --- 6. calibration ---------------------------------------------------------------------------


def _calibration(inputs: ReportInputs) -> str:
    body = ["<h2>Calibration: do the scores mean what they say?</h2>"]
    body.append(f"<p>{_e(_temperature_line(inputs.card))}</p>")
    stats = inputs.stats
    if stats is None:
        body.append(f"<p>{ASK_FOR_DATA}</p>")
        return _section("calibration", body)
    if not stats.scores:
        body.append("<p>No question got a span to score.</p>")
        return _section("calibration", body)
    right = sum(stats.correct)
    body.append(
        f'<p id="ece">{len(stats.scores)} best spans scored, {right} of them an exact match of a gold answer '
        f"(a span for a question without an answer is never right); expected calibration error "
        f"<strong>{100 * stats.ece:.1f} points</strong> (the mean gap, in percentage points, between the score "
        f"and the share of right answers at that score; 0 is perfect).</p>"
    )
    image = plots.reliability_png(stats.bins, stats.ece)
    if image:
        body.append(_figure(image, "reliability diagram",
                            "Share of best spans that are right in each score bin (bars, dots at the bins' mean "
                            "score) against the diagonal of perfect calibration; below, how many spans each bin holds."))
    cutoffs = cutoff_table(stats.scores, stats.correct, stats.bins)
    rows = []
    for entry, (low, kept, share) in zip(stats.bins, cutoffs):
        rows.append(
            f"<tr><td>{entry.low:.1f}–{entry.high:.1f}</td><td>{entry.count}</td>"
            f"<td>{_maybe(entry.mean_score)}</td><td>{_maybe(entry.accuracy)}</td>"
            f"<td>{kept} ({100 * kept / len(stats.scores):.0f}%)</td><td>{_maybe(share)}</td></tr>"
        )
    body.append(
        '<table id="score-bins"><thead><tr><th>score bin</th><th>spans</th><th>mean score</th><th>share right</th>'
        "<th>spans scoring at least its low edge</th><th>share of those right</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p>To keep only answers above a confidence cut-off, read the last two columns: how many answers "
        "stay and how often they are right.</p>"
    )
    if stats.threshold_curve is not None:
        body.append("<h3>The no-answer threshold</h3>")
        auc = "not defined (needs answerable and unanswerable questions)" if stats.no_answer_auc is None else f"{stats.no_answer_auc:.3f}"
        body.append(
            f'<p id="no-answer-auc">ROC AUC of the no-answer probability, unanswerable against answerable questions: '
            f"<strong>{auc}</strong> (1: it tells them apart perfectly, 0.5: not at all).</p>"
        )
        image = plots.threshold_png(stats.threshold_curve, inputs.null_threshold, stats.f1_at_saved)
        if image:
            best_t, best_f1 = max(stats.threshold_curve, key=lambda point: point[1])
            body.append(_figure(image, "F1 against the no-answer threshold",
                                f"Overall F1 for each no-answer threshold; dashed: the model's saved threshold "
                                f"{inputs.null_threshold:.4g} (F1 {stats.f1_at_saved:.2f}); the best on these "
                                f"questions is F1 {best_f1:.2f} at {best_t:.4g}."))
    return _section("calibration", body)


def _temperature_line(card: dict[str, Any]) -> str:
    calibration = card.get("calibration")
    if isinstance(calibration, dict) and {"temperature", "ece_before", "ece_after", "questions"} <= calibration.keys():
        return (
            f"scores calibrated with temperature {calibration['temperature']:.3g} on {calibration['questions']} dev "
            f"questions: calibration error {100 * calibration['ece_before']:.1f} → {100 * calibration['ece_after']:.1f} points"
        )
    temperature = card.get("settings", {}).get("temperature") if isinstance(card.get("settings"), dict) else None
    if isinstance(temperature, (int, float)) and temperature != 1.0:
        return f"scores divided by temperature {temperature:.3g} (how it was fitted is not recorded)"
    return "not calibrated (trained without --dev)"


# --- small helpers ----------------------------------------------------------------------------


def _static(name: str) -> str:
    return resources.files("qatune.report").joinpath("static", name).read_text(encoding="utf-8")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _section(name: str, body: Sequence[str]) -> str:
    return f'<section id="{name}">' + "\n".join(body) + "</section>"


def _figure(png: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _key_values(rows: Sequence[tuple[str, str]], css: str = "") -> str:
    """A definition list; values are HTML already (escaped by the caller)."""
    items = "".join(f"<dt>{_e(key)}</dt><dd>{value}</dd>" for key, value in rows)
    return f'<dl class="{css}">{items}</dl>' if css else f"<dl>{items}</dl>"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{_e(key)}</th><td>{_e(f'{value:.2f}' if isinstance(value, float) else value)}</td></tr>"
        for key, value in metrics.items()
    )
    return f'<table class="metrics">{rows}</table>'


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _maybe(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _now() -> str:
    return f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}".strip()

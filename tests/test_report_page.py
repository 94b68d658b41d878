"""The `qatune report` page opened from disk in real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright; nothing is downloaded: never `playwright install`).

What is checked: no console or page error and no request but the file itself; every figure
loaded and not blank (its pixels vary; a blank white PNG fails the same check); the group
counts shown are the questions of each group; a group's button shows that group only, the
search box finds a question by its id; for every question the `.pred` segments spell the
model's answer and the `.gold` segments the best-matching gold answer, computed here in Python,
also after emoji, a ZWJ sequence, CJK, and in a long context cut into excerpts.

Without /usr/bin/chromium these tests skip, unless QATUNE_REQUIRE_BROWSER=1 (CI) makes that a
failure.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import pytest

from browser_helpers import chromium_browser

from qatune.data import Example, GoldAnswer, read_dataset
from qatune.inference import QAModel
from qatune.report import GROUPS, write_report

from test_report import DEV, expected, trained_once

TIMEOUT_MS = 60_000  # for any one wait in the browser: a bound, never a measure
BLANK_VARIANCE = 1.0  # luminance variance (0-255 scale) at or below which an image counts as blank

ASTRAL = "🚀 The rocket 東京 left 😀 from the pad at dawn, and 🌕 the crew 👩\u200d🚀 reached orbit 🛰 after nine minutes."
LONG = ("😀 " + "The 東京 committee met again and talked. " * 40 + "The bridge opened in 1932 to traffic. "
        + "Then more 東京 words followed the opening. " * 40)


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def answered(browser, tiny_bert, tmp_path_factory):
    """The report of dev data and hand-made questions, the model always answering, and what
    Python expects of each question."""
    folder = trained_once(tiny_bert, tmp_path_factory)
    model = QAModel.from_pretrained(folder, engine="torch", bf16=False)
    model = dataclasses.replace(model, settings=dataclasses.replace(model.settings, null_threshold=1.0))
    examples, validation = read_dataset(DEV)
    examples = examples + [
        Example("astral-1", "What left?", ASTRAL, (GoldAnswer("rocket", ASTRAL.index("rocket")),)),
        Example("astral-2", "Who reached orbit?", ASTRAL, (GoldAnswer("the crew", ASTRAL.index("the crew")),)),
        Example("long-1", "When did the bridge open?", LONG, (GoldAnswer("1932", LONG.index("1932")),)),
        Example("long-2", "What color is the sky?", LONG),
    ]
    path = write_report(folder, tmp_path_factory.mktemp("page") / "report.html",
                        examples=examples, validation=validation, model=model)
    decoded = model.predict(examples, top_k=1)
    want = {example.id: expected(example, result, 1.0) for example, result in zip(examples, decoded)}
    return path, want


class Visit:
    """The page opened from disk, with every console message, page error and request."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1100, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console, self.errors, self.requests = [], [], []
        self.page.on("console", lambda message: self.console.append((message.type, message.text)))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(path.as_uri(), wait_until="load")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, answered):
    page = Visit(browser, answered[0])
    yield page
    page.close()


# Draws each image on a canvas and returns [naturalWidth, naturalHeight, luminance variance].
IMAGE_CHECK = """images => images.map(image => {
  if (!image.complete || image.naturalWidth === 0) return [image.naturalWidth, image.naturalHeight, 0];
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, squares = 0, n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    sum += y; squares += y * y; n += 1;
  }
  const mean = sum / n;
  return [image.naturalWidth, image.naturalHeight, squares / n - mean * mean];
})"""


def image_checks(page) -> list[list[float]]:
    return page.eval_on_selector_all("img", IMAGE_CHECK)


def test_the_page_loads_with_no_error_and_fetches_nothing(visit, answered):
    visit.page.wait_for_selector("#shown")
    assert visit.errors == []
    assert [m for m in visit.console if m[0] in ("error", "warning")] == []
    assert visit.requests == [answered[0].as_uri()]  # data: images are no requests


def test_every_plot_is_loaded_and_not_blank(visit):
    checks = image_checks(visit.page)
    assert len(checks) >= 4  # loss, dev scores, reliability, F1 by threshold
    for width, height, variance in checks:
        assert width > 0 and height > 0
        assert variance > BLANK_VARIANCE


def test_a_blank_image_fails_the_check(browser, tmp_path):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 200), "white").save(buffer, format="PNG")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    page_file = tmp_path / "blank.html"
    page_file.write_text(f'<!DOCTYPE html><img class="plot" src="data:image/png;base64,{png}">', encoding="utf-8")
    page = Visit(browser, page_file)
    try:
        [[width, height, variance]] = image_checks(page.page)
    finally:
        page.close()
    assert (width, height) == (320, 200)
    assert variance <= BLANK_VARIANCE


def shown_ids(page) -> list[str]:
    return page.eval_on_selector_all("article.question:not([hidden])", "all => all.map(a => a.dataset.id)")


def test_the_counts_are_the_questions_of_each_group_and_the_buttons_filter(visit, answered):
    page = visit.page
    groups = page.eval_on_selector_all("article.question", "all => all.map(a => a.dataset.group)")
    assert len(groups) == len(answered[1])
    counts = {name: int(page.text_content(f'[data-group-count="{name}"]')) for name in (*GROUPS, "all")}
    assert counts["all"] == len(groups) == sum(counts[g] for g in GROUPS)
    for group in GROUPS:
        assert counts[group] == groups.count(group)
        page.click(f'button[data-filter="{group}"]')
        visible = page.eval_on_selector_all("article.question:not([hidden])", "all => all.map(a => a.dataset.group)")
        assert visible == [group] * counts[group]
        assert page.text_content("#shown") == f"showing {counts[group]} of {len(groups)}"
        assert page.get_attribute(f'button[data-filter="{group}"]', "aria-pressed") == "true"
    page.click('button[data-filter="all"]')
    assert len(shown_ids(page)) == len(groups)


def test_the_search_box_finds_a_question(visit):
    page = visit.page
    page.fill("#search", "astral-2")
    assert shown_ids(page) == ["astral-2"]
    page.fill("#search", "")
    assert len(shown_ids(page)) == page.locator("article.question").count()


SPANS = """article => {
  const text = name => Array.from(article.querySelectorAll("mark." + name)).map(m => m.textContent).join("");
  return [text("pred"), text("gold"), article.querySelector(".context").textContent];
}"""


def test_the_marks_spell_the_predicted_and_the_gold_answer(visit, answered):
    page = visit.page
    for qid, want in answered[1].items():
        pred, gold, context = page.eval_on_selector(f'article.question[data-id="{qid}"]', SPANS)
        assert want["answer"] is not None  # the model always answers here
        assert pred == want["answer"].text, qid
        assert gold == (want["gold"].text if want["gold"] else ""), qid
        if qid.startswith("long"):
            assert "…" in context and len(context) < len(LONG)

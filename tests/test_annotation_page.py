"""The page of `qatune annotate` in real headless Chromium (Debian's /usr/bin/chromium, driven
by Playwright; nothing is downloaded: never `playwright install`), against the real server in a
subprocess, and the data file it writes read back from disk.

What is checked: a paragraph pasted with emoji and CJK characters before the answer, a question
typed, its answer selected by DRAGGING the mouse over it, saved: the file holds
context[answer_start:answer_start + len(text)] == text == what was selected, at the Python index
of the intended answer (JavaScript counts UTF-16 units, the file code points); more answers with
the keyboard (Shift+arrows); a model suggestion accepted by its key or a click is saved with the
suggestion's span; unanswerable questions; a question deleted then undone (button and Ctrl+Z);
a second tab whose change comes after the first's is told "the file changed elsewhere: reloaded",
reloads and keeps its typed question; a paragraph's text edited (answers moved, or the 422 detail
when an answer would be lost); the review panel; counts, the report line, export; nothing is
loaded from another host; it fits a phone. Timeouts are generous bounds, never measures.

Without /usr/bin/chromium these tests skip, unless QATUNE_REQUIRE_BROWSER=1 (CI) makes that a
failure. The README's screenshot comes from this file too:

    python tests/test_annotation_page.py screenshot [MODEL] [--out docs/annotate-page.png]

(MODEL: a trained model folder, default /tmp/qatune-model, made by `cd /tmp && qatune train`.)
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, chromium_browser

sys.path.insert(0, str(Path(__file__).parent))  # for serving_helpers when run as a script
from serving_helpers import Server, free_port  # noqa: E402

TIMEOUT_MS = 60_000  # for any one wait in the browser: a bound, never a measure
STARTUP_SECONDS = 120
SAMPLE = Path(__file__).parent.parent / "src" / "qatune" / "sample" / "dev.json"
CONFLICT = "The file changed elsewhere: reloaded."

# Characters before the answers that JavaScript counts as two UTF-16 units (emoji, a ZWJ
# sequence, a mathematical letter) and CJK characters (one unit, one code point each).
DRAG_CONTEXT = "🚀 東京 launch log 😀 𝕍: the crew 👩\u200d🚀 flew Apollo 11 to the Moon in July 1969."
DRAG_ANSWER = "Apollo 11"


# --- the browser: skipped where there is none, a failure where CI requires one -------------------


# --- the server ------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_annotate(data: Path, *arguments: str, log_dir: Path):
    """Start `qatune annotate DATA ARGUMENTS` on a free port; yield once GET /api/data answers
    200; stop it (SIGTERM, then SIGKILL) on the way out."""
    port = free_port()
    log = log_dir / f"annotate-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "qatune", "annotate", str(data), "--port", str(port), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"qatune annotate exited with {process.returncode}:\n{server.output()}")
            try:
                if server.request("GET", "/api/data", timeout=5)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"qatune annotate did not answer after {STARTUP_SECONDS} s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    """A data file that does not exist yet: `qatune annotate` creates it (empty SQuAD v2.0)."""
    return tmp_path_factory.mktemp("annotate-data") / "made.json"


@pytest.fixture(scope="module")
def server(browser, tiny_bert, data_file, tmp_path_factory):
    """`qatune annotate` with a tiny model (its suggestions are arbitrary spans, but real ones)."""
    with running_annotate(data_file, "--model", str(tiny_bert), log_dir=tmp_path_factory.mktemp("annotate-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def sample_server(browser, tmp_path_factory):
    """`qatune annotate` of a copy of the sample dev set, without a model."""
    folder = tmp_path_factory.mktemp("annotate-sample")
    shutil.copy(SAMPLE, folder / "dev.json")
    with running_annotate(folder / "dev.json", log_dir=folder) as running:
        running.data = folder / "dev.json"
        yield running


class Visit:
    """One page (in a fresh browser context) and every URL it requested."""

    def __init__(self, browser, server: Server, width: int = 1100, height: int = 800) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def open(self) -> "Visit":
        from playwright.sync_api import expect

        self.page.goto(self.server.url + "/")
        # waits go through selectors, never page.wait_for_function: the page's CSP forbids eval
        expect(self.page.locator("#count-paragraphs")).not_to_have_text("…")
        return self

    def add_paragraph(self, title: str, context: str) -> str:
        """Paste a paragraph into the form; return its id ("A/P") once it is shown."""
        from playwright.sync_api import expect

        page = self.page
        if page.locator("#add-paragraph[open]").count() == 0:
            page.click("#add-paragraph summary")
        page.fill("#new-title", title)
        page.fill("#new-context", context)
        page.click("#add-paragraph-button")
        chosen = page.locator(".paragraph-choice[aria-current='true']")
        expect(chosen.locator(".p-snippet")).to_have_text(context[:90])
        expect(page.locator("#paragraph-heading")).to_contain_text(title)
        expect(page.locator("#context")).to_have_text(context)
        return chosen.get_attribute("data-paragraph")

    def choose(self, paragraph: str) -> None:
        from playwright.sync_api import expect

        self.page.click(f".paragraph-choice[data-paragraph='{paragraph}']")
        expect(self.page.locator(f".paragraph-choice[data-paragraph='{paragraph}']")).to_have_attribute("aria-current", "true")

    def question_item(self, question: str):
        return self.page.locator("#questions li.question").filter(has=self.page.locator(".q-text", has_text=question))

    def wait_for_question(self, question: str):
        item = self.question_item(question)
        item.first.wait_for()
        return item

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, server):
    opened = Visit(browser, server).open()
    yield opened
    opened.close()


def utf16(text: str, index: int) -> int:
    """The UTF-16 offset of the code point `index` of `text` (what the DOM counts)."""
    return len(text[:index].encode("utf-16-le")) // 2


def read_data(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def paragraph_of(path: Path, paragraph: str) -> dict:
    a, p = (int(part) for part in paragraph.split("/"))
    return read_data(path)["data"][a]["paragraphs"][p]


def saved_question(path: Path, paragraph: str, question: str) -> dict:
    found = [qa for qa in paragraph_of(path, paragraph)["qas"] if qa["question"] == question]
    assert len(found) == 1, f"{question!r} is in the file once"
    return found[0]


def character_box(page, start: int, end: int) -> dict:
    """The box of the context's characters [start, end) (UTF-16 units), measured with a DOM range."""
    return page.evaluate(
        """([start, end]) => {
            const root = document.querySelector('#context');
            const at = (unit) => {
                const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
                let total = 0;
                for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                    if (unit < total + node.length) return [node, unit - total];
                    total += node.length;
                }
                throw new Error('offset ' + unit + ' is past the text');
            };
            const range = document.createRange();
            range.setStart(...at(start));
            range.setEnd(...at(end - 1));
            range.setEnd(range.endContainer, range.endOffset + 1);
            const box = range.getClientRects()[0];
            return {left: box.left, right: box.right, top: box.top, bottom: box.bottom};
        }""",
        [start, end],
    )


def drag_select(page, context: str, start: int, end: int) -> None:
    """Press the mouse on the first character of context[start:end] (code points) and release
    it on the last one, as a person selects."""
    first = character_box(page, utf16(context, start), utf16(context, start + 1))
    last = character_box(page, utf16(context, end - 1), utf16(context, end))
    page.mouse.move(first["left"] + 1, (first["top"] + first["bottom"]) / 2)
    page.mouse.down()
    page.mouse.move((first["left"] + last["right"]) / 2, (last["top"] + last["bottom"]) / 2, steps=5)
    page.mouse.move(last["right"] - 1, (last["top"] + last["bottom"]) / 2, steps=5)
    page.mouse.up()


def gold_text(page) -> str:
    """The text of the highlighted gold answers, in order (overlapping ones cut into pieces)."""
    return "".join(page.locator("#context mark.gold").all_text_contents())


# --- the tests ---------------------------------------------------------------------------------------


def test_a_dragged_answer_after_emoji_and_cjk_is_saved_at_its_python_index(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    paragraph = visit.add_paragraph("Drag test 東", DRAG_CONTEXT)
    questions_before = int(page.text_content("#count-questions"))
    answers_before = int(page.text_content("#count-answers"))
    start = DRAG_CONTEXT.index(DRAG_ANSWER)
    end = start + len(DRAG_ANSWER)
    assert utf16(DRAG_CONTEXT, start) > start, "UTF-16 offsets differ from code points here"

    question = "Which mission flew to the Moon?"
    page.fill("#question", question)
    drag_select(page, DRAG_CONTEXT, start, end)
    selected = page.evaluate("window.getSelection().toString()")
    assert selected == DRAG_ANSWER
    expect(page.locator("#selection-info")).to_contain_text(f"“{DRAG_ANSWER}” ({start}–{end})")
    page.click("#add-answer")

    item = visit.wait_for_question(question)
    expect(item).to_have_class("question selected")
    expect(item.locator(".chip").first).to_have_text(DRAG_ANSWER)
    expect(page.locator("#count-questions")).to_have_text(str(questions_before + 1))
    expect(page.locator("#count-answers")).to_have_text(str(answers_before + 1))
    assert page.input_value("#question") == "", "the field is ready for the next question"
    assert gold_text(page) == DRAG_ANSWER
    assert page.locator("#context").text_content() == DRAG_CONTEXT

    saved = paragraph_of(data_file, paragraph)
    assert saved["context"] == DRAG_CONTEXT
    qa = saved_question(data_file, paragraph, question)
    assert len(qa["answers"]) == 1
    answer = qa["answers"][0]
    context = saved["context"]
    assert context[answer["answer_start"] : answer["answer_start"] + len(answer["text"])] == answer["text"] == selected
    assert answer["answer_start"] == start
    assert qa["is_impossible"] is False
    assert visit.console_errors == []


def test_more_answers_with_the_keyboard_and_enter(visit, server, data_file):
    """Shift+arrows select in the context (it takes focus); Enter saves; with no question typed,
    another selected span is added to the selected question."""
    from playwright.sync_api import expect

    page = visit.page
    context = "東 😀 The Saturn V rocket 🚀 was designed under Wernher von Braun in Huntsville."
    paragraph = visit.add_paragraph("Keyboard test", context)
    question = "Under whose direction was the rocket designed?"
    first, second = "Wernher von Braun", "von Braun"
    page.fill("#question", question)

    # a click puts the caret before the answer; Shift+Right extends the selection over it
    start = context.index(first)
    box = character_box(page, utf16(context, start), utf16(context, start + 1))
    page.mouse.click(box["left"] + 1, (box["top"] + box["bottom"]) / 2)
    for _ in first:
        page.keyboard.press("Shift+ArrowRight")
    assert page.evaluate("window.getSelection().toString()") == first
    page.keyboard.press("Enter")  # the context has the focus: Enter saves
    visit.wait_for_question(question)
    expect(visit.question_item(question).locator(".q-main .chip")).to_have_count(1)

    # nothing typed: the next selected span goes to the selected question as another answer
    start2 = context.index(second)
    drag_select(page, context, start2, start2 + len(second))
    expect(page.locator("#selection-info")).to_contain_text("adds it to the selected question")
    page.keyboard.press("Enter")
    expect(visit.question_item(question).locator(".q-main .chip")).to_have_count(2)
    qa = saved_question(data_file, paragraph, question)
    assert [(a["text"], a["answer_start"]) for a in qa["answers"]] == [(first, start), (second, start2)]
    # both highlighted: the overlap is marked as such
    assert page.locator("#context mark.gold.overlap").text_content() == second
    assert gold_text(page) == first

    # a gold answer removed with its ×
    visit.question_item(question).locator(".remove-answer").nth(1).click()
    expect(visit.question_item(question).locator(".q-main .chip")).to_have_count(1)
    assert [a["text"] for a in saved_question(data_file, paragraph, question)["answers"]] == [first]


def test_a_suggestion_is_accepted_by_its_key_or_a_click(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    context = "😀 東京 report: the probe 🛰 Voyager 2 flew past Neptune in August 1989 and found Triton."
    paragraph = visit.add_paragraph("Suggestion test", context)
    assert page.locator("#suggest").is_visible()

    question = "When did the probe fly past Neptune?"
    status, expected = server.post_json("/api/suggest", {"paragraph": paragraph, "question": question, "top_k": 3})
    assert status == 200, expected
    assert expected["answers"], "the tiny model always suggests something"
    page.fill("#question", question)
    page.press("#question", "Enter")  # no selection: Enter asks the model
    choices = page.locator("#suggestions .suggestion-choice")
    expect(choices).to_have_count(len(expected["answers"]))
    for choice, answer in zip(choices.all(), expected["answers"]):
        assert choice.locator(".s-text").text_content() == answer["text"]
        assert choice.locator(".score").text_content() == f"{100 * answer['score']:.1f}%"
    # each suggestion is highlighted where its code-point offsets say
    for rank, answer in enumerate(expected["answers"], start=1):
        assert context[answer["start"] : answer["end"]] == answer["text"]
        assert "".join(page.locator(f"#context mark.r{rank}").all_text_contents()) == answer["text"]

    page.keyboard.press("1")  # the suggestions have the focus: a key saves one
    visit.wait_for_question(question)
    expect(page.locator("#suggestions-box")).to_be_hidden()
    best = expected["answers"][0]
    qa = saved_question(data_file, paragraph, question)
    assert [(a["text"], a["answer_start"]) for a in qa["answers"]] == [(best["text"], best["start"])]
    assert gold_text(page) == best["text"]

    # a click on another suggestion
    question2 = "What did the probe find?"
    status, expected2 = server.post_json("/api/suggest", {"paragraph": paragraph, "question": question2, "top_k": 3})
    assert status == 200
    page.fill("#question", question2)
    page.click("#suggest")
    expect(choices).to_have_count(len(expected2["answers"]))
    pick = len(expected2["answers"]) - 1
    choices.nth(pick).click()
    visit.wait_for_question(question2)
    chosen = expected2["answers"][pick]
    qa2 = saved_question(data_file, paragraph, question2)
    assert [(a["text"], a["answer_start"]) for a in qa2["answers"]] == [(chosen["text"], chosen["start"])]


def test_a_selection_corrects_the_suggestions(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    context = "The 🐉 dragon 龍 of the tale slept under Mount Emei for a thousand years."
    paragraph = visit.add_paragraph("Correction test", context)
    question = "Where did the dragon sleep?"
    page.fill("#question", question)
    page.click("#suggest")
    page.locator("#suggestions .suggestion-choice").first.wait_for()
    answer = "Mount Emei"
    start = context.index(answer)
    drag_select(page, context, start, start + len(answer))
    page.keyboard.press("Enter")
    visit.wait_for_question(question)
    expect(page.locator("#suggestions-box")).to_be_hidden()
    qa = saved_question(data_file, paragraph, question)
    assert [(a["text"], a["answer_start"]) for a in qa["answers"]] == [(answer, start)]


def test_a_question_longer_than_the_model_reads_is_said_to_be_cut(visit, server):
    from playwright.sync_api import expect

    page = visit.page
    context = "The 🐉 dragon 龍 of the tale slept under Mount Emei for a thousand years."
    visit.add_paragraph("Long question test", context)
    limit = json.loads(server.request("GET", "/api/data")[2])["model"]["max_question_length"]
    page.fill("#question", "Where did the dragon sleep " + " ".join(["for a thousand years"] * limit) + "?")
    page.click("#suggest")
    page.locator("#suggestions .suggestion-choice").first.wait_for()
    note = page.locator("#question-cut")
    expect(note).to_be_visible()
    assert note.text_content() == (
        f"This question is longer than the model reads ({limit} tokens): it answered, and training learns, "
        f"from its first {limit} tokens only."
    )
    page.fill("#question", "Where did the dragon sleep?")
    page.click("#suggest")
    expect(note).to_have_attribute("hidden", "")  # set by the second answer


def test_unanswerable(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    paragraph = visit.add_paragraph("Unanswerable test", "The 🍎 apple fell from the tree in autumn.")
    unanswerable_before = int(page.text_content("#count-unanswerable"))
    question = "Who planted the tree?"
    page.fill("#question", question)
    page.click("#unanswerable")
    item = visit.wait_for_question(question)
    expect(item.locator(".badge.unanswerable")).to_have_text("unanswerable")
    expect(page.locator("#count-unanswerable")).to_have_text(str(unanswerable_before + 1))
    qa = saved_question(data_file, paragraph, question)
    assert qa["answers"] == [] and qa["is_impossible"] is True


def test_a_deleted_question_comes_back_with_undo(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    context = "Ada 😀 Lovelace wrote the first program in 1843, notes 東 on the Analytical Engine."
    paragraph = visit.add_paragraph("Undo test", context)
    question = "When did Ada Lovelace write the first program?"
    page.fill("#question", question)
    start = context.index("1843")
    drag_select(page, context, start, start + 4)
    page.click("#add-answer")
    visit.wait_for_question(question)
    before = saved_question(data_file, paragraph, question)

    expect(visit.question_item(question)).to_have_class("question selected")  # the saved question is selected
    visit.question_item(question).locator(".delete-question").click()
    expect(visit.question_item(question)).to_have_count(0)
    assert paragraph_of(data_file, paragraph)["qas"] == []
    undo = page.locator("#undo")
    expect(undo).to_be_enabled()
    assert "delete" in undo.get_attribute("title").lower()

    undo.click()
    visit.wait_for_question(question)
    assert paragraph_of(data_file, paragraph)["qas"] == [before]
    expect(page.locator("#status")).to_contain_text("Undone")

    # again, with Ctrl+Z outside any text field
    visit.question_item(question).locator(".q-main").click()
    visit.question_item(question).locator(".delete-question").click()
    expect(visit.question_item(question)).to_have_count(0)
    page.locator("#paragraph-heading").click()
    page.keyboard.press("Control+z")
    visit.wait_for_question(question)
    assert paragraph_of(data_file, paragraph)["qas"] == [before]

    # Ctrl+Z in the question field is the field's own undo, not the data's
    page.fill("#question", "typing")
    page.focus("#question")
    page.keyboard.press("Control+z")
    page.wait_for_timeout(300)  # nothing should happen; give it a moment to show if it did
    assert paragraph_of(data_file, paragraph)["qas"] == [before]


def test_a_second_tab_gets_the_conflict_and_reloads(browser, server, data_file):
    from playwright.sync_api import expect

    first = Visit(browser, server).open()
    second = None
    try:
        context = "In 1969 😀 the 東 crew of Apollo 11 landed in the Sea of Tranquility."
        paragraph = first.add_paragraph("Conflict test", context)
        second = Visit(browser, server).open()
        second.choose(paragraph)

        # the first tab changes the file
        first.page.fill("#question", "Where did the crew land?")
        start = context.index("the Sea of Tranquility")
        drag_select(first.page, context, start, start + len("the Sea of Tranquility"))
        first.page.click("#add-answer")
        first.wait_for_question("Where did the crew land?")

        # the second, still on the version before, tries its own change
        typed = "When did the crew land?"
        second.page.fill("#question", typed)
        year = context.index("1969")
        drag_select(second.page, context, year, year + 4)
        second.page.click("#add-answer")
        notice = second.page.locator("#notice")
        expect(notice).to_be_visible()
        assert notice.text_content().lower().startswith(CONFLICT.lower())
        assert "was not saved" in notice.text_content() and "version" not in notice.text_content()  # no store internals
        assert notice.get_attribute("role") == "alert"
        second.wait_for_question("Where did the crew land?")  # reloaded
        assert second.page.input_value("#question") == typed  # what was typed stays
        assert [qa["question"] for qa in paragraph_of(data_file, paragraph)["qas"]] == ["Where did the crew land?"]

        # and the retry, on the new version, is saved
        second.page.click("#add-answer")
        second.wait_for_question(typed)
        expect(notice).to_be_hidden()
        qa = saved_question(data_file, paragraph, typed)
        assert [(a["text"], a["answer_start"]) for a in qa["answers"]] == [("1969", year)]
    finally:
        first.close()
        if second is not None:
            second.close()


def test_editing_a_paragraph_moves_its_answers_or_shows_why_not(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    context = "The 🌉 bridge opened in 1932."
    paragraph = visit.add_paragraph("Edit test", context)
    question = "When did the bridge open?"
    page.fill("#question", question)
    start = context.index("1932")
    drag_select(page, context, start, start + 4)
    page.keyboard.press("Enter")
    visit.wait_for_question(question)
    qa_id = saved_question(data_file, paragraph, question)["id"]

    page.click("#edit-paragraph")
    assert page.input_value("#paragraph-text") == context
    edited = "The old 🌉 bridge opened in 1932."
    page.fill("#paragraph-text", edited)
    page.click("#save-paragraph")
    expect(page.locator("#context")).to_have_text(edited)
    new_start = edited.index("1932")
    expect(page.locator("#moved")).to_have_text(
        f"“1932” (answer to “{question}”): {start}–{start + 4} → {new_start}–{new_start + 4}"
    )  # the question by its text, not its id
    assert qa_id not in page.locator("#moved").text_content()
    saved = paragraph_of(data_file, paragraph)
    assert saved["context"] == edited
    assert saved["qas"][0]["answers"] == [{"text": "1932", "answer_start": new_start}]

    # an edit that loses an answer is refused: the detail is shown, the file unchanged
    page.click("#edit-paragraph")
    page.fill("#paragraph-text", "The old 🌉 bridge opened long ago.")
    page.click("#save-paragraph")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    assert "1932" in notice.text_content() and qa_id in notice.text_content()
    assert page.locator("#paragraph-text").is_visible(), "the editor stays open with the text"
    assert paragraph_of(data_file, paragraph)["context"] == edited


def _api_change(server: Server, method: str, path: str, body: dict) -> dict:
    """A change made by another client (a script, another tab) at the data's latest version."""
    status, _, raw = server.request("GET", "/api/data")
    assert status == 200
    payload = json.dumps({**body, "version": json.loads(raw)["version"]}).encode("utf-8")
    status, _, raw = server.request(method, path, payload, {"Content-Type": "application/json"})
    assert status == 200, raw
    return json.loads(raw)


def test_a_paragraph_edit_keeps_its_line_ends_and_survives_changes_elsewhere(browser, server, data_file):
    from playwright.sync_api import expect

    mixed = "Line one.\r\nLine two has Ada.\nEnd."
    paragraph = _api_change(server, "POST", "/api/paragraphs", {"title": "Line ends", "context": mixed})["paragraph"]
    elsewhere = _api_change(server, "POST", "/api/paragraphs", {"title": "Line ends", "context": "Another one."})["paragraph"]
    visit = Visit(browser, server).open()
    try:
        page, notice = visit.page, visit.page.locator("#notice")
        visit.choose(paragraph)
        # Edit, then Save with nothing changed: the textarea's "\n" line ends are no change
        page.click("#edit-paragraph")
        page.click("#save-paragraph")
        expect(page.locator("#paragraph-text")).to_be_hidden()
        assert paragraph_of(data_file, paragraph)["context"] == mixed

        # a real edit, while another client changes another paragraph
        page.click("#edit-paragraph")
        page.fill("#paragraph-text", "Line one.\nLine two has Ada.\nThe end.")
        _api_change(server, "POST", "/api/questions", {"paragraph": elsewhere, "question": "Which?", "answers": []})
        page.click("#save-paragraph")
        expect(notice).to_contain_text(CONFLICT)  # the page's version was old: reloaded
        page.click("#save-paragraph")  # the paragraph itself did not change: the retry is saved
        expect(page.locator("#paragraph-text")).to_be_hidden()
        assert paragraph_of(data_file, paragraph)["context"] == "Line one.\r\nLine two has Ada.\nThe end."  # its own line ends

        # another client changes this very paragraph meanwhile: the edit is not saved over it
        page.click("#edit-paragraph")
        page.fill("#paragraph-text", "Mine.")
        a, p = paragraph.split("/")
        _api_change(server, "PUT", f"/api/paragraphs/{a}/{p}", {"context": "Theirs."})
        page.click("#save-paragraph")
        expect(notice).to_contain_text(CONFLICT)
        page.click("#save-paragraph")
        expect(notice).to_contain_text("changed elsewhere while you edited it")
        assert page.input_value("#paragraph-text") == "Mine."  # what was typed stays, to copy
        assert paragraph_of(data_file, paragraph)["context"] == "Theirs."
    finally:
        visit.close()


def test_editing_a_question_keeps_its_answers(visit, server, data_file):
    from playwright.sync_api import expect

    page = visit.page
    context = "Marie 😀 Curie won two Nobel prizes."
    paragraph = visit.add_paragraph("Question edit test", context)
    page.fill("#question", "How many prizes?")
    start = context.index("two")
    drag_select(page, context, start, start + 3)
    page.keyboard.press("Enter")
    item = visit.wait_for_question("How many prizes?")
    item.locator(".edit-question").click()
    field = item.locator(".q-edit")
    expect(field).to_be_focused()
    field.fill("How many Nobel prizes did Curie win?")
    field.press("Enter")
    visit.wait_for_question("How many Nobel prizes did Curie win?")
    qa = saved_question(data_file, paragraph, "How many Nobel prizes did Curie win?")
    assert qa["answers"] == [{"text": "two", "answer_start": start}]


def test_the_review_panel_jumps_to_a_question(visit, server):
    from playwright.sync_api import expect

    page = visit.page
    visit.add_paragraph("Review test", "The 🐢 tortoise won the race against the hare.")  # at least one question to review
    page.fill("#question", "Who won the race?")
    page.click("#unanswerable")
    visit.wait_for_question("Who won the race?")
    page.locator("#review summary").click()
    items = page.locator("#review-list .review-item")
    items.first.wait_for()
    status, _, raw = server.request("GET", "/api/review?limit=20")
    assert status == 200
    expected = json.loads(raw)["items"]
    expect(items).to_have_count(len(expected))
    first = expected[0]
    assert items.first.locator(".review-question").text_content() == first["question"]
    assert items.first.locator(".badge").text_content() == first["reason"]
    items.first.click()
    expect(page.locator(f".paragraph-choice[data-paragraph='{first['paragraph']}']")).to_have_attribute("aria-current", "true")
    expect(page.locator(f"#questions li.question.selected[data-id='{first['id']}']")).to_have_count(1)
    if len(first["gold"]) == 1:
        assert gold_text(page) == first["gold"][0]["text"]


def test_the_sample_file_without_a_model(browser, sample_server):
    from playwright.sync_api import expect

    visit = Visit(browser, sample_server).open()
    try:
        page = visit.page
        data = json.loads(sample_server.request("GET", "/api/data")[2])
        assert page.title() == "qatune: annotate dev.json"
        assert page.text_content("#file") == "dev.json"
        for name in ("paragraphs", "questions", "answers", "unanswerable"):
            assert page.text_content(f"#count-{name}") == str(data["counts"][name])
        assert page.locator("#report").text_content().endswith(data["report"]["line"])
        assert page.get_attribute("#export", "href") == "api/export.jsonl"  # relative: the app can be mounted under a prefix
        assert page.locator("#undo").is_disabled()
        assert page.locator("#suggest").is_hidden()
        assert page.locator("#review").is_hidden()
        assert page.locator("#model-name").is_hidden()
        assert page.locator(".paragraph-choice").count() == data["counts"]["paragraphs"]
        assert page.locator(".article-title").all_text_contents() == [article["title"] for article in data["data"]]

        # the first paragraph is shown; its first question's two gold answers overlap
        first = data["data"][0]["paragraphs"][0]
        expect(page.locator("#context")).to_have_text(first["context"])
        qa = first["qas"][0]
        visit.question_item(qa["question"]).locator(".q-main").click()
        assert sorted(a["text"] for a in qa["answers"]) == ["John F. Kennedy", "President John F. Kennedy"]
        expect(page.locator("#context mark.gold.overlap")).to_have_text("John F. Kennedy")
        assert gold_text(page) == "President John F. Kennedy"
        assert page.locator("#context").text_content() == first["context"]

        # Enter in the question field with no selection and no model says what to do
        page.fill("#question", "Who?")
        page.press("#question", "Enter")
        expect(page.locator("#notice")).to_contain_text("select the answer")

        # the next paragraph
        page.click("#next-paragraph")
        expect(page.locator("#context")).to_have_text(data["data"][0]["paragraphs"][1]["context"])
        assert page.input_value("#question") == "Who?"

        # the export link gives the data as JSON Lines
        status, headers, body = sample_server.request("GET", "/api/export.jsonl")
        assert status == 200 and "attachment" in headers.get("content-disposition", "")
        assert len(body.decode("utf-8").splitlines()) == data["counts"]["questions"]
        assert visit.console_errors == []
    finally:
        visit.close()


def test_user_text_is_never_markup(visit, server, data_file):
    page = visit.page
    context = 'Tags <b>stay</b> text: <img src="/nowhere.png" onerror="window.pwned = 1"> & the rest 😀.'
    visit.add_paragraph('<i>title</i> "quoted"', context)
    assert page.locator("#context").text_content() == context
    assert page.locator("#context img, #context b, #documents i").count() == 0
    assert page.evaluate("window.pwned === undefined")
    assert not any("nowhere" in url for url in visit.requests)


def test_the_page_loads_nothing_from_another_host(visit, server):
    page = visit.page
    context = "Only 😀 this server is asked for anything, 東."
    visit.add_paragraph("Hosts test", context)
    page.fill("#question", "Who is asked?")
    page.click("#suggest")
    page.locator("#suggestions .suggestion-choice").first.wait_for()
    page.keyboard.press("1")
    visit.wait_for_question("Who is asked?")
    page.reload()
    page.locator("#questions li.question").first.wait_for()
    assert any(url.endswith("/static/app.js") for url in visit.requests)
    assert any(url.endswith("/static/style.css") for url in visit.requests)
    assert any(url.endswith("/api/suggest") for url in visit.requests)
    elsewhere = [url for url in visit.requests if not url.startswith(server.url + "/")]
    assert elsewhere == []
    policy = page.locator("meta[http-equiv='Content-Security-Policy']").get_attribute("content")
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert visit.console_errors == []


def test_the_code_point_conversion(visit):
    for text in ["", "plain", "😀", "a😀b", "東京😀x👩\u200d🚀y𝕍", "e\u0301 combining"]:
        offsets = visit.page.evaluate("(text) => window.qatuneAnnotate.codePointOffsets(text)", text)
        assert offsets == [utf16(text, i) for i in range(len(text) + 1)]
        assert visit.page.evaluate("(text) => window.qatuneAnnotate.countCodePoints(text)", text) == len(text)


def test_it_fits_a_phone(browser, sample_server):
    visit = Visit(browser, sample_server, width=390, height=844).open()
    try:
        page = visit.page
        page.locator("#context").wait_for()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow == 0
        # one column: the paragraph comes below the documents
        side = page.locator(".side").bounding_box()
        work = page.locator("#work").bounding_box()
        assert work["y"] >= side["y"] + side["height"]
        assert abs(work["x"] - side["x"]) < 1
    finally:
        visit.close()


# --- the README's screenshot -------------------------------------------------------------------------


def screenshot(model: Path, out: Path) -> None:
    """A session on a copy of the sample dev set with `model`: a paragraph, a question with its
    gold answer highlighted, and the model's suggestions for a new question."""
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "dev.json"
        shutil.copy(SAMPLE, data)
        with running_annotate(data, "--model", str(model), log_dir=Path(folder)) as running, sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            visit = Visit(chromium, running).open()
            page = visit.page
            visit.choose("1/1")
            visit.question_item("What is the biggest moon of Saturn?").locator(".q-main").click()
            page.fill("#question", "When did Voyager 2 reach Uranus?")
            page.click("#suggest")
            page.locator("#suggestions .suggestion-choice").first.wait_for()
            expect(page.locator("#context mark.gold")).not_to_have_count(0)
            page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
            page.mouse.move(0, 0)  # no hover
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            elsewhere = [url for url in visit.requests if not url.startswith(running.url + "/")]
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            print(f"{out}: 1100x800, horizontal overflow {overflow} px, other hosts {elsewhere}, errors {visit.console_errors}")
            visit.close()
            chromium.close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="The README's screenshot of the annotation page.")
    parser.add_argument("command", choices=["screenshot"])
    parser.add_argument("model", nargs="?", default="/tmp/qatune-model", type=Path)
    parser.add_argument("--out", default=Path(__file__).parent.parent / "docs" / "annotate-page.png", type=Path)
    arguments = parser.parse_args()
    screenshot(arguments.model, arguments.out)

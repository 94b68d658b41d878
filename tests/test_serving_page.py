"""The page at `/` of `qatune serve`, in real headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright; nothing is downloaded: never `playwright install`).

What is checked: the model's description on the page; asking (the Ask button and Enter) puts
the API's own answer, context[start:end] with code-point offsets, in the <mark> even after
emoji, a ZWJ sequence, a character outside the BMP and CJK characters (JavaScript strings count
UTF-16 units); clicking another listed answer highlights it; "no answer"; errors from the server
(401 with a wrong key, 503, an unreachable server) are shown with their `detail`, and a context
over the server's limit is refused by the page itself; the button is disabled while waiting; the key is kept in sessionStorage and sent as
`Authorization: Bearer`; user text is never markup; the page loads nothing from another host and
fits a phone's width. Nothing here asserts a duration: timeouts are generous bounds only.

Without /usr/bin/chromium these tests skip, unless QATUNE_REQUIRE_BROWSER=1 (CI) makes that a
failure. The screenshot in the README comes from this file too:

    python tests/test_serving_page.py screenshot [MODEL] [--out docs/serve-page.png]

(MODEL: a trained model folder, default /tmp/qatune-model, made by `cd /tmp && qatune train`.)
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, chromium_browser, require_browser

sys.path.insert(0, str(Path(__file__).parent))  # for serving_helpers when run as a script
from serving_helpers import Server, running_server  # noqa: E402

TIMEOUT_MS = 60_000  # for any one wait in the browser: a bound, never a measure
HTTP_TIMEOUT = 120
API_KEY_VARIABLE = "QATUNE_PAGE_TEST_KEY"
API_KEY = "qt-page-3c9e1a7f5b2d48e6"
SMALL_MAX_CONTEXT = 50

# Characters before (and around) the answers that JavaScript counts as two UTF-16 units: emoji,
# a ZWJ sequence, a mathematical letter; and CJK (one unit each, several code points of context).
ASTRAL_CONTEXT = (
    "🚀 The rocket 東京 left 😀 from the pad at dawn, and 🌕 the crew 👩\u200d🚀 reached orbit 🛰 after nine minutes."
)
ASTRAL_CONTEXT_2 = (
    "😀 Launch 東 day: the 🚀 rocket named Saturn 𝕍 lifted off in July 1969 from Florida, carrying 🧑\u200d🚀 three astronauts."
)


# --- the browser: skipped where there is none, a failure where CI requires one -------------------


def test_a_missing_browser_is_a_skip_here_and_a_failure_where_required(monkeypatch):
    monkeypatch.delenv("QATUNE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_browser(Path("/no/such/chromium"))
    monkeypatch.setenv("QATUNE_REQUIRE_BROWSER", "1")  # as .ci/run sets it
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as caught:
        require_browser(Path("/no/such/chromium"))
    assert caught.type is pytest.fail.Exception
    assert str(caught.value).startswith("/no/such/chromium is not here (Debian's chromium package) and QATUNE_REQUIRE_BROWSER=1")


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(tiny_bert, tmp_path_factory, browser):
    with running_server(tiny_bert, log_dir=tmp_path_factory.mktemp("page-serve-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def guarded_server(tiny_bert, tmp_path_factory, browser):
    """A server that needs a key and takes at most SMALL_MAX_CONTEXT characters of context."""
    arguments = ("--api-key-env", API_KEY_VARIABLE, "--max-context-chars", str(SMALL_MAX_CONTEXT))
    log_dir = tmp_path_factory.mktemp("page-serve-logs")
    with running_server(tiny_bert, *arguments, env={API_KEY_VARIABLE: API_KEY}, log_dir=log_dir) as running:
        yield running


class Visit:
    """One page (in a fresh browser context: its own sessionStorage) and every URL it requested."""

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
        self.page.goto(self.server.url + "/")
        self.loaded()
        return self

    def loaded(self) -> None:
        """Wait for the model to be described and the samples listed. (Waits go through
        selectors, never page.wait_for_function: the page's Content-Security-Policy forbids the
        eval that its polling uses.)"""
        from playwright.sync_api import expect

        expect(self.page.locator("#engine")).not_to_have_text("…", timeout=TIMEOUT_MS)
        self.page.wait_for_selector("#sample option:nth-child(2)", state="attached")

    def fill(self, context: str, question: str, top_k: int = 1) -> None:
        self.page.fill("#context", context)
        self.page.fill("#question", question)
        self.page.select_option("#top-k", str(top_k))

    def answered(self) -> None:
        """Wait for an answer to be on the page (and the button back)."""
        self.page.wait_for_selector("#result-body:not([hidden])")
        self.page.wait_for_selector("#ask:not([disabled])")

    def highlight(self) -> str:
        return self.page.locator("#highlight").text_content()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, server):
    opened = Visit(browser, server).open()
    yield opened
    opened.close()


def api_answers(server: Server, context: str, question: str, top_k: int, headers: dict | None = None) -> dict:
    status, body = server.post_json("/v1/answer", {"question": question, "context": context, "top_k": top_k}, headers)
    assert status == 200, body
    return body


def utf16_slice(text: str, start: int, end: int) -> str:
    """What text.slice(start, end) gives in JavaScript: the mistake the page must not make."""
    units = text.encode("utf-16-le")
    return units[2 * start : 2 * end].decode("utf-16-le", errors="replace")


def check_highlight(visit: Visit, context: str, answer: dict) -> None:
    """The mark holds context[start:end] (code points) and the answer's text; the rendering
    around it is the whole context, unchanged."""
    expected = context[answer["start"] : answer["end"]]
    assert expected == answer["text"]
    assert visit.highlight() == expected
    assert visit.page.locator("#rendered-context").text_content() == context
    before = visit.page.evaluate("document.querySelector('#highlight').previousSibling?.textContent ?? ''")
    assert before == context[: answer["start"]]


# --- the tests -------------------------------------------------------------------------------------


def test_the_page_describes_the_model(visit, server):
    model = json.loads(server.request("GET", "/v1/model")[2])
    page = visit.page
    assert page.title() == "qatune: ask a question"
    assert page.locator("meta[name=viewport]").get_attribute("content") == "width=device-width, initial-scale=1"
    assert page.text_content("#model-name") == model["name"]
    assert page.text_content("#engine") == model["engine"]["description"]
    assert model["dev_metrics"] is None  # a tiny model from a config has no model card
    assert page.text_content("#dev-scores") == "no dev scores"
    assert page.locator("#key-field").is_hidden()  # no key needed here
    # every field the test uses has a label
    for field in ("context", "question", "top-k", "sample"):
        assert page.locator(f"label[for='{field}']").count() == 1
    assert visit.console_errors == []


def test_ask_highlights_the_api_answer_after_emoji_and_cjk(visit, server):
    question = "When did the rocket leave?"
    expected = api_answers(server, ASTRAL_CONTEXT, question, 1)["answers"]
    assert expected, "the tiny model gives an answer for this context"
    best = expected[0]
    first_astral = next(i for i, c in enumerate(ASTRAL_CONTEXT) if ord(c) > 0xFFFF)
    assert best["start"] > first_astral, "the answer must come after a character outside the BMP"
    assert utf16_slice(ASTRAL_CONTEXT, best["start"], best["end"]) != best["text"], "naive slicing would be wrong"

    visit.fill(ASTRAL_CONTEXT, question, top_k=1)
    visit.page.click("#ask")
    visit.answered()
    check_highlight(visit, ASTRAL_CONTEXT, best)
    assert visit.page.text_content("#answer-text") == best["text"]
    assert visit.page.text_content("#answer-score") == f"{100 * best['score']:.1f}%"
    assert visit.page.locator("#answers li").count() == 1
    assert visit.page.locator("#error").is_hidden()
    assert visit.console_errors == []


def test_a_question_longer_than_the_model_reads_is_said_to_be_cut(visit, server):
    from playwright.sync_api import expect

    limit = json.loads(server.request("GET", "/v1/model")[2])["settings"]["max_question_length"]
    long_question = "Who reached orbit " + " ".join(["after the long count"] * limit) + "?"
    assert api_answers(server, ASTRAL_CONTEXT, long_question, 1)["question_cut"] is True
    visit.fill(ASTRAL_CONTEXT, long_question, top_k=1)
    visit.page.click("#ask")
    visit.answered()
    note = visit.page.locator("#question-cut")
    assert note.is_visible()
    assert note.text_content() == (
        f"The question is longer than the model reads ({limit} tokens): it was answered from its first {limit} tokens."
    )
    visit.fill(ASTRAL_CONTEXT, "Who reached orbit?", top_k=1)  # a short question: no note
    visit.page.click("#ask")
    visit.answered()
    expect(note).to_have_attribute("hidden", "", timeout=TIMEOUT_MS)  # set by the second answer
    assert visit.page.text_content("#answer-text") == api_answers(server, ASTRAL_CONTEXT, "Who reached orbit?", 1)["answers"][0]["text"]
    assert visit.console_errors == []


def test_enter_in_the_question_asks(visit, server):
    question = "What lifted off?"
    best = api_answers(server, ASTRAL_CONTEXT_2, question, 2)["answers"][0]
    assert best["start"] > ASTRAL_CONTEXT_2.index("🚀")
    visit.fill(ASTRAL_CONTEXT_2, question, top_k=2)
    visit.page.press("#question", "Enter")
    visit.answered()
    check_highlight(visit, ASTRAL_CONTEXT_2, best)
    assert visit.page.locator("#answers li").count() == 2


def test_clicking_another_answer_highlights_it(visit, server):
    question = "Who reached orbit?"
    answers = api_answers(server, ASTRAL_CONTEXT, question, 3)["answers"]
    assert len(answers) == 3
    visit.fill(ASTRAL_CONTEXT, question, top_k=3)
    visit.page.click("#ask")
    visit.answered()
    items = visit.page.locator("#answers li")
    assert items.count() == 3
    for item, answer in zip(items.all(), answers):
        assert item.locator(".choice-text").text_content() == answer["text"]
        assert item.locator(".score").text_content() == f"{100 * answer['score']:.1f}%"
    check_highlight(visit, ASTRAL_CONTEXT, answers[0])

    items.nth(1).click()
    check_highlight(visit, ASTRAL_CONTEXT, answers[1])
    assert visit.page.text_content("#answer-text") == answers[1]["text"]
    assert items.nth(1).locator("button").get_attribute("aria-pressed") == "true"
    assert items.nth(0).locator("button").get_attribute("aria-pressed") == "false"
    assert visit.page.locator("mark").count() == 1

    items.nth(2).click()
    check_highlight(visit, ASTRAL_CONTEXT, answers[2])


def test_a_sample_fills_the_context_and_the_question(visit, server):
    examples = json.loads(server.request("GET", "/v1/examples")[2])["examples"]
    assert len(examples) >= 2
    assert visit.page.locator("#sample option").count() == len(examples) + 1
    visit.page.select_option("#sample", "1")
    assert visit.page.input_value("#context") == examples[1]["context"]
    assert visit.page.input_value("#question") == examples[1]["question"]
    visit.page.select_option("#top-k", "2")
    visit.page.click("#ask")
    visit.answered()
    best = api_answers(server, examples[1]["context"], examples[1]["question"], 2)["answers"][0]
    check_highlight(visit, examples[1]["context"], best)


def test_the_page_loads_nothing_from_another_host(visit, server):
    visit.page.select_option("#sample", "0")
    visit.page.click("#ask")
    visit.answered()
    visit.page.locator("#answers li").last.click()
    visit.page.reload()
    visit.loaded()
    assert visit.requests, "requests were recorded"
    assert any(url.endswith("/static/app.js") for url in visit.requests)
    assert any(url.endswith("/v1/answer") for url in visit.requests)
    elsewhere = [url for url in visit.requests if not url.startswith(server.url + "/")]
    assert elsewhere == []
    assert visit.console_errors == []


def test_user_text_is_never_markup(visit, server):
    context = 'Tags <b>stay</b> text: <img src="/nowhere.png" onerror="window.pwned = 1"> & the rest 😀.'
    visit.fill(context, "What stays?", top_k=3)
    visit.page.click("#ask")
    visit.answered()
    rendered = visit.page.locator("#rendered-context")
    assert rendered.text_content() == context
    assert rendered.locator("img, b").count() == 0
    assert visit.page.evaluate("window.pwned === undefined")
    assert not any("nowhere" in url for url in visit.requests)


def test_no_answer_is_said(visit):
    # the tiny model always answers something: the server's reply is replaced here (same URL)
    reply = {"answers": [], "no_answer_probability": 0.875}
    visit.page.route("**/v1/answer", lambda route: route.fulfill(status=200, json=reply))
    context = "Nothing here 😀 says when."
    visit.fill(context, "When?", top_k=3)
    visit.page.click("#ask")
    visit.answered()
    assert visit.page.locator("#no-answer").is_visible()
    assert "No answer" in visit.page.text_content("#no-answer")
    assert visit.page.text_content("#no-answer-probability") == "No-answer probability: 87.5%"
    assert visit.page.locator("#highlight").count() == 0
    assert visit.page.locator("#answers li").count() == 0
    assert visit.page.locator("#answer-text").is_hidden()
    assert visit.page.locator("#rendered-context").text_content() == context


def test_the_button_waits_for_the_answer(visit, server):
    held = []
    visit.page.route("**/v1/answer", lambda route: held.append(route))
    visit.fill(ASTRAL_CONTEXT, "Who reached orbit?", top_k=1)
    visit.page.click("#ask")
    ask = visit.page.locator("#ask")
    assert ask.is_disabled()
    assert ask.text_content() == "Asking…"
    assert ask.get_attribute("aria-busy") == "true"
    visit.page.press("#question", "Enter")  # a second ask while waiting does nothing
    for _ in range(TIMEOUT_MS // 50):
        if held:
            break
        visit.page.wait_for_timeout(50)
    assert len(held) == 1
    held[0].continue_()
    visit.answered()
    assert ask.text_content() == "Ask"
    assert ask.get_attribute("aria-busy") == "false"
    best = api_answers(server, ASTRAL_CONTEXT, "Who reached orbit?", 1)["answers"][0]
    check_highlight(visit, ASTRAL_CONTEXT, best)


@pytest.mark.parametrize(
    "status, body, headers, shown",
    [
        (503, {"detail": "busy: 1024 questions are waiting; retry shortly"}, {"Retry-After": "1"},
         "busy: 1024 questions are waiting; retry shortly (retry after 1 s)"),
        (422, {"detail": "top_k: Input should be less than or equal to 20"}, {},
         "top_k: Input should be less than or equal to 20"),
        (502, None, {}, "the server answered 502"),
    ],
)
def test_errors_are_shown_with_their_detail(visit, status, body, headers, shown):
    def reply(route):
        if body is None:
            route.fulfill(status=status, body="<html>Bad Gateway</html>", content_type="text/html")
        else:
            route.fulfill(status=status, json=body, headers=headers)

    visit.page.route("**/v1/answer", reply)
    visit.fill(ASTRAL_CONTEXT, "Who reached orbit?")
    visit.page.click("#ask")
    error = visit.page.locator("#error")
    error.wait_for(state="visible")
    assert error.text_content().startswith(shown)
    assert error.get_attribute("role") == "alert"
    assert visit.page.locator("#ask").is_enabled()


def test_an_unreachable_server_is_said_and_the_last_answer_goes(visit):
    visit.fill(ASTRAL_CONTEXT, "Who reached orbit?")
    visit.page.press("#question", "Enter")
    visit.answered()
    assert visit.page.locator("#highlight").count() == 1
    visit.page.route("**/v1/answer", lambda route: route.abort("connectionrefused"))
    visit.fill(ASTRAL_CONTEXT_2, "What lifted off?")
    visit.page.press("#question", "Enter")
    error = visit.page.locator("#error")
    error.wait_for(state="visible")
    assert error.text_content().startswith("Could not reach the server")
    assert visit.page.locator("#ask").is_enabled()
    # the answer to the question before is not left standing as if it answered this one
    assert visit.page.locator("#result-body").is_hidden()
    assert visit.page.locator("#highlight").count() == 0
    # and the next good answer clears the error
    visit.page.unroute("**/v1/answer")
    visit.page.click("#ask")
    visit.answered()
    assert error.is_hidden()


def test_blank_fields_are_said_before_asking(visit):
    visit.fill("", "Who?")
    visit.page.click("#ask")
    assert "Paste a context" in visit.page.text_content("#error")
    visit.fill(ASTRAL_CONTEXT, "   ")
    visit.page.click("#ask")
    assert "Type a question" in visit.page.text_content("#error")
    assert not any(url.endswith("/v1/answer") for url in visit.requests)


def test_a_wrong_key_shows_the_servers_detail(browser, guarded_server):
    visit = Visit(browser, guarded_server).open()
    try:
        page = visit.page
        assert page.locator("#key-field").is_visible()
        assert page.get_attribute("#api-key", "type") == "password"
        assert page.locator("label[for='api-key']").count() == 1
        page.fill("#api-key", "schlüssel\n")  # a header cannot carry it: said before asking
        visit.fill("Short 😀 text about 東 orbit.", "What orbit?")
        page.click("#ask")
        assert "printable ASCII" in page.text_content("#error")
        page.fill("#api-key", "not-the-key")
        visit.fill("Short 😀 text about 東 orbit.", "What orbit?")
        page.click("#ask")
        error = page.locator("#error")
        error.wait_for(state="visible")
        status, body = guarded_server.post_json(
            "/v1/answer", {"question": "q", "context": "c"}, {"Authorization": "Bearer not-the-key"}
        )
        assert status == 401
        assert body["detail"] in error.text_content()
        assert page.locator("#result-body").is_hidden()
    finally:
        visit.close()


def test_the_key_is_sent_and_kept_and_a_long_context_is_refused_by_the_page(browser, guarded_server):
    visit = Visit(browser, guarded_server).open()
    try:
        page = visit.page
        sent = []
        page.on("request", lambda request: request.url.endswith("/v1/answer") and sent.append(request))
        page.fill("#api-key", API_KEY)
        assert page.evaluate("sessionStorage.getItem('qatune.apiKey')") == API_KEY

        long_context = "x" * (SMALL_MAX_CONTEXT + 10)
        visit.fill(long_context, "Why?")
        assert "over" in page.get_attribute("#context-count", "class")
        page.click("#ask")
        error = page.locator("#error")
        error.wait_for(state="visible")
        # the page knows the limit (/v1/model): it says so in its own words and does not ask
        assert error.text_content() == (
            f"The context has {SMALL_MAX_CONTEXT + 10:,} characters; this server reads at most {SMALL_MAX_CONTEXT:,}. "
            "Keep the part that holds the answer and ask again."
        )
        assert sent == []
        status, body = guarded_server.post_json(
            "/v1/answer", {"question": "Why?", "context": long_context}, {"Authorization": f"Bearer {API_KEY}"}
        )
        assert status == 413 and f"at most {SMALL_MAX_CONTEXT}" in body["detail"]  # what other callers get

        # the key survives a reload (sessionStorage), and a short context is answered with it
        page.reload()
        visit.loaded()
        page.locator("#key-field").wait_for(state="visible")
        assert page.input_value("#api-key") == API_KEY
        context = "Short 😀 text about 東 orbit and the 🚀 crew."
        assert len(context) <= SMALL_MAX_CONTEXT
        visit.fill(context, "What orbit?", top_k=2)
        page.press("#question", "Enter")
        visit.answered()
        assert page.locator("#error").is_hidden()
        best = api_answers(guarded_server, context, "What orbit?", 2, {"Authorization": f"Bearer {API_KEY}"})["answers"][0]
        check_highlight(visit, context, best)
        assert len(sent) == 1
        assert all(request.all_headers().get("authorization") == f"Bearer {API_KEY}" for request in sent)
    finally:
        visit.close()


def test_the_code_point_conversion(visit):
    """The page's own conversion from code points (Python) to UTF-16 units (JavaScript)."""
    for text in ["", "plain", "😀", "a😀b", "東京😀x👩\u200d🚀y𝕍", "e\u0301 combining", "\ud83d lone"]:
        offsets = visit.page.evaluate("(text) => window.qatunePage.codePointOffsets(text)", text)
        assert len(offsets) == len(text) + 1
        expected, unit = [], 0
        for character in text:
            expected.append(unit)
            unit += 2 if ord(character) > 0xFFFF else 1
        assert offsets == expected + [unit]
        assert visit.page.evaluate("(text) => window.qatunePage.countCodePoints(text)", text) == len(text)


def test_it_fits_a_phone(browser, server):
    visit = Visit(browser, server, width=390, height=844).open()
    try:
        visit.page.select_option("#sample", "0")
        visit.page.click("#ask")
        visit.answered()
        visit.page.locator("#answers li").first.wait_for()
        overflow = visit.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow == 0
        # the answer is brought into view on one column
        assert visit.page.evaluate("document.querySelector('#result').getBoundingClientRect().top < innerHeight")
    finally:
        visit.close()


# --- the README's screenshot -------------------------------------------------------------------------


def screenshot(model: Path, out: Path, phone: Path | None) -> None:
    """Ask the sample question about Saturn V on `model` and save the page as `out`."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as logs, running_server(model, log_dir=Path(logs)) as running:
        examples = json.loads(urllib.request.urlopen(running.url + "/v1/examples", timeout=HTTP_TIMEOUT).read())["examples"]
        pick = next((i for i, e in enumerate(examples) if "Saturn V" in e["question"]), 0)
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            for path, (width, height) in [(out, (1100, 800)), (phone, (390, 844))]:
                if path is None:
                    continue
                visit = Visit(chromium, running, width, height).open()
                visit.page.select_option("#sample", str(pick))
                visit.page.select_option("#top-k", "3")
                visit.page.click("#ask")
                visit.answered()
                overflow = visit.page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                elsewhere = [url for url in visit.requests if not url.startswith(running.url + "/")]
                visit.page.evaluate("window.scrollTo(0, 0)")
                path.parent.mkdir(parents=True, exist_ok=True)
                visit.page.screenshot(path=str(path), full_page=path is phone)
                print(f"{path}: {width}x{height}, answer {visit.highlight()!r}, horizontal overflow {overflow} px, other hosts {elsewhere}")
                visit.close()
            chromium.close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Screenshots of the page for the README.")
    parser.add_argument("command", choices=["screenshot"])
    parser.add_argument("model", nargs="?", default="/tmp/qatune-model", type=Path)
    parser.add_argument("--out", default=Path(__file__).parent.parent / "docs" / "serve-page.png", type=Path)
    parser.add_argument("--phone", default=None, type=Path, help="also a full-page shot 390 px wide, here")
    arguments = parser.parse_args()
    screenshot(arguments.model, arguments.out, arguments.phone)

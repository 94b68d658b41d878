"""`qatune serve` over real HTTP: a server in a subprocess (tests/serving_helpers.py), requests
from this process with urllib, http.client and raw sockets.

What is checked: every endpoint, every refusal with its status and a JSON `detail` naming what is
wrong, the API key, answers equal to `QAModel.ask` bit for bit (one by one, several in one
request, concurrent callers, micro-batching on and off), a load of 64 concurrent clients, the
queue bound (503 with Retry-After), callers that go away, SIGTERM with requests in flight, and
the default address. Servers are shared per module where the test allows it (each start costs
a few seconds). Nothing here asserts a duration: timeouts are generous bounds only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving_helpers import Server, free_port, running_server

DATA = Path(__file__).parent / "data"
API_KEY_VARIABLE = "QATUNE_TEST_KEY"
API_KEY = "qt-test-7f3a9c1e5b2d4086a1c3e5f70b9d2e4c"  # fixed, and unlike anything else a response says
HTTP_TIMEOUT = 120  # seconds for one request: a bound, never a measure
JSON_HEADERS = {"Content-Type": "application/json"}

# small limits, for the refusals
SMALL_MAX_ITEMS, SMALL_MAX_CONTEXT, SMALL_MAX_BODY, SMALL_MAX_QUEUE = 3, 200, 5000, 16
SMALL_LIMITS = (
    "--max-items", str(SMALL_MAX_ITEMS), "--max-context-chars", str(SMALL_MAX_CONTEXT),
    "--max-body-bytes", str(SMALL_MAX_BODY), "--max-queue", str(SMALL_MAX_QUEUE),
)


# --- servers and reference models, started once per module and only when a test needs them ---


class _Pool:
    """Servers by (model, arguments) and reference QAModels by model, kept for the module."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.stack = contextlib.ExitStack()
        self.servers: dict[tuple, Server] = {}
        self.models: dict[Path, object] = {}

    def server(self, model: Path, *arguments: str, env: dict | None = None) -> Server:
        key = (model, arguments, tuple(sorted((env or {}).items())))
        if key not in self.servers:
            self.servers[key] = self.stack.enter_context(running_server(model, *arguments, env=env, log_dir=self.log_dir))
        server = self.servers[key]
        assert server.process.poll() is None, f"the server exited:\n{server.output()}"
        return server

    def model(self, path: Path):
        """The model as `QAModel.from_pretrained` loads it here (engine auto, as the server does)."""
        from qatune.inference import QAModel

        if path not in self.models:
            self.models[path] = QAModel.from_pretrained(path)
        return self.models[path]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    servers = _Pool(tmp_path_factory.mktemp("serve-logs"))
    with servers.stack:
        yield servers


@pytest.fixture(scope="module")
def server(pool, tiny_bert) -> Server:
    """Default settings: micro-batching on, default limits."""
    return pool.server(tiny_bert)


@pytest.fixture(scope="module")
def small_server(pool, tiny_bert) -> Server:
    return pool.server(tiny_bert, *SMALL_LIMITS)


@pytest.fixture(scope="module")
def key_server(pool, tiny_bert) -> Server:
    return pool.server(tiny_bert, "--api-key-env", API_KEY_VARIABLE, env={API_KEY_VARIABLE: API_KEY})


@pytest.fixture(scope="module")
def reference(pool, tiny_bert):
    return pool.model(tiny_bert)


# --- inputs: fixed seeds, varied text -------------------------------------------------------------


def _tiny_pairs() -> list[tuple[str, str]]:
    data = json.loads((DATA / "tiny_qa.json").read_text(encoding="utf-8"))
    return [
        (qa["question"], paragraph["context"])
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def _tiny_words() -> list[str]:
    words = []
    for question, context in _tiny_pairs():
        words += question.replace("?", "").split() + context.replace(".", "").replace(",", "").split()
    return sorted(set(words))


# text outside ASCII: accents, CJK, emoji outside the BMP (one code point, two UTF-16 units),
# a ZWJ sequence, mathematical letters, quotes and dashes
ODD_WORDS = [
    "café", "naïve", "Zürich", "São", "Ærøskøbing", "mañana", "über", "Ωmega", "€100", "—", "«quoted»",
    "東京", "北京大学", "日本語のテキスト", "서울", "😀", "🚀🌍", "👩‍👩‍👧", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "Ḁ", "ﬁne",
]
UNKNOWN_WORDS = ["zephyr", "quixotic", "brouhaha", "kerfuffle", "xylophone", "juxtapose", "wombat"]
SEPARATORS = [" ", " ", " ", " ", "\n", "\t", "  ", ". ", ", ", ".\n\n", " \t "]


def _text(rng: random.Random, characters: int) -> str:
    words = _tiny_words()
    parts: list[str] = []
    length = 0
    while length < characters:
        roll = rng.random()
        word = rng.choice(ODD_WORDS) if roll < 0.15 else rng.choice(UNKNOWN_WORDS) if roll < 0.25 else rng.choice(words)
        parts += [word, rng.choice(SEPARATORS)]
        length += len(word) + 1
    return "".join(parts).strip() or "text"


def _question(rng: random.Random) -> str:
    start = rng.choice(["Who", "What", "When", "Where", "Which", "How many", "Wer", "誰が", "🤔 what"])
    return f"{start} {_text(rng, rng.randint(5, 40))}?"


def varied_inputs(seed: int, count: int, *, long_every: int = 6, long_characters=(2500, 9000)) -> list[dict]:
    """`count` requests {question, context, top_k}: the tiny data's questions, then generated
    ones with short and long contexts (a long one cuts into several windows of 384 tokens)."""
    rng = random.Random(seed)
    inputs = [
        {"question": q, "context": c, "top_k": 1 + i % 5} for i, (q, c) in enumerate(_tiny_pairs())
    ]
    inputs += [
        {"question": "Where?", "context": "😀", "top_k": 1},
        {"question": "Who lives in 東京?", "context": "東京に住んでいるのは田中さんです。", "top_k": 3},
        {"question": "What is it?", "context": "a\tb\nc\r\nd  e", "top_k": 5},
        {"question": "Which café?", "context": "The café in Zürich 🚀 serves crème brûlée.\n\tAsk for 👩‍👩‍👧.", "top_k": 2},
    ]
    while len(inputs) < count:
        index = len(inputs)
        characters = rng.randint(*long_characters) if index % long_every == 0 else rng.randint(20, 600)
        inputs.append({"question": _question(rng), "context": _text(rng, characters), "top_k": rng.randint(1, 5)})
    return inputs[:count]


def expected_result(model, item: dict) -> dict:
    """What the server should answer for `item`: `QAModel.ask`'s answers, `predict`'s null_prob,
    and whether the question is longer than the model's max_question_length."""
    from qatune.data import Example
    from qatune.features import count_cut_questions

    answers = [asdict(a) for a in model.ask(item["question"], item["context"], top_k=item["top_k"])]
    example = Example(id="reference", question=item["question"], context=item["context"])
    null_prob = model.predict([example], top_k=item["top_k"])[0].null_prob
    cut = count_cut_questions([item["question"]], model.tokenizer, model.settings) == 1
    return {"answers": answers, "no_answer_probability": null_prob, "question_cut": cut}


def check_spans(item: dict, result: dict) -> None:
    for answer in result["answers"]:
        assert answer["text"] == item["context"][answer["start"] : answer["end"]], answer


# --- HTTP -------------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection (http.client), JSON in and out."""

    def __init__(self, server: Server, timeout: float = HTTP_TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(server.url)
        self.host, self.port, self.timeout = parsed.hostname, parsed.port, timeout
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, value, headers: dict | None = None) -> tuple[int, dict, object]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        body = json.dumps(value).encode("utf-8")
        try:
            self.connection.request("POST", path, body=body, headers={**JSON_HEADERS, **(headers or {})})
            response = self.connection.getresponse()
            data = response.read()
        except Exception:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def post(server: Server, value, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, lower-cased headers, JSON body) of a POST to /v1/answer on a new connection."""
    status, response_headers, body = server.request(
        "POST", "/v1/answer", json.dumps(value).encode("utf-8"), {**JSON_HEADERS, **(headers or {})}, timeout=HTTP_TIMEOUT
    )
    return status, {k.lower(): v for k, v in response_headers.items()}, json.loads(body)


def get(server: Server, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    status, response_headers, body = server.request("GET", path, headers=headers, timeout=HTTP_TIMEOUT)
    return status, {k.lower(): v for k, v in response_headers.items()}, body


def assert_error(status: int, body: dict, expected_status, *names: str) -> str:
    """A JSON error body with a string `detail` naming each of `names`; returns the detail."""
    allowed = expected_status if isinstance(expected_status, tuple) else (expected_status,)
    assert status in allowed, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"].strip(), body
    for name in names:
        assert name in body["detail"], (name, body["detail"])
    return body["detail"]


def concurrently(function, arguments: list, workers: int = 16, timeout: float = 600) -> list:
    """function(argument) for each argument on `workers` threads; results in order."""
    with ThreadPoolExecutor(workers) as executor:
        futures = [executor.submit(function, argument) for argument in arguments]
        return [future.result(timeout=timeout) for future in futures]


# --- metrics ----------------------------------------------------------------------------------------


class Metrics:
    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    @classmethod
    def read(cls, server: Server) -> "Metrics":
        status, headers, body = get(server, "/metrics")
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain"), headers
        return cls(body.decode("utf-8"))

    def value(self, family: str, sample: str, **labels: str) -> float:
        """A sample's value; 0 when the series has not appeared yet."""
        assert family in self.families, (family, sorted(self.families))
        for one in self.families[family].samples:
            if one.name == sample and all(one.labels.get(k) == v for k, v in labels.items()):
                return one.value
        return 0.0

    def requests(self, route: str, method: str, status: int) -> float:
        return self.value("qatune_http_requests", "qatune_http_requests_total", route=route, method=method, status=str(status))


# === 1. endpoints =====================================================================================


def test_answer_one_and_many_in_order(server, reference):
    inputs = varied_inputs(seed=11, count=8)
    singles = []
    for item in inputs:
        status, headers, body = post(server, item)
        assert status == 200, body
        assert headers["content-type"] == "application/json"
        assert set(body) == {"answers", "no_answer_probability", "question_cut"}
        assert body["question_cut"] is False  # these questions are short
        assert 1 <= len(body["answers"]) <= item["top_k"]  # null_threshold 1.0: always an answer
        for answer in body["answers"]:
            assert set(answer) == {"text", "start", "end", "score"}
            assert 0.0 <= answer["score"] <= 1.0
        check_spans(item, body)
        singles.append(body)
    status, _, many = post(server, {"items": inputs})
    assert status == 200, many
    assert many == {"results": singles}
    # one item in the list form still answers in the list form
    status, _, one = post(server, {"items": inputs[:1]})
    assert (status, one) == (200, {"results": singles[:1]})
    # top_k defaults to 1 and goes up to 20
    item = {"question": "Who was the captain?", "context": _tiny_pairs()[0][1]}
    status, _, body = post(server, item)
    assert (status, body) == (200, expected_result(reference, {**item, "top_k": 1}))
    status, _, body = post(server, {**item, "top_k": 20})
    assert status == 200 and 1 <= len(body["answers"]) <= 20


def test_a_question_longer_than_the_model_reads_is_answered_from_its_start_and_said_to_be_cut(server, reference):
    limit = reference.settings.max_question_length
    context = _tiny_pairs()[0][1]
    long_question = "Who was the captain " + " ".join(["of the ship"] * limit) + "?"
    short = {"question": "Who was the captain?", "context": context, "top_k": 3}
    long = {"question": long_question, "context": context, "top_k": 3}
    before = Metrics.read(server)
    status, _, body = post(server, long)
    assert status == 200, body
    assert body["question_cut"] is True
    assert body == expected_result(reference, long)  # the answers `ask` gives from the question's first tokens
    status, _, many = post(server, {"items": [short, long, short]})
    assert status == 200, many
    assert [result["question_cut"] for result in many["results"]] == [False, True, False]
    assert many["results"][1] == body
    after = Metrics.read(server)
    name = "qatune_questions_cut"
    assert after.value(name, name + "_total") - before.value(name, name + "_total") == 2


def test_health(server):
    status, headers, body = get(server, "/v1/health")
    assert status == 200
    assert json.loads(body) == {"status": "ready"}


def test_model_card(server, reference):
    status, _, body = get(server, "/v1/model")
    assert status == 200
    card = json.loads(body)
    for key in ("name", "settings", "dev_metrics", "null_threshold", "engine", "limits", "api_key_required"):
        assert key in card, key
    assert card["settings"] == reference.settings.to_dict()
    assert card["null_threshold"] == reference.settings.null_threshold
    assert card["engine"]["name"] == reference.engine.to_dict()["name"] == "openvino"
    assert card["engine"]["precision"] == reference.engine.precision
    assert card["limits"]["max_items"] == 64 and card["limits"]["max_top_k"] == 20
    assert card["api_key_required"] is False
    assert card["batching"]["across_requests"] is True


def test_model_card_shows_the_saved_card_without_the_machines_paths(tiny_bert, tmp_path):
    """In process: /v1/model of a folder with a qatune.json as `train` writes it."""
    import shutil

    from fastapi.testclient import TestClient

    from qatune.serving import create_app
    from qatune.settings import QASettings, write_model_card

    folder = tmp_path / "trained"
    shutil.copytree(tiny_bert, folder)
    write_model_card(
        folder, QASettings(null_threshold=0.25), base_model="/home/someone/models/my-encoder",
        training_arguments={"output_dir": "/home/someone/runs/x"}, best_epoch=3,
        dev_metrics={"exact_match": 50.0, "f1": 60.0},
    )
    with TestClient(create_app(folder)) as client:
        deadline = time.monotonic() + 120
        while client.get("/v1/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        card = client.get("/v1/model").json()
    assert card["name"] == "trained"
    assert card["base_model"] == "models/my-encoder"
    assert card["dev_metrics"] == {"exact_match": 50.0, "f1": 60.0} and card["best_epoch"] == 3
    assert card["null_threshold"] == 0.25 == card["settings"]["null_threshold"]
    assert "training_arguments" not in card and "/home/someone" not in json.dumps(card)


def test_metrics_count_the_requests(server):
    before = Metrics.read(server)
    for _ in range(3):
        assert get(server, "/v1/health")[0] == 200
    item = {"question": "Who was the captain?", "context": _tiny_pairs()[0][1]}
    assert post(server, item)[0] == 200
    assert post(server, {"items": [item]})[0] == 200
    assert post(server, {"question": ""})[0] == 422
    assert get(server, "/no/such/path")[0] == 404
    after = Metrics.read(server)

    def delta(route, method, status):
        return after.requests(route, method, status) - before.requests(route, method, status)

    assert delta("/v1/health", "GET", 200) == 3
    assert delta("/v1/answer", "POST", 200) == 2
    assert delta("/v1/answer", "POST", 422) == 1
    assert delta("other", "GET", 404) == 1
    assert delta("/metrics", "GET", 200) == 1  # the first read; a read is counted once it is sent
    # latency histogram: 3 more /v1/answer requests, buckets cumulative up to +Inf == count
    family, prefix = "qatune_http_request_duration_seconds", "qatune_http_request_duration_seconds"
    count = after.value(family, prefix + "_count", route="/v1/answer")
    assert count - before.value(family, prefix + "_count", route="/v1/answer") == 3
    buckets = [s for s in after.families[family].samples if s.name == prefix + "_bucket" and s.labels["route"] == "/v1/answer"]
    values = [s.value for s in buckets]
    assert values == sorted(values) and buckets[-1].labels["le"] == "+Inf" and values[-1] == count
    # two questions, answered one request at a time: two batches of one request and one window each
    assert after.value("qatune_questions_answered", "qatune_questions_answered_total") - before.value(
        "qatune_questions_answered", "qatune_questions_answered_total") == 2
    for name in ("qatune_batch_windows", "qatune_batch_requests"):
        assert after.value(name, name + "_count") - before.value(name, name + "_count") == 2
        assert after.value(name, name + "_sum") - before.value(name, name + "_sum") == 2
    assert after.families["qatune_queue_questions"].type == "gauge"
    assert after.value("qatune_queue_questions", "qatune_queue_questions") == 0
    assert after.value("qatune_ready", "qatune_ready") == 1


def test_openapi_page_examples(server):
    status, _, body = get(server, "/openapi.json")
    assert status == 200
    schema = json.loads(body)
    assert "post" in schema["paths"]["/v1/answer"]
    for path in ("/v1/health", "/v1/model", "/metrics", "/v1/examples"):
        assert path in schema["paths"], path

    status, headers, body = get(server, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b"<html" in body.lower()
    # revalidated on each load (no old script with a new page after an upgrade), never sniffed
    assert headers["cache-control"] == "no-cache" and headers["x-content-type-options"] == "nosniff"
    status, headers, _ = get(server, "/static/app.js")
    assert status == 200 and headers["cache-control"] == "no-cache"

    status, _, body = get(server, "/v1/examples")
    assert status == 200
    examples = json.loads(body)["examples"]
    assert examples and all(isinstance(e[k], str) for e in examples for k in ("title", "context", "question"))
    first = examples[0]
    status, _, answered = post(server, {"question": first["question"], "context": first["context"]})
    assert status == 200 and answered["answers"], answered


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/no/such/path", "/v1/answers", "/v1/answer/extra"])
def test_unknown_paths_are_404_json(server, path):
    status, headers, body = get(server, path)
    assert headers["content-type"] == "application/json"
    assert_error(status, json.loads(body), 404, path)


@pytest.mark.parametrize("path", ["/v1/answer/", "/v1/health/", "/metrics/"])
def test_a_slash_at_the_end_is_a_404_that_names_the_endpoint_not_a_redirect(server, path):
    status, headers, body = server.request("POST" if "answer" in path else "GET", path, b"{}", JSON_HEADERS, timeout=HTTP_TIMEOUT)
    assert headers["content-type"] == "application/json"
    detail = assert_error(status, json.loads(body), 404, path)
    assert detail.endswith(f"the endpoint is {path.rstrip('/')}, without the slash at the end")


@pytest.mark.parametrize("path", ["/", "/v1/health", "/v1/model", "/metrics", "/static/app.js"])
def test_head_answers_as_get_without_a_body(server, path):
    get_status, get_headers, get_body = server.request("GET", path, timeout=HTTP_TIMEOUT)
    status, headers, body = server.request("HEAD", path, timeout=HTTP_TIMEOUT)
    assert (status, body) == (get_status, b"") and get_status == 200 and get_body
    assert headers["content-type"] == get_headers["content-type"]
    if path != "/metrics":  # the metrics grew by the GET in between
        assert headers["content-length"] == get_headers["content-length"] == str(len(get_body))


@pytest.mark.parametrize(
    "method,path,allowed",
    [("GET", "/v1/answer", "POST"), ("PUT", "/v1/answer", "POST"), ("DELETE", "/v1/health", "GET"), ("POST", "/v1/model", "GET")],
)
def test_wrong_method_is_405_json(server, method, path, allowed):
    body = b"{}" if method in ("PUT", "POST") else None
    status, headers, data = server.request(method, path, body, JSON_HEADERS if body else {}, timeout=HTTP_TIMEOUT)
    assert_error(status, json.loads(data), 405, method, path)
    assert allowed in {k.lower(): v for k, v in headers.items()}.get("allow", ""), headers


def test_requests_naming_another_host_are_refused(server):
    """Bound to 127.0.0.1: a page elsewhere cannot reach it through a name it points here (DNS rebinding)."""
    status, headers, body = server.request("GET", "/v1/health", headers={"Host": "evil.example"})
    assert status == 400 and headers["content-type"] == "application/json"  # like every error: a JSON detail
    assert "addressed to 127.0.0.1 or localhost only, not 'evil.example'" in json.loads(body)["detail"]
    for name in ("localhost", "LocalHost:1234", "127.0.0.1", "[::1]:80"):
        assert server.request("GET", "/v1/health", headers={"Host": name})[0] == 200, name
    assert server.request("GET", "/v1/health", headers={"Host": "localhost.evil.example"})[0] == 400
    # HTTP/1.0 without a Host header: refused too, and told why
    import socket
    from urllib.parse import urlparse

    address = urlparse(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=HTTP_TIMEOUT) as connection:
        connection.sendall(b"GET /v1/health HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert "this request has no Host header" in json.loads(body)["detail"]


def test_default_address_is_localhost(server):
    output = server.output()
    port = urllib.parse.urlsplit(server.url).port
    assert f"on http://127.0.0.1:{port} " in output, output
    assert _listening_addresses(port) == ["127.0.0.1"]  # what the kernel says the server listens on


def _listening_addresses(port: int) -> list[str]:
    """The IPv4 and IPv6 addresses some socket listens on at `port`, from Linux's /proc/net."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        pytest.skip("no /proc/net/tcp: not Linux")
    found = []
    for table in tables:
        for line in table.read_text().splitlines()[1:] if table.exists() else []:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # the kernel writes each 32-bit word in host (little-endian) order
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return found


# === 2. refusals ======================================================================================

OK = {"question": "Who was the captain?", "context": "The captain was Maria Lopez."}
TOO_LONG = "x" * (SMALL_MAX_CONTEXT + 1)

BAD_BODIES = [
    ("missing question", {"context": "Some text."}, 422, ["question"]),
    ("missing context", {"question": "Who?"}, 422, ["context"]),
    ("empty question", {**OK, "question": ""}, 422, ["question"]),
    ("whitespace question", {**OK, "question": " \t\n\u3000 "}, 422, ["question"]),
    ("empty context", {**OK, "context": ""}, 422, ["context"]),
    ("whitespace context", {**OK, "context": "\n\n\t  "}, 422, ["context"]),
    ("zero-width question", {**OK, "question": "\u200b"}, 422, ["question", "no visible character"]),
    ("combining marks question", {**OK, "question": "\u0301\u0301"}, 422, ["question", "no visible character"]),
    ("control characters context", {**OK, "context": "\u0001\u0002 \u200d"}, 422, ["context", "no visible character"]),
    ("question a number", {**OK, "question": 1}, 422, ["question"]),
    ("question null", {**OK, "question": None}, 422, ["question"]),
    ("context a list", {**OK, "context": ["a", "b"]}, 422, ["context"]),
    ("context an object", {**OK, "context": {"text": "a"}}, 422, ["context"]),
    ("top_k 0", {**OK, "top_k": 0}, 422, ["top_k"]),
    ("top_k -1", {**OK, "top_k": -1}, 422, ["top_k"]),
    ("top_k 21", {**OK, "top_k": 21}, 422, ["top_k"]),
    ("top_k a string", {**OK, "top_k": "2"}, 422, ["top_k"]),
    ("top_k a float", {**OK, "top_k": 2.0}, 422, ["top_k"]),
    ("top_k a bool", {**OK, "top_k": True}, 422, ["top_k"]),
    ("top_k null", {**OK, "top_k": None}, 422, ["top_k"]),
    ("unknown field", {**OK, "language": "en"}, 422, ["language"]),
    ("items empty", {"items": []}, 422, ["items"]),
    ("items not a list", {"items": OK}, 422, ["items"]),
    ("items null", {"items": None}, 422, ["items"]),
    ("item missing question", {"items": [OK, {"context": "x"}]}, 422, ["items[1].question"]),
    ("item empty context", {"items": [OK, OK, {**OK, "context": " "}]}, 422, ["items[2].context"]),
    ("item top_k 21", {"items": [{**OK, "top_k": 21}]}, 422, ["items[0].top_k"]),
    ("item unknown field", {"items": [{**OK, "lang": "en"}]}, 422, ["items[0].lang"]),
    ("unknown field beside items", {"items": [OK], "top_k": 2}, 422, ["top_k"]),
    ("body a list", [OK], 422, ["body"]),
    ("body a string", "Who?", 422, ["body"]),
    ("body null", None, 422, ["body"]),
    ("body empty object", {}, 422, ["question", "context"]),
    ("too many items", {"items": [OK] * (SMALL_MAX_ITEMS + 1)}, 413, ["max_items", str(SMALL_MAX_ITEMS)]),
    ("context too long", {**OK, "context": TOO_LONG}, 413, ["context", "max_context_characters", str(SMALL_MAX_CONTEXT)]),
    ("item context too long", {"items": [OK, {**OK, "context": TOO_LONG}]}, 413, ["items[1].context", "max_context_characters"]),
]


@pytest.mark.parametrize("value,status,names", [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES])
def test_bad_json_bodies(small_server, value, status, names):
    got, headers, body = post(small_server, value)
    assert headers["content-type"] == "application/json"
    assert_error(got, body, status, *names)


def test_limits_are_inclusive(small_server):
    """Exactly at each limit is accepted; one more is refused."""
    status, _, body = post(small_server, {"items": [OK] * SMALL_MAX_ITEMS})
    assert status == 200 and len(body["results"]) == SMALL_MAX_ITEMS
    context = ("Maria Lopez was captain. " * 20)[:SMALL_MAX_CONTEXT]
    assert len(context) == SMALL_MAX_CONTEXT
    assert post(small_server, {**OK, "context": context})[0] == 200
    # the limit counts characters (code points), not bytes: 200 emoji are 800 bytes of UTF-8
    assert post(small_server, {**OK, "context": "😀" * SMALL_MAX_CONTEXT})[0] == 200
    assert post(small_server, {**OK, "context": "😀" * (SMALL_MAX_CONTEXT + 1)})[0] == 413
    # body: exactly max_body_bytes, then one byte more (a space in the JSON)
    padding = SMALL_MAX_BODY - len(json.dumps({**OK, "question": ""}).encode())
    exact = json.dumps({**OK, "question": "q" * padding}).encode()
    assert len(exact) == SMALL_MAX_BODY
    status, _, body = small_server.request("POST", "/v1/answer", exact, JSON_HEADERS)
    assert status == 200, body
    status, _, body = small_server.request("POST", "/v1/answer", exact[:-1] + b" }", JSON_HEADERS)
    assert_error(status, json.loads(body), 413, "max_body_bytes", str(SMALL_MAX_BODY))


def test_body_over_the_limit(small_server):
    big = json.dumps({**OK, "question": "q" * (SMALL_MAX_BODY * 3)}).encode()
    status, _, body = small_server.request("POST", "/v1/answer", big, JSON_HEADERS)
    assert_error(status, json.loads(body), 413, "max_body_bytes", str(SMALL_MAX_BODY))
    # a declared length over the limit is refused before the body is read, whatever it holds
    status, _, body = small_server.request("POST", "/v1/answer", b"x" * (SMALL_MAX_BODY + 1), JSON_HEADERS)
    assert_error(status, json.loads(body), 413, "max_body_bytes")


def _chunked_post(server: Server, body: bytes, chunk: int) -> tuple[int, dict, bytes]:
    parsed = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=HTTP_TIMEOUT)
    try:
        pieces = iter([body[i : i + chunk] for i in range(0, len(body), chunk)])
        connection.request("POST", "/v1/answer", body=pieces, headers=JSON_HEADERS, encode_chunked=True)
        response = connection.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        connection.close()


def test_chunked_body(small_server):
    # under the limit, sent in chunks: answered as any other
    small = json.dumps(OK).encode()
    status, _, body = _chunked_post(small_server, small, chunk=7)
    assert status == 200, body
    assert json.loads(body) == post(small_server, OK)[2]
    # over the limit, with no Content-Length to refuse it by: refused as it arrives
    big = json.dumps({**OK, "question": "q" * (SMALL_MAX_BODY * 2)}).encode()
    status, headers, body = _chunked_post(small_server, big, chunk=1000)
    assert headers["content-type"] == "application/json"
    assert_error(status, json.loads(body), 413, "max_body_bytes", str(SMALL_MAX_BODY))
    # the server is fine afterwards
    assert post(small_server, OK)[0] == 200


@pytest.mark.parametrize(
    "raw",
    [b'{"question": "Who?",', b'{"question": "Who?" "context": "x"}', b"{'question': 'Who?', 'context': 'x'}", b"not json", b""],
    ids=["truncated", "missing comma", "single quotes", "not json", "empty"],
)
def test_malformed_json(small_server, raw):
    status, headers, body = small_server.request("POST", "/v1/answer", raw, JSON_HEADERS)
    detail = assert_error(status, json.loads(body), (400, 422))
    assert "json" in detail.lower() or "body" in detail.lower(), detail


@pytest.mark.parametrize(
    "raw",
    [b'{"question": "\xff\xfe", "context": "x"}', b'{"question": "Who?", "context": "caf\xe9"}', b'\xc3\x28'],
    ids=["ff fe", "latin-1 e acute", "bad continuation"],
)
def test_invalid_utf8(small_server, raw):
    status, _, body = small_server.request("POST", "/v1/answer", raw, JSON_HEADERS)
    detail = assert_error(status, json.loads(body), (400, 422))
    assert "utf-8" in detail.lower() or "json" in detail.lower(), detail


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x"])
def test_wrong_content_type(small_server, content_type):
    status, _, body = small_server.request("POST", "/v1/answer", json.dumps(OK).encode(), {"Content-Type": content_type})
    assert_error(status, json.loads(body), 415, "Content-Type", content_type.split(";")[0])


def test_json_content_type_with_charset(small_server):
    status, _, body = small_server.request(
        "POST", "/v1/answer", json.dumps(OK).encode(), {"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200, body


@pytest.mark.parametrize(
    "raw,field",
    [
        (b'{"question": "Who?", "context": "abc \\ud800 def"}', "context"),
        (b'{"question": "Who\\udcff?", "context": "abc def"}', "question"),
    ],
    ids=["lone high surrogate in context", "lone low surrogate in question"],
)
def test_lone_surrogates(small_server, raw, field):
    """JSON may escape a lone surrogate; it has no UTF-8 form and the tokenizer cannot take it."""
    status, _, body = small_server.request("POST", "/v1/answer", raw, JSON_HEADERS)
    parsed = json.loads(body)
    assert_error(status, parsed, 422, field)
    assert post(small_server, OK)[0] == 200


def test_every_error_body_is_json_with_detail(small_server):
    """The statuses above once more, through one keep-alive connection: it survives every refusal."""
    client = Client(small_server)
    try:
        for _, value, status, names in BAD_BODIES:
            got, headers, body = client.post("/v1/answer", value)
            assert headers["content-type"] == "application/json"
            assert_error(got, body, status, *names)
        got, _, body = client.post("/v1/answer", OK)
        assert got == 200, body
    finally:
        client.close()


# === 3. the API key ===================================================================================


def test_api_key(key_server):
    seen: list[str] = []

    def record(status, headers, body) -> tuple[int, dict, object]:
        seen.append(json.dumps([status, headers, body if not isinstance(body, bytes) else body.decode("utf-8", "replace")]))
        return status, headers, body

    status, headers, body = record(*post(key_server, OK))
    assert_error(status, body, 401, "Authorization", "Bearer")
    assert headers["www-authenticate"] == "Bearer"
    for wrong in (
        "Bearer wrong-key", f"Bearer {API_KEY}x", f"Bearer {API_KEY[:-1]}", "Bearer ", f"Basic {API_KEY}", API_KEY, f"Token {API_KEY}",
    ):
        status, headers, body = record(*post(key_server, OK, {"Authorization": wrong}))
        assert_error(status, body, 401)
        assert headers["www-authenticate"] == "Bearer", wrong
    # a refused key goes before validation: an invalid body with no key is a 401 too
    status, _, body = record(*post(key_server, {"question": ""}))
    assert status == 401, body
    for right in (f"Bearer {API_KEY}", f"bearer {API_KEY}"):
        status, _, body = record(*post(key_server, OK, {"Authorization": right}))
        assert status == 200 and body["answers"], body
    status, _, body = record(*post(key_server, {"question": ""}, {"Authorization": f"Bearer {API_KEY}"}))
    assert_error(status, body, 422, "question")
    # the other endpoints are open
    for path in ("/v1/health", "/v1/model", "/metrics", "/openapi.json", "/", "/v1/examples", "/nowhere"):
        status, headers, body = record(*get(key_server, path))
        assert status == (404 if path == "/nowhere" else 200), path
    assert json.loads(get(key_server, "/v1/model")[2])["api_key_required"] is True
    assert "/v1/answer needs the API key" in key_server.output()

    assert all(API_KEY not in text for text in seen)
    assert API_KEY not in key_server.output()
    assert API_KEY[4:20] not in key_server.output()


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_missing_key_variable_exits_2(tiny_bert, value):
    variable = "QATUNE_TEST_KEY_NOT_SET"
    env = {k: v for k, v in os.environ.items() if k != variable}
    if value is not None:
        env[variable] = value
    completed = subprocess.run(
        [sys.executable, "-m", "qatune", "serve", str(tiny_bert), "--port", str(free_port()), "--api-key-env", variable],
        capture_output=True, text=True, env=env, timeout=HTTP_TIMEOUT,
    )
    assert completed.returncode == 2, (completed.stdout, completed.stderr)
    assert variable in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("command", ["serve", "annotate"])
def test_a_port_in_use_is_refused_before_anything_loads(tmp_path, command):
    target = tmp_path / ("no-model" if command == "serve" else "new.json")  # serve: loading it would fail first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [sys.executable, "-m", "qatune", command, str(target), "--port", str(port)],
            capture_output=True, text=True, timeout=HTTP_TIMEOUT,
        )
    assert completed.returncode == 2, (completed.stdout, completed.stderr)
    assert completed.stderr == (
        f"error: --port {port}: another program listens on 127.0.0.1:{port} already; choose another --port "
        "(0 picks a free one), or stop that program\n"
    )
    assert not target.exists()  # annotate created no data file


def test_port_0_serves_on_a_free_port_and_says_which(tiny_bert, tmp_path):
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "qatune", "serve", str(tiny_bert), "--port", "0"], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + HTTP_TIMEOUT
        while "serving " not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        line = next(line for line in log.read_text().splitlines() if line.startswith("serving "))
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}" and port != 0
        server = Server(process, url, log)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if server.request("GET", "/v1/health", timeout=5)[0] == 200:
                    break
            time.sleep(0.2)
        status, answer = server.post_json("/v1/answer", {"question": "Who?", "context": "Ada wrote it."})
        assert status == 200 and "answers" in answer
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


# === 4. answers equal QAModel.ask =====================================================================


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_answers_equal_qamodel_ask(pool, tiny_bert, tiny_distilbert, kind):
    path = tiny_bert if kind == "bert" else tiny_distilbert
    server = pool.server(path)
    model = pool.model(path)
    inputs = varied_inputs(seed=2024 if kind == "bert" else 4048, count=60)
    assert sum(len(item["context"]) > 2500 for item in inputs) >= 6
    assert max(len(item["context"]) for item in inputs) > 6000  # several windows of 384 tokens
    expected = [expected_result(model, item) for item in inputs]
    # the long contexts really are cut into several windows
    from qatune.features import make_windows
    from qatune.data import Example

    longest = max(inputs, key=lambda item: len(item["context"]))
    windows = make_windows([Example(id="x", question=longest["question"], context=longest["context"])], model.tokenizer, model.settings)
    assert len(windows) >= 4

    # one by one, on one keep-alive connection
    client = Client(server)
    try:
        for item, want in zip(inputs, expected):
            status, _, body = client.post("/v1/answer", item)
            assert status == 200, body
            assert body == want, item
            check_spans(item, body)
    finally:
        client.close()
    # all in one request
    status, _, body = post(server, {"items": inputs})
    assert status == 200, body
    assert body["results"] == expected
    # concurrently: each a request of its own, batched with the others on the server
    results = concurrently(lambda item: post(server, item), inputs, workers=16)
    for item, want, (status, _, body) in zip(inputs, expected, results):
        assert (status, body) == (200, want), item
    # concurrently, several requests of a few items each
    groups = [inputs[i : i + 5] for i in range(0, len(inputs), 5)]
    results = concurrently(lambda group: post(server, {"items": group}), groups, workers=8)
    for index, (status, _, body) in enumerate(results):
        assert status == 200, body
        assert body["results"] == expected[index * 5 : index * 5 + 5]


# === 5. load =========================================================================================

LOAD_CLIENTS, LOAD_REQUESTS, LOAD_POOL = 64, 2000, 40
LOAD_DEADLINE = 600  # seconds for the whole load: a bound against hanging, not a performance claim


def test_load_64_clients(server, reference):
    inputs = varied_inputs(seed=77, count=LOAD_POOL, long_every=10, long_characters=(1500, 4000))
    single = []
    for item in inputs:  # first, one by one
        status, _, body = post(server, item)
        assert status == 200, body
        single.append(body)
    # the reference agrees with these (spot check: all are checked the same way in test 4)
    for item, body in list(zip(inputs, single))[:: LOAD_POOL // 8]:
        assert body == expected_result(reference, item)
    before = Metrics.read(server)

    lock = threading.Lock()
    next_index = iter(range(LOAD_REQUESTS))
    outcomes: dict[int, object] = {}

    def worker() -> None:
        client = Client(server)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                try:
                    status, _, body = client.post("/v1/answer", inputs[index % LOAD_POOL])
                    outcome = (status, body)
                except Exception as error:  # counted as an error below
                    outcome = ("exception", repr(error))
                with lock:
                    outcomes[index] = outcome
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True, name=f"load-{i}") for i in range(LOAD_CLIENTS)]
    deadline = time.monotonic() + LOAD_DEADLINE
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), f"the load did not finish in {LOAD_DEADLINE} s"
    assert len(outcomes) == LOAD_REQUESTS
    errors = {i: o for i, o in outcomes.items() if o[0] != 200}
    assert not errors, f"{len(errors)} errors, e.g. {list(errors.items())[:3]}"
    wrong = [i for i, (_, body) in outcomes.items() if body != single[i % LOAD_POOL]]
    assert not wrong, f"{len(wrong)} answers differ from the single-request answer, e.g. request {wrong[0]}"

    after = Metrics.read(server)
    assert after.requests("/v1/answer", "POST", 200) - before.requests("/v1/answer", "POST", 200) == LOAD_REQUESTS
    batches = after.value("qatune_batch_requests", "qatune_batch_requests_count") - before.value(
        "qatune_batch_requests", "qatune_batch_requests_count")
    batched = after.value("qatune_batch_requests", "qatune_batch_requests_sum") - before.value(
        "qatune_batch_requests", "qatune_batch_requests_sum")
    assert batched == LOAD_REQUESTS
    # micro-batching gathered callers: fewer batches than requests
    assert 0 < batches < batched, (batches, batched)
    assert after.value("qatune_batch_requests", "qatune_batch_requests_bucket", le="1.0") < after.value(
        "qatune_batch_requests", "qatune_batch_requests_count")
    assert after.value("qatune_queue_questions", "qatune_queue_questions") == 0
    for status in ("500", "503"):
        assert after.requests("/v1/answer", "POST", int(status)) == 0


# === 6. micro-batching off ===========================================================================


def test_batching_off_same_answers(pool, tiny_bert, reference):
    server = pool.server(tiny_bert, "--max-batch-windows", "1")
    card = json.loads(get(server, "/v1/model")[2])
    assert card["batching"]["max_batch_windows"] == 1
    assert card["batching"]["across_requests"] is False
    inputs = varied_inputs(seed=2024, count=40)
    expected = [expected_result(reference, item) for item in inputs]
    before = Metrics.read(server)
    results = concurrently(lambda item: post(server, item), inputs, workers=16)
    for item, want, (status, _, body) in zip(inputs, expected, results):
        assert (status, body) == (200, want), item
    status, _, body = post(server, {"items": inputs[:20]})
    assert (status, body) == (200, {"results": expected[:20]})
    after = Metrics.read(server)
    # every batch held one request
    count = after.value("qatune_batch_requests", "qatune_batch_requests_count") - before.value(
        "qatune_batch_requests", "qatune_batch_requests_count")
    total = after.value("qatune_batch_requests", "qatune_batch_requests_sum") - before.value(
        "qatune_batch_requests", "qatune_batch_requests_sum")
    assert count == total == len(inputs) + 1


# === 7. the queue bound ==============================================================================


def test_queue_bound_503_with_retry_after(pool, tiny_bert, reference):
    server = pool.server(tiny_bert, "--max-queue", "2")
    rng = random.Random(7)
    inputs = [{"question": _question(rng), "context": _text(rng, 20_000), "top_k": 2} for _ in range(24)]
    expected = [expected_result(reference, item) for item in inputs]
    statuses: list[int] = []
    for _round in range(6):  # until both a 503 and a 200 were seen; practically the first round
        barrier = threading.Barrier(len(inputs))

        def call(index):
            barrier.wait(timeout=HTTP_TIMEOUT)
            return post(server, inputs[index])

        results = concurrently(call, list(range(len(inputs))), workers=len(inputs))
        for index, (status, headers, body) in enumerate(results):
            statuses.append(status)
            assert status in (200, 503), (status, body)
            if status == 503:
                assert_error(status, body, 503, "queue")
                assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1, headers
            else:
                assert body == expected[index]
        if 503 in statuses and 200 in statuses:
            break
    assert 503 in statuses and 200 in statuses, statuses
    # the queue is empty again, and takes requests
    assert Metrics.read(server).value("qatune_queue_questions", "qatune_queue_questions") == 0
    status, _, body = post(server, inputs[0])
    assert (status, body) == (200, expected[0])
    status, _, body = post(server, {"items": inputs[:2]})
    assert (status, body) == (200, {"results": expected[:2]})


def test_request_larger_than_the_queue(pool, tiny_bert):
    """3 questions in one request where the queue holds 2: no retry can ever succeed."""
    server = pool.server(tiny_bert, "--max-queue", "2")
    status, headers, body = post(server, {"items": [OK] * 3})
    assert_error(status, body, 413, "max_queue")


# === 8. callers that go away =========================================================================


def _raw_request(server: Server, body: bytes, *, send: int | None = None, half_close: bool = False) -> None:
    """Send a POST (all of it, or its first `send` bytes), then close the socket without reading."""
    parsed = urllib.parse.urlsplit(server.url)
    head = (
        f"POST /v1/answer HTTP/1.1\r\nHost: {parsed.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    message = head + body
    with socket.create_connection((parsed.hostname, parsed.port), timeout=HTTP_TIMEOUT) as connection:
        connection.sendall(message if send is None else message[:send])
        if half_close:
            connection.shutdown(socket.SHUT_WR)


def test_disconnecting_callers_do_not_disturb_others(server, reference):
    inputs = varied_inputs(seed=31, count=24)
    expected = [expected_result(reference, item) for item in inputs]
    rng = random.Random(5)
    long_bodies = [
        json.dumps({"question": _question(rng), "context": _text(rng, 40_000), "top_k": 3}).encode() for _ in range(6)
    ]
    stop = threading.Event()

    def leave_early() -> int:
        sent = 0
        while not stop.is_set() or sent < 12:
            body = long_bodies[sent % len(long_bodies)]
            mode = sent % 3
            if mode == 0:
                _raw_request(server, body)  # the whole request, then gone
            elif mode == 1:
                _raw_request(server, body, send=len(body) // 2)  # half the body, then gone
            else:
                _raw_request(server, body, half_close=True)  # the whole request, then half-closed
            sent += 1
            if sent >= 60:
                break
        return sent

    with ThreadPoolExecutor(1) as leaver:
        leaving = leaver.submit(leave_early)
        try:
            def normal(index):
                return [post(server, inputs[(index + k) % len(inputs)]) for k in range(3)]

            results = concurrently(normal, list(range(len(inputs))), workers=12)
        finally:
            stop.set()
        assert leaving.result(timeout=600) >= 12
    for index, three in enumerate(results):
        for k, (status, _, body) in enumerate(three):
            assert (status, body) == (200, expected[(index + k) % len(inputs)])
    # the abandoned requests are let go: the queue empties, and the server answers as before
    deadline = time.monotonic() + 120
    while Metrics.read(server).value("qatune_queue_questions", "qatune_queue_questions") != 0:
        assert time.monotonic() < deadline, "the queue never emptied after callers went away"
        time.sleep(0.2)
    assert server.process.poll() is None
    assert get(server, "/v1/health")[0] == 200
    status, _, body = post(server, inputs[0])
    assert (status, body) == (200, expected[0])
    assert Metrics.read(server).requests("/v1/answer", "POST", 500) == 0
    assert "Traceback" not in server.output(), server.output()


# === 9. SIGTERM with requests in flight ==============================================================

SIGTERM_REQUESTS = 20


def test_sigterm_answers_requests_in_flight(tiny_bert, reference, tmp_path):
    rng = random.Random(99)
    inputs = [{"question": _question(rng), "context": _text(rng, 40_000), "top_k": 1 + i % 3} for i in range(SIGTERM_REQUESTS)]
    expected = [expected_result(reference, item) for item in inputs]
    with running_server(tiny_bert, log_dir=tmp_path) as server:
        lock = threading.Lock()
        done: dict[int, tuple] = {}

        def call(index):
            try:
                status, _, body = post(server, inputs[index])
                outcome = (status, body)
            except Exception as error:
                outcome = ("exception", repr(error))
            with lock:
                done[index] = outcome

        threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(SIGTERM_REQUESTS)]
        for thread in threads:
            thread.start()
        # wait until the server holds every request (waiting in its queue, or already answered)
        deadline = time.monotonic() + HTTP_TIMEOUT
        while True:
            waiting = Metrics.read(server).value("qatune_queue_questions", "qatune_queue_questions")
            with lock:
                answered = len(done)
            if waiting + answered >= SIGTERM_REQUESTS:
                break
            assert time.monotonic() < deadline, (waiting, answered)
            time.sleep(0.02)
        in_flight_at_signal = SIGTERM_REQUESTS - answered
        assert in_flight_at_signal > 0, "every request was answered before the signal: the test shows nothing"
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(HTTP_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads)
        lost = {i: o for i, o in done.items() if o[0] != 200}
        assert not lost, f"{len(lost)} of {in_flight_at_signal} requests in flight were not answered: {lost}"
        for index, (_, body) in done.items():
            assert body == expected[index], index
        try:
            code = server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qatune serve did not exit within 30 s of SIGTERM:\n{server.output()}")
        output = server.output()
        parsed = urllib.parse.urlsplit(server.url)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((parsed.hostname, parsed.port), timeout=10).close()
        assert "Traceback" not in output, output
        assert code == 0, output


# === mounted, and engines whose logits depend on the batch (in process) ===============================


def _ready(client, prefix: str = "") -> None:
    deadline = time.monotonic() + 120
    while client.get(prefix + "/v1/health").status_code != 200:
        assert time.monotonic() < deadline, client.get(prefix + "/v1/health").json()
        time.sleep(0.1)


def test_the_app_works_mounted_in_another_app(tiny_bert):
    """A parent app does not run a mounted app's lifespan: it loads on its first request."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from qatune.serving import create_app

    parent = FastAPI()
    parent.mount("/qa", create_app(tiny_bert))
    with TestClient(parent) as client:
        _ready(client, "/qa")
        answered = client.post("/qa/v1/answer", json={"question": "who?", "context": "the cat sat"}).json()
        assert answered["answers"] and answered["answers"][0]["text"] in "the cat sat"
        page = client.get("/qa/").text
        # the page asks for its files and the API relative to where it is served
        assert 'src="static/app.js"' in page and client.get("/qa/static/app.js").status_code == 200


def test_a_mounted_app_loads_for_its_page_alone(tiny_bert):
    """The page polls /v1/model until ready: that alone must start the loading."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from qatune.serving import create_app

    parent = FastAPI()
    parent.mount("/qa", create_app(tiny_bert))
    with TestClient(parent) as client:
        assert client.get("/qa/").status_code == 200
        deadline = time.monotonic() + 120
        while not client.get("/qa/v1/model").json()["ready"]:  # never /v1/health nor /v1/answer
            assert time.monotonic() < deadline, "the page's requests never loaded the model"
            time.sleep(0.1)


@pytest.mark.parametrize("key", ["clé-secrète", " s3cret", "s3cret\n", ""])
def test_a_key_no_http_header_can_carry_is_refused_at_start(tiny_bert, key):
    from qatune.errors import SettingsError
    from qatune.serving import create_app

    with pytest.raises(SettingsError, match="printable ASCII with no space at either end"):
        create_app(tiny_bert, api_key=key)


def test_static_files_have_a_route_label_of_their_own(tiny_bert):
    from fastapi.testclient import TestClient

    from qatune.serving import create_app

    with TestClient(create_app(tiny_bert)) as client:
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/no/such/path").status_code == 404
        metrics = Metrics(client.get("/metrics").text)
    assert metrics.requests("/static", "GET", 200) == 1
    assert metrics.requests("other", "GET", 200) == 0 and metrics.requests("other", "GET", 404) == 1


def test_callers_that_go_away_give_their_place_in_the_queue_back(tiny_bert, tmp_path):
    long = json.dumps({"question": "what?", "context": "the cat sat on the mat " * 3000}).encode()
    with running_server(tiny_bert, "--max-queue", "2", "--max-context-chars", "200000", log_dir=tmp_path) as server:
        host, port = "127.0.0.1", urllib.parse.urlsplit(server.url).port
        for _ in range(2):  # two callers send a long question and hang up at once
            with socket.create_connection((host, port)) as caller:
                caller.sendall(
                    b"POST /v1/answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(long) + long
                )
        deadline = time.monotonic() + HTTP_TIMEOUT
        while Metrics.read(server).requests("/v1/answer", "POST", 499) < 2:  # 499: the caller went away
            assert time.monotonic() < deadline, "the requests of callers that went away were never given up"
            time.sleep(0.1)
        while Metrics.read(server).value("qatune_queue_questions", "qatune_queue_questions") != 0:
            assert time.monotonic() < deadline, "their questions still hold places in the queue"
            time.sleep(0.1)
        status, body = server.post_json("/v1/answer", {"question": "Who?", "context": "Ada wrote it."})
        assert status == 200, body  # the queue of 2 has room for a caller who stays


def test_items_equal_ask_on_an_engine_whose_logits_depend_on_the_batch(minilm_sized_bert):
    """PyTorch answers each question alone, as `ask` does, even inside one items request."""
    from fastapi.testclient import TestClient

    from qatune.inference import QAModel
    from qatune.serving import create_app

    model = QAModel.from_pretrained(minilm_sized_bert, engine="torch", bf16=False)
    assert not model.engine.batch_invariant
    inputs = varied_inputs(seed=5, count=12)
    expected = [expected_result(model, item) for item in inputs]
    with TestClient(create_app(model)) as client:
        _ready(client)
        assert client.post("/v1/answer", json={"items": inputs}).json()["results"] == expected

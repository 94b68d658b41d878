"""Loading a model folder safely: missing or foreign tokenizers, damaged weights, a bad --device,
and model names that are neither a folder nor reachable, as a user meets them on the CLI."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time

import pytest
import torch

from qatune import modeling
from qatune.errors import ModelError, SettingsError
from qatune.engines.torch_engine import resolve_device
from qatune.inference import QAModel

from conftest import TINY_QA
from test_cli_model import qatune

ASK = ["-q", "Who wrote it?", "-c", "Ada wrote it."]
FAST = 30  # seconds: a name that cannot be loaded must fail well within this (it took ~60 s of retries)


@pytest.fixture
def model_copy(tiny_bert, tmp_path):
    """A model folder of this test's own, to damage."""
    return shutil.copytree(tiny_bert, tmp_path / "model")


def assert_clear_error(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == f"error: {message}\n"


# --- the tokenizer ---------------------------------------------------------------------------


def test_a_folder_without_tokenizer_files_is_a_clear_error(model_copy):
    (model_copy / "tokenizer.json").unlink()
    (model_copy / "tokenizer_config.json").unlink()
    result = qatune("ask", model_copy, *ASK, check=False)
    assert_clear_error(
        result,
        f"{model_copy}: expected tokenizer files (tokenizer.json, or a vocabulary such as vocab.txt, with "
        f"tokenizer_config.json), found only config.json, model.safetensors; copy the tokenizer files from the "
        f"base model into this folder, or write them there with `tokenizer.save_pretrained(DIR)`",
    )


def test_a_tokenizer_larger_than_the_model_embeddings_is_a_clear_error(model_copy):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_copy)
    vocab_size = len(tokenizer)  # the tiny model's embeddings hold exactly this many tokens
    tokenizer.add_tokens(["qatuneextratoken"])
    tokenizer.save_pretrained(model_copy)
    result = qatune("ask", model_copy, *ASK, check=False)
    assert_clear_error(
        result,
        f"{model_copy}: the tokenizer does not fit the model: expected token ids below {vocab_size} (vocab_size "
        f"in config.json), found a tokenizer of {vocab_size + 1} tokens with ids up to {vocab_size}; the tokenizer "
        f"files come from another model: copy the tokenizer files from the base model this model was trained "
        f"from, or write its tokenizer there with `tokenizer.save_pretrained(DIR)`",
    )


def test_check_tokenizer_fits_accepts_a_tokenizer_within_the_embeddings(tiny_bert):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    config = AutoConfig.from_pretrained(tiny_bert)
    modeling.check_tokenizer_fits(tokenizer, config, tiny_bert)  # exactly as many tokens as embeddings
    config.vocab_size = len(tokenizer) - 1
    with pytest.raises(ModelError, match=r"the tokenizer does not fit the model: expected token ids below"):
        modeling.check_tokenizer_fits(tokenizer, config, tiny_bert)


# --- the weights and the device ---------------------------------------------------------------


def test_an_unreadable_config_is_one_sentence_that_fits_every_command(model_copy):
    (model_copy / "config.json").write_text("{", encoding="utf-8")
    result = qatune("ask", model_copy, *ASK, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # transformers' own words come between; their closing period is not doubled, and the advice
    # does not name --model, which `ask` does not have (the tokenizer loads without the config)
    assert result.stderr.startswith(f"error: could not load the model configuration {str(model_copy)!r}: ")
    assert result.stderr.endswith(
        ". Pass a local model folder (with config.json, model.safetensors and tokenizer files) or a hub id "
        "reachable from this machine\n"
    )
    assert ".." not in result.stderr and "--model" not in result.stderr


def test_truncated_weights_are_a_clear_error(model_copy):
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    result = qatune("ask", model_copy, *ASK, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # the part in parentheses is safetensors' own words, which vary between its versions
    assert result.stderr.startswith(
        f"error: {weights}: expected complete safetensors weights, found a damaged or incomplete file ("
    )
    assert result.stderr.endswith(
        "); an interrupted copy or download leaves it cut short: copy it again, or train the model again\n"
    )


def test_an_unknown_device_is_a_clear_error(tiny_bert):
    result = qatune("ask", tiny_bert, *ASK, "--device", "bogus", check=False)
    assert_clear_error(result, "--device: expected cpu, cuda or cuda:N (N: a GPU number, from 0), got 'bogus'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_bert):
    result = qatune("ask", tiny_bert, *ASK, "--device", "cuda", check=False)
    reason = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
    assert_clear_error(
        result,
        f"--device: expected cpu, cuda or cuda:N (N: a GPU number, from 0), got 'cuda', but CUDA is not "
        f"available here ({reason}); use --device cpu",
    )


def test_a_gpu_number_past_the_last_gpu_is_a_clear_error(monkeypatch):
    # a machine with one GPU, whatever this one has
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(SettingsError) as error:
        resolve_device("cuda:1")
    assert str(error.value) == (
        "--device: expected cpu, cuda or cuda:N (N: a GPU number, from 0), got 'cuda:1', but this machine has "
        "1 CUDA GPU (cuda:0)"
    )


def test_the_python_api_checks_the_device_too(tiny_bert):
    with pytest.raises(SettingsError, match=r"^--device: expected cpu, cuda or cuda:N .*, got 'cuda:x'$"):
        QAModel.from_pretrained(tiny_bert, device="cuda:x")


# --- names that are neither a folder nor reachable ------------------------------------------------


def test_a_path_that_does_not_exist_fails_at_once_naming_it():
    started = time.monotonic()
    result = qatune("ask", "./my-modle", *ASK, check=False)
    assert_clear_error(result, "no such model folder: ./my-modle; check the path")
    assert time.monotonic() - started < FAST


@pytest.mark.parametrize("name", ["../no-such-qatune-model", "/no/such/qatune-model", "~/no-such-qatune-model",
                                  "runs\\no-such-qatune-model", "a/b/c", ".hidden-model"])
def test_path_like_names_are_never_asked_of_the_hub(name, monkeypatch):
    monkeypatch.setattr(modeling, "_check_hub_model", lambda repo_id: pytest.fail(f"asked the hub for {repo_id}"))
    with pytest.raises(ModelError) as error:
        modeling.locate_model(name)
    assert str(error.value) == f"no such model folder: {name}; check the path"


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point the `qatune` subprocesses at a local stand-in for the hub, with an empty cache."""

    def point(endpoint: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_ETAG_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)

    return point


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask_no_such_model() -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = qatune("ask", "no-such-model", *ASK, check=False)
    return result, time.monotonic() - started


def _assert_unreachable_hub(result, seconds: float, endpoint: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Retrying" not in result.stderr
    assert result.stderr.count("error: ") == 1, result.stderr
    # the part in parentheses is the HTTP client's own words (refused, timed out, ...)
    assert result.stderr.startswith(
        f"error: could not load the model 'no-such-model': it is not a local folder and not in the Hugging Face "
        f"cache, and the hub ({endpoint}) did not answer ("
    )
    assert result.stderr.endswith("); pass a local model folder, or a hub id when this machine can reach the hub\n")
    assert seconds < FAST


def test_a_hub_id_fails_fast_when_the_hub_refuses_connections(hub_at):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    hub_at(endpoint)
    result, seconds = ask_no_such_model()
    _assert_unreachable_hub(result, seconds, endpoint)


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers (a firewall that drops packets)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_hub_id_fails_fast_when_the_hub_never_answers(hub_at, silent_server):
    hub_at(silent_server)
    result, seconds = ask_no_such_model()
    _assert_unreachable_hub(result, seconds, silent_server)


class RepoNotFound(http.server.BaseHTTPRequestHandler):
    """What the hub answers for a model it does not have."""

    def do_HEAD(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_without_the_model():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RepoNotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_hub_id_the_hub_does_not_have_is_a_clear_error(hub_at, hub_without_the_model):
    hub_at(hub_without_the_model)
    result, seconds = ask_no_such_model()
    assert_clear_error(
        result,
        f"could not load the model 'no-such-model': it is neither a local folder nor a model on the Hugging Face "
        f"hub ({hub_without_the_model}); check the name, or pass a local model folder (a private hub model needs "
        f"a login: HF_TOKEN or `hf auth login`)",
    )
    assert seconds < FAST


def test_hf_hub_offline_looks_only_at_the_cache(hub_at, tmp_path, monkeypatch):
    hub_at(f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result, seconds = ask_no_such_model()
    assert_clear_error(
        result,
        f"could not load the model 'no-such-model': it is not a local folder and not in the Hugging Face cache "
        f"({tmp_path / 'hf-home' / 'hub'}), and HF_HUB_OFFLINE is set, so the hub was not asked; pass a local "
        f"model folder, or unset HF_HUB_OFFLINE to download the model from the hub",
    )
    assert seconds < FAST


# --- the settings saved with the model --------------------------------------------------------


def test_a_bad_value_in_qatune_json_is_a_clear_error_naming_the_file(model_copy):
    (model_copy / "qatune.json").write_text('{"settings": {"null_threshold": "abc"}}')
    result = qatune("ask", model_copy, *ASK, check=False)
    assert_clear_error(
        result,
        f"{model_copy / 'qatune.json'}: the saved settings are not valid (null_threshold must be a probability "
        f"between 0 and 1, got 'abc'); fix the value there, or copy the file again from the trained model",
    )


FIX_THE_CARD = "copy it again from the trained model, or delete it to use the default settings"


@pytest.mark.parametrize(
    "text, said",
    [
        ("[1, 2]", "expected a JSON object with a 'settings' object; found a list; " + FIX_THE_CARD),
        ('{"foo": 1}', "expected a 'settings' object (what qatune writes there); found none; " + FIX_THE_CARD),
        ('{"settings": "abc"}', "expected a 'settings' object (what qatune writes there); found a string; " + FIX_THE_CARD),
    ],
)
def test_a_qatune_json_of_another_shape_is_an_error_that_says_what_to_do(model_copy, text, said):
    (model_copy / "qatune.json").write_text(text)
    assert_clear_error(qatune("ask", model_copy, *ASK, check=False), f"{model_copy / 'qatune.json'}: {said}")


def test_saved_windows_longer_than_the_model_takes_name_the_file_not_a_flag(model_copy):
    (model_copy / "qatune.json").write_text('{"settings": {"max_seq_length": 4096}}')
    assert_clear_error(
        qatune("ask", model_copy, *ASK, check=False),
        f"{model_copy / 'qatune.json'}: the saved settings do not fit this model (max_seq_length (4096) is longer "
        f"than this model accepts (512 tokens)); fix the value there, or copy the file again from the trained model",
    )


def test_a_model_whose_limit_is_below_the_default_windows_says_what_to_write(model_copy):
    config = model_copy / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 128}))
    (model_copy / "qatune.json").unlink(missing_ok=True)
    assert_clear_error(
        qatune("ask", model_copy, *ASK, check=False),
        f"{model_copy}: qatune's default settings do not fit this model (max_seq_length (384) is longer than this "
        'model accepts (128 tokens)); write a qatune.json there with settings it accepts, e.g. {"settings": '
        '{"max_seq_length": 128, "doc_stride": 32}}',
    )
    (model_copy / "qatune.json").write_text('{"settings": {"max_seq_length": 128, "doc_stride": 32}}')
    assert json.loads(qatune("ask", model_copy, *ASK).stdout) is not None  # the suggested file is one it answers with


def test_a_byte_order_mark_is_read_and_unknown_settings_are_named(model_copy):
    settings = '{"settings": {"max_seq_length": 64, "doc_stride": 16, "max_question_length": 16, "colour": "red"}}'
    (model_copy / "qatune.json").write_bytes(b"\xef\xbb\xbf" + settings.encode())
    result = qatune("ask", model_copy, *ASK)
    assert json.loads(result.stdout)  # answered
    assert f"{model_copy / 'qatune.json'}: settings this qatune does not know are ignored: colour" in result.stderr


def test_a_folder_without_qatune_json_says_it_answers_with_the_default_settings(model_copy):
    (model_copy / "qatune.json").unlink(missing_ok=True)
    result = qatune("ask", model_copy, *ASK)
    assert (
        f"{model_copy} has no qatune.json (not trained by qatune): answering with the default settings "
        "(windows of 384 tokens), scores not calibrated"
    ) in result.stderr.splitlines()


def test_model_cards_name_the_bundled_model_by_its_hub_id_not_its_folder(tiny_bert):
    bundled = modeling.default_model_path()
    assert modeling.base_model_name(None) == modeling.DEFAULT_MODEL_HUB_ID
    assert modeling.base_model_name(str(bundled)) == modeling.DEFAULT_MODEL_HUB_ID
    assert modeling.base_model_name(bundled / ".." / "model") == modeling.DEFAULT_MODEL_HUB_ID
    # any other model keeps the name the user gave
    assert modeling.base_model_name(str(tiny_bert)) == str(tiny_bert)
    assert modeling.base_model_name("someone/an-encoder") == "someone/an-encoder"


# --- an export where a model to train or shrink is expected ------------------------------------


@pytest.fixture(scope="module")
def openvino_export(tiny_bert, tmp_path_factory):
    from qatune.export import export_model

    return export_model(tiny_bert, tmp_path_factory.mktemp("export") / "ov", format="openvino").parent


@pytest.mark.parametrize("command", [
    ["shrink", "EXPORT", "--layers", "1", "-o", "{tmp}/student", "--no-speed"],
    ["train", "DATA", "--model", "EXPORT", "--output", "{tmp}/trained", "--epochs", "1", "--quiet"],
    ["train", "DATA", "--model", "MODEL", "--teacher", "EXPORT", "--distill-hidden", "1", "--output", "{tmp}/trained",
     "--epochs", "1", "--quiet"],
], ids=["shrink", "train --model", "train --teacher --distill-hidden"])
def test_an_export_where_a_model_to_start_from_is_expected_is_a_clear_error(
    command, openvino_export, tiny_bert, tmp_path
):
    place = {"EXPORT": openvino_export, "MODEL": tiny_bert, "DATA": TINY_QA}
    result = qatune(*(place.get(part) or part.format(tmp=tmp_path) for part in command), check=False)

    assert_clear_error(
        result,
        f"{openvino_export}: this folder is already an export (model.xml, no safetensors weights); pass the folder "
        f"with model.safetensors that `qatune train` wrote",
    )


def test_an_onnx_export_is_named_by_its_graph(model_copy):
    (model_copy / "model.safetensors").unlink()
    (model_copy / "model.onnx").write_bytes(b"")  # what an ONNX export holds instead

    with pytest.raises(ModelError, match=r"this folder is already an export \(model.onnx, no safetensors weights\)"):
        modeling.load_qa_model(model_copy)

"""Command-line options shared by several commands, so that they mean the same everywhere."""

from __future__ import annotations

import argparse
import errno
import json
import socket
from pathlib import Path

from qatune.cli import argtypes
from qatune.errors import SettingsError
from qatune.settings import SETTINGS_FILE


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def add_data_reading(parser: argparse.ArgumentParser, format_flag: str = "--format") -> None:
    parser.add_argument(
        format_flag, dest="format", default="auto", choices=["auto", "squad", "paragraphs", "records"],
        help="layout of the data file (default: detected)",
    )
    parser.add_argument(
        "--on-error", default="repair", choices=["repair", "strict", "skip"],
        help="what to do with answers whose offsets do not match (default: repair what can be)",
    )


def add_model_loading(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size", type=argtypes.whole_number_from_one, default=8, help="windows per forward pass (default: 8)"
    )
    parser.add_argument("--no-bf16", action="store_true", help="compute in float32 even where bf16 is fast")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--engine", default="auto", choices=["auto", "torch", "onnx", "openvino"],
        help="what computes the answers (default: auto, the fastest this folder and machine have whose answers "
        "are float32's: OpenVINO on a CPU, PyTorch on a GPU, the export's own engine for an exported folder)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model's repository to run"
    )


def load_model(args: argparse.Namespace):
    """The model of `args.model` with the engine `--engine` asks for; says on stderr which engine answers."""
    import logging
    import sys

    from qatune.inference import QAModel

    model = QAModel.from_pretrained(
        args.model,
        engine=args.engine,
        device=args.device,
        bf16=False if args.no_bf16 else None,
        trust_remote_code=args.trust_remote_code,
    )
    if "torch" in sys.modules:
        logging.getLogger("torch").setLevel(logging.ERROR)
    folder = Path(args.model).expanduser()
    if folder.is_dir() and not (folder / SETTINGS_FILE).is_file():  # a model from elsewhere: said, not guessed
        say_on_stderr(
            f"{folder} has no {SETTINGS_FILE} (not trained by qatune): answering with the default settings "
            f"(windows of {model.settings.max_seq_length} tokens), scores not calibrated"
        )
    return model


def say_cut_questions(model, questions, say=None) -> None:
    """Say (on stderr) how many questions answering cuts to the model's max_question_length."""
    from qatune.features import count_cut_questions
    from qatune.wording import counted

    cut = count_cut_questions(questions, model.tokenizer, model.settings)
    if cut:
        (say or say_on_stderr)(
            f"{counted(cut, 'question')} longer than max_question_length ({model.settings.max_question_length} "
            f"tokens): answered from {'its' if cut == 1 else 'their'} first {model.settings.max_question_length} tokens"
        )


def say_engine(model, args: argparse.Namespace) -> None:
    """The last line on stderr: which engine answered (what `--engine auto` picked)."""
    say_on_stderr(f"answered with {model.engine.describe()}" + (" (--engine auto)" if args.engine == "auto" else ""))


def read_examples(path, args: argparse.Namespace, say=None):
    """The examples of a data file (an error if it has errors under --on-error); `say` gets one
    line with the counts and what was repaired or skipped, as `qatune validate` reports them."""
    return read_examples_and_report(path, args, say)[0]


def read_examples_and_report(path, args: argparse.Namespace, say=None, answers: bool = True):
    """`read_examples`, and the file's ValidationReport. answers=False (a transfer set): the
    questions and contexts alone, answers neither read, checked nor counted; an unusable question
    or context is still an error."""
    from qatune.data import read_dataset

    examples, report = read_dataset(path, format=args.format, on_error=args.on_error, answers=answers)
    report.raise_for_errors()
    if say is not None:
        if answers:
            say(f"{path}: {len(examples)} questions ({report.unanswerable} unanswerable); {report.repair_line()}")
        else:  # nothing about answers to say: none were read
            say(f"{path}: {len(examples)} questions (answers not read); skipped: {report.skipped_questions} questions")
    return examples, report


def say_on_stderr(message: str) -> None:
    """Tell the user something without mixing it into a command's output on stdout."""
    import sys

    print(message, file=sys.stderr, flush=True)


# Answering allocates buffers of many sizes (every batch shape); glibc keeps freed ones of that
# size in its heap, where they fragment. Served from mmap instead (and given back when freed),
# `qatune predict` on 477 SQuAD questions peaked at 524 MiB instead of 690 (batch 8, OpenVINO
# bf16, Intel Xeon with AMX; BENCHMARKS.md).
ANSWERING_MMAP_THRESHOLD = 128 * 1024


def limit_heap_fragmentation() -> None:
    """Ask glibc to serve blocks of ANSWERING_MMAP_THRESHOLD bytes or more from mmap (elsewhere: nothing)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return
    if mallopt is not None:
        mallopt(-3, ANSWERING_MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD


def quiet_libraries(import_torch: bool = True) -> None:
    """Keep transformers' and accelerate's informational chatter out of the command's output.

    Importing torch resets its logger, so torch is imported first; commands that answer pass
    import_torch=False (OpenVINO answers without torch, in about 200 MB less memory) and
    `load_model` quiets torch again where an engine imported it.
    """
    import logging

    if import_torch:
        import torch  # noqa: F401

    for name in ("transformers", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def write_json(path, value) -> None:
    """Write a JSON file the way every command does: UTF-8, indented, newline at the end."""
    from qatune.files import naming_the_file

    with naming_the_file(path):
        Path(path).write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def only_this_machine_by_name(app, host: str) -> None:
    """On a loopback address, answer only requests whose Host names this machine: a web page
    elsewhere cannot reach the server through a domain it points at 127.0.0.1 (DNS rebinding)."""
    if host in LOOPBACK_HOSTS:
        from qatune.web import ThisMachineByName

        app.add_middleware(ThisMachineByName)


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a port in use is an error at once,
    not after the model has loaded and a first line has said it is serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts need no wait
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise SettingsError(
                f"--port {port}: another program listens on {host}:{port} already; choose another --port "
                f"(0 picks a free one), or stop that program"
            ) from None
        raise SettingsError(f"--host {host}: cannot listen on {host}:{port} ({error.strerror or error}); "
                            "check the address (127.0.0.1 for this machine, 0.0.0.0 for every network)") from None
    return sock


def run_server(app, sock: socket.socket, host: str, log_level: str, **config) -> int:
    """Serve `app` on the bound `sock` until stopped; 3 (uvicorn's code) if it never started."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=sock.getsockname()[1], log_level=log_level,
                       access_log=log_level == "debug", **config)
    )
    server.run(sockets=[sock])
    return 0 if server.started else 3


def address_of(sock: socket.socket, host: str) -> str:
    """The URL a bound socket answers at (its real port when --port 0 asked for any)."""
    port = sock.getsockname()[1]
    if host in ("0.0.0.0", "::", "[::]"):  # every network: no browser opens that address itself
        return f"every network, port {port} (from this machine: http://{'[::1]' if ':' in host else '127.0.0.1'}:{port})"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

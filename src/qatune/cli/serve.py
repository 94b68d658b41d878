"""`qatune serve MODEL`: answer questions over HTTP (and on a page at /) until stopped.

Binds 127.0.0.1 unless told otherwise. With `--api-key-env NAME`, `/v1/answer` needs
`Authorization: Bearer <key>`, the key read from the environment variable NAME (never from the
command line, where other users of the machine can read it). SIGTERM or Ctrl-C stops taking
requests, answers those already taken, then exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal

from qatune.cli import argtypes, options
from qatune.errors import SettingsError

# A request still unanswered this long after SIGTERM is dropped: a stop must end.
GRACEFUL_STOP_SECONDS = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qatune.serving import ServerLimits

    defaults = ServerLimits()
    parser.add_argument("model", help="model directory (or hub id)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=argtypes.port_number, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--max-batch-windows", type=argtypes.whole_number_from_one, default=defaults.max_batch_windows,
        help=f"windows answered together in one micro-batch (default: {defaults.max_batch_windows}; 1: no batching)",
    )
    parser.add_argument(
        "--max-wait-ms", type=argtypes.non_negative_number, default=defaults.max_wait_ms,
        help=f"how long a request waits for others to share its batch (default: {defaults.max_wait_ms:g})",
    )
    parser.add_argument(
        "--max-queue", type=argtypes.whole_number_from_one, default=defaults.max_queue_questions,
        help=f"questions waiting at most; beyond, 503 with Retry-After (default: {defaults.max_queue_questions})",
    )
    parser.add_argument(
        "--max-items", type=argtypes.whole_number_from_one, default=defaults.max_items,
        help=f"questions in one request at most (default: {defaults.max_items})",
    )
    parser.add_argument(
        "--max-context-chars", type=argtypes.whole_number_from_one, default=defaults.max_context_characters,
        help=f"characters of context at most (default: {defaults.max_context_characters})",
    )
    parser.add_argument(
        "--max-body-bytes", type=argtypes.whole_number_from_one, default=defaults.max_body_bytes,
        help=f"request body size at most (default: {defaults.max_body_bytes})",
    )
    parser.add_argument(
        "--api-key-env", metavar="NAME",
        help="require 'Authorization: Bearer <key>' on /v1/answer, the key read from the environment variable NAME",
    )
    options.add_model_loading(parser)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info")


def run(args: argparse.Namespace) -> int:
    from qatune.serving import ServerLimits, create_app
    from qatune.serving.app import model_card_of

    options.quiet_libraries(import_torch=False)
    options.limit_heap_fragmentation()
    api_key = _api_key(args.api_key_env)
    limits = ServerLimits(
        max_batch_windows=args.max_batch_windows,
        batch_size=args.batch_size,
        max_wait_ms=args.max_wait_ms if args.max_wait_ms > 0 else 1e-3,
        max_queue_questions=args.max_queue,
        max_items=args.max_items,
        max_body_bytes=args.max_body_bytes,
        max_context_characters=args.max_context_chars,
    )
    logging.getLogger("qatune").setLevel(args.log_level.upper())
    sock = options.listening_socket(args.host, args.port)  # a port in use fails before the model loads
    # Loaded before the port opens: a model that cannot load is an `error:` line and exit 2,
    # not a server whose health check fails forever.
    model = options.load_model(args)
    app = create_app(model, limits=limits, api_key=api_key, name=_display_name(args.model), model_card=model_card_of(args.model))
    options.only_this_machine_by_name(app, args.host)
    options.say_on_stderr(
        f"serving {args.model} on {options.address_of(sock, args.host)} (the page at /, the API at /v1/answer, "
        "schema at /openapi.json)"
        + ("; /v1/answer needs the API key" if api_key else "")
    )
    # uvicorn answers SIGTERM by stopping gracefully, then raises the signal again with the
    # handler found at start: a no-op one, so that a graceful stop exits with 0, not 143.
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    return options.run_server(app, sock, args.host, args.log_level, timeout_graceful_shutdown=GRACEFUL_STOP_SECONDS)


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise SettingsError(
            f"--api-key-env {variable}: the environment variable {variable} is not set or empty; "
            f"set it to the key (e.g. `export {variable}=$(openssl rand -hex 32)`) before starting"
        )
    from qatune.serving.app import check_api_key

    try:
        check_api_key(key)
    except SettingsError as error:
        raise SettingsError(f"--api-key-env {variable}: {error}") from None
    return key


def _display_name(model: str) -> str:
    """The folder's name (or the hub id) that the page and /v1/model show."""
    from pathlib import Path

    path = Path(model).expanduser()
    return path.resolve().name if path.is_dir() else model

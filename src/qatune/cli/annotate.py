"""`qatune annotate DATA.json [--model MODEL]`: a page to write and correct question-answer data.

Opens DATA in any layout qatune reads (or creates it), and serves a page and a JSON API that
edit it: every change is saved at once. A SQuAD file is edited in place; a file in another
layout is kept as it is and the data is written to `<stem>.squad.json` beside it. With
`--model`, the model's answers are suggested for each new question and a review queue lists
the questions where it disagrees with the gold answer. Binds 127.0.0.1 unless told otherwise;
SIGTERM or Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import signal

from qatune.cli import argtypes, options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="the data file to edit (created as SQuAD v2.0 when it does not exist)")
    parser.add_argument("--model", help="a model folder whose answers are suggested")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=argtypes.port_number, default=8001, help="port (default: 8001)")
    parser.add_argument(
        "--format", default="auto", choices=["auto", "squad", "paragraphs", "records"],
        help="the layout of DATA (default: auto, detected)",
    )
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx", "openvino"], help="for --model (default: auto)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info")


def run(args: argparse.Namespace) -> int:
    from qatune.annotation import AnnotationStore, create_app
    from qatune.annotation.store import changes_on_reading

    options.quiet_libraries(import_torch=False)
    sock = options.listening_socket(args.host, args.port)  # a port in use fails before anything loads
    model = None
    if args.model:  # first: a model that fails to load leaves the data file untouched
        from qatune.inference import QAModel

        model = QAModel.from_pretrained(args.model, engine=args.engine)
    store = AnnotationStore(args.data, format=args.format)
    if store.report is not None:
        options.say_on_stderr(f"{args.data}: {store.report.repair_line()}")
    if store.kept_original is not None:
        changes = " and ".join(changes_on_reading(store.report))
        options.say_on_stderr(f"{args.data}: saved with {changes}; the original is kept as {store.kept_original}")
    if store.target != store.source:
        options.say_on_stderr(f"{args.data} is kept as it is; the data is written to {store.target} (SQuAD v2.0)")
    app = create_app(args.data, model=model, model_name=args.model, store=store)
    options.only_this_machine_by_name(app, args.host)
    options.say_on_stderr(f"annotating {store.target} on {options.address_of(sock, args.host)}")
    # uvicorn re-raises SIGTERM after its graceful stop: a no-op handler makes that an exit 0
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    return options.run_server(app, sock, args.host, args.log_level)


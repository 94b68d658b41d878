"""The `qatune` command line: one module per command, each with `add_parser` and `run`.

Every command returns an exit code; a QATuneError is printed as `error: ...` with no
traceback and exit code 2, and so is a failed read or write of a named file (a full disk).
Each command checks the paths it writes before any slow work
(`qatune.files.check_output_file` / `check_output_folder`): an output file's folder must exist,
an output folder is created with its parents. When the reader of stdout stops early
(`qatune validate F | head -1`), the command stops quietly with exit code 141, as a tool killed
by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from qatune.errors import QATuneError

# Command name -> module under qatune.cli. Modules are imported only when needed, so that
# `qatune validate` and `qatune score` never import torch.
COMMANDS = {
    "validate": "Check a data file: counts, repairs, problems with their places.",
    "score": "Score a predictions file against gold data (official SQuAD EM/F1).",
    "train": "Fine-tune a model on SQuAD-style data.",
    "evaluate": "Answer every question of a data file with a model and score the answers.",
    "predict": "Answer every question of a data file; write predictions.json.",
    "ask": "Answer one question about one context.",
    "export": "Export a model for OpenVINO or ONNX Runtime (optionally with int8 weights) for fast CPU answering.",
    "serve": "Answer questions over HTTP: a JSON API, a page, metrics.",
    "annotate": "Write and correct question-answer data on a page, with a model's suggestions.",
    "shrink": "Make a smaller student that keeps some of a model's layers (to train, with distillation).",
    "report": "Write one self-contained HTML report of a model: curves, data, every question, calibration.",
}

# 128 + SIGPIPE: what a shell reports for other tools whose reader went away (`yes | head -1`),
# so `set -o pipefail` scripts see it; 1 (validate: problems found) and 2 (errors) mean other things.
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    from qatune import __version__

    parser = argparse.ArgumentParser(
        prog="qatune",
        description="Fine-tune, evaluate and run extractive question-answering models.",
    )
    parser.add_argument("--version", action="version", version=f"qatune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"qatune.cli.{name}")
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed stdout shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except QATuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.filename is None:  # not about a file the user named: a fault to see in full
            raise
        # what the checks before any work cannot foresee: a full disk, a file system that refuses
        print(f"error: {error.filename}: {error.strerror or error} (the command stopped there); "
              "check the path, its permissions and the free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _stdout_closed() -> int:
    """Stop quietly: the reader of stdout has gone, so the rest of the output has no one to read it."""
    # Python flushes stdout again at exit and would print a second error: point it at devnull.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

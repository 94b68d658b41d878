"""`qatune validate FILE...`: counts, repairs and problems of data files, with their places.

    $ qatune validate data.json --max-problems 1
    data.json (squad layout, --on-error repair)
      1 articles, 1 contexts, 4 questions, 4 answers, 0 unanswerable
      repaired: 2 whitespace, 1 re-anchored (largest shift 9 characters)
      skipped: 0 questions, 0 answers
      duplicate ids: 0
      problems (first 1 of 3):
        repaired: data[0].paragraphs[0].qas[0].answers[0]: stripped whitespace: "France " at 24 -> "France" at 24
        ... and 2 more (see --max-problems)
      verdict: OK: 4 questions ready to use (0 unanswerable)

Exit code 0 when every file is usable, 1 when a file has errors under the chosen policy,
2 when a file cannot be read at all (the other files are still reported; its error comes last,
on stderr, and under --json in its place in "files" as {"path", "ok": false, "error"}).
`--write-fixed OUT` writes one file as it was read (its layout, its articles, every field
qatune does not know), changed only where an answer was repaired, where --on-error skip
dropped something, and where an id was generated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qatune.cli import argtypes
# qatune.data is plain Python (no torch): cheap to import at the top
from qatune.data import FORMATS, POLICIES, ValidationReport, read_dataset, write_fixed
from qatune.errors import DataError, SettingsError
from qatune.files import check_output_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="data files (JSON or JSON Lines)")
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="the layout of the files (default: detect it)"
    )
    parser.add_argument(
        "--on-error",
        choices=POLICIES,
        default="repair",
        help="repair: fix misplaced answers, the rest are errors (default); strict: every "
        "mismatch is an error; skip: drop (and count) what cannot be used",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--write-fixed",
        metavar="OUT",
        help="write the (one) input file to OUT in its own layout, with its repairs, without what "
        "--on-error skip dropped, and with the ids that were generated",
    )
    parser.add_argument(
        "--max-problems", type=argtypes.whole_number_from_zero, default=10, metavar="N", help="problems to print per file (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    _check_write_fixed(args)
    written = None
    if args.write_fixed:  # reads the (one) file and writes it when it has no errors
        fixed = write_fixed(args.files[0], args.write_fixed, format=args.format, on_error=args.on_error)
        _, report, done = fixed
        reports = [report]
        written = _written(args.write_fixed, report, done)
    elif len(args.files) == 1:  # one file that cannot be read: its error alone, as every command says it
        reports = [read_dataset(args.files[0], format=args.format, on_error=args.on_error)[1]]
    else:
        reports = [_report_or_error(path, args) for path in args.files]

    if args.json:
        dicts = [report.to_dict() if isinstance(report, ValidationReport) else report for report in reports]
        if written is not None:
            dicts[0]["written"] = written
        document = dicts[0] if len(dicts) == 1 else {"files": dicts, "ok": all(r["ok"] for r in dicts)}
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        print("\n\n".join(report.summary(args.max_problems) for report in reports if isinstance(report, ValidationReport)))
    unreadable = [report["error"] for report in reports if isinstance(report, dict)]
    for message in unreadable:
        print(f"error: {message}", file=sys.stderr)
    if written is not None:
        stream = sys.stderr if args.json else sys.stdout
        print(written["message"], file=stream)
    if unreadable:
        return 2
    return 0 if all(report.ok for report in reports) else 1


def _report_or_error(path: str, args: argparse.Namespace) -> ValidationReport | dict:
    """A file's report, or, when it cannot be read at all, what `--json` says of it: one file
    that cannot be read does not hide the reports of the others."""
    try:
        return read_dataset(path, format=args.format, on_error=args.on_error)[1]
    except DataError as error:
        return {"path": str(path), "ok": False, "error": str(error)}


def _check_write_fixed(args: argparse.Namespace) -> None:
    if not args.write_fixed:
        return
    if len(args.files) != 1:
        raise SettingsError(
            f"--write-fixed: expected one input file, found {len(args.files)}; "
            "validate and fix the files one at a time"
        )
    check_output_file("--write-fixed", args.write_fixed)
    if Path(args.write_fixed).resolve() == Path(args.files[0]).resolve():
        raise SettingsError(
            f"--write-fixed: expected a new file, found the input file {args.files[0]} itself; "
            "write to another file and replace the input once you have checked it"
        )


def _written(out: str, report: ValidationReport, done: bool) -> dict[str, object]:
    """What --write-fixed did (a file is written only when it has no errors)."""
    if not done:
        hint = ", or use --on-error skip to drop what cannot be used" if report.skip_would_help else ""
        message = f"not written: {out}: {len(report.errors)} errors remain; fix them{hint}"
        return {"path": out, "questions": 0, "message": message}
    message = (
        f"wrote {report.kept_questions} questions to {out} (the input's {report.layout} layout; changed: "
        f"{sum(report.repaired.values())} answers repaired, {report.skipped_questions} questions and "
        f"{report.skipped_answers} answers removed, {report.generated_ids} generated ids added)"
    )
    return {"path": out, "questions": report.kept_questions, "message": message}

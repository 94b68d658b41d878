"""Write the benchmark's train and dev files from the shared SQuAD 2.0 sample.

The source, `squad-v2.0-train-first10articles.json`, holds the first 10 articles of the
SQuAD 2.0 training set (CC BY-SA 4.0). The split shares no article:

- `train.json`: the first 8 articles, answerable questions only, first answer each
  (optionally only the first N such questions);
- `dev.json`: the last 2 articles, answerable questions only, every answer (optionally
  only the first N such questions);
- with `--transfer`, `transfer.json`: the first 8 articles' answerable questions that
  `train.json` left out, with their answers removed (a transfer set for distillation:
  `qatune train --teacher T --transfer transfer.json`).

Both are written in the SQuAD v1.1 layout into a work folder outside version control;
the shared data itself is never copied into the repository.

    python benchmarks/prepare_data.py --out benchmarks/work/data --train-questions 1007
    # train.json: 8 articles, 1007 questions (...); dev.json: 2 articles, 477 questions (...)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SOURCE_NAME = "squad-v2.0-train-first10articles.json"
TRAIN_ARTICLES = 8
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared" / "data",
        help=f"folder holding {SOURCE_NAME} (default: <repo>/../shared/data)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "work" / "data",
        help="folder to write train.json and dev.json into (default: benchmarks/work/data)",
    )
    parser.add_argument(
        "--train-questions", type=int, default=None, metavar="N",
        help="keep only the first N answerable training questions (default: all)",
    )
    parser.add_argument(
        "--dev-questions", type=int, default=None, metavar="N",
        help="keep only the first N answerable dev questions (default: all)",
    )
    parser.add_argument(
        "--transfer", action="store_true",
        help="also write transfer.json: the training articles' other answerable questions, without answers",
    )
    args = parser.parse_args(argv)
    for name in ("train_questions", "dev_questions"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, found {value}")
    return args


def is_answerable(qa: dict) -> bool:
    return bool(qa.get("answers")) and not qa.get("is_impossible", False)


def v11_question(qa: dict, answers_kept: int | None) -> dict:
    """The question in v1.1 form: no SQuAD 2.0 fields, its first `answers_kept` gold answers
    (None: every one; 0: none, for a transfer set)."""
    answers = [{"text": a["text"], "answer_start": a["answer_start"]} for a in qa["answers"]]
    return {"id": qa["id"], "question": qa["question"], "answers": answers[:answers_kept]}


def v11_articles(
    articles: list[dict], answers_kept: int | None, limit: int | None = None, skip: int = 0
) -> tuple[list[dict], int, int]:
    """Articles with answerable questions only: the first `skip` left out, stopping after
    `limit` questions.

    Returns the articles, the questions kept and the unanswerable questions left out.
    Paragraphs and articles left without a question are dropped.
    """
    kept_articles: list[dict] = []
    kept = skipped = seen = 0
    for article in articles:
        paragraphs = []
        for paragraph in article["paragraphs"]:
            qas = []
            for qa in paragraph["qas"]:
                if limit is not None and kept == limit:
                    break
                if not is_answerable(qa):
                    skipped += 1
                    continue
                seen += 1
                if seen <= skip:
                    continue
                qas.append(v11_question(qa, answers_kept))
                kept += 1
            if qas:
                paragraphs.append({"context": paragraph["context"], "qas": qas})
        if paragraphs:
            kept_articles.append({"title": article["title"], "paragraphs": paragraphs})
    return kept_articles, kept, skipped


def write_squad(path: Path, articles: list[dict]) -> None:
    path.write_text(
        json.dumps({"version": "1.1", "data": articles}, ensure_ascii=False), encoding="utf-8"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = args.shared / SOURCE_NAME
    if not source.is_file():
        print(f"error: {source} not found; pass --shared with the folder that holds it",
              file=sys.stderr)
        return 2
    articles = json.loads(source.read_text(encoding="utf-8"))["data"]
    if len(articles) <= TRAIN_ARTICLES:
        print(f"error: {source} has {len(articles)} articles; expected more than "
              f"{TRAIN_ARTICLES} (the first {TRAIN_ARTICLES} train, the rest are dev)",
              file=sys.stderr)
        return 2
    train, train_count, train_skipped = v11_articles(
        articles[:TRAIN_ARTICLES], answers_kept=1, limit=args.train_questions
    )
    dev, dev_count, dev_skipped = v11_articles(
        articles[TRAIN_ARTICLES:], answers_kept=None, limit=args.dev_questions
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_squad(args.out / "train.json", train)
    write_squad(args.out / "dev.json", dev)
    print(f"train.json: {len(train)} articles, {train_count} questions "
          f"({train_skipped} unanswerable left out); "
          f"dev.json: {len(dev)} articles, {dev_count} questions "
          f"({dev_skipped} unanswerable left out) -> {args.out}")
    if args.transfer:
        transfer, transfer_count, _ = v11_articles(articles[:TRAIN_ARTICLES], answers_kept=0, skip=train_count)
        write_squad(args.out / "transfer.json", transfer)
        print(f"transfer.json: {len(transfer)} articles, {transfer_count} questions without their answers")
    return 0


if __name__ == "__main__":
    sys.exit(main())

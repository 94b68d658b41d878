"""qatune's speed benchmark: qatune against what users run today, in one run.

Both sides get the same machine, model, data and hyperparameters, and run one after the
other (never at the same time, so neither slows the other):

1. data: `prepare_data.py` writes train.json (first 8 articles of the shared SQuAD 2.0
   sample, the first N answerable questions) and dev.json (the last 2 articles);
2. training: `reference_trainer.py` (Hugging Face Trainer) and `qatune train`;
3. inference: `reference_pipeline.py` (transformers 4.x pipeline, in its own environment)
   and `qatune predict`, on the same fine-tuned model; their answers are compared (EM and
   F1 of one against the other).

Every step runs as a subprocess that writes a JSON result; this script collects them into
`<work>/results.json` and prints a summary. Logs go to `<work>/logs/`.

    python benchmarks/run.py --train-questions 1000            # the full run: tens of minutes
    python benchmarks/run.py --train-questions 24 --max-steps 3 --dev-questions 20 \\
        --inference-questions 20 --work /tmp/bench-quick        # a quick check of the wiring
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from make_distilbert import minilm_dir
from squad_v1 import agreement

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=HERE / "work" / "run",
                        help="folder for data, models, logs and results (default: benchmarks/work/run)")
    parser.add_argument("--model", default="minilm",
                        help="'minilm' (the bundled all-MiniLM-L6-v2), 'distilbert' (random "
                             "DistilBERT-sized weights, timings only) or an encoder folder")
    parser.add_argument("--train-questions", type=int, default=1000, metavar="N")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--bf16", action="store_true", help="bf16 on both sides")
    parser.add_argument("--max-steps", type=int, default=-1, help="cut training short (quick checks)")
    parser.add_argument("--dev-questions", type=int, default=None, metavar="N",
                        help="dev questions the training reference predicts (default: all)")
    parser.add_argument("--inference-questions", type=int, default=None, metavar="N",
                        help="dev questions for the inference comparison (default: all)")
    parser.add_argument("--inference-batch-size", type=int, default=16)
    parser.add_argument("--inference-model", type=Path, default=None,
                        help="fine-tuned model both inference sides use "
                             "(default: the one the training reference writes)")
    parser.add_argument("--skip-train", action="store_true",
                        help="inference only; needs --inference-model")
    args = parser.parse_args(argv)
    if args.skip_train and args.inference_model is None:
        parser.error("--skip-train needs --inference-model DIR")
    # Steps run from the repository root: make every path absolute first.
    args.work = args.work.resolve()
    if args.inference_model is not None:
        args.inference_model = args.inference_model.resolve()
    if args.model not in ("minilm", "distilbert"):
        args.model = str(Path(args.model).resolve())
    return args


# ---------------------------------------------------------------------------------------
# Running steps
# ---------------------------------------------------------------------------------------
def run_step(name: str, command: list[str], work: Path) -> str:
    """Run one step as a subprocess, its output in `<work>/logs/<name>.log`; return stdout's
    last line. A failing step stops the benchmark with the end of its log."""
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {' '.join(command)}  (load average {os.getloadavg()[0]:.1f})", flush=True)
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=HERE.parent, stdout=subprocess.PIPE,
                              stderr=handle, text=True)
        handle.write(done.stdout)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"[{name}] failed with exit code {done.returncode}; end of {log}:\n{tail}")
    lines = done.stdout.strip().splitlines()
    print(f"[{name}] done in {time.perf_counter() - started:.0f} s: {lines[-1] if lines else ''}",
          flush=True)
    return lines[-1] if lines else ""


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def machine() -> dict:
    """What the figures were measured on; the load average tells whether others were busy."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "load_average_at_start": os.getloadavg()}


# ---------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------
def prepare_data(args: argparse.Namespace) -> tuple[Path, Path]:
    data = args.work / "data"
    run_step("data", [sys.executable, str(HERE / "prepare_data.py"), "--out", str(data),
                      "--train-questions", str(args.train_questions)], args.work)
    return data / "train.json", data / "dev.json"


def encoder_dir(args: argparse.Namespace) -> Path:
    if args.model == "minilm":
        return minilm_dir()
    if args.model == "distilbert":
        folder = args.work / "models" / "distilbert-random"
        if not (folder / "config.json").is_file():
            run_step("distilbert", [sys.executable, str(HERE / "make_distilbert.py"),
                                    "--output", str(folder), "--seed", str(args.seed)], args.work)
        return folder
    return Path(args.model)


def reference_train(args: argparse.Namespace, model: Path, train: Path, dev: Path) -> dict:
    output = args.work / "reference-train"
    command = [sys.executable, str(HERE / "reference_trainer.py"), "--model", str(model),
               "--train", str(train), "--dev", str(dev), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--seed", str(args.seed), "--max-steps", str(args.max_steps),
               "--output", str(output)]
    if args.bf16:
        command.append("--bf16")
    if args.dev_questions:
        command += ["--dev-questions", str(args.dev_questions)]
    run_step("reference-train", command, args.work)
    return read_json(output / "result.json")


def qatune_train(args: argparse.Namespace, model: Path, train: Path, dev: Path) -> dict | None:
    # QATUNE SIDE, to be wired: run `qatune train TRAIN --dev DEV --model MODEL ... --json`
    # with the same epochs, batch size, lr, seed and bf16 as reference_train, and return its
    # JSON (wall time, windows trained, windows/s, peak RSS, dev EM/F1, model dir).
    return None


def reference_env(work: Path) -> str:
    """The python of the transformers 4.x environment (created on first use)."""
    return run_step("reference-env", ["bash", str(HERE / "setup_reference_env.sh")], work)


def reference_pipeline(args: argparse.Namespace, python: str, model: Path, dev: Path) -> dict:
    output = args.work / "reference-pipeline" / "result.json"
    command = [python, str(HERE / "reference_pipeline.py"), "--model", str(model),
               "--data", str(dev), "--batch-size", str(args.inference_batch_size),
               "--output", str(output)]
    if args.inference_questions:
        command += ["--questions", str(args.inference_questions)]
    run_step("reference-pipeline", command, args.work)
    return read_json(output)


def qatune_predict(args: argparse.Namespace, model: Path, dev: Path) -> dict | None:
    # QATUNE SIDE, to be wired: run `qatune predict MODEL DEV` on the same questions
    # (--inference-questions) and batch size, timed the same way as reference_pipeline
    # (questions/s batched; p50/p95 of single questions after one warm-up), and return a
    # dict with "predictions_file" (id -> text) next to those figures.
    return None


def inference_agreement(reference: dict, ours: dict | None) -> dict | None:
    """EM/F1 of qatune's answers against the pipeline's, over the questions both answered."""
    if ours is None:
        return None
    return agreement(read_json(Path(ours["predictions_file"])),
                     read_json(Path(reference["predictions_file"])))


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def summary(results: dict) -> str:
    lines = []
    train = results.get("reference_train")
    if train:
        lines.append(f"training, reference : {train['train']['wall_s']:.1f} s, "
                     f"{train['train']['windows_per_s']:.2f} windows/s, peak RSS "
                     f"{train['peak_rss_mib']:.0f} MiB, dev EM {train['dev']['exact_match']:.1f} "
                     f"F1 {train['dev']['f1']:.1f}")
    lines.append(f"training, qatune    : {results.get('qatune_train') or 'not run (to be wired)'}")
    pipe = results["reference_pipeline"]
    lines.append(f"inference, reference: {pipe['batched']['questions_per_s']:.1f} questions/s "
                 f"(batch {pipe['settings']['batch_size']}), single p50 "
                 f"{pipe['single']['p50_ms']:.0f} ms p95 {pipe['single']['p95_ms']:.0f} ms")
    lines.append(f"inference, qatune   : {results.get('qatune_predict') or 'not run (to be wired)'}")
    lines.append(f"answers agree       : {results.get('agreement') or 'n/a'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "settings": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    train, dev = prepare_data(args)
    inference_model = args.inference_model
    if not args.skip_train:
        model = encoder_dir(args)
        results["reference_train"] = reference_train(args, model, train, dev)
        results["qatune_train"] = qatune_train(args, model, train, dev)
        inference_model = inference_model or Path(results["reference_train"]["model_dir"])
    results["reference_pipeline"] = reference_pipeline(args, reference_env(args.work), inference_model,
                                                       dev)
    results["qatune_predict"] = qatune_predict(args, inference_model, dev)
    results["agreement"] = inference_agreement(results["reference_pipeline"],
                                               results["qatune_predict"])
    (args.work / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(summary(results))
    print(f"results -> {args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""qatune's speed benchmark: qatune side by side with what users run today, in one run.

Every system gets the same machine, data, encoder and seed, and every step runs as its own
subprocess, one after the other (never two at once, so that none slows another):

1. data: `prepare_data.py` writes train.json and dev.json; `flops.py` measures the matmul
   peaks (float32, bf16) and counts parameters and real tokens;
2. training: the Hugging Face Trainer (`reference_trainer.py`) with its default flags and
   with `--bf16`; `qatune train` with the same lr, batch, epochs, seed and no warm-up; and
   `qatune train` with its own defaults. Every model is scored on dev.json by `squad_v1.py`;
3. inference, on the model qatune trained with the same hyperparameters: the transformers 4.x
   pipeline (`reference_pipeline.py`, in its own environment) against qatune
   (`qatune_inference.py`), one row per answering engine and precision: the default engine
   (`auto`, what users get), PyTorch float32 (the reference for "the same answers") and bf16
   autocast, OpenVINO float32 and int8, ONNX Runtime float32 and int8 (int8: `qatune export
   --format openvino --quantize int8 --calibration train.json`; ONNX int8 is dynamic); an engine that is not installed,
   or that this qatune lacks, gives a row that says why it was skipped; then `qatune predict`.
   Where the CPU's bf16 products are slower than its float32 ones (no bf16 units), the bf16 rows
   (Trainer `--bf16`, PyTorch bf16 autocast) are skipped with that reason;
4. the matmul peaks once more: the better of the two measurements counts.

The results go to `<work>/results.json`, the Markdown table to `<work>/results.md` and to
stdout; each step's output to `<work>/logs/`.

    python benchmarks/run.py --setting small                 # a few minutes on an idle machine
    python benchmarks/run.py --setting large                 # about half an hour
    python benchmarks/run.py --train-questions 24 --dev-questions 20 --latency-questions 5 \\
        --work /tmp/bench-quick                              # a quick check of the wiring
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

import report
from flops import inference_flops, training_flops
from make_distilbert import minilm_dir
from squad_v1 import agreement, answerable, read_squad, score
from steps import StepFailed, Steps

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "small": {"train_questions": 300, "epochs": 1, "dev_questions": 150},
    "large": {"train_questions": 1007, "epochs": 2, "dev_questions": None},  # all 477
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="small",
                        help="small: 300 training questions, 1 epoch, 150 dev questions; large: "
                             "1,007 training questions, 2 epochs, all 477 dev questions (default: small)")
    parser.add_argument("--model", default="minilm",
                        help="'minilm' (the bundled all-MiniLM-L6-v2), 'distilbert' (random "
                             "DistilBERT-sized weights: timings only) or an encoder folder")
    parser.add_argument("--work", type=Path, default=HERE / "work" / "run",
                        help="folder for data, models, logs and results (default: benchmarks/work/run)")
    parser.add_argument("--train-questions", type=int, metavar="N", help="override the setting's")
    parser.add_argument("--epochs", type=int, help="override the setting's")
    parser.add_argument("--dev-questions", type=int, metavar="N", help="override the setting's")
    parser.add_argument("--batch-size", type=int, default=12, help="training batch, both sides")
    parser.add_argument("--lr", type=float, default=2e-4, help="peak learning rate, both sides")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pipeline-batch-size", type=int, default=1,
                        help="the pipeline's own default, and its fastest on 2 cores (batch 16 pads every question to the longest of 16)")
    parser.add_argument("--qatune-batch-size", type=int, default=8, help="qatune's default")
    parser.add_argument("--latency-questions", type=int, default=100, metavar="N")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows (= --skip-engine onnx)")
    parser.add_argument("--skip-engine", action="append", choices=ENGINES, default=[], metavar="ENGINE",
                        help="skip the rows of this engine (torch, onnx, openvino; repeatable); engines "
                             "that are not installed are skipped anyway, each row saying why")
    parser.add_argument("--inference-model", type=Path,
                        help="with --skip-train: a model folder for the inference comparison")
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    args = parser.parse_args(argv)
    args.overrides = {}  # what differs from the setting, named in the report's title
    for name, value in SETTINGS[args.setting].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        elif getattr(args, name) != value:
            args.overrides[name] = getattr(args, name)
    for name in ("train_questions", "epochs", "dev_questions", "batch_size", "pipeline_batch_size",
                 "qatune_batch_size", "latency_questions"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, found {value}")
    if args.skip_train and args.inference_model is None:
        parser.error("--skip-train needs --inference-model DIR")
    args.work = args.work.resolve()  # steps run from the repository root
    if args.inference_model is not None:
        args.inference_model = args.inference_model.resolve()
    if args.model not in ("minilm", "distilbert"):
        args.model = str(Path(args.model).resolve())
    if args.no_onnx and "onnx" not in args.skip_engine:
        args.skip_engine.append("onnx")
    return args


def cpu_info(text: str) -> dict:
    """Model name and matrix-unit flags (`report.MATRIX_FLAGS` present) from /proc/cpuinfo text.

        >>> cpu_info("model name\\t: Xeon\\nflags\\t\\t: fpu avx2 amx_bf16 avx512f\\n")
        {'cpu': 'Xeon', 'matrix_flags': ['amx_bf16', 'avx512f', 'avx2']}
    """
    cpu, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and cpu is None:
            cpu = value.strip()
        elif key.strip() == "flags" and flags is None:
            flags = set(value.split())
    return {"cpu": cpu or platform.processor() or "unknown CPU",
            "matrix_flags": None if flags is None else [f for f in report.MATRIX_FLAGS if f in flags]}


def machine() -> dict:
    """What the figures were measured on: the CPU, its cores and matrix units (torch and
    transformers versions come from the steps)."""
    try:
        info = cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {"cpu": platform.processor() or "unknown CPU", "matrix_flags": None}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}  # of this environment (the training steps confirm transformers'; the pipeline's is its own)
    for package in ("transformers", "qatune", "onnxruntime", "openvino"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {**info, "cores": cores, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), **versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------
# Data, model, ceilings
# ---------------------------------------------------------------------------------------
def prepare(args, steps: Steps) -> tuple[Path, Path]:
    data = args.work / "data"
    command = [sys.executable, str(HERE / "prepare_data.py"), "--out", str(data),
               "--train-questions", str(args.train_questions)]
    if args.dev_questions:
        command += ["--dev-questions", str(args.dev_questions)]
    steps.run("data", command)
    return data / "train.json", data / "dev.json"


def encoder_dir(args, steps: Steps) -> Path:
    if args.model == "minilm":
        return minilm_dir()
    if args.model == "distilbert":
        folder = args.work / "models" / "distilbert-random"
        if not (folder / "config.json").is_file():
            steps.run("distilbert", [sys.executable, str(HERE / "make_distilbert.py"),
                                     "--output", str(folder), "--seed", str(args.seed)])
        return folder
    return Path(args.model)


def measure_peak(args, steps: Steps, name: str = "peak") -> dict:
    output = args.work / "flops" / f"{name}.json"
    steps.run(name, [sys.executable, str(HERE / "flops.py"), "peak", "--output", str(output)])
    return read_json(output)


def count_work(args, steps: Steps, model: Path, train: Path | None, dev: Path) -> dict:
    output = args.work / "flops" / "counts.json"
    command = [sys.executable, str(HERE / "flops.py"), "count", "--model", str(model),
               "--dev", str(dev), "--output", str(output)]
    if train is not None:
        command += ["--train", str(train)]
    steps.run("count", command)
    return read_json(output)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------
def trainer(args, steps: Steps, model: Path, train: Path, dev: Path, bf16: bool, ctx: dict) -> dict:
    name = "trainer-bf16" if bf16 else "trainer"
    output = args.work / name
    command = [sys.executable, str(HERE / "reference_trainer.py"), "--model", str(model),
               "--train", str(train), "--dev", str(dev), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr),
               "--seed", str(args.seed), "--output", str(output)] + (["--bf16"] if bf16 else [])
    step = steps.run(name, command)
    result = read_json(output / "result.json")
    counts = ctx["counts"]["reference_train"]
    epochs_trained = result["train"]["windows"] / counts["windows"]
    return {**report.training_row(
        "HF Trainer" + (" --bf16" if bf16 else " (default flags, float32)"),
        wall_s=result["train"]["wall_s"], windows=result["train"]["windows"],
        peak_rss_mib=step["peak_rss_mib"], dev=result["dev"],
        flops=training_flops(counts, ctx["counts"]["parameters"], epochs_trained)["total"],
        ), "raw": result}


QATUNE_VARIANTS = {  # step name -> extra `qatune train` flags
    "qatune": None,  # the side-by-side row: the reference's hyperparameters
    "qatune-defaults": [],
    "qatune-no-dropout": ["--hidden-dropout", "0"],
}


def qatune_train(args, steps: Steps, model: Path, train: Path, dev: Path, name: str, ctx: dict) -> dict:
    extra = QATUNE_VARIANTS[name]
    output = args.work / name / "model"
    command = [sys.executable, "-m", "qatune", "train", str(train), "--model", str(model),
               "--output", str(output), "--epochs", str(args.epochs), "--json", "--quiet", "--overwrite"]
    if extra is None:
        command += ["--batch-size", str(args.batch_size), "--lr", str(args.lr),
                    "--seed", str(args.seed), "--warmup-ratio", "0"]
    else:
        command += extra
    step = steps.run(name, command)
    summary = json.loads(step["stdout"])
    dev_score, cli = qatune_predict(steps, output, dev, args.work / name / "dev-predictions.json", name)
    counts = ctx["counts"]["qatune_train"]
    label = "qatune, same hyperparameters"
    if extra is not None:  # name the defaults qatune chose, as its model card records them
        used = read_json(output / "qatune.json")["training_arguments"]
        label = (f"qatune, its defaults (batch {used['batch_size']}, lr {used['learning_rate']:g}, "
                 f"warm-up {used['warmup_ratio']:g})") + (f" + `{' '.join(extra)}`" if extra else "")
    return {**report.training_row(
        label, wall_s=summary["train_seconds"],
        windows=summary["counts"]["train_items"] * summary["epochs"],
        peak_rss_mib=step["peak_rss_mib"], dev=dev_score,
        flops=training_flops(counts, ctx["counts"]["parameters"], summary["epochs"])["total"],
        ), "model_dir": str(output), "predict_cli": cli, "raw": summary}


def qatune_predict(steps: Steps, model: Path, dev: Path, output: Path, name: str) -> tuple[dict, dict]:
    """`qatune predict` as a user runs it: its answers scored by squad_v1.py, and its run
    (wall time from process start to predictions file, peak RSS, predictions file)."""
    step = steps.run(f"{name}-predict", [sys.executable, "-m", "qatune", "predict", str(model),
                                         str(dev), "-o", str(output)])
    questions = answerable(read_squad(dev))
    return score(read_json(output), questions), {
        "wall_s": step["wall_s"], "peak_rss_mib": step["peak_rss_mib"], "questions": len(questions),
        "predictions_file": str(output)}


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------
ENGINES = ("torch", "onnx", "openvino")
# Row key -> (label, engine, precision flag of qatune_inference.py, export: None or its format).
# Float32 and bf16 rows answer with the folder `qatune train` wrote (`--engine` converts it and
# caches the conversion); int8 rows with a folder `qatune export --quantize int8` wrote.
INFERENCE_ROWS = {
    "qatune_auto": ("qatune default (`--engine auto`)", "auto", None, None),
    "torch_float32": ("qatune, PyTorch float32", "torch", "--no-bf16", None),
    "torch_bf16": ("qatune, PyTorch bf16 autocast", "torch", "--bf16", None),
    "openvino_float32": ("qatune, OpenVINO float32", "openvino", "--no-bf16", None),
    "openvino_int8": ("qatune, OpenVINO int8", "openvino", None, "openvino"),
    "onnx_float32": ("qatune, ONNX Runtime float32", "onnx", "--no-bf16", None),
    "onnx_int8": ("qatune, ONNX Runtime int8", "onnx", None, "onnx"),
}
ENGINE_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}


def has_engines() -> bool:
    """Whether this qatune answers with several engines (`qatune.engines`, `--engine`)."""
    try:
        return importlib.util.find_spec("qatune.engines") is not None
    except ModuleNotFoundError:
        return False


def bf16_skip_reason(peak: dict) -> str | None:
    """Why bf16 rows are not run: a CPU without bf16 units (no AVX-512 BF16, no AMX) emulates
    bf16 products far below float32 (about 2 GFLOP/s on an AVX2-only EPYC: hours for the
    Trainer's --bf16), and qatune itself computes in float32 there (`bf16=None`)."""
    bf16, float32 = peak.get("bf16_flops"), peak.get("float32_flops")
    if bf16 is None or float32 is None or bf16 >= float32:
        return None
    return (f"bf16 matrix products are slower than float32 on this CPU ({bf16 / 1e9:.0f} against "
            f"{float32 / 1e9:.0f} GFLOP/s: no bf16 units), where qatune computes in float32 by itself")


def skip_reason(args, engine: str) -> str | None:
    """Why the rows of `engine` are not run, or None."""
    if engine in args.skip_engine:
        return "--no-onnx" if engine == "onnx" and args.no_onnx else f"--skip-engine {engine}"
    if engine in ("auto", "torch"):
        return None
    if not has_engines():
        return "this qatune has no answering engines yet (`QAModel.from_pretrained(engine=...)`, `--engine`)"
    package = ENGINE_PACKAGES[engine]
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (`pip install {package}`)"
    return None


def pipeline(args, steps: Steps, model: Path, dev: Path, ctx: dict) -> dict:
    # The reference environment shares torch with the python running this benchmark.
    python = steps.run("reference-env", ["env", f"PYTHON={sys.executable}", "bash",
                                         str(HERE / "setup_reference_env.sh")])["stdout"].strip()
    output = args.work / "inference" / "pipeline.json"
    step = steps.run("pipeline", [python, str(HERE / "reference_pipeline.py"), "--model", str(model),
                                  "--data", str(dev), "--batch-size", str(args.pipeline_batch_size),
                                  "--latency-questions", str(args.latency_questions),
                                  "--output", str(output)])
    result = read_json(output)
    return {**report.inference_row(
        f"transformers {result['versions']['transformers']} pipeline (batch {args.pipeline_batch_size})",
        result, peak_rss_mib=step["peak_rss_mib"], flops=ctx["inference_flops"]),
        "raw": result}


def qatune_inference(args, steps: Steps, model: Path, dev: Path, name: str, label: str,
                     ctx: dict, extra: list[str]) -> dict:
    """One qatune row: `qatune_inference.py` with `extra` flags (engine, precision). A model
    folder that the engine converts is loaded once first (`--load-only`: conversion, cached),
    so that the timed run is a user's second run; a failed step gives a skipped row."""
    output = args.work / "inference" / f"{name}.json"
    command = [sys.executable, str(HERE / "qatune_inference.py"), "--model", str(model),
               "--data", str(dev), "--batch-size", str(args.qatune_batch_size),
               "--latency-questions", str(args.latency_questions), "--output", str(output)] + extra
    first_load = None
    try:
        if "torch" not in extra and folder_engine(model) == "torch":
            load_output = args.work / "inference" / f"{name}.load.json"
            steps.run(f"{name}-load", _replace_output(command, load_output) + ["--load-only"])
            first_load = read_json(load_output)["load_s"]
        step = steps.run(name, command)
    except StepFailed as failure:
        return {"label": label, "skipped": f"failed: {failure.summary}"}
    result = read_json(output)
    return {**report.inference_row(
        f"{label} (batch {args.qatune_batch_size})", result, peak_rss_mib=step["peak_rss_mib"],
        flops=ctx["inference_flops"]),
        # auto may resolve to torch (no openvino): then nothing was converted
        "first_load_s": first_load if result.get("engine", {}).get("name") != "torch" else None,
        "raw": result}


def folder_engine(folder: Path) -> str:
    """'openvino' or 'onnx' for a folder `qatune export` wrote, else 'torch' (as qatune.engines)."""
    if (folder / "model.xml").is_file():
        return "openvino"
    return "onnx" if (folder / "model.onnx").is_file() else "torch"


def _replace_output(command: list[str], output: Path) -> list[str]:
    command = list(command)
    command[command.index("--output") + 1] = str(output)
    return command


def inference_rows(args, steps: Steps, model: Path, train: Path, dev: Path, ctx: dict) -> dict:
    """Every qatune row of INFERENCE_ROWS, measured or skipped with the reason."""
    rows = {}
    for name, (label, engine, precision, export) in INFERENCE_ROWS.items():
        reason = skip_reason(args, engine) or (ctx.get("no_bf16") if precision == "--bf16" else None)
        if reason is not None:
            rows[name] = {"label": label, "skipped": reason}
            continue
        folder = model
        if export is not None:
            folder = args.work / "inference" / name.replace("_", "-")
            command = [sys.executable, "-m", "qatune", "export", str(model), "--format", export,
                       "-o", str(folder), "--quantize", "int8", "--overwrite"]
            if export == "openvino":  # ONNX int8 is dynamic: no calibration data
                command += ["--calibration", str(train)]
            try:
                steps.run(f"export-{name}", command)
            except StepFailed as failure:
                rows[name] = {"label": label, "skipped": f"export failed: {failure.summary}"}
                continue
        extra = ["--engine", engine] + ([precision] if precision else [])
        rows[name] = qatune_inference(args, steps, folder, dev, name, label, ctx, extra)
    return rows


def add_agreements(inference: dict) -> None:
    """Each qatune row's answers against the pipeline's and against PyTorch float32's."""
    def answers(name):
        row = inference.get(name)
        return read_json(row["raw"]["predictions_file"]) if row and "raw" in row else None

    pipe, fp32 = answers("pipeline"), answers(report.FLOAT32_REFERENCE)
    if pipe is not None and fp32 is not None:
        inference["pipeline"]["agreement_float32"] = agreement(pipe, fp32)
    for name in INFERENCE_ROWS:
        ours = answers(name)
        if ours is None:
            continue
        inference[name]["agreement"] = agreement(ours, pipe) if pipe is not None else None
        inference[name]["agreement_float32"] = agreement(ours, fp32) if fp32 is not None else None


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def run_all(args, steps: Steps, results: dict) -> None:
    train, dev = prepare(args, steps)
    results["data"] = {"train_questions": len(answerable(read_squad(train))),
                       "dev_questions": len(answerable(read_squad(dev)))}
    first_peak = measure_peak(args, steps)
    results["peak"] = report.combine_peaks([first_peak])
    results["machine"]["torch"] = first_peak["torch"]
    ctx: dict = {"no_bf16": bf16_skip_reason(first_peak)}
    model = encoder_dir(args, steps)
    ctx["counts"] = results["counts"] = count_work(args, steps, model, None if args.skip_train else train, dev)
    ctx["inference_flops"] = inference_flops(ctx["counts"]["dev"], ctx["counts"]["parameters"])["total"]

    inference_model = args.inference_model
    if not args.skip_train:
        training = results["training"] = {}
        training["trainer"] = trainer(args, steps, model, train, dev, False, ctx)
        training["trainer_bf16"] = ({"label": "HF Trainer --bf16", "skipped": ctx["no_bf16"]} if ctx["no_bf16"]
                                    else trainer(args, steps, model, train, dev, True, ctx))
        for name in QATUNE_VARIANTS:
            training[name.replace("-", "_")] = qatune_train(args, steps, model, train, dev, name, ctx)
        results["machine"]["transformers"] = training["trainer"]["raw"]["versions"]["transformers"]
        inference_model = Path(training["qatune"]["model_dir"])

    inference = results["inference"] = {"model": str(inference_model), "model_label": (
        "the model `qatune train` wrote with the same hyperparameters" if not args.skip_train
        else f"model {inference_model}")}
    inference["pipeline"] = pipeline(args, steps, inference_model, dev, ctx)
    results["machine"]["transformers_reference"] = inference["pipeline"]["raw"]["versions"]["transformers"]
    inference.update(inference_rows(args, steps, inference_model, train, dev, ctx))
    add_agreements(inference)
    # `qatune predict` as users run it (default engine), after the rows: a conversion it needs
    # is cached by then, as on a user's second run.
    _, cli = qatune_predict(steps, inference_model, dev, args.work / "inference" / "cli.json", "cli")
    if "raw" in inference.get("qatune_auto", {}):
        # The CLI and the timed API run answer with the same engine and code: their answers should agree.
        cli["agreement_with_api"] = agreement(read_json(cli["predictions_file"]),
                                              read_json(inference["qatune_auto"]["raw"]["predictions_file"]))
    inference["qatune_predict_cli"] = cli
    # Measured again at the end: the better of the two is the less disturbed by others' work.
    results["peak"] = report.combine_peaks([first_peak, measure_peak(args, steps, "peak-end")])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    # qatune's caches (tokenized windows, engine conversions) in the work folder, unless set:
    # a fresh work folder measures a user's first conversion, and runs do not share state.
    os.environ.setdefault("QATUNE_CACHE", str(args.work / "cache"))
    results: dict = {"machine": machine(), "settings": {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "qatune_cache": os.environ["QATUNE_CACHE"]}}
    steps = Steps(args.work, cwd=HERE.parent)
    results["steps"] = steps.records
    failed = None
    try:
        run_all(args, steps, results)
    except StepFailed as failure:
        failed = failure
    results["ratios"] = report.ratios(results)
    report.add_utilization(results)
    (args.work / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    if failed is not None:
        print(failed.details, file=sys.stderr)
        print(f"partial results -> {args.work / 'results.json'}", file=sys.stderr)
        return 1
    table = report.markdown(results)
    (args.work / "results.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    print(f"\nresults -> {args.work / 'results.json'}, table -> {args.work / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

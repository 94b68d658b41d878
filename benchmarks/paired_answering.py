"""Answering speed against the pipeline in paired rounds: how many times as fast, robust to a
host whose speed drifts.

One pass of one system over the dev questions varies by up to a third on a shared 2-core host,
so a ratio of two passes taken minutes apart (what `run.py` reports) is partly luck. Here every
system is loaded once in its own process (the pipeline in the transformers 4.x environment,
qatune in this one), answers one untimed pass, and then every round times one pass of each
system, in a seeded shuffled order. The speed-up of a system is the median over rounds of the
pipeline's time over its time in the same round (the host's drift cancels within a round), with
its quartiles and the ratio of the summed times beside it. After the rounds every system hands
over its answers from its last pass: the table gives EM/F1 and how many answers equal PyTorch
float32's (timed as a row too) and the pipeline's, so speed and answers come from one run. The
machine's matrix-product peaks (`flops.py peak`, before the systems load and after the rounds,
the better of the two) and the FLOPs of the dev windows (`flops.py count`) give each row's
achieved rate against the peak of the number format its engine computes in; and every round
also times each qatune engine alone over the same windows (cut beforehand; no tokenizing,
decoding or re-check), paired with the pipeline like the passes: no pass of that engine can
beat that speed-up. Both are ceilings from the same run.

    python benchmarks/paired_answering.py --model MODEL --data dev.json --rounds 10 \\
        --also "OpenVINO int8=INT8_FOLDER"

Systems: the transformers pipeline (batch 1, its default), qatune's default engine on `--model`
(`--engine auto`), qatune in PyTorch float32 on `--model` (the answers' reference), and every
`--also NAME=FOLDER` (answered by `auto` too: an exported folder answers with its own engine and
precision). Only one process works at a time; the others wait on their input.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import report
from flops import inference_flops
from run import machine
from squad_v1 import agreement, answerable, read_squad, score
from timing import REPLY

HERE = Path(__file__).resolve().parent
PIPELINE = "transformers pipeline (batch 1)"
FLOAT32 = "qatune PyTorch float32"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder `qatune train` wrote")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD JSON of answerable dev questions")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (every system once a round)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the order within rounds")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=FOLDER",
                        help="another model folder to time (e.g. an int8 export of --model)")
    parser.add_argument("--reference-python", type=Path, default=HERE / ".venv-tf4" / "bin" / "python",
                        help="python of the transformers 4.x environment (setup_reference_env.sh)")
    parser.add_argument("--save", type=Path, help="also write every timed pass to this JSON file")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, found {args.rounds}")
    for text in args.also:
        if "=" not in text:
            parser.error(f"--also {text!r}: write NAME=FOLDER")
    if not args.reference_python.is_file():
        parser.error(f"--reference-python {args.reference_python}: no such file; create the pipeline's "
                     "environment first: PYTHON=$(command -v python) bash benchmarks/setup_reference_env.sh")
    return args


class Worker:
    """One system's process, loaded and warmed up, timing a pass whenever asked."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        print(f"loading {name}: {' '.join(command)}", file=sys.stderr, flush=True)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self._reply().removeprefix("ready "))
        self.questions, self.precision, self.has_engine_alone = ready["questions"], ready["precision"], ready["engine_alone"]

    def timed(self, what: str) -> float:
        """Seconds of one "pass" (every question, end to end) or of its "engine" alone."""
        return float(self._ask(what))

    def answers(self) -> dict[str, str]:
        """The answers of its last pass, id -> text."""
        return json.loads(self._ask("answers"))

    def _ask(self, command: str) -> str:
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it exited before this request
            self._stopped()
        return self._reply()

    def close(self) -> None:
        try:
            self.process.stdin.close()  # the end of its input ends a worker
        except BrokenPipeError:
            pass
        self.process.wait(timeout=60)

    def _reply(self) -> str:
        for line in self.process.stdout:  # lines without the prefix are a library's own output
            if line.startswith(REPLY):
                return line[len(REPLY):].strip()
        self._stopped()

    def _stopped(self):
        raise SystemExit(f"{self.name}: the worker stopped (exit code {self.process.wait()}); see its errors above")


def worker_commands(args: argparse.Namespace, scratch: Path) -> dict[str, list[str]]:
    common = ["--data", str(args.data), "--serve-passes"]
    commands = {
        PIPELINE: [str(args.reference_python), str(HERE / "reference_pipeline.py"), "--model", str(args.model),
                   "--output", str(scratch / "pipeline.json"), *common],
        "qatune default (auto)": [sys.executable, str(HERE / "qatune_inference.py"), "--model", str(args.model),
                                  "--engine", "auto", "--output", str(scratch / "qatune.json"), *common],
        FLOAT32: [sys.executable, str(HERE / "qatune_inference.py"), "--model", str(args.model),
                  "--engine", "torch", "--no-bf16", "--output", str(scratch / "float32.json"), *common],
    }
    for number, text in enumerate(args.also):
        name, folder = text.split("=", 1)
        commands[name] = [sys.executable, str(HERE / "qatune_inference.py"), "--model", folder,
                          "--engine", "auto", "--output", str(scratch / f"also{number}.json"), *common]
    return commands


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, median, high


def paired_speedup(reference: list[float], seconds: list[float]) -> dict:
    """The median over rounds of the reference's time over `seconds` of the same round, its
    quartiles, and the ratio of the summed times."""
    low, median, high = quartiles([ref / own for ref, own in zip(reference, seconds)])
    return {"median": median, "quartiles": [low, high], "of_summed_times": sum(reference) / sum(seconds)}


def summarize(passes: dict[str, list[float]], questions: dict[str, int],
              engine_passes: dict[str, list[float]] | None = None) -> list[dict]:
    """Per system: its median pass, questions/s at that median, the paired speed-up, and where
    its engine was timed alone, the speed-up that engine alone reaches (no pass of it can beat that)."""
    reference = passes[PIPELINE]
    rows = []
    for name, seconds in passes.items():
        row = {
            "system": name,
            "median_pass_s": statistics.median(seconds),
            "questions_per_s": questions[name] / statistics.median(seconds),
            "paired_speedup": paired_speedup(reference, seconds),
            "passes_s": seconds,
        }
        if engine_passes and name in engine_passes:
            row["engine_alone"] = {"median_s": statistics.median(engine_passes[name]),
                                   "paired_speedup": paired_speedup(reference, engine_passes[name]),
                                   "passes_s": engine_passes[name]}
        rows.append(row)
    return rows


def flops_tool(command: list[str], scratch: Path) -> dict:
    """The JSON result of `flops.py COMMAND ...` (run in its own process, as `run.py` does)."""
    output = scratch / f"flops-{command[0]}.json"
    subprocess.run([sys.executable, str(HERE / "flops.py"), *command, "--output", str(output)], check=True,
                   stdout=sys.stderr)
    return json.loads(output.read_text(encoding="utf-8"))


def add_ceilings(rows: list[dict], precisions: dict[str, str], window_flops: float, peak: dict) -> None:
    """Each row's achieved FLOP/s at its median pass, and its share of its number format's matmul peak."""
    for row in rows:
        ceiling, name = report.precision_peak(precisions[row["system"]], peak)
        achieved = window_flops / row["median_pass_s"]
        row["achieved_flops"] = achieved
        row["mfu"] = {"peak": name, "share": achieved / ceiling if ceiling else None}


def add_answers(rows: list[dict], answers: dict[str, dict[str, str]], questions: list[dict]) -> None:
    """Each row's EM/F1 on the gold answers and its agreement with float32's and the pipeline's
    answers (the share of equal answers, SQuAD-normalized, as `run.py` counts them)."""
    for row in rows:
        own = answers[row["system"]]
        row["dev"] = score(own, questions)
        row["same_as_float32"] = agreement(own, answers[FLOAT32])["exact_match"]
        row["same_as_pipeline"] = agreement(own, answers[PIPELINE])["exact_match"]


def markdown(rows: list[dict], rounds: int) -> str:
    lines = [
        f"| system | median pass s | questions/s | speed-up vs pipeline, median of {rounds} paired rounds | quartiles | "
        "of summed times | EM | F1 | same answer as PyTorch float32 | same answer as pipeline | GFLOP/s | "
        "share of its format's matmul peak | its engine alone, speed-up vs pipeline (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        speedup = row["paired_speedup"]
        lines.append(
            f"| {row['system']} | {row['median_pass_s']:.2f} | {row['questions_per_s']:.1f} | "
            f"{speedup['median']:.2f}x | {speedup['quartiles'][0]:.2f}x-{speedup['quartiles'][1]:.2f}x | "
            f"{speedup['of_summed_times']:.2f}x | {row['dev']['exact_match']:.1f} | {row['dev']['f1']:.1f} | "
            f"{row['same_as_float32']:.1f}% | {row['same_as_pipeline']:.1f}% | {row['achieved_flops'] / 1e9:.0f} | "
            f"{_share(row['mfu'])} | {_engine_alone(row)} |"
        )
    return "\n".join(lines)


def _engine_alone(row: dict) -> str:
    alone = row.get("engine_alone")
    return "-" if alone is None else f"{alone['paired_speedup']['median']:.2f}x ({alone['median_s']:.2f} s)"


def _share(mfu: dict) -> str:
    share = "?" if mfu["share"] is None else f"{100 * mfu['share']:.1f}%"
    return f"{share} ({mfu['peak'].split(' ')[0]})"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = machine()
    order_of_rounds = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        counts = flops_tool(["count", "--model", str(args.model), "--dev", str(args.data)], scratch)
        peaks = [flops_tool(["peak"], scratch)]
        workers: list[Worker] = []
        try:
            for name, command in worker_commands(args, scratch).items():
                workers.append(Worker(name, command))  # one at a time: loading is not timed, but it is heavy
            passes: dict[str, list[float]] = {worker.name: [] for worker in workers}
            engine_passes: dict[str, list[float]] = {worker.name: [] for worker in workers if worker.has_engine_alone}
            for round_number in range(args.rounds):
                tasks = [(worker, "pass") for worker in workers] + [(w, "engine") for w in workers if w.has_engine_alone]
                order_of_rounds.shuffle(tasks)
                for worker, what in tasks:
                    (passes if what == "pass" else engine_passes)[worker.name].append(worker.timed(what))
                print(f"round {round_number + 1}/{args.rounds}: "
                      + ", ".join(f"{w.name} {passes[w.name][-1]:.2f} s" for w in workers), file=sys.stderr, flush=True)
            answers = {worker.name: worker.answers() for worker in workers}
        finally:
            for worker in workers:
                worker.close()
        peaks.append(flops_tool(["peak"], scratch))
    peak = report.combine_peaks(peaks)
    rows = summarize(passes, {worker.name: worker.questions for worker in workers}, engine_passes)
    add_answers(rows, answers, answerable(read_squad(args.data)))
    window_flops = inference_flops(counts["dev"], counts["parameters"])["total"]
    add_ceilings(rows, {worker.name: worker.precision for worker in workers}, window_flops, peak)
    int8 = "n/a" if peak["int8_flops"] is None else f"{peak['int8_flops'] / 1e9:.0f}"
    print(f"CPU: {report.cpu_summary(host)}; {args.rounds} rounds, seed {args.seed}; data {args.data}, "
          f"{counts['dev']['windows']} windows, {window_flops / 1e9:.0f} GFLOP a pass; matmul peaks (better of "
          f"before and after): float32 {peak['float32_flops'] / 1e9:.0f}, bf16 {peak['bf16_flops'] / 1e9:.0f} GFLOP/s, "
          f"int8 {int8} GOP/s")
    print(markdown(rows, args.rounds))
    if args.save:
        args.save.write_text(json.dumps({"machine": host, "rounds": args.rounds, "seed": args.seed, "peak": peak,
                                         "window_flops": window_flops, "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The serving benchmark: `qatune serve` under 1, 8 and 64 concurrent clients against batched
`QAModel.predict` on the same questions, in one run.

Steps, one after the other (never two at once):

1. `qatune_inference.py`: every question through `QAModel.predict` (the batched reference,
   questions/s) with the engine asked for;
2. for each engine and batching setting: `qatune serve MODEL --engine E [--max-batch-windows 1]`
   in a subprocess on a free port of 127.0.0.1; once /v1/health says ready, C client threads
   (one keep-alive HTTP connection each) send every question once between them
   (`POST /v1/answer`, top_k 1), for each C; throughput, p50/p95/p99 latency, errors, the
   answers' agreement with the batched run, and the mean micro-batch (requests and windows,
   from /metrics). Before and after each row, every question in one `{"items": [...]}` request
   (`QAModel.predict` on all of them, in the server process): a batched reference measured
   beside the row, since this machine's speed drifts by 20% within minutes.

The clients run in this process, on the same cores as the server: their share of the CPU
(measured, printed) is part of what a real deployment on one machine would pay.

    python benchmarks/serve.py --model ./qatune-model --data dev.json --work /tmp/serve-bench
    python benchmarks/serve.py --model M --data D --engines auto torch --clients 1 8 64
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402  (the CPU and its matrix units, as the other tables name them)


# room for every question in one request: the batched reference measured in the server
BATCHED_REQUEST_LIMITS = ["--max-items", "100000", "--max-queue", "100000", "--max-body-bytes", "1000000000"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD JSON whose questions are asked")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/serve"))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--engines", nargs="+", default=["auto"], help="auto, torch, openvino, onnx (default: auto)")
    parser.add_argument("--no-batching-row", action="store_true", help="skip the --max-batch-windows 1 rows")
    parser.add_argument("--serve-args", nargs="*", default=[], help="more arguments for every `qatune serve`, e.g. --batch-size 4")
    parser.add_argument("--questions", type=int, default=None, help="the first N questions (default: all)")
    return parser.parse_args(argv)


def questions_of(path: Path, limit: int | None) -> list[dict]:
    from qatune import load_examples

    examples = load_examples(path)[:limit]
    return [{"id": e.id, "question": e.question, "context": e.context} for e in examples]


def batched_reference(args, engine: str, data: Path) -> dict:
    output = args.work / f"predict-{engine}.json"
    subprocess.run(
        [sys.executable, str(HERE / "qatune_inference.py"), "--model", str(args.model), "--data", str(data),
         "--engine", engine, "--latency-questions", "1", "--output", str(output)],
        check=True,
    )
    result = json.loads(output.read_text())
    predictions = json.loads(Path(result["predictions_file"]).read_text())
    return {"questions_per_s": result["batched"]["questions_per_s"], "predictions": predictions,
            "engine": result["engine"]["describe"]}


class Server:
    def __init__(self, model: Path, arguments: list[str], log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "qatune", "serve", str(model), "--port", str(self.port), "--log-level", "warning", *arguments],
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"qatune serve exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit(f"qatune serve not ready after 300 s:\n{log.read_text()}")
        self.engine = self.get_json("/v1/model")["engine"]["description"]

    def get_json(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=30) as response:
            return response.read().decode()

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def load(server: Server, questions: list[dict], clients: int) -> dict:
    """Every question once, `clients` threads taking the next one as each finishes."""
    latencies = [0.0] * len(questions)
    answers: list[str | None] = [None] * len(questions)
    errors: list[str] = []
    next_index = iter(range(len(questions)))
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            item = questions[index]
            body = json.dumps({"question": item["question"], "context": item["context"]})
            started = time.perf_counter()
            connection.request("POST", "/v1/answer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            latencies[index] = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"{response.status} {payload[:200]!r}")
                continue
            found = json.loads(payload)["answers"]
            answers[index] = found[0]["text"] if found else ""
        connection.close()

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    ms = np.array(latencies) * 1000
    return {
        "clients": clients, "questions": len(questions), "wall_s": wall, "questions_per_s": len(questions) / wall,
        "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errors), "first_errors": errors[:3], "answers": answers,
        "client_cpu_share": client_cpu / wall,  # cores the clients used
    }


def batched_in_server(server: "Server", questions: list[dict]) -> float:
    """Questions/s of every question in one {"items": [...]} request: `QAModel.predict` on all of
    them in the server process itself, a reference measured beside each row (this machine's
    speed drifts by 20% within minutes)."""
    body = json.dumps({"items": [{"question": q["question"], "context": q["context"]} for q in questions]})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    started = time.perf_counter()
    connection.request("POST", "/v1/answer", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    if response.status != 200:
        raise SystemExit(f"the batched request failed with {response.status}")
    return len(questions) / elapsed


def histogram_mean(metrics: str, name: str) -> tuple[float, float]:
    total = float(re.search(rf"^{name}_sum (\S+)$", metrics, re.M).group(1))
    count = float(re.search(rf"^{name}_count (\S+)$", metrics, re.M).group(1))
    return total, count


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    questions = questions_of(args.data, args.questions)
    data = args.data
    if args.questions is not None:  # the reference answers exactly the questions the clients ask
        data = args.work / "questions.json"
        paragraphs = [{"context": q["context"], "qas": [{"id": q["id"], "question": q["question"], "answers": []}]} for q in questions]
        data.write_text(json.dumps({"version": "v2.0", "data": [{"title": "questions", "paragraphs": paragraphs}]}))
    rows = []
    for engine in args.engines:
        reference = batched_reference(args, engine, data)
        print(f"batched QAModel.predict, {reference['engine']}: {reference['questions_per_s']:.1f} questions/s", flush=True)
        settings = [("on", [])] + ([] if args.no_batching_row else [("off", ["--max-batch-windows", "1"])])
        for batching, extra in settings:
            server = Server(args.model, ["--engine", engine, *BATCHED_REQUEST_LIMITS, *args.serve_args, *extra], args.work / f"serve-{engine}-{batching}.log")
            try:
                for clients in args.clients:
                    batched_before = batched_in_server(server, questions)
                    before = server.metrics()
                    result = load(server, questions, clients)
                    after = server.metrics()
                    batched_after = batched_in_server(server, questions)
                    batched_rate = (batched_before + batched_after) / 2
                    requests = [a - b for a, b in zip(histogram_mean(after, "qatune_batch_requests"), histogram_mean(before, "qatune_batch_requests"))]
                    windows = [a - b for a, b in zip(histogram_mean(after, "qatune_batch_windows"), histogram_mean(before, "qatune_batch_windows"))]
                    same = sum(result["answers"][i] == reference["predictions"][q["id"]] for i, q in enumerate(questions))
                    row = {
                        "engine": server.engine, "batching": batching, **{k: v for k, v in result.items() if k != "answers"},
                        "vs_predict": result["questions_per_s"] / reference["questions_per_s"],
                        "batched_in_server_questions_per_s": [batched_before, batched_after],
                        "vs_batched_in_server": result["questions_per_s"] / batched_rate,
                        "predict_questions_per_s": reference["questions_per_s"],
                        "same_as_predict": same / len(questions),
                        "mean_batch_requests": requests[0] / max(requests[1], 1),
                        "mean_batch_windows": windows[0] / max(windows[1], 1),
                    }
                    rows.append(row)
                    print(
                        f"{row['engine']}, batching {batching}, {clients} clients: {row['questions_per_s']:.1f} q/s "
                        f"({row['vs_predict']:.2f}x predict, {row['vs_batched_in_server']:.2f}x one batched request beside it), p50 {row['p50_ms']:.0f} ms p95 {row['p95_ms']:.0f} "
                        f"p99 {row['p99_ms']:.0f}, errors {row['errors']}, same answers {100 * row['same_as_predict']:.1f}%, "
                        f"mean batch {row['mean_batch_requests']:.1f} requests / {row['mean_batch_windows']:.1f} windows, "
                        f"clients used {row['client_cpu_share']:.2f} cores",
                        flush=True,
                    )
                rows[-1]["server_peak_rss_mib"] = server.rss_mib()
            finally:
                server.stop()
    result = {"machine": machine(), "model": str(args.model), "data": str(args.data), "rows": rows}
    (args.work / "serve-results.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    lines = [
        "| engine | micro-batching | clients | questions/s | vs batched predict (before the rows) | vs one batched request (beside the row) | p50 ms | p95 ms | p99 ms | errors | same answers as predict | mean batch (requests / windows) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['engine']} | {row['batching']} | {row['clients']} | {row['questions_per_s']:.1f} | "
            f"{row['vs_predict']:.2f}x (predict {row['predict_questions_per_s']:.1f}) | "
            f"{row['vs_batched_in_server']:.2f}x ({' / '.join(f'{r:.1f}' for r in row['batched_in_server_questions_per_s'])}) | {row['p50_ms']:.0f} | "
            f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} | {row['errors']} | {100 * row['same_as_predict']:.1f}% | "
            f"{row['mean_batch_requests']:.1f} / {row['mean_batch_windows']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

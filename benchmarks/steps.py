"""Running the benchmark's steps: one subprocess at a time, each measured from the outside.

For every step it records the load average just before it starts (others' work on the
machine shows there), its wall time, the peak resident set size of the process and its
children (from `wait4`, so the step need not measure itself), and its exit code. Standard
output goes to `<work>/logs/<name>.out`, standard error to `<work>/logs/<name>.log`.

    >>> steps = Steps(Path("/tmp/bench"), cwd=Path("."))              # doctest: +SKIP
    >>> steps.run("hello", ["python", "-c", "print('hi')"])["stdout"]   # doctest: +SKIP
    'hi\\n'
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


class StepFailed(Exception):
    """A step exited with a non-zero code; `summary` is one line, `details` the end of its log."""

    def __init__(self, name: str, exit_code: int, log: Path):
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        self.summary = f"exit code {exit_code}: {last.strip()[:200]}"
        self.details = f"[{name}] failed with exit code {exit_code}; end of {log}:\n{tail}"
        super().__init__(self.summary)


def peak_rss_mib(usage) -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    return usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


class Steps:
    """Runs steps one after the other and keeps a record of each in `records`."""

    def __init__(self, work: Path, cwd: Path):
        self.logs = work / "logs"
        self.cwd = cwd
        self.records: list[dict] = []

    def run(self, name: str, command: list[str]) -> dict:
        """Run `command` to its end; return its record with its stdout. Raise StepFailed on a
        non-zero exit code (the record is kept either way)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        out, log = self.logs / f"{name}.out", self.logs / f"{name}.log"
        load = os.getloadavg()
        print(f"[{name}] load average {load[0]:.1f}: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        with out.open("w") as stdout, log.open("w") as stderr:
            process = subprocess.Popen(command, cwd=self.cwd, stdout=stdout, stderr=stderr)
            # wait4 gives this child's own resource usage (peak RSS), unlike RUSAGE_CHILDREN,
            # which mixes every child waited for so far.
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        wall_s = time.perf_counter() - started
        record = {"name": name, "command": command, "load_average_before": list(load),
                  "wall_s": wall_s, "peak_rss_mib": peak_rss_mib(usage),
                  "exit_code": process.returncode}
        self.records.append(record)
        if process.returncode != 0:
            raise StepFailed(name, process.returncode, log)
        stdout_text = out.read_text(encoding="utf-8", errors="replace")
        last = stdout_text.strip().splitlines()[-1:] or [""]
        print(f"[{name}] {wall_s:.0f} s, peak RSS {record['peak_rss_mib']:.0f} MiB: {last[0][:160]}", flush=True)
        return {**record, "stdout": stdout_text}

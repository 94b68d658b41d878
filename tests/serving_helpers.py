"""`qatune serve` in a subprocess on a free port of 127.0.0.1, for tests over real HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STARTUP_SECONDS = 120  # loading and converting a tiny model takes a few seconds; a busy CI more


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60):
        """(status, headers, body bytes) of one request; error statuses are returned, not raised."""
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def post_json(self, path: str, value, headers: dict | None = None):
        """(status, parsed JSON body) of a POST of `value` as JSON."""
        status, _, body = self.request(
            "POST", path, json.dumps(value).encode("utf-8"), {"Content-Type": "application/json", **(headers or {})}
        )
        return status, json.loads(body)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running_server(model: Path, *arguments: str, env: dict | None = None, log_dir: Path):
    """Start `qatune serve MODEL ARGUMENTS` on a free port; yield once /v1/health says ready;
    stop it (SIGTERM, then SIGKILL) on the way out."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "qatune", "serve", str(model), "--port", str(port), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"qatune serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            status, _, _ = server.request("GET", "/v1/health", timeout=5)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"qatune serve was not ready after {STARTUP_SECONDS} s:\n{server.output()}")

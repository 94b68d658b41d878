"""Prometheus metrics of one server: requests by status, latency, questions answered and cut,
batch sizes, queue depth.

Each app has its own registry, so that several apps in one process (tests, a user mounting two
models) do not share counters.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from qatune.serving.batcher import BatchObserver

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

disable_created_metrics()  # the *_created series double the output and no dashboard reads them


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "qatune_http_requests", "HTTP requests by route, method and status code",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "qatune_http_request_duration_seconds", "Time from request to response, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.questions = Counter("qatune_questions_answered", "Questions answered", registry=self.registry)
        self.questions_cut = Counter(
            "qatune_questions_cut",
            "Questions longer than the model's max_question_length tokens, answered from their first tokens",
            registry=self.registry,
        )
        self.batch_windows = Histogram(
            "qatune_batch_windows", "Windows per micro-batch (one or more forward passes)",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.batch_requests = Histogram(
            "qatune_batch_requests", "Requests answered together in one micro-batch",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.queue = Gauge("qatune_queue_questions", "Questions waiting or being answered", registry=self.registry)
        self.ready = Gauge("qatune_ready", "1 once the model has loaded and answered a warm-up question", registry=self.registry)

    def observer(self) -> BatchObserver:
        def batch(windows: int, requests: int) -> None:
            self.batch_windows.observe(windows)
            self.batch_requests.observe(requests)

        return BatchObserver(batch=batch, queue_depth=self.queue.set)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""`koqa serve`'s /metrics: the counters, in a Prometheus registry of the server's own, and the
middleware that counts every response."""

import time


class Metrics:
    """The /metrics counters, in a registry of their own (one per server)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("koqa_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "koqa_request_seconds",
            "time from a request's arrival to its response",
            ["path"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120),
            registry=self.registry,
        )
        self.queue = Gauge(
            "koqa_queue_questions",
            "questions not yet answered (transformers: waiting for a batch; vLLM: in the engine)",
            registry=self.registry,
        )
        self.in_flight = Gauge("koqa_in_flight_requests", "requests being answered", registry=self.registry)
        self.questions = Counter("koqa_questions", "questions answered", registry=self.registry)
        self.batches = Histogram(
            "koqa_batch_questions", "questions a generation call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter("koqa_prompt_tokens", "prompt tokens", registry=self.registry)
        self.answer_tokens = Counter("koqa_answer_tokens", "generated answer tokens", registry=self.registry)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class CountRequests:
    """Every response's status and latency into the metrics: a plain ASGI middleware (Starlette's
    BaseHTTPMiddleware would hide a client's going away from the endpoint)."""

    PATHS = ("/answer", "/health", "/metrics")

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"] if scope["path"] in self.PATHS else "other"
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)

"""`koqa serve`: answer questions over HTTP with a trained run (or any model), as `koqa eval` would.

    POST /answer   {"context": ..., "question": ...}            -> {"answer", "start", "end", "in_passage", ...}
                   {"questions": [{"context", "question", "id"?}, ...]} -> {"answers": [...]}
    GET  /health   {"status": "ok" | "draining", ...}
    GET  /metrics  Prometheus text: requests, latency, queue depth, questions and tokens

Every answer is rendered and post-processed by the evaluation core (koqa.eval.pipeline) with the
run's template, lengths, post-processing and `--span` mode, so a served answer equals `koqa eval`'s
answer to the same question. With vLLM, the engine is vLLM's async engine: each question goes to it as it
arrives and its scheduler batches it with every question in flight (`EngineFeed`). With the
transformers backend, a batcher gathers the waiting questions (up to `max_batch` of them, waiting at
most `batch_wait_ms` for a batch to fill) and generates them in one call on one worker thread, which
owns the model (`Batcher`).

Bad requests get a 4xx with one JSON error naming the field, and the server keeps serving; a full
queue gets 503 with Retry-After. A request whose client goes away before its answer is cancelled: its
questions leave the queue or are aborted in the engine (status 499 in /metrics). SIGTERM (or Ctrl-C)
drains: new requests get 503, requests in flight finish, then the server stops (a second signal stops
it at once).
"""

import asyncio
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from koqa.data_tools.records import QARecord
from koqa.errors import KoqaError
from koqa.serve.config import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, ServeConfig
from koqa.serve.counters import CountRequests, Metrics
from koqa.serve.requests import RequestError, authorised, locate, read_body, read_questions

log = logging.getLogger(__name__)


class Answerer:
    """The model, loaded once. On the transformers backend it answers lists of records through the
    evaluation core, each call on one worker thread (the backend is not thread-safe); on vLLM's async
    engine it answers one record at a time from the event loop, rendering and post-processing it as
    the evaluation core does."""

    def __init__(self, config: ServeConfig):
        from koqa.data_tools.normalize import build_normalizer
        from koqa.eval.backends import ASYNC_BACKENDS, GenerationParams
        from koqa.eval.pipeline import open_generator, prepare_eval

        self.config = config.eval_config()
        self.prepared = prepare_eval([], self.config, config.adapter)
        # the serve-only settings are checked against the backend `auto` chooses, before it loads
        self.generator = open_generator(
            self.prepared, self.config, asynchronous=True, more_problems=config.batcher_problems
        )
        self.backend = self.generator.name
        self.asynchronous = self.backend in ASYNC_BACKENDS
        self.params = GenerationParams(self.prepared.max_new_tokens)
        self.normalize = build_normalizer(self.config.answer_normalization)

    async def answer_one(self, record: QARecord) -> tuple[dict, int, int]:
        """vLLM's async engine: the answer to `record`, located in its passage, and its prompt and
        answer tokens."""
        from koqa.eval.pipeline import postprocess

        prompt = self.prepared.renderer.render(record.context, record.question).ids
        passage = record.context if self.config.span == "constrain" else None
        text, answer_tokens = await self.generator.answer(prompt, self.params, passage)
        no_answer = self.prepared.renderer.no_answer
        prediction = postprocess(text, record.context, self.normalize, self.config.span, no_answer)
        return {**locate(prediction, record.context), "generated": text}, len(prompt), answer_tokens

    def answer(self, records: list[QARecord]) -> tuple[list[dict], int, int]:
        """The answers to `records`, located in their passages, and the batch's prompt and answer tokens
        (the /metrics counters)."""
        from koqa.eval.pipeline import answer_questions

        result = answer_questions(replace(self.prepared, records=records), self.config, self.generator)
        tokenizer = self.prepared.renderer.tokenizer
        generated = [result.raw[r.id] for r in records]
        answer_tokens = sum(len(ids) for ids in tokenizer(generated, add_special_tokens=False)["input_ids"])
        answers = [{**locate(result.predictions[r.id], r.context), "generated": g} for r, g in zip(records, generated)]
        return answers, result.prompt_tokens, answer_tokens

    def close(self) -> None:
        self.generator.close()


class Busy(Exception):
    pass


class EngineFeed:
    """vLLM's async engine: every question goes to the engine as it arrives, and the engine's
    scheduler batches it with the questions in flight (no waiting for a batch to fill). At most
    `max_queue` questions are in the engine; a request that would pass that gets 503. A request whose
    client goes away is cancelled, and the engine aborts its questions."""

    def __init__(self, answerer: Answerer, config: ServeConfig, metrics: Metrics):
        self.answerer, self.config, self.metrics = answerer, config, metrics
        self.depth = 0  # questions in the engine

    async def submit(self, records: list[QARecord]) -> list[dict]:
        if self.depth + len(records) > self.config.max_queue:
            raise Busy
        self.depth += len(records)
        self.metrics.queue.set(self.depth)
        try:
            results = await asyncio.gather(*(self.answerer.answer_one(r) for r in records))
        finally:
            self.depth -= len(records)
            self.metrics.queue.set(self.depth)
        self.metrics.questions.inc(len(records))
        self.metrics.prompt_tokens.inc(sum(prompt for _, prompt, _ in results))
        self.metrics.answer_tokens.inc(sum(answer for _, _, answer in results))
        return [answer for answer, _, _ in results]

    async def run(self) -> None:  # the engine runs itself
        return None


class Batcher:
    """Questions from every request in one queue; one task takes up to `max_batch` of them at a time
    and has the worker thread answer them."""

    def __init__(self, answerer: Answerer, config: ServeConfig, metrics: Metrics, executor: ThreadPoolExecutor):
        self.answerer, self.config, self.metrics, self.executor = answerer, config, metrics, executor
        self.max_batch = min(config.max_batch or DEFAULT_MAX_BATCH, config.max_queue)
        self.wait_s = (DEFAULT_BATCH_WAIT_MS if config.batch_wait_ms is None else config.batch_wait_ms) / 1000
        self.pending: deque = deque()
        self.wake = asyncio.Event()

    @property
    def depth(self) -> int:
        return len(self.pending)

    async def submit(self, records: list[QARecord]) -> list[dict]:
        if len(self.pending) + len(records) > self.config.max_queue:
            raise Busy
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in records]
        self.pending.extend(zip(records, futures))
        self.metrics.queue.set(len(self.pending))
        self.wake.set()
        return await asyncio.gather(*futures)

    def _take(self) -> list:
        batch = []
        while self.pending and len(batch) < self.max_batch:
            record, future = self.pending.popleft()
            if not future.done():  # a client that went away: its questions are not answered
                batch.append((record, future))
        self.metrics.queue.set(len(self.pending))
        return batch

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            if len(self.pending) < self.max_batch and self.wait_s:
                await asyncio.sleep(self.wait_s)
            batch = self._take()
            if not self.pending:
                self.wake.clear()
            if not batch:
                continue
            records = [r for r, _ in batch]
            try:
                answers = await loop.run_in_executor(self.executor, self._answer, records)
            except Exception as exc:  # the model failed: every request of the batch hears of it
                log.exception("generation failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)

    def _answer(self, records: list[QARecord]) -> list[dict]:
        answers, prompt, answer = self.answerer.answer(records)
        self.metrics.questions.inc(len(records))
        self.metrics.batches.observe(len(records))
        self.metrics.prompt_tokens.inc(prompt)
        self.metrics.answer_tokens.inc(answer)
        return answers


class ClientGone(Exception):
    pass


DISCONNECT_POLL_S = 0.25


async def _unless_gone(request, work):
    """`work` awaited, unless the client goes away first: then it is cancelled (its questions leave
    the batcher's queue, or are aborted in the vLLM engine) and ClientGone is raised."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ClientGone


class State:
    """What the endpoints share: draining or not, requests in flight, the question counter."""

    def __init__(self):
        self.draining = False
        self.in_flight = 0
        self.next_id = 0
        self.started = time.time()


def build_app(config: ServeConfig, answerer, token: str | None):
    """The FastAPI application: the endpoints, the body limit, the bearer check and the metrics."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    metrics, state = Metrics(), State()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="koqa-model")
    if answerer.asynchronous:
        batcher = EngineFeed(answerer, config, metrics)
    else:
        batcher = Batcher(answerer, config, metrics, executor)

    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            executor.shutdown(wait=True)

    app = FastAPI(title="koqa", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.koqa = state

    def error(exc: RequestError, headers=None):
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):  # unknown paths and methods: the same JSON shape
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code)

    app.add_middleware(CountRequests, metrics=metrics)

    @app.post("/answer")
    async def answer(request: Request):
        if state.draining:
            return error(RequestError(503, "the server is shutting down", None), {"Retry-After": "5"})
        if not authorised(request, token):
            return error(RequestError(401, "a missing or wrong bearer token", "Authorization"))
        state.in_flight += 1
        metrics.in_flight.set(state.in_flight)
        try:
            body = await read_body(request, config.max_body_bytes)
            records, ids, batch = read_questions(body, config, state.next_id)
            state.next_id += len(records)
            try:
                answers = await _unless_gone(request, batcher.submit(records))
            except ClientGone:
                return Response(status_code=499)  # nobody reads it; counted in the metrics as such
            except Busy:
                raise RequestError(503, f"the queue is full (max_queue {config.max_queue} questions)") from None
            except Exception:  # the model failed on the batch (logged there): said in JSON, not an HTML 500
                raise RequestError(500, "generating the answers failed; the server log says why") from None
        except RequestError as exc:
            return error(exc, {"Retry-After": "1"} if exc.status == 503 else None)
        finally:
            state.in_flight -= 1
            metrics.in_flight.set(state.in_flight)
        for given, item in zip(ids, answers):
            if given is not None:
                item["id"] = given
        return {"answers": answers} if batch else answers[0]

    @app.get("/health")
    async def health():
        return {
            "status": "draining" if state.draining else "ok",
            "backend": answerer.backend,
            "in_flight": state.in_flight,
            "queue": batcher.depth,
            "uptime_s": round(time.time() - state.started, 1),
        }

    @app.get("/metrics")
    async def metrics_text(request: Request):
        if not authorised(request, token):
            return error(RequestError(401, "a missing or wrong bearer token", "Authorization"))
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise KoqaError(f"cannot listen on {host}:{port}: {exc.strerror}", field="port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _draining_server(uvicorn_config, state: State, drain_seconds: float):
    """A uvicorn server whose first SIGTERM or Ctrl-C drains (new requests get 503, requests in
    flight finish, then it stops) and whose second stops it at once."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # not re-raised afterwards: a drained server exits 0
            if state.draining:
                self.should_exit = self.force_exit = True
                return
            state.draining = True
            log.info("signal %s: finishing %d request(s) in flight, refusing new ones", sig, state.in_flight)
            threading.Thread(target=self._stop_when_drained, daemon=True).start()

        def _stop_when_drained(self) -> None:
            deadline = time.monotonic() + drain_seconds
            while state.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            self.should_exit = True

    return DrainingServer(uvicorn_config)


def serve(config: ServeConfig) -> dict:
    """Load the model, listen, answer until a signal; returns what was served."""
    import uvicorn

    token = os.environ.get(config.token_env) or None
    if config.token_env in os.environ and not token:
        raise KoqaError(f"{config.token_env} is set but empty", field="token_env", fix="set a token, or unset it")
    sock = _bind(config.host, config.port)
    try:
        logging.getLogger("koqa.eval.pipeline").setLevel(logging.WARNING)  # a line per batch is noise here
        answerer = Answerer(config)
        app = build_app(config, answerer, token)
        uv_config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_keep_alive=5, lifespan="on", log_config=None
        )
        server = _draining_server(uv_config, app.state.koqa, config.drain_seconds)
        host, port = sock.getsockname()[:2]
        print(
            f"koqa serve: {answerer.backend} backend, http://{host}:{port} (POST /answer, GET /health, GET /metrics)"
            + ("; bearer token required" if token else ""),
            flush=True,
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
    state = app.state.koqa
    answerer.close()
    return {"questions": state.next_id, "drained": state.draining}

"""`koqa serve`: answers equal `koqa eval`'s, offsets point at them, hostile requests get one JSON
error and the server keeps serving, SIGTERM finishes what is in flight. Every server listens on
127.0.0.1 only and every client is bounded in count and time."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DACON_ROWS
from koqa.serve.config import ServeConfig
from koqa.serve.requests import RequestError, locate, read_questions

TOKEN = "serve-test-bearer-7f3a9c"  # not token-shaped for redaction: the test looks for it in the logs


def _koqa(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "koqa.cli", *args], capture_output=True, text=True, env=env, **kwargs)


class Server:
    """`koqa serve` in a child process on a free port of 127.0.0.1."""

    def __init__(self, tmp: Path, *args: str, token: str | None = TOKEN):
        env = {k: v for k, v in os.environ.items() if k != "KOQA_SERVE_TOKEN"}
        if token:
            env["KOQA_SERVE_TOKEN"] = token
        self.out, self.err = open(tmp / "serve.out", "w+"), open(tmp / "serve.err", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "koqa.cli", "serve", "--port", "0", *args],
            stdout=self.out,
            stderr=self.err,
            env=env,
        )
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.out.seek(0)
            line = self.out.read()
            if "http://127.0.0.1:" in line:
                self.port = int(line.split("http://127.0.0.1:")[1].split()[0])
                break
            assert self.proc.poll() is None, self.logs()
            time.sleep(0.2)
        else:
            raise AssertionError("the server did not start: " + self.logs())
        self.url = f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        self.out.seek(0), self.err.seek(0)
        return self.out.read() + self.err.read()

    def post(self, body, timeout=120, **kwargs) -> httpx.Response:
        kwargs.setdefault("headers", self.headers)
        if isinstance(body, dict):
            return httpx.post(self.url + "/answer", json=body, timeout=timeout, **kwargs)
        return httpx.post(self.url + "/answer", content=body, timeout=timeout, **kwargs)  # bytes, or a generator

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _questions(rows=DACON_ROWS):
    return [{"id": r[0], "context": r[1], "question": r[2]} for r in rows]


def _eval_answers(tmp_path, data, run, *extra) -> dict:
    result = _koqa("eval", "--adapter", str(run), "--data", str(data), "--out", str(tmp_path / "eval"), *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "eval" / "predictions.csv", encoding="utf-8") as handle:
        return {row["id"]: row["prediction"] for row in csv.DictReader(handle)}


SETTINGS = ("--backend", "hf", "--dtype", "float32", "--span", "constrain")


def _check_one_batch(server: Server, expected: dict) -> None:
    """The questions as koqa eval asked them (one batch, same order): the same answers, byte for byte,
    and offsets that point at them."""
    batch = server.post({"questions": _questions()})
    assert batch.status_code == 200, batch.text
    answers = batch.json()["answers"]
    assert {a["id"]: a["answer"] for a in answers} == expected
    for asked, got in zip(_questions(), answers):
        assert got["in_passage"] and asked["context"][got["start"] : got["end"]] == got["answer"]


def _send_and_go(server: Server, body: dict) -> None:
    """Send a whole request, go away once the server is answering it, and wait until it no longer is."""
    sent = json.dumps(body, ensure_ascii=False).encode()
    head = f"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(sent)}\r\n"
    auth = "".join(f"{k}: {v}\r\n" for k, v in server.headers.items())

    def health():
        return httpx.get(server.url + "/health").json()

    deadline = time.monotonic() + 60
    with socket.create_connection(("127.0.0.1", server.port)) as gone:
        gone.sendall((head + auth + "\r\n").encode() + sent)
        while health()["in_flight"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    while health()["in_flight"] or health()["queue"]:
        assert time.monotonic() < deadline, "the questions of a client that went away were still answered"
        time.sleep(0.05)


def _from_64_clients(server: Server, requests: int) -> list[tuple[str, httpx.Response]]:
    """`requests` one-question requests from 64 clients at once, as (question id, reply)."""

    def one(i):
        asked = _questions()[i % len(DACON_ROWS)]
        return asked["id"], server.post({"context": asked["context"], "question": asked["question"]})

    with ThreadPoolExecutor(64) as pool:
        return list(pool.map(one, range(requests)))


def test_served_answers_equal_koqa_eval_and_hostile_requests_leave_it_serving(tmp_path, tiny_run, dacon_test):
    expected = _eval_answers(tmp_path, dacon_test, tiny_run, *SETTINGS)
    server = Server(tmp_path, "--adapter", str(tiny_run), *SETTINGS, "--set", "max_body_bytes=1000000")
    try:
        _check_one_batch(server, expected)
        # 64 clients at once, each question many times: batched with others, the answers stay the same
        replies = _from_64_clients(server, 128)
        assert all(r.status_code == 200 for _, r in replies)
        assert all(r.json()["answer"] == expected[qid] for qid, r in replies)

        hostile = [
            (b'{"context": "x", "question"', 400, "body"),
            (b"\xff\xfe{}", 400, "body"),
            (b"[" * 100_000 + b"]" * 100_000, 400, "body"),
            (b"[1, 2]", 422, "body"),
            ({"context": "한국은행은 금리를 동결했다."}, 422, "question"),
            ({"context": "", "question": "무엇?"}, 422, "context"),
            (json.dumps({"context": "가\ud800", "question": "무엇?"}).encode(), 422, "context"),  # lone surrogate
            ({"context": "가", "question": "무엇?", "extra": 1}, 422, "extra"),
            ({"context": "가", "question": "무엇?", "id": [1]}, 422, "id"),
            ({"questions": []}, 422, "questions"),
            ({"questions": [{"context": "가", "question": "나"}, 3]}, 422, "questions[1]"),
            ({"questions": [{"context": "가", "question": "나"}] * 10_000}, 413, "questions"),
            ({"context": "가" * 30_000, "question": "무엇?"}, 413, "context"),
            (b'{"context": "' + b"a" * 10_000_000 + b'", "question": "x"}', 413, "body"),
        ]
        for body, status, field in hostile:
            reply = server.post(body)
            assert (reply.status_code, reply.json()["field"]) == (status, field), (body[:60], reply.text)
            assert set(reply.json()) == {"error", "field"}

        assert server.post(_questions()[0], headers={}).status_code == 401
        assert server.post(_questions()[0], headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(server.url + "/metrics").status_code == 401
        assert httpx.get(server.url + "/nowhere").json() == {"error": "Not Found", "field": None}

        # a client that sends half its body and goes away; one that sends its body slowly
        with socket.create_connection(("127.0.0.1", server.port)) as half:
            half.sendall(
                b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
                + b'{"context": "'
            )
        slow_body = json.dumps(_questions()[0], ensure_ascii=False).encode()

        def slowly():
            for i in range(0, len(slow_body), 10):
                yield slow_body[i : i + 10]
                time.sleep(0.1)

        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(lambda: server.post(slowly()))
            quick = server.post(_questions()[1])  # answered while the slow client is still sending
            assert quick.status_code == 200 and not slow.done()
            assert slow.result().json()["answer"] == expected[_questions()[0]["id"]]

        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        metrics = httpx.get(server.url + "/metrics", headers=server.headers).text
        assert 'koqa_requests_total{path="/answer",status="413"} 3.0' in metrics
        answered = len(DACON_ROWS) + 128 + 2
        assert f"koqa_questions_total {answered}.0" in metrics
        assert "koqa_request_seconds_bucket" in metrics and "koqa_queue_questions" in metrics
        counted = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
        assert float(counted["koqa_answer_tokens_total"]) > 0 and float(counted["koqa_prompt_tokens_total"]) > 0
    finally:
        assert server.stop() == 0, server.logs()
    assert TOKEN not in server.logs()


@pytest.mark.vllm
def test_vllm_async_engine_serves_koqa_evals_answers(tmp_path, tiny_run, dacon_test):
    pytest.importorskip("vllm")
    settings = ("--backend", "vllm", "--dtype", "float32", "--span", "constrain")
    expected = _eval_answers(tmp_path, dacon_test, tiny_run, *settings)
    server = Server(tmp_path, "--adapter", str(tiny_run), *settings, "--set", "max_queue=16")
    try:
        assert httpx.get(server.url + "/health").json()["backend"] == "vllm"
        _check_one_batch(server, expected)
        replies = _from_64_clients(server, 64)  # at most 16 questions in the engine: some get 503
        answered = [(qid, r) for qid, r in replies if r.status_code == 200]
        assert answered and all(r.json()["answer"] == expected[qid] for qid, r in answered)
        assert {r.status_code for _, r in replies} <= {200, 503}
        assert all(r.headers["retry-after"] for _, r in replies if r.status_code == 503)
        _send_and_go(server, {"questions": _questions() * 2})  # aborted in the engine, or answered first
        assert server.post(_questions()[0]).json()["answer"] == expected[_questions()[0]["id"]]
        too_many = server.post({"questions": _questions() * 3})  # 18 questions > max_queue 16
        assert too_many.status_code == 503 and too_many.json()["field"] is None
        assert httpx.get(server.url + "/health").json()["queue"] == 0
        metrics = httpx.get(server.url + "/metrics", headers=server.headers).text
        counted = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
        assert len(DACON_ROWS) + len(answered) + 1 <= float(counted["koqa_questions_total"])
    finally:
        assert server.stop() == 0, server.logs()


def test_sigterm_finishes_the_requests_in_flight_and_refuses_new_ones(tmp_path, tiny_model_dir):
    server = Server(tmp_path, "--model", str(tiny_model_dir), "--backend", "hf", "--set", "max_batch=4", token=None)
    many = {"questions": _questions() * 20}  # 120 questions, 4 at a time: seconds of work

    # a client that sends a whole request and goes away: its questions leave the queue unanswered
    _send_and_go(server, many)
    metrics = httpx.get(server.url + "/metrics").text
    counted = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    assert float(counted["koqa_questions_total"]) < 120
    assert counted['koqa_requests_total{path="/answer",status="499"}'] == "1.0"

    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(server.post, many)
        deadline = time.monotonic() + 60
        while httpx.get(server.url + "/health").json()["in_flight"] == 0:
            assert time.monotonic() < deadline and not in_flight.done()
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = server.post(_questions()[0])
        assert late.status_code == 503 and late.headers["retry-after"], late.text
        assert httpx.get(server.url + "/health").json()["status"] == "draining"
        reply = in_flight.result(timeout=120)
    assert reply.status_code == 200 and len(reply.json()["answers"]) == 120
    assert server.proc.wait(timeout=60) == 0, server.logs()
    assert "stopped after 240 questions" in server.logs()  # asked: the 120 of the client that went away too


@pytest.mark.parametrize(
    "args, env, field",
    [
        (["--port", "70000"], {}, "port"),
        (["--host", "0.0.0.0"], {}, "host"),
        (["--token-env", "1BAD"], {}, "token_env"),
        (["--set", "max_batch=0"], {}, "max_batch"),
        (["--set", "max_batch=64", "--set", "max_queue=8"], {}, "max_batch"),
        (["--batch-wait-ms", "-1"], {}, "batch_wait_ms"),
        (["--backend", "hf", "--set", "vllm_compile=true"], {}, "vllm_compile"),
        (["--backend", "vllm", "--set", "max_batch=8"], {}, "max_batch"),
        (["--backend", "vllm", "--batch-wait-ms", "0"], {}, "batch_wait_ms"),
        (["--backend", "vllm", "--batch-size", "8"], {}, "batch_size"),
        ([], {"KOQA_SERVE_TOKEN": ""}, "token_env"),
    ],
)
def test_bad_serve_settings_are_one_line_errors(tmp_path, args, env, field):
    result = _koqa("serve", "--model", str(tmp_path / "none"), *args, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and field in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_batchers_settings_are_refused_once_auto_chooses_vllm(tiny_model_dir):
    pytest.importorskip("vllm")
    # backend auto: the choice is made (once) where the model is opened, and refused before vLLM loads
    result = _koqa("serve", "--model", str(tiny_model_dir), "--set", "max_batch=8", timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "max_batch" in result.stderr, result.stderr
    assert "vLLM's async engine" in result.stderr and "Traceback" not in result.stderr


def test_the_bearer_token_is_read_from_the_environment_only():
    shown = _koqa("serve", "--help").stdout
    assert "--token-env" in shown and "--token " not in shown


def test_a_port_in_use_is_one_line(tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _koqa("serve", "--model", str(tiny_model_dir), "--port", str(port), timeout=60)
    assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["context", "question", "id", "questions", "x"]), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_body_is_questions_or_one_request_error(body):
    config = ServeConfig(max_questions=3, max_context_chars=50, max_question_chars=10)
    try:
        records, ids, batch = read_questions(body, config, 0)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.message and "\n" not in exc.message
        return
    assert records and len(records) == len(ids) <= 3
    for record in records:
        assert 0 < len(record.context) <= 50 and record.question and len(record.question) <= 10


def test_locate_points_at_the_answer():
    context = "코스피는 25.31포인트 오른 2,650.12에 마감했다."
    found = locate("2,650.12", context)
    assert context[found["start"] : found["end"]] == "2,650.12" and found["in_passage"]
    assert locate("없는 답", context) == {
        "answer": "없는 답",
        "start": None,
        "end": None,
        "in_passage": False,
        "no_answer": False,
    }
    assert locate("", context)["no_answer"] and not locate("", context)["in_passage"]


def test_a_failing_model_is_a_json_500_and_the_server_keeps_serving():
    from fastapi.testclient import TestClient

    from koqa.serve.app import build_app

    class FailsOnce:  # a model that fails on its first batch (out of memory, say), then answers
        backend, calls, asynchronous = "test", 0, False

        def answer(self, records):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("out of memory")
            return [{**locate(r.context[:2], r.context), "generated": r.context[:2]} for r in records], 0, 0

    asked = {"context": "한국은행은 금리를 동결했다.", "question": "누가?"}
    with TestClient(build_app(ServeConfig(batch_wait_ms=0), FailsOnce(), None)) as client:
        failed = client.post("/answer", json=asked)
        assert failed.status_code == 500 and failed.json()["field"] is None and "failed" in failed.json()["error"]
        answered = client.post("/answer", json=asked)
        assert answered.status_code == 200 and answered.json()["answer"] == "한국" and answered.json()["start"] == 0

"""`koqa serve` under load, against `koqa eval` offline on the same questions.

    .venv/bin/python bench/serve_load.py [--adapter RUN] [--clients 64] [--seconds 120] [--backend hf]

1. `koqa serve` starts on 127.0.0.1 (a free port) with the run (or the default model).
2. --clients clients, each a thread with its own connection, send the KorQuAD evaluation-article
   questions for --seconds, one at a time each, every question asked once (they take the next one
   from one shared list: distinct questions, real passage lengths, as a contest's test file).
3. `koqa eval` then answers the questions the server answered, offline, with the same run, backend
   and settings; its generation time (model loading excluded, as the server's start is) gives the
   offline throughput.
4. The table: questions answered, throughput, latency percentiles, errors, the ratio to offline, and
   how many served answers equal `koqa eval`'s.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import KORQUAD, Results, korquad_split, read_json  # noqa: E402


def start_server(args, log: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "koqa.cli", "serve", "--port", "0", "--backend", args.backend]
    command += ["--adapter", args.adapter] if args.adapter else []
    env = {k: v for k, v in os.environ.items() if k != "KOQA_SERVE_TOKEN"}
    handle = open(log, "w+")
    proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        handle.seek(0)
        text = handle.read()
        if "http://127.0.0.1:" in text:
            return proc, "http://127.0.0.1:" + text.split("http://127.0.0.1:")[1].split()[0]
        if proc.poll() is not None:
            raise SystemExit("koqa serve did not start:\n" + text[-3000:])
        time.sleep(0.5)
    raise SystemExit("koqa serve did not start within 10 minutes")


def load(url: str, records, clients: int, seconds: float) -> tuple[dict, list[float], int, float]:
    """(answers by id, latencies of the answered, errors, seconds taken) of `clients` clients
    sending the next unasked question until `seconds` have passed."""
    import httpx

    queue, lock = list(reversed(records)), threading.Lock()
    answers, latencies, errors = {}, [], [0]
    stop_at = time.monotonic() + seconds

    def client():
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if not queue:
                        return
                    record = queue.pop()
                started = time.perf_counter()
                try:
                    reply = http.post(url + "/answer", json={"context": record.context, "question": record.question})
                    ok = reply.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    if ok:
                        answers[record.id] = reply.json()["answer"]
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, latencies, errors[0], time.perf_counter() - began


def offline(args, records, out: Path) -> tuple[dict, float]:
    """`koqa eval`'s answers {id: answer} to `records` and its generation seconds."""
    data = out / "served.jsonl"
    data.write_text("".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    command = [sys.executable, "-m", "koqa.cli", "eval", "--data", str(data), "--out", str(out / "eval")]
    command += ["--backend", args.backend] + (["--adapter", args.adapter] if args.adapter else [])
    subprocess.run(command, check=True)
    with open(out / "eval" / "predictions.csv", encoding="utf-8") as handle:
        predictions = {row["id"]: row["prediction"] for row in csv.DictReader(handle)}
    return predictions, read_json(out / "eval" / "metrics.json")["generation_seconds"]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--backend", default="hf")
    args = parser.parse_args()
    if not KORQUAD.is_file():
        raise SystemExit(f"the KorQuAD dev set is not at {KORQUAD}: set KOQA_KORQUAD")
    _, evaluation = korquad_split()
    out = Path(tempfile.mkdtemp(prefix="koqa-serve-load-"))
    server, url = start_server(args, out / "serve.log")
    try:
        answers, latencies, errors, took = load(url, evaluation, args.clients, args.seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        stopped = server.wait(timeout=300)
    served = [r for r in evaluation if r.id in answers]
    predictions, offline_seconds = offline(args, served, out)
    online_rate, offline_rate = len(served) / took, len(served) / offline_seconds
    same = sum(predictions[r.id] == answers[r.id] for r in served)

    report = Results(
        f"serve_load_{args.backend}",
        f"koqa serve under load ({args.backend} backend), against koqa eval offline on the same questions",
    )
    who = f"the run `{args.adapter}`" if args.adapter else "the default model"
    print(
        report.note(
            f"`koqa serve` ({args.backend} backend, {who}) on 127.0.0.1 with {args.clients} clients for "
            f"{args.seconds:g} s, each asking the next of the {len(evaluation)} KorQuAD evaluation-article "
            "questions (each asked once); then `koqa eval` offline on the questions served (generation time, "
            f"model loading excluded on both sides). The server stopped on SIGTERM with status {stopped}."
        )
    )
    ms = lambda s: f"{1000 * s:.0f}"  # noqa: E731
    rows = [
        [
            args.clients,
            len(served),
            f"{online_rate:.2f}",
            ms(percentile(latencies, 50)),
            ms(percentile(latencies, 95)),
            ms(percentile(latencies, 99)),
            errors,
            f"{offline_rate:.2f}",
            f"{online_rate / offline_rate:.2f}",
            f"{same} / {len(served)}",
        ]
    ]
    headers = ["clients", "questions", "served q/s", "p50 ms", "p95 ms", "p99 ms", "errors", "offline q/s"]
    print(report.table([*headers, "served / offline", "answers equal to koqa eval's"], rows))
    report.write()


if __name__ == "__main__":
    main()

"""Start-up of the light commands, each in a fresh process as a user runs it.

    .venv/bin/python bench/startup.py [--repeats 3]

- `koqa --help`;
- `koqa preprocess` of a ten-row Dacon CSV (the first ten KorQuAD evaluation questions on their real
  passages): start-up, reading, kiwipiepy's model, the tokenizer, counts, report, histogram, split;
- `koqa score` of 1,000 predictions against a Dacon CSV of their gold answers (the first 1,000 KorQuAD
  evaluation questions; each prediction is its gold answer without its last character, so that
  scores are neither all 0 nor all 1).

Each command runs --repeats times; the table shows the median and the range.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import Results, korquad_split  # noqa: E402


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_dacon(path: Path, records) -> None:
    write_csv(
        path, ["id", "context", "question", "answer"], ((r.id, r.context, r.question, r.answers[0]) for r in records)
    )


def timed(command: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (default: 3)")
    args = parser.parse_args()
    records = korquad_split()[1]
    koqa = [sys.executable, "-m", "koqa.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_dacon(folder / "ten.csv", records[:10])
        write_dacon(folder / "gold.csv", records[:1000])
        write_csv(
            folder / "pred.csv", ["id", "answer"], ((r.id, r.answers[0][:-1] or r.answers[0]) for r in records[:1000])
        )
        commands = [
            ("`koqa --help`", [*koqa, "--help"]),
            ("`koqa preprocess` of a ten-row Dacon CSV", [*koqa, "preprocess", str(folder / "ten.csv"), "--out"]),
            (
                "`koqa score` of 1,000 predictions",
                [*koqa, "score", "--gold", str(folder / "gold.csv"), "--pred", str(folder / "pred.csv"), "--out"],
            ),
        ]
        rows = []
        for n, (label, command) in enumerate(commands):
            if command[-1] == "--out":
                command = [*command, str(folder / f"out{n}")]
            times = timed(command, args.repeats)
            rows.append([label, f"{statistics.median(times):.2f}", f"{min(times):.2f}–{max(times):.2f}"])
    results = Results("startup", "Start-up of the light commands — bench/startup.py")
    print(results.table(["command", "median s (fresh process)", "range s"], rows))
    print(results.note(f"Each command ran {args.repeats} times, one after another, each in a fresh process."))
    results.write()


if __name__ == "__main__":
    main()

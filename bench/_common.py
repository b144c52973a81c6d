"""Helpers shared by the benchmark scripts: data, the machine's bf16 matmul rate, table printing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# The KorQuAD 1.0 dev set beside the checkout; KOQA_KORQUAD names it when the checkout lies elsewhere.
KORQUAD = Path(
    os.environ.get("KOQA_KORQUAD")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "korquad-v1-dev" / "KorQuAD_v1.0_dev.json"
)


def korquad_split():
    from koqa.data_tools.readers import read_squad_json
    from koqa.data_tools.split import korquad_article_split

    return korquad_article_split(read_squad_json(KORQUAD).records)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """A --variant argument, NAME:key=value;key=value, as (name, [key=value, ...])."""
    name, _, overrides = text.partition(":")
    if not name or not overrides:
        raise SystemExit(f"--variant needs NAME:key=value[;key=value], got '{text}'")
    return name.strip(), [item.strip() for item in overrides.split(";") if item.strip()]


def prepared_korquad(out: Path) -> Path:
    """KorQuAD preprocessed once into OUT/korquad (training / evaluation articles, as in the notice)."""
    from koqa.preprocess import PreprocessConfig, preprocess

    data = Path(out) / "korquad"
    if not (data / "train.jsonl").is_file():
        preprocess(PreprocessConfig(inputs=[str(KORQUAD)], out=str(data), split="korquad-articles"))
    return data


def koqa_cli(*args: str) -> None:
    """Run a koqa command in a child process, so every training or evaluation run starts with the
    machine's memory free: vLLM's CPU engine sizes its KV cache from the memory left, and a finished
    training run in the same process still holds gigabytes."""
    result = subprocess.run([sys.executable, "-m", "koqa.cli", *args])
    if result.returncode:
        raise SystemExit(f"koqa {' '.join(args)} failed with exit status {result.returncode}")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _sustained_flops(run, flops_per_run: float, repeats: int) -> float:
    """FLOP/s of `run()` after three warm-up calls."""
    for _ in range(3):
        run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return flops_per_run * repeats / (time.perf_counter() - started)


def bf16_matmul_flops(n: int = 2048, repeats: int = 20, trials: int = 3) -> float:
    """The machine's sustained bf16 matmul rate (FLOP/s) with torch's threads: the best of `trials`
    timings, as one timing on a shared machine can come out several percent low."""
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    return max(_sustained_flops(lambda: a @ b, 2 * n**3, repeats) for _ in range(trials))


def layer_weight_shapes(model_dir: str) -> list[tuple[int, int]]:
    """(in, out) features of one decoder layer's weight matmuls: q, k, v, o, gate, up, down."""
    cfg = read_json(Path(model_dir) / "config.json")
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", h // heads)
    return [(h, heads * hd), (h, kv * hd), (h, kv * hd), (heads * hd, h), (h, i), (h, i), (i, h)]


def projection_matmul_flops(model_dir: str, tokens: int = 2048, repeats: int = 5) -> float:
    """bf16 FLOP/s of one layer's weight matmuls at this model's own shapes on `tokens` rows, run back
    to back as in a prefill chunk: what the matmul library reaches on the shapes a backend of this
    model must run, however well it schedules them."""
    import torch

    shapes = layer_weight_shapes(model_dir)
    weights = [torch.randn(n_out, n_in, dtype=torch.bfloat16) for n_in, n_out in shapes]
    inputs = [torch.randn(tokens, n_in, dtype=torch.bfloat16) for n_in, _ in shapes]

    def one_layer():
        for x, w in zip(inputs, weights):
            torch.nn.functional.linear(x, w)

    return _sustained_flops(one_layer, sum(2 * tokens * n_in * n_out for n_in, n_out in shapes), repeats)


def body_and_head_params(model_dir: str) -> tuple[int, int]:
    """(parameters used per token outside the embedding/LM head, LM-head parameters)."""
    cfg = read_json(Path(model_dir) / "config.json")
    per_layer = sum(n_in * n_out for n_in, n_out in layer_weight_shapes(model_dir))
    return cfg["num_hidden_layers"] * per_layer, cfg["hidden_size"] * cfg["vocab_size"]


def attention_flops(model_dir: str, lengths) -> float:
    """Score and value matmul FLOPs of causal self-attention over sequences of the given lengths
    (prompt + generated tokens), with each layer's sliding window where it has one."""
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    heads, layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim", cfg["hidden_size"] // heads)
    kinds = cfg.get("layer_types") or ["full_attention"] * layers
    window = cfg.get("sliding_window") or 0

    def keys_seen(t: int, w: int) -> int:  # sum over positions i < t of min(i + 1, w)
        if not w or t <= w:
            return t * (t + 1) // 2
        return w * (w + 1) // 2 + (t - w) * w

    total = 0
    for t in lengths:
        for kind in kinds:
            total += keys_seen(t, window if kind == "sliding_attention" else 0)
    return 4.0 * heads * hd * total  # QK^T and AV, 2 FLOPs per multiply-add each


def table(headers, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


RESULTS = Path(__file__).resolve().parent / "results"


def machine_stamp(bf16_peak: float | None = None) -> dict:
    """What a benchmark's figures belong to: the CPU, its cores, its bf16 matmul peak, the commit."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
        if subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip():
            commit += " (with uncommitted changes)"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": cores,
        "bf16_matmul_gflops": round((bf16_peak or bf16_matmul_flops()) / 1e9, 1),
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


class Results:
    """A benchmark's tables and notes, printed as they come and written, stamped with the machine, to
    bench/results/<name>.md and <name>.json (docs/results.md is built from those files)."""

    def __init__(self, name: str, title: str):
        self.name, self.title, self.parts = name, title, []

    def table(self, headers, rows, title: str | None = None) -> str:
        """Record a table (the last one recorded under a title replaces an earlier one) and return it as text."""
        self.parts = [p for p in self.parts if not (title and p.get("title") == title)]
        self.parts.append(
            {"title": title, "headers": list(map(str, headers)), "rows": [list(map(str, r)) for r in rows]}
        )
        return table(headers, rows)

    def note(self, text: str) -> str:
        self.parts.append({"note": text})
        return text

    def write(self, bf16_peak: float | None = None) -> Path:
        stamp = machine_stamp(bf16_peak)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{self.name}.json").write_text(
            json.dumps(
                {"name": self.name, "title": self.title, "machine": stamp, "parts": self.parts},
                ensure_ascii=False,
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
        lines = [
            f"## {self.title}",
            "",
            f"`{stamp['command']}` on {stamp['date']}: {stamp['cpu']}, {stamp['cores']} cores, bf16 matmul "
            f"{stamp['bf16_matmul_gflops']} GFLOP/s, commit {stamp['commit']}.",
            "",
        ]
        for part in self.parts:
            if "note" in part:
                lines += [part["note"], ""]
                continue
            if part["title"]:
                lines += [f"**{part['title']}**", ""]
            lines += [markdown_table(part["headers"], part["rows"]), ""]
        path = RESULTS / f"{self.name}.md"
        path.write_text("\n".join(lines), encoding="utf-8")
        print(f"\nwrote {path} and {path.with_suffix('.json').name}")
        return path


def markdown_table(headers, rows) -> str:
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    return "\n".join(
        [
            "| " + " | ".join(map(cell, headers)) + " |",
            "|" + "---|" * len(headers),
            *("| " + " | ".join(map(cell, row)) + " |" for row in rows),
        ]
    )

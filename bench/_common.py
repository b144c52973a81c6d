"""Helpers shared by the benchmark scripts: data, the machine's bf16 matmul rate, table printing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# The KorQuAD 1.0 dev set beside the checkout; KOQA_KORQUAD names it when the checkout lies elsewhere.
KORQUAD = Path(os.environ.get("KOQA_KORQUAD")
               or Path(__file__).resolve().parents[2] / "shared" / "data" / "korquad-v1-dev" / "KorQuAD_v1.0_dev.json")


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
    from koqa.preprocess import PreprocessConfig, run_preprocess

    data = Path(out) / "korquad"
    if not (data / "train.jsonl").is_file():
        run_preprocess([str(KORQUAD)], str(data), PreprocessConfig(split="korquad-articles"))
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
    return max(_sustained_flops(lambda: a @ b, 2 * n ** 3, repeats) for _ in range(trials))


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

"""koqa eval: scoring, resumable answers, span snapping, and the real backends."""

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import DACON_ROWS, default_sigint, write_weights
from koqa.errors import KoqaError
from koqa.eval.backends import GenerationParams, choose_backend, cut_at_stop
from koqa.eval.eval_config import EvalConfig
from koqa.eval.evaluate import evaluate
from koqa.eval.span import snap_to_span

GOLD = {r[0]: r[3] for r in DACON_ROWS}


class ScriptedGenerator:
    """Answers from a table keyed by a word of the question; records what it was asked."""

    name = "scripted"
    streams = False

    def __init__(self, answers, fail_after=None):
        self.answers, self.fail_after, self.calls = answers, fail_after, []

    def generate(self, prompts, params):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("killed")
        self.calls.append(len(prompts))
        return [self.answers.pop(0) + "\n### 다음" for _ in prompts]

    def close(self):
        self.closed = True


def run_eval(data, out, config, adapter=None, generator=None):
    """`evaluate` of `data` into `out` with `config`'s other settings."""
    config = dataclasses.replace(config, data=data, out=out, adapter=[adapter] if adapter else [])
    return evaluate(config, generator=generator)


def _rows(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_scores_reports_and_postprocessing(tmp_path, dacon_train, default_model_dir):
    answers = [GOLD[r[0]] for r in DACON_ROWS]
    answers[1] = "  반도체  "  # partial; stripped
    answers[2] = "부산"  # wrong
    result = run_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(), generator=ScriptedGenerator(answers))
    metrics = result["metrics"]
    assert metrics["n"] == 6
    assert metrics["exact_match"] == pytest.approx(4 / 6)
    assert metrics["f1"] == pytest.approx((4 + 0.75) / 6)  # 반도체 vs 반도체 소재: p=1, r=3/5
    rows = _rows(tmp_path / "out" / "predictions.csv")
    assert list(rows[0]) == ["id", "question", "answer", "prediction", "f1", "em"]
    assert rows[1]["prediction"] == "반도체"  # first line only, stripped
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "worst answers" in report and "부산" in report
    assert (tmp_path / "out" / "f1_hist.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text(encoding="utf-8"))["f1"] == pytest.approx(
        metrics["f1"]
    )


def test_test_data_without_answers_writes_predictions_only(tmp_path, dacon_test, default_model_dir):
    result = run_eval(str(dacon_test), str(tmp_path / "out"), EvalConfig(), generator=ScriptedGenerator(["x"] * 6))
    assert result["metrics"] == {} and list(_rows(tmp_path / "out" / "predictions.csv")[0]) == [
        "id",
        "question",
        "prediction",
    ]
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_crash_loses_nothing_and_the_rerun_skips_finished_answers(tmp_path, dacon_train, default_model_dir):
    config = EvalConfig(chunk_size=2)
    crashing = ScriptedGenerator([GOLD[r[0]] for r in DACON_ROWS], fail_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        run_eval(str(dacon_train), str(tmp_path / "out"), config, generator=crashing)
    logged = (tmp_path / "out" / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(logged) == 1 + 4  # header + two chunks of two
    rest = ScriptedGenerator([GOLD[r[0]] for r in DACON_ROWS[4:]])
    result = run_eval(str(dacon_train), str(tmp_path / "out"), config, generator=rest)
    assert rest.calls == [2] and result["metrics"]["exact_match"] == 1.0


class StreamingGenerator(ScriptedGenerator):
    """Every prompt in flight; answers finish out of order, a few per step, as an engine's would."""

    streams = True

    def generate_stream(self, prompts, params):
        self.calls.append(len(prompts))
        answers = [self.answers.pop(0) + "\n### 다음" for _ in prompts]
        order = list(range(len(prompts)))[::-1]  # the last question finishes first
        for step, start in enumerate(range(0, len(order), 2)):
            if self.fail_after is not None and step >= self.fail_after:
                raise RuntimeError("killed")
            yield [(i, answers[i]) for i in order[start : start + 2]]


def test_streamed_answers_are_saved_as_they_finish_and_a_rerun_skips_them(tmp_path, dacon_train, default_model_dir):
    crashing = StreamingGenerator([GOLD[r[0]] for r in DACON_ROWS], fail_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        run_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(chunk_size=1), generator=crashing)
    saved = [
        json.loads(line)["id"] for line in (tmp_path / "out" / "generations.jsonl").read_text("utf-8").splitlines()[1:]
    ]
    assert crashing.calls == [len(DACON_ROWS)] and saved == [r[0] for r in DACON_ROWS][::-1][:4]
    rest = StreamingGenerator([GOLD[r[0]] for r in DACON_ROWS[:2]])
    result = run_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(), generator=rest)
    assert rest.calls == [2] and result["metrics"]["exact_match"] == 1.0


def test_a_half_written_last_line_is_regenerated(tmp_path, dacon_train, default_model_dir):
    config = EvalConfig(chunk_size=3)
    run_eval(
        str(dacon_train), str(tmp_path / "out"), config, generator=ScriptedGenerator([GOLD[r[0]] for r in DACON_ROWS])
    )
    log = tmp_path / "out" / "generations.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10], encoding="utf-8")  # cut the last answer short
    again = ScriptedGenerator([GOLD[DACON_ROWS[-1][0]]])
    result = run_eval(str(dacon_train), str(tmp_path / "out"), config, generator=again)
    assert again.calls == [1] and result["metrics"]["exact_match"] == 1.0


def test_answers_from_other_settings_are_not_mixed(tmp_path, dacon_train, default_model_dir):
    run_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(), generator=ScriptedGenerator(["x"] * 6))
    with pytest.raises(KoqaError, match="holds answers made with other settings \\(max_length\\)"):
        run_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(max_length=512), generator=ScriptedGenerator([]))


def test_span_snapping():
    context = "한빛전자는 2024년 3분기 매출이 1,200억 원으로 늘었다."
    assert snap_to_span("1,200억원", context) == "1,200억 원"  # ends inside 원으로
    assert snap_to_span("매출", context) == "매출"  # already a span
    assert snap_to_span("", context) == ""
    snapped = snap_to_span("한빛 전자", context)
    assert snapped == "한빛전자"


def test_backend_choice():
    assert cut_at_stop("서울\n### 질문", ["\n"]) == "서울"
    assert choose_backend("hf", None) == "hf"
    with pytest.raises(KoqaError, match="unknown backend 'tgi'; known: auto, hf, vllm"):
        choose_backend("tgi", None)


def test_answers_from_retrained_weights_or_another_dtype_are_not_mixed(tmp_path, dacon_train, default_model_dir):
    adapter = tmp_path / "run" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    write_weights(adapter / "adapter_model.safetensors", b"weights of the first training")
    out, run = tmp_path / "eval", str(tmp_path / "run")
    run_eval(str(dacon_train), str(out), EvalConfig(), adapter=run, generator=ScriptedGenerator(["x"] * 6))
    again = ScriptedGenerator([])
    assert run_eval(str(dacon_train), str(out), EvalConfig(), adapter=run, generator=again)["metrics"]["n"] == 6
    assert again.calls == []  # same weights: every answer is reused
    write_weights(adapter / "adapter_model.safetensors", b"weights of a second training in the same folder")
    with pytest.raises(KoqaError, match="other settings \\(adapter_digest\\)"):
        run_eval(str(dacon_train), str(out), EvalConfig(), adapter=run, generator=ScriptedGenerator([]))
    with pytest.raises(KoqaError, match="other settings \\(adapter_digest, dtype\\)"):
        run_eval(str(dacon_train), str(out), EvalConfig(dtype="float32"), adapter=run, generator=ScriptedGenerator([]))


def test_prefix_adapter_falls_back_to_transformers(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING"}', encoding="utf-8")
    from koqa.runs import peft_type

    assert choose_backend("auto", peft_type(tmp_path)) == "hf"
    with pytest.raises(KoqaError, match="vLLM cannot serve a PREFIX_TUNING adapter|vLLM is not installed"):
        choose_backend("vllm", peft_type(tmp_path))


def test_hf_backend_on_a_tiny_model(tmp_path, dacon_train, tiny_model_dir):
    config = EvalConfig(model=str(tiny_model_dir), backend="hf", max_new_tokens=4, batch_size=4)
    result = run_eval(str(dacon_train), str(tmp_path / "out"), config)
    assert result["metrics"]["n"] == 6 and result["metrics"]["backend"] == "hf"
    assert len(_rows(tmp_path / "out" / "predictions.csv")) == 6


def _koqa(args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "koqa.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        **kwargs,
    )


def _wait_for_lines(path, n, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text(encoding="utf-8").splitlines()) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
def test_killed_or_interrupted_generation_resumes(tmp_path, tiny_model_dir, sig, code, korquad):
    data = tmp_path / "q.json"
    records = json.loads(korquad.read_text(encoding="utf-8"))
    records["data"] = records["data"][1:2]  # one article, 29 questions
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("chunk_size: 2\nbatch_size: 2\nmax_new_tokens: 16\nmax_length: 512\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [
        "eval",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--backend",
        "hf",
        "--config",
        str(cfg),
        "--limit",
        "24",
    ]
    proc = _koqa(args)
    assert _wait_for_lines(out / "generations.jsonl", 3, proc), proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    if sig == signal.SIGINT:
        assert "koqa eval: interrupted. Run the same command again" in err and "Traceback" not in err
    done = len((out / "generations.jsonl").read_text(encoding="utf-8").splitlines()) - 1
    assert 2 <= done < 24
    proc = _koqa(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"({done} already done)" in err
    assert len(_rows(out / "predictions.csv")) == 24


@pytest.mark.vllm
def test_vllm_and_transformers_agree_on_the_default_model(tmp_path, default_model_dir, korquad):
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer

    from koqa.data_tools.readers import read_squad_json
    from koqa.data_tools.split import korquad_article_split
    from koqa.eval.backends import load_generator
    from koqa.prompting import PromptRenderer, PromptTemplate

    _, evaluation = korquad_article_split(read_squad_json(korquad).records)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=1024)
    prompts = [renderer.render(r.context, r.question).ids for r in evaluation[:16]]
    params = GenerationParams(max_new_tokens=24, batch_size=8)
    # float32 on both sides: the test checks that the backends decode the same way; bf16 agreement is
    # measured by bench/eval_backends.py
    hf = load_generator("hf", str(default_model_dir), dtype="float32").generate(prompts, params)
    engine = load_generator("vllm", str(default_model_dir), max_model_len=1100, dtype="float32")
    vllm = engine.generate(prompts, params)
    engine.close()  # not left for the interpreter's exit, when pytest has closed the log streams
    same = sum(a.strip() == b.strip() for a, b in zip(hf, vllm))
    assert same >= 14, list(zip(hf, vllm))


def test_vllm_compile_option_reaches_the_vllm_engine(tmp_path, dacon_train, default_model_dir, monkeypatch):
    import koqa.eval.pipeline as pipeline

    asked = []

    def fake_load_generator(backend, model, adapter=None, **options):
        asked.append((backend, options))
        return ScriptedGenerator([GOLD[r[0]] for r in DACON_ROWS])

    monkeypatch.setattr(pipeline, "choose_backend", lambda name, adapter: name)
    monkeypatch.setattr(pipeline, "load_generator", fake_load_generator)
    run_eval(str(dacon_train), str(tmp_path / "a"), EvalConfig(backend="vllm", vllm_compile=True))
    run_eval(str(dacon_train), str(tmp_path / "b"), EvalConfig(backend="vllm"))
    assert [options.get("compile") for _, options in asked] == [True, None]
    with pytest.raises(KoqaError) as info:  # transformers has no such setting: refused, not dropped
        run_eval(str(dacon_train), str(tmp_path / "c"), EvalConfig(backend="hf", vllm_compile=True))
    assert info.value.field == "vllm_compile" and len(asked) == 2


def test_vllm_engine_gets_koqas_cpu_chunk_size_unless_told_otherwise(tiny_model_dir, monkeypatch):
    vllm = pytest.importorskip("vllm")
    import torch

    from koqa.eval.vllm_backend import CPU_MAX_NUM_BATCHED_TOKENS, VLLMGenerator

    if torch.cuda.is_available():
        pytest.skip("the chunk size is a CPU setting")
    asked = []
    monkeypatch.setattr(vllm, "LLM", lambda **kwargs: asked.append(kwargs))
    VLLMGenerator(str(tiny_model_dir))
    VLLMGenerator(str(tiny_model_dir), max_num_batched_tokens=512)
    assert [kwargs["max_num_batched_tokens"] for kwargs in asked] == [CPU_MAX_NUM_BATCHED_TOKENS, 512]


def test_parallel_settings_reach_the_vllm_engine_and_only_it(tmp_path, dacon_train, tiny_model_dir, monkeypatch):
    import koqa.eval.pipeline as pipeline
    from koqa.settings import build

    asked = []

    def fake_load_generator(backend, model, adapter=None, **options):
        asked.append(options)
        return ScriptedGenerator([GOLD[r[0]] for r in DACON_ROWS])

    monkeypatch.setattr(pipeline, "choose_backend", lambda name, adapter: name)
    monkeypatch.setattr(pipeline, "load_generator", fake_load_generator)
    run_eval(str(dacon_train), str(tmp_path / "a"), EvalConfig(backend="vllm", tensor_parallel_size=4))
    run_eval(str(dacon_train), str(tmp_path / "b"), EvalConfig(backend="vllm", pipeline_parallel_size=2))
    run_eval(str(dacon_train), str(tmp_path / "c"), EvalConfig(backend="vllm"))
    assert [(o.get("tensor_parallel_size"), o.get("pipeline_parallel_size")) for o in asked] == [
        (4, None),
        (None, 2),
        (None, None),
    ]
    with pytest.raises(KoqaError, match="tensor_parallel_size is a vLLM setting"):
        build(EvalConfig, [("cli", {"data": "q.csv", "out": "o", "backend": "hf", "tensor_parallel_size": 2})])
    vllm = pytest.importorskip("vllm")
    import torch

    engines = []
    monkeypatch.setattr(vllm, "LLM", lambda **kwargs: engines.append(kwargs))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # on a CPU they are refused (test_outputs.py)
    from koqa.eval.vllm_backend import VLLMGenerator

    VLLMGenerator(str(tiny_model_dir), tensor_parallel_size=8, pipeline_parallel_size=2)
    VLLMGenerator(str(tiny_model_dir))
    assert (engines[0]["tensor_parallel_size"], engines[0]["pipeline_parallel_size"]) == (8, 2)
    assert "tensor_parallel_size" not in engines[1]


@pytest.mark.vllm
def test_vllm_worker_computes_on_every_core_and_closing_stops_its_processes(tiny_model_dir, monkeypatch):
    pytest.importorskip("vllm")
    import os

    import psutil

    from koqa.eval.backends import load_generator
    from koqa.eval.vllm_backend import ALL_CORES_TO_WORKER_UP_TO

    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    generator = load_generator("vllm", str(tiny_model_dir), max_model_len=300)
    assert generator.generate([[2, 100, 200]], GenerationParams(max_new_tokens=2))
    # multiprocessing's resource tracker, started with the first engine, lives as long as this process
    started = {
        p.pid
        for p in psutil.Process().children(recursive=True)
        if not any("resource_tracker" in part for part in p.cmdline())
    } - before
    assert started  # the engine core runs in its own process
    cores = os.sched_getaffinity(0)
    if 1 < len(cores) <= ALL_CORES_TO_WORKER_UP_TO:
        # vLLM pins each of its worker's compute threads to one core; left to itself it keeps a core
        # for the scheduler and pins every thread to the others.
        pinned = set()
        for pid in started:
            for thread in psutil.Process(pid).threads():
                allowed = os.sched_getaffinity(thread.id)
                if len(allowed) == 1:
                    pinned |= allowed
        assert pinned == cores
    generator.close()

    def running():
        alive = []
        for pid in started:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    deadline = time.time() + 30
    while time.time() < deadline and running():
        time.sleep(0.5)
    assert not running()


def test_a_backend_refuses_options_it_does_not_take(tiny_model_dir):
    from koqa.eval.backends import load_generator

    with pytest.raises(
        KoqaError,
        match="the hf backend takes no option\\(s\\) lora_mode, max_model_len; it takes "
        "device, dtype, model_obj, tokenizer",
    ):
        load_generator("hf", str(tiny_model_dir), max_model_len=512, lora_mode="merge")


def test_a_generator_the_evaluation_opened_is_closed(tmp_path, dacon_train, default_model_dir, monkeypatch):
    import koqa.eval.pipeline as pipeline

    opened = []

    def fake_load_generator(backend, model, adapter=None, **options):
        opened.append(ScriptedGenerator([GOLD[r[0]] for r in DACON_ROWS]))
        return opened[-1]

    monkeypatch.setattr(pipeline, "load_generator", fake_load_generator)
    run_eval(str(dacon_train), str(tmp_path / "out"), EvalConfig(backend="hf"))
    assert len(opened) == 1 and getattr(opened[0], "closed", False)


def test_a_gold_answer_equal_to_the_no_answer_text_is_refused(tmp_path, default_model_dir):
    from conftest import write_csv

    rows = [*DACON_ROWS[:2], ("NOANS", "질문에 답할 수 없으면 답 없음이라고 쓴다.", "무엇이라고 쓰나?", "답 없음")]
    data = write_csv(tmp_path / "d.csv", ["id", "context", "question", "answer"], rows)
    refused = r"d.csv: row 4: field 'answer': the gold answer is the no-answer text '답 없음'"
    with pytest.raises(KoqaError, match=refused):
        run_eval(str(data), str(tmp_path / "out"), EvalConfig(), generator=ScriptedGenerator(["x"] * 3))
    assert not (tmp_path / "out").exists()
    answers = [GOLD["TRAIN_000"], GOLD["TRAIN_001"], "답 없음"]
    result = run_eval(
        str(data), str(tmp_path / "out"), EvalConfig(no_answer="모름"), generator=ScriptedGenerator(answers)
    )
    assert result["metrics"]["exact_match"] == 1.0  # the right answer, not blanked


def test_decomposed_gold_answers_score_against_composed_predictions(tmp_path, default_model_dir):
    import unicodedata

    from conftest import write_csv

    rows = [(i, unicodedata.normalize("NFD", c), q, unicodedata.normalize("NFD", a)) for i, c, q, a in DACON_ROWS]
    data = write_csv(tmp_path / "nfd.csv", ["id", "context", "question", "answer"], rows)
    answers = [GOLD[r[0]] for r in DACON_ROWS]  # composed (NFC), as the nfc post-processing writes them
    result = run_eval(str(data), str(tmp_path / "out"), EvalConfig(), generator=ScriptedGenerator(answers))
    assert result["metrics"]["exact_match"] == 1.0 and result["metrics"]["f1"] == 1.0


def test_a_broken_best_adapter_is_refused_not_replaced_by_the_final_one(tmp_path):
    from koqa.runs import locate_adapter

    run = tmp_path / "run"
    for folder in (run / "adapter", run / "best"):
        folder.mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    write_weights(run / "adapter" / "adapter_model.safetensors", b"final")
    with pytest.raises(KoqaError, match=r"best: the run's best adapter is missing or incomplete .*--checkpoint final"):
        locate_adapter(run)
    assert locate_adapter(run, "final").dir == str(run / "adapter")
    (run / "best" / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    write_weights(run / "best" / "adapter_model.safetensors", b"best")
    assert locate_adapter(run).dir == str(run / "best")


def test_a_vllm_configuration_refusal_is_one_line():
    from koqa.eval.vllm_backend import engine_refusal

    report = (
        "1 validation error for ModelConfig\n  Value error, The model type 'gemma3_text' does not support "
        "float16. Use bfloat16. [type=value_error, input_value=ArgsKwargs((), {}), input_type=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error"
    )
    assert engine_refusal(ValueError(report)) == "The model type 'gemma3_text' does not support float16. Use bfloat16."
    assert engine_refusal(ValueError("max_model_len is too large\nmore")) == "max_model_len is too large"


def test_vllm_refusing_the_model_is_a_one_line_error_that_leaves_nothing(tmp_path, dacon_train, tiny_model_dir):
    pytest.importorskip("vllm")
    out = tmp_path / "out"
    command = ["eval", "--data", str(dacon_train), "--out", str(out), "--model", str(tiny_model_dir)]
    result = subprocess.run(
        [sys.executable, "-m", "koqa.cli", *command, "--backend", "vllm", "--dtype", "float16", "--limit", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "vLLM will not load this model so: " in result.stderr and "float16" in result.stderr
    assert not out.exists()

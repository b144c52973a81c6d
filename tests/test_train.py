"""koqa sft on a tiny random Gemma 3 (real tokenizer): every method, answer-only loss, determinism,
resume after SIGKILL, two-process DDP, and no secret in a run folder."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DACON_ROWS, REPO, default_sigint, sft_command, write_csv
from koqa.time_budget import CLOCK_FILE


def koqa(args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "koqa.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def log_rows(run_dir: Path):
    return [json.loads(x) for x in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def losses(run_dir: Path):
    return [r["loss"] for r in log_rows(run_dir) if "loss" in r]


def adapter_tensors(run_dir: Path):
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("method", ["lora", "qlora", "prefix", "prompt"])
def test_every_method_trains_saves_safetensors_and_evaluates(tmp_path, tiny_model_dir, dacon_train, method):
    run = tmp_path / "run"
    result = koqa(sft_command(dacon_train, run, tiny_model_dir, method=method))
    assert result.returncode == 0, result.stderr[-3000:]
    files = {p.name for p in (run / "adapter").iterdir()}
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    # weights are safetensors everywhere; torch-format files exist only as the Trainer's resume state
    pickled = [p for p in run.rglob("*") if p.suffix in (".bin", ".pkl", ".pickle", ".pt", ".pth")]
    assert all("checkpoints" in p.parts and "adapter_model" not in p.name for p in pickled)
    assert list(run.glob("checkpoints/checkpoint-*/adapter_model.safetensors"))
    assert {"config.yaml", "template.txt", "koqa_run.json", "log.jsonl", "loss_curve.png", "metrics.json"} <= {
        p.name for p in run.iterdir()
    }
    info = json.loads((run / "koqa_run.json").read_text(encoding="utf-8"))
    assert info["method"] == method and info["seed"] == 42 and "torch" in info["versions"]
    assert len(losses(run)) == 2
    if sys.platform == "linux":  # memory now and its high-water mark, which can only be the larger
        assert all(0 < r["rss_mb"] <= r["max_rss_mb"] for r in log_rows(run) if "loss" in r)
    ev = koqa(
        ["eval", "--data", str(dacon_train), "--adapter", str(run), "--out", str(tmp_path / "ev"), "--backend", "hf"]
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == len(DACON_ROWS) and metrics["backend"] == "hf"


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_answer_only_loss_equals_the_full_loss(tiny_model_dir, method):
    """The fast loss (LM head at answer (row, position) pairs only) is the ordinary token-mean
    cross-entropy, also with prompt tuning's virtual tokens in front of the sequence."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PromptTuningConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLConfig

    from koqa.train.trainer import AnswerOnlySFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = []
    for _, context, question, answer in DACON_ROWS[:4]:
        prompt = tok(f"{context}\n{question}\n").input_ids
        ans = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
        examples.append({"input_ids": prompt + ans, "completion_mask": [0] * len(prompt) + [1] * len(ans)})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    args = TRLConfig(
        output_dir="/tmp/unused-koqa-test",
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        completion_only_loss=True,
        max_length=None,
    )
    virtual = 3 if method == "prompt" else 0
    peft_config = (
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual)
        if method == "prompt"
        else LoraConfig(task_type="CAUSAL_LM", r=4)
    )
    trainer = AnswerOnlySFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tok,
        peft_config=peft_config,
        answer_only=True,
        virtual_tokens=virtual,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] != -100).sum() < batch["attention_mask"].sum() / 4  # most positions are prompt
    answer_columns = [set((row[1:] != -100).nonzero().flatten().tolist()) for row in batch["labels"]]
    assert len(set(map(frozenset, answer_columns))) > 1  # rows answer at different positions
    model = trainer.model
    with torch.no_grad():
        fast = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, virtual:]
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    assert fast.item() == pytest.approx(reference.item(), rel=1e-4)


def test_same_config_and_seed_give_the_same_loss_curve(tmp_path, tiny_model_dir, dacon_train):
    curves = []
    for name in ("a", "b"):
        result = koqa(sft_command(dacon_train, tmp_path / name, tiny_model_dir, steps=3))
        assert result.returncode == 0, result.stderr[-3000:]
        curves.append(losses(tmp_path / name))
    assert curves[0] == curves[1] and len(curves[0]) == 3


def test_resume_after_sigkill_ends_at_the_uninterrupted_adapter(tmp_path, tiny_model_dir, dacon_train):
    def command(out):
        return sft_command(
            dacon_train, out, tiny_model_dir, "--set", "save_steps=2", "--set", "lora_dropout=0", steps=6
        )

    reference = koqa(command(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "koqa.cli", *command(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "adapter").exists()
    again = koqa(command(run))
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr
    # as if the killed run had trained for 1,000 s before its checkpoint: the clock must carry on from there
    clock_file = run / "checkpoints" / "checkpoint-2" / CLOCK_FILE
    assert json.loads(clock_file.read_text())["trained_seconds"] > 0
    clock_file.write_text(json.dumps({"trained_seconds": 1000.0}))
    resumed = koqa([*command(run), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["resumed_from_step"] == 2
    assert 1000 < summary["train_seconds"] <= 1000 + summary["train_seconds_since_resume"] + 0.2
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [r["trained_s"] >= 1000 for r in rows] == [False, False, True, True, True, True], [
        (r["step"], r["trained_s"]) for r in rows
    ]
    tokens = [r["num_tokens"] for r in rows]
    assert all(a < b for a, b in zip(tokens, tokens[1:])), tokens  # the count goes on after the resume
    ref, res = adapter_tensors(tmp_path / "ref"), adapter_tensors(run)
    assert ref.keys() == res.keys()
    for key in ref:
        assert (ref[key] - res[key]).abs().max().item() < 1e-4, key
    ref_loss = json.loads((tmp_path / "ref" / "metrics.json").read_text())["train_loss"]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 6
    assert losses(run)[-1] == pytest.approx(losses(tmp_path / "ref")[-1], rel=1e-3)
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == [1, 2, 3, 4, 5, 6]  # rows the killed run wrote after its checkpoint are dropped
    assert ref_loss > 0


def test_resume_refuses_other_settings_or_data_and_keeps_the_run(tmp_path, tiny_model_dir, dacon_train):
    run = tmp_path / "run"

    def command(data, steps, *extra):
        return sft_command(data, run, tiny_model_dir, "--set", "save_steps=1", *extra, steps=steps)

    first = koqa(command(dacon_train, 2))
    assert first.returncode == 0, first.stderr[-3000:]
    saved = (run / "config.yaml").read_text()

    other = koqa(command(dacon_train, 3, "--resume", "--set", "lora_r=8", "--set", "learning_rate=0.01"))
    assert other.returncode == 2, other.stderr[-3000:]
    error = other.stderr.strip().splitlines()[-1]
    assert "--resume with settings other than the run's own" in error
    assert "lora_r 4 -> 8" in error and "learning_rate" in error and "max_steps" not in error
    assert f"--config {run / 'config.yaml'}" in error and "Traceback" not in other.stderr

    fewer = write_csv(tmp_path / "fewer.csv", ["id", "context", "question", "answer"], DACON_ROWS[:-1])
    changed_data = koqa(command(fewer, 3, "--resume"))
    assert changed_data.returncode == 2 and "training data (train_examples" in changed_data.stderr
    assert (run / "config.yaml").read_text() == saved  # the refused runs wrote nothing
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2

    longer = koqa(command(dacon_train, 3, "--resume"))  # only the length changes
    assert longer.returncode == 0, longer.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["global_step"] == 3 and summary["resumed_from_step"] == 2


def test_two_process_ddp_run(tmp_path, tiny_model_dir, dacon_train):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    config = REPO / "koqa" / "configs" / "accelerate" / "ddp_cpu_2proc.yaml"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "-m",
        "koqa.cli",
        *sft_command(dacon_train, tmp_path / "ddp", tiny_model_dir),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["global_step"] == 2
    log = (tmp_path / "ddp" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    assert len([x for x in log if '"loss"' in x]) == 2  # one process writes the log


def test_a_hub_token_never_reaches_logs_or_run_files(tmp_path, tiny_model_dir, dacon_train):
    secret = "hf_" + "Zq3" * 12
    env = dict(os.environ, HF_TOKEN=secret, HUGGING_FACE_HUB_TOKEN=secret)
    run = tmp_path / "run"
    result = koqa(["-v", *sft_command(dacon_train, run, tiny_model_dir, steps=1)], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert secret not in result.stdout + result.stderr
    for path in run.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_no_example_fits(tmp_path, tiny_model_dir, dacon_train):
    result = koqa(
        sft_command(
            dacon_train,
            tmp_path / "r",
            tiny_model_dir,
            "--set",
            "max_length=64",
            "--set",
            "max_answer_tokens=60",
            steps=1,
        )
    )
    assert result.returncode == 2 and "raise max_length" in result.stderr


def test_merge_writes_a_plain_model_with_the_adapter_folded_in(tmp_path, tiny_model_dir, tiny_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tiny_run
    merged = koqa(["merge", "--adapter", str(run), "--out", str(tmp_path / "merged")])
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    ids = torch.tensor([[2, 1000, 2000, 3000, 4000]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        plain = base(ids).logits
        peft_logits = PeftModel.from_pretrained(base, run / "adapter")(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(ids).logits
    assert (peft_logits - plain).abs().max() > 1e-3  # the adapter changed something
    assert (merged_logits.float() - peft_logits.float()).abs().max() < 5e-2


def test_ctrl_c_during_training_exits_cleanly_and_resume_finishes(tmp_path, tiny_model_dir, dacon_train):
    command = sft_command(dacon_train, tmp_path / "run", tiny_model_dir, "--set", "save_steps=1", steps=40)
    proc = subprocess.Popen(
        [sys.executable, "-m", "koqa.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "run" / "checkpoints").glob("checkpoint-2")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "koqa sft: interrupted. Run the same command with --resume to continue." in err
    assert "Traceback" not in err
    resumed = koqa([*command, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["global_step"] == 40


@pytest.mark.gpu
def test_qlora_trains_on_cuda(tmp_path, tiny_model_dir, dacon_train):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    run = tmp_path / "run"
    result = koqa(sft_command(dacon_train, run, tiny_model_dir, method="qlora"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_counterfactual_copies_join_the_training_set(tmp_path, tiny_model_dir):
    rows = [
        ("S1", "부산에서 2003년에 영화제가 열렸다. 위원장은 이영희였다.", "영화제가 열린 연도는?", "2003년"),
        ("S2", "부산에서 2003년에 영화제가 열렸다. 위원장은 이영희였다.", "영화제의 위원장은 누구인가?", "이영희"),
        ("S3", "대구에서 2011년에 육상 대회가 열렸다. 위원장은 박민수였다.", "육상 대회가 열린 연도는?", "2011년"),
        (
            "S4",
            "대구에서 2011년에 육상 대회가 열렸다. 위원장은 박민수였다.",
            "육상 대회의 위원장은 누구인가?",
            "박민수",
        ),
    ]
    data = write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], rows)
    run = tmp_path / "run"
    result = koqa(
        sft_command(data, run, tiny_model_dir, "--set", "shared_context=true", "--set", "counterfactual_copies=2")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run / "koqa_run.json").read_text(encoding="utf-8"))
    # each passage's year and name swapped with the other passage's, twice
    assert info["counterfactual"] == {
        "original_questions": 4,
        "questions": 8,
        "passages": 4,
        "answer_kept": {},
        "no_copy": {},
    }
    # with one candidate a kind, both copies of a passage are the same text, so they share one sequence
    assert info["train_questions"] == 12 and info["train_examples"] == 4
    bad = koqa(sft_command(data, tmp_path / "bad", tiny_model_dir, "--set", "counterfactual_copies=-1"))
    assert bad.returncode == 2 and "counterfactual_copies must be 0 or more" in bad.stderr


def test_synthetic_questions_join_the_training_set(tmp_path, tiny_model_dir):
    passage = (
        "김철수는 서울에서 태어나 한국은행에 입사한다. 그 회의에는 12명이 참석했다. "
        "이 학교는 1946년에 문을 열었다. 그는 1950년 파리로 떠났다."
    )
    other = "부산에서 2003년에 영화제가 열렸다. 영화제의 위원장은 이영희였다."
    data = write_csv(
        tmp_path / "train.csv",
        ["id", "context", "question", "answer"],
        [("S1", passage, "김철수가 태어난 곳은?", "서울"), ("S2", other, "영화제의 위원장은?", "이영희")],
    )
    run = tmp_path / "run"
    result = koqa(
        sft_command(
            data, run, tiny_model_dir, "--set", "shared_context=true", "--set", "synthetic_questions=2", steps=1
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run / "koqa_run.json").read_text(encoding="utf-8"))
    # two of the four sentences on the first passage (the cap), one on the second (its other sentence
    # asks nothing: its only noun-particle pairs are 영화제의 and 위원장은)
    assert info["synthetic"]["questions"] == 3 and info["synthetic"]["passages"] == 2
    assert info["synthetic"]["original_questions"] == 2
    assert info["train_questions"] == 5 and info["train_examples"] == 2  # they share their passages
    bad = koqa(sft_command(data, tmp_path / "bad", tiny_model_dir, "--set", "synthetic_questions=-1"))
    assert bad.returncode == 2 and "synthetic_questions must be 0 or more" in bad.stderr


def test_dora_loraplus_and_neftune(tmp_path, tiny_model_dir, dacon_train):
    run = tmp_path / "dora"
    result = koqa(
        sft_command(
            dacon_train,
            run,
            tiny_model_dir,
            "--set",
            "use_dora=true",
            "--set",
            "loraplus_lr_ratio=4",
            "--set",
            "save_steps=1",
            steps=1,
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    assert any("lora_magnitude_vector" in name for name in adapter_tensors(run))
    import torch

    state = torch.load(run / "checkpoints" / "checkpoint-1" / "optimizer.pt", weights_only=True)
    rates = sorted({group["initial_lr"] for group in state["param_groups"] if group["params"]})
    assert len(rates) == 2 and rates[1] == pytest.approx(4 * rates[0])  # B matrices (and magnitudes) at 4x

    first_loss = {}
    for name, extra in (("plain", []), ("noisy", ["--set", "neftune_noise_alpha=200"])):
        result = koqa(sft_command(dacon_train, tmp_path / name, tiny_model_dir, *extra, steps=1))
        assert result.returncode == 0, result.stderr[-3000:]
        first_loss[name] = losses(tmp_path / name)[0]
    assert first_loss["noisy"] != first_loss["plain"]  # same seed and data: only the embedding noise differs

    bad = koqa(
        sft_command(dacon_train, tmp_path / "bad", tiny_model_dir, "--set", "loraplus_lr_ratio=4", method="prompt")
    )
    assert bad.returncode == 2 and "loraplus_lr_ratio is a setting of lora, qlora, not of prompt" in bad.stderr

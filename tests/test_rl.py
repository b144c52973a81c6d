"""`koqa rl`: GRPO on the leaderboard F1. The shared-prompt computation equals the unshared one (float64),
the reward is koqa's metric, and the command trains, evaluates, keeps best/, resumes and refuses bad
settings in one line."""

from contextlib import nullcontext
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")


def lora_model(tiny_model_dir, attention):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64, attn_implementation=attention)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # a LoRA already trained: its gradients reach both matrices
    return model


def trl_batch(prompts, answers, pad_id):
    """GRPOTrainer's layout: prompts padded on the left, answers on the right."""
    width, keep = max(map(len, prompts)), max(map(len, answers))
    ids = [[pad_id] * (width - len(p)) + p + a + [pad_id] * (keep - len(a)) for p, a in zip(prompts, answers)]
    mask = [[0] * (width - len(p)) + [1] * (len(p) + len(a)) + [0] * (keep - len(a)) for p, a in zip(prompts, answers)]
    return torch.tensor(ids), torch.tensor(mask), keep


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_shared_prompt_loss_and_gradients_equal_the_unshared_ones(tiny_model_dir, attention):
    from trl import GRPOTrainer

    from koqa.train.rl_trainer import shared_prompt_logps

    model = lora_model(tiny_model_dir, attention)
    g = torch.Generator().manual_seed(0)
    # two questions, three and two sampled answers of different lengths; the first prompt is longer than
    # the sliding window (64), so the sliding layers must cut the same keys in both computations
    prompts = [
        torch.randint(10, 5000, (90,), generator=g).tolist(),
        torch.randint(10, 5000, (23,), generator=g).tolist(),
    ]
    lengths = [[4, 1, 7], [3, 5]]
    rows_p, rows_a = [], []
    for prompt, group in zip(prompts, lengths):
        for n in group:
            rows_p.append(prompt)
            rows_a.append(torch.randint(10, 5000, (n,), generator=g).tolist())
    ids, mask, keep = trl_batch(rows_p, rows_a, pad_id=0)
    weights = torch.randn(len(rows_a), keep, generator=g, dtype=torch.float64)
    answer_mask = mask[:, -keep:].bool()

    def run(compute):
        model.zero_grad()
        logps, entropy = compute()
        loss = (logps * weights)[answer_mask].sum() + entropy[answer_mask].sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), entropy.detach(), grads

    plain = SimpleNamespace(accelerator=SimpleNamespace(autocast=nullcontext, is_main_process=True))

    def trl_unshared():  # TRL's own method, each sample a whole sequence; a question at a time, as
        # left padding in float64 gives NaN in transformers' masked rows, which no real run computes in
        parts, first = [], 0
        for group in lengths:
            rows = slice(first, first + len(group))
            start = int(mask[rows].any(dim=0).nonzero()[0])  # where this question's prompt starts
            parts.append(
                GRPOTrainer._get_per_token_logps_and_entropies(
                    plain, model, ids[rows, start:], mask[rows, start:], keep, compute_entropy=True
                )[:2]
            )
            first += len(group)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    unshared = run(trl_unshared)
    shared = run(lambda: shared_prompt_logps(model, ids, mask, keep, 0, temperature=0.7, compute_entropy=True))
    # the model runs in float64, koqa's head too; TRL's fused head accumulates the vocabulary projection
    # in float32 whatever the dtype, so the two agree to float32 rounding (a wrong mask is off by 0.3)
    torch.testing.assert_close(
        shared[0][answer_mask].double(), unshared[0][answer_mask].double(), rtol=1e-6, atol=1e-5
    )
    torch.testing.assert_close(
        shared[1][answer_mask].double(), unshared[1][answer_mask].double(), rtol=1e-6, atol=1e-5
    )
    assert shared[2].keys() == unshared[2].keys() and len(shared[2]) == 12  # 3 modules x 2 layers x A, B
    for name in unshared[2]:
        torch.testing.assert_close(shared[2][name], unshared[2][name], rtol=1e-4, atol=2e-6)


def test_sampling_from_a_shared_prompt_sees_what_each_answer_would_alone(tiny_model_dir):
    from koqa.train.rl_trainer import sample_answers

    model = lora_model(tiny_model_dir, "eager")
    model.eval()
    prompt = torch.randint(10, 5000, (80,), generator=torch.Generator().manual_seed(3)).tolist()
    torch.manual_seed(0)
    shared = sample_answers(model, prompt, 4, max_new_tokens=6, temperature=1.0, eos_ids={1}, pad_id=0)
    torch.manual_seed(0)
    plain = sample_answers(model, prompt, 4, max_new_tokens=6, temperature=1.0, eos_ids={1}, pad_id=0, shared=False)
    assert shared == plain  # the same draws from the same distributions
    assert len({tuple(a) for a in shared}) > 1  # and the draws differ between answers


def test_the_reward_terms_are_the_leaderboard_and_honest_answers():
    from koqa.data_tools.normalize import build_normalizer
    from koqa.eval.eval_config import EvalConfig
    from koqa.eval.metrics import score_one
    from koqa.train.reward import AnswerReader, reward_functions

    read = AnswerReader(
        build_normalizer(EvalConfig.__dataclass_fields__["answer_normalization"].default_factory()), "없음"
    )
    f1, grounded, length = reward_functions(read)
    context = "한국은행은 기준금리를 연 3.25%로 동결했다."
    completions = ["3.25%", "연 3.25%로\n다음 줄", "3.5%", "", "기준금리를 연 3.25%로 동결했다고 한다 아주 길게"]
    columns = {"context": [context] * 5, "answers": [["3.25%"]] * 5}
    assert f1(None, completions, **columns) == [score_one(read(c, context), ["3.25%"])["f1"] for c in completions]
    assert f1(None, completions, **columns)[0] == 1.0 and 0 < f1(None, completions, **columns)[1] < 1
    assert grounded(None, completions, **columns) == [1.0, 1.0, 0.0, 0.0, 0.0]  # 3.5% is not in the passage
    # scored as the metric reads answers (punctuation and spaces out): 연325로 is 2 characters past 325
    assert length(None, completions, **columns) == [0.0, pytest.approx(-2 / 3), 0.0, 0.0, -1.0]
    # unanswerable: the no-answer text (read as no answer) earns every term, any answer loses them
    none = {"context": [context] * 2, "answers": [[], []]}
    assert f1(None, ["없음", "3.25%"], **none) == [1.0, 0.0]
    assert grounded(None, ["없음", "3.25%"], **none) == [1.0, 0.0]
    assert length(None, ["없음", "3.25%"], **none) == [0.0, -1.0]
    # the three terms of a step read each answer once (the answer normaliser can analyse morphemes)
    counted = AnswerReader(read.normalize, "없음")
    calls = []
    counted.normalize = lambda text: calls.append(text) or read.normalize(text)
    for term in reward_functions(counted):
        term(None, completions, **columns)
    assert len(calls) == len(set(completions))


def test_the_run_says_when_reward_and_validation_f1_part():
    from transformers import TrainerControl, TrainerState

    from koqa.train.rl_trainer import RewardDivergence

    def feed(check, rows):
        control = TrainerControl()
        for step, row in enumerate(rows, start=1):
            check.on_log(None, TrainerState(global_step=step), control, logs=row)
        return control

    parting = [{"reward": 0.1}, {"eval_f1": 0.5}, {"reward": 0.3}, {"eval_f1": 0.4}, {"reward": 0.5}, {"eval_f1": 0.3}]
    check = RewardDivergence(patience=2, stop=True)
    assert feed(check, parting).should_training_stop and check.diverged
    check = RewardDivergence(patience=2, stop=False)  # said, not stopped
    assert not feed(check, parting).should_training_stop and check.diverged
    check = RewardDivergence(patience=3, stop=True)
    assert not feed(check, parting).should_training_stop and not check.diverged
    together = [
        {"reward": 0.1},
        {"eval_f1": 0.5},
        {"reward": 0.3},
        {"eval_f1": 0.6},
        {"reward": 0.5},
        {"eval_f1": 0.55},
    ]
    check = RewardDivergence(patience=1, stop=True)  # F1 fell once, but the reward rose with it before
    assert feed(check, together).should_training_stop  # ... the last evaluation parts them: patience 1 stops
    check = RewardDivergence(patience=2, stop=True)
    assert not feed(check, together).should_training_stop  # not two in a row


def koqa(*args, timeout=900):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "koqa.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


RL_SMALL = ["--set", "num_generations=2", "--set", "questions_per_step=2", "--set", "max_answer_tokens=6"]


def test_koqa_rl_trains_evaluates_keeps_the_best_and_resumes(tmp_path, tiny_run):
    import json

    from conftest import DACON_ROWS, write_csv

    data = write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], DACON_ROWS)
    val = write_csv(tmp_path / "val.csv", ["id", "context", "question", "answer"], DACON_ROWS[:2])
    out = tmp_path / "rl"
    common = ["rl", "--adapter", tiny_run, "--data", data, "--validation", val, "--out", out, *RL_SMALL]
    common += ["--set", "eval_steps=1", "--set", "logging_steps=1", "--set", "save_steps=2", "--set", "kl_weight=0.1"]
    common += ["--set", "report_to=[tensorboard]"]
    first = koqa(*common, "--max-steps", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "best: step 1, validation F1" in first.stdout
    info = json.loads((out / "koqa_run.json").read_text(encoding="utf-8"))
    assert info["parent"]["adapter"] == str(tiny_run / "adapter") and info["method"] == "lora"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows if "eval_f1" in r] == [1, 2]
    trained = [r for r in rows if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2]
    assert {"rewards/f1/mean", "rewards/grounded/mean", "rewards/length/mean", "reward", "kl"} <= set(trained[0])
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))  # the tracker got the run
    for folder in (out / "adapter", out / "best"):  # the trained adapter alone, not the frozen reference
        assert (folder / "adapter_model.safetensors").is_file() and not (folder / "ref").exists()

    again = koqa(*common, "--max-steps", 3, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]  # step 3 added, none repeated
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["global_step"] == 3

    # and koqa eval takes the new run as it takes a koqa sft run
    evaluated = koqa("eval", "--data", val, "--adapter", out, "--backend", "hf", "--out", tmp_path / "ev")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--set", "num_generations=1"], "num_generations"),
        (["--set", "temperature=0"], "temperature"),
        (["--set", "reward_f1=0", "--set", "reward_grounded=0", "--set", "reward_length=0"], "reward_f1"),
        (["--set", "kl_weight=-1"], "kl_weight"),
        (["--set", "lr_scheduler=exotic"], "lr_scheduler"),
        (["--set", "no_such_setting=1"], "no_such_setting"),
    ],
)
def test_bad_rl_settings_are_one_line_errors(tmp_path, tiny_run, extra, field):
    from conftest import DACON_ROWS, write_csv

    data = write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], DACON_ROWS)
    result = koqa("rl", "--adapter", tiny_run, "--data", data, "--validation", data, "--out", tmp_path / "o", *extra)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and field in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


def test_what_koqa_rl_cannot_start_from_is_refused_in_one_line(tmp_path, tiny_run):
    import shutil

    from conftest import DACON_ROWS, write_csv

    data = write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer"], DACON_ROWS)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_run / "adapter", bare)  # an adapter without its run folder: no template, no model
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "run folder": ["--adapter", bare, "--validation", data, "--out", tmp_path / "o1"],
        "held-out": ["--adapter", tiny_run, "--out", tmp_path / "o2"],  # no validation questions
        "is the --adapter": ["--adapter", tiny_run, "--validation", data, "--out", tiny_run],  # the run it starts from
        "inside the --adapter": ["--adapter", tiny_run, "--validation", data, "--out", tiny_run / "rl"],
        "not a koqa run": ["--adapter", empty, "--validation", data, "--out", tmp_path / "o3"],
    }
    for said, args in cases.items():
        result = koqa("rl", "--data", data, *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert said in result.stderr, result.stderr
    assert (tiny_run / "adapter" / "adapter_model.safetensors").is_file() and not (
        tiny_run / "checkpoints-rl"
    ).exists()


def test_every_rl_setting_reaches_the_grpo_arguments(tmp_path):
    from koqa.runs import RunFolder
    from koqa.train.rl import grpo_arguments
    from koqa.train.rl_config import RLConfig

    config = RLConfig(adapter="a", data="d", out="o", num_generations=3, questions_per_step=5, temperature=0.7)
    config.kl_weight, config.reward_f1, config.reward_grounded, config.reward_length = 0.2, 0.5, 0.3, 0.1
    config.learning_rate, config.lr_scheduler, config.warmup_ratio, config.weight_decay = 1e-4, "linear", 0.1, 0.01
    config.max_steps, config.save_steps, config.save_total_limit, config.logging_steps = 7, 3, 4, 2
    config.seed, config.gradient_checkpointing, config.epochs = 5, True, 2.0
    args = grpo_arguments(config, RunFolder(tmp_path / "run"), torch.float32, max_new_tokens=9)
    assert args.per_device_train_batch_size == 15 and args.num_generations == 3  # 5 questions x 3 answers a step
    assert (args.temperature, args.beta, args.reward_weights) == (0.7, 0.2, [0.5, 0.3, 0.1])
    assert (args.learning_rate, args.lr_scheduler_type, args.warmup_steps, args.weight_decay) == (
        1e-4,
        "linear",
        0.1,
        0.01,
    )
    assert (args.max_steps, args.save_steps, args.save_total_limit, args.logging_steps) == (7, 3, 4, 2)
    assert (args.seed, args.gradient_checkpointing, args.num_train_epochs) == (5, True, 2.0)
    assert args.max_completion_length == 9 and args.output_dir == str(tmp_path / "run" / "checkpoints")

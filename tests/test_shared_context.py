"""Shared-context training sequences: the questions on one passage share one copy of it, and the
loss is exactly the loss of the one-question prompts."""

from __future__ import annotations

import json

import pytest

from conftest import DACON_ROWS, sft_command

PASSAGE = (
    "한빛전자는 2024년 3분기 매출이 1,200억 원으로 전년보다 12% 늘었다고 밝혔다. 회사는 반도체 소재 판매가 "
    "늘었다고 설명했다. 김서연 재무담당 부사장은 4분기에도 해외 고객사 주문이 이어질 것이라고 말했다. "
    "회사는 충북 청주에 2,000억 원을 들여 새 공장을 짓고 2026년 상반기에 가동할 계획이다."
)
QUESTIONS = [
    ("3분기 매출은?", "1,200억 원"),
    ("매출 증가를 이끈 것은?", "반도체 소재"),
    ("재무담당 부사장은 누구인가?", "김서연"),
    ("새 공장은 어디에 짓는가?", "충북 청주"),
    ("새 공장 투자액은?", "2,000억 원"),
]


def records():
    from koqa.data_tools.records import QARecord

    rows = [
        QARecord(id=f"P{i}", context=PASSAGE, question=q, answers=[a], answer_starts=[PASSAGE.index(a)])
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    rows += [
        QARecord(id=i, context=c, question=q, answers=[a], answer_starts=[c.index(a)]) for i, c, q, a in DACON_ROWS
    ]
    return rows


def renderer_for(model_dir, max_length=256, template="ko_instruct"):
    from transformers import AutoTokenizer

    from koqa.prompting import PromptRenderer, PromptTemplate

    tok = AutoTokenizer.from_pretrained(model_dir)
    return PromptRenderer(tok, PromptTemplate.load(template), max_length=max_length, max_answer_tokens=32)


def test_questions_on_one_passage_share_one_sequence(tiny_model_dir):
    from koqa.shared_context import shared_context_examples
    from koqa.train.data import build_examples

    renderer = renderer_for(tiny_model_dir)
    shared, excluded = shared_context_examples(records(), renderer)
    single, _ = build_examples(records(), renderer)
    assert not excluded and len(single) == len(records()) == 11
    # 5 questions on the passage, 2 on one Dacon context, 4 alone: 6 sequences instead of 11
    assert len(shared) == 6
    assert sum(map(len, (e["input_ids"] for e in shared))) < 0.6 * sum(map(len, (e["input_ids"] for e in single)))
    # the same answer tokens are trained on, and each branch restarts its positions after the passage
    answers = sorted(tuple(t for t, c in zip(e["input_ids"], e["completion_mask"]) if c) for e in shared)
    assert sum(len(a) for a in answers) == sum(sum(e["completion_mask"]) for e in single)
    longest = max(shared, key=lambda e: len(e["input_ids"]))
    resets = [
        i
        for i in range(1, len(longest["position_ids"]))
        if longest["position_ids"][i] <= longest["position_ids"][i - 1]
    ]
    assert len(resets) == 4 and len({longest["position_ids"][i] for i in resets}) == 1


def test_max_questions_and_windows_split_a_passage(tiny_model_dir):
    from koqa.shared_context import shared_context_examples

    shared, _ = shared_context_examples(records()[:5], renderer_for(tiny_model_dir), max_questions=2)
    assert len(shared) == 3  # 2 + 2 + 1
    # a token budget too small for the whole passage: questions whose answers lie far apart part,
    # and every sequence's passage window holds each of its answers
    renderer = renderer_for(tiny_model_dir, max_length=110)
    short, excluded = shared_context_examples(records()[:5], renderer)
    assert not excluded and len(short) > 1
    for example in short:
        ids, positions = example["input_ids"], example["position_ids"]
        resets = [i for i in range(1, len(positions)) if positions[i] <= positions[i - 1]]
        # branches restart at the passage's length; a lone branch ends the sequence after its question
        prefix_len = positions[resets[0]] if resets else example["completion_mask"].index(1)
        passage = renderer.tokenizer.decode(ids[:prefix_len])
        answers = renderer.tokenizer.decode(
            [t for t, c in zip(ids, example["completion_mask"]) if c], skip_special_tokens=True
        )
        assert answers and all(a in passage for _, a in QUESTIONS if a in answers)


def test_a_template_with_the_question_before_the_context_is_refused(tiny_model_dir):
    from koqa.errors import KoqaError
    from koqa.shared_context import shared_context_examples

    with pytest.raises(KoqaError, match="question before the context"):
        shared_context_examples(records(), renderer_for(tiny_model_dir, template="ko_question_first"))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_context_loss_equals_the_one_question_loss(tiny_model_dir, attention):
    """The trainer's loss on shared-context sequences equals the token-mean cross-entropy of the
    one-question prompts, with SDPA (boolean masks) and eager attention (additive masks, koqa's CPU
    default); the tiny model's sliding window (64) is shorter than the prompts, so the sliding-window
    mask is exercised as well. In float64, so that only a wrong mask or wrong positions could move
    the loss (a branch that sees another branch moves it by ~4e-5 of itself)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig

    from koqa.shared_context import SharedContextCollator, shared_context_examples
    from koqa.train.data import build_examples
    from koqa.train.trainer import AnswerOnlySFTTrainer

    renderer = renderer_for(tiny_model_dir)
    tok = renderer.tokenizer
    shared, _ = shared_context_examples(records(), renderer)
    single, _ = build_examples(records(), renderer)
    assert max(len(e["input_ids"]) for e in single) > 64  # longer than the sliding window
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64, attn_implementation=attention)
    assert model.config._attn_implementation == attention
    args = TRLConfig(
        output_dir="/tmp/unused-koqa-test",
        per_device_train_batch_size=len(shared),
        report_to=[],
        use_cpu=True,
        completion_only_loss=True,
        max_length=None,
    )
    trainer = AnswerOnlySFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(shared),
        processing_class=tok,
        peft_config=LoraConfig(task_type="CAUSAL_LM", r=4),
        data_collator=SharedContextCollator(tok.pad_token_id),
        shared_context=True,
    )
    peft_model = trainer.model
    with torch.no_grad():  # LoRA B starts at zero: give the adapter weight so it is part of the check
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == len(shared) and "position_ids" in batch
    peft_model.eval()
    with torch.no_grad():
        fast = trainer.compute_loss(peft_model, dict(batch))
        total, count = 0.0, 0
        for example in single:
            ids = torch.tensor([example["input_ids"]])
            labels = torch.tensor(
                [[t if c else -100 for t, c in zip(example["input_ids"], example["completion_mask"])]]
            )
            logits = peft_model(input_ids=ids).logits
            total += torch.nn.functional.cross_entropy(
                logits[0, :-1].float(), labels[0, 1:], ignore_index=-100, reduction="sum"
            ).item()
            count += int((labels[0, 1:] != -100).sum())
    assert fast.item() == pytest.approx(total / count, rel=1e-6)


def test_shared_context_training_run_counts_questions(tmp_path, tiny_model_dir, dacon_train):
    from test_train import koqa

    run = tmp_path / "run"
    result = koqa(
        sft_command(dacon_train, run, tiny_model_dir, "--set", "shared_context=true", "--set", "batch_size=5", steps=1)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    # six questions on five contexts: one step of five sequences trains on all six
    assert summary["global_step"] == 1 and summary["examples"] == 5
    assert summary["questions_seen"] == len(DACON_ROWS) == 6
    info = json.loads((run / "koqa_run.json").read_text(encoding="utf-8"))
    assert info["train_examples"] == 5 and info["train_questions"] == 6 and info["train_tokens"] > 0
    bad = koqa(
        sft_command(
            dacon_train, tmp_path / "p", tiny_model_dir, "--set", "shared_context=true", steps=1, method="prefix"
        )
    )
    assert bad.returncode != 0 and "shared_context works with lora and qlora" in bad.stderr
    bad = koqa(
        sft_command(
            dacon_train,
            tmp_path / "q",
            tiny_model_dir,
            "--set",
            "shared_context=true",
            "--set",
            "answer_only_logits=false",
            steps=1,
        )
    )
    assert bad.returncode != 0 and "shared_context needs answer_only_logits" in bad.stderr


@pytest.mark.parametrize("window", [None, 3])
def test_the_boolean_mask_allows_what_the_additive_mask_leaves_at_zero(window):
    """SDPA gets the boolean form of the shared-context mask, eager attention the additive one: the
    same keys for every query (two branches, padding, and a sliding window)."""
    import torch

    from koqa.shared_context import branch_attention_mask

    position_ids = torch.tensor([[0, 1, 2, 3, 4, 3, 4, 5, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8]])
    padding = torch.tensor([[1] * 8 + [0], [1] * 9])
    additive = branch_attention_mask(position_ids, padding, torch.bfloat16, window)
    boolean = branch_attention_mask(position_ids, padding, torch.bfloat16, window, boolean=True)
    assert boolean.dtype == torch.bool and boolean.shape == additive.shape == (2, 1, 9, 9)
    assert torch.equal(boolean, additive == 0)
    assert not boolean[0, 0, 5, 3] and boolean[0, 0, 5, 2]  # the second branch does not see the first

import pytest
from transformers import AutoTokenizer

from koqa.errors import KoqaError
from koqa.prompting import PromptRenderer, PromptTemplate, available_templates


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def test_shipped_templates():
    assert {"ko_instruct", "ko_question_first", "ko_plain", "ko_extractive", "ko_chat.chat"} <= set(
        available_templates()
    )
    assert PromptTemplate.load("ko_chat.chat").chat


@pytest.mark.parametrize("name", [n for n in available_templates() if not n.endswith(".chat")])
def test_every_plain_template_keeps_question_and_cue_when_cut(tokenizer, name):
    template = PromptTemplate.load(name)
    renderer = PromptRenderer(tokenizer, template, max_length=160, max_answer_tokens=16)
    prompt = renderer.render("대한민국의 경제 성장률은 높았다. " * 200, "성장률은 어떠했나?")
    text = tokenizer.decode(prompt.ids, skip_special_tokens=True)
    tail = template.text.split("{question}")[-1]  # the answer cue
    assert prompt.context_cut and len(prompt.ids) <= 160 - 16
    assert text.endswith("성장률은 어떠했나?" + tail)


def test_long_context_is_cut_but_question_and_cue_survive(tokenizer):
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=200, max_answer_tokens=16)
    context = "대한민국의 경제 성장률은 높았다. " * 200
    prompt = renderer.render(context, "성장률은 어떠했나?")
    text = tokenizer.decode(prompt.ids)
    assert prompt.context_cut and len(prompt.ids) <= 200 - 16
    assert text.startswith("<bos>다음 글을 읽고")
    assert text.endswith("### 질문\n성장률은 어떠했나?\n\n### 답변\n")


def test_training_window_keeps_the_answer(tokenizer):
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=160, max_answer_tokens=8)
    context = "가나다라마바사 " * 150 + "정답은 한빛전자이다. " + "아자차카타파하 " * 150
    start = context.index("한빛전자")
    prompt = renderer.render(context, "정답은?", answer_start=start, answer_len=4)
    assert prompt.answer_in_window and "한빛전자" in tokenizer.decode(prompt.ids)
    head = renderer.render(context, "정답은?")  # evaluation: the head is kept
    assert "한빛전자" not in tokenizer.decode(head.ids)


def test_context_char_cut_centres_on_the_answer(tokenizer):
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=2048, max_context_chars=100)
    context = "가" * 1000 + "한빛전자" + "나" * 1000
    prompt = renderer.render(context, "?", answer_start=1000, answer_len=4)
    assert prompt.context_cut and "한빛전자" in tokenizer.decode(prompt.ids)


def test_answer_ids_end_with_eos(tokenizer):
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"))
    ids = renderer.answer_ids("서울")
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == "서울"


def test_prompt_length_agrees_with_batched_frame_lengths(tokenizer):
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_question_first"), max_length=4096)
    context, question = "한국은행은 기준금리를 동결했다.", "기준금리는?"
    ctx_tokens = len(tokenizer(context, add_special_tokens=False).input_ids)
    assert (
        renderer.frame_lengths([question])[0] + ctx_tokens
        == renderer.prompt_length(context, question)
        == len(renderer.render(context, question).ids)
    )


def test_template_errors(tmp_path, tokenizer):
    bad = tmp_path / "bad.txt"
    bad.write_text("질문: {question}", encoding="utf-8")
    with pytest.raises(KoqaError, match="lacks the placeholder {context}"):
        PromptTemplate.load(str(bad))
    with pytest.raises(KoqaError, match="unknown prompt template 'nope'"):
        PromptTemplate.load("nope")
    renderer = PromptRenderer(tokenizer, PromptTemplate.load("ko_chat.chat"))
    if not tokenizer.chat_template:
        with pytest.raises(KoqaError, match="chat template, but the model's tokenizer has none"):
            renderer.render("맥락", "질문")
    with pytest.raises(KoqaError, match="raise max_length"):
        PromptRenderer(tokenizer, PromptTemplate.load("ko_instruct"), max_length=40).render("맥락", "질문")

"""Training sequences in which the questions about one passage share a single copy of it.

KorQuAD asks about six questions per passage, Dacon's news QA several per article. Rendered one
question at a time, the passage is most of every sequence, and the model reads it once per
question. Here one sequence holds the instruction and the passage once, then each question with
its answer as a branch:

    [instruction + passage] [question 1 + answer 1] [question 2 + answer 2] ...

Each branch attends to the passage and to itself only, and its position ids continue from the end
of the passage, so every answer token sees exactly the tokens and positions of its own one-question
prompt (sliding-window layers included): the loss is the one-question loss, with the passage
computed once instead of once per question.
"""

from __future__ import annotations

from koqa.errors import KoqaError


def _answer_token_span(offsets, start: int, length: int) -> tuple[int, int] | None:
    """First and last context token overlapping the answer's characters."""
    first = next((i for i, (_, e) in enumerate(offsets) if e > start), None)
    if first is None:
        return None
    last = next((i for i, (_, e) in enumerate(offsets) if e >= start + length), len(offsets) - 1)
    return first, max(first, last)


def shared_context_examples(records, renderer, max_questions: int = 8) -> tuple[list[dict], list[dict]]:
    """Examples (input_ids, completion_mask, position_ids), one per passage window, and the records
    excluded with why. Questions on the same passage are grouped while their answers fit in one
    window of the context budget that `renderer.max_length` leaves; at most `max_questions` a window."""
    if max_questions < 1:
        raise KoqaError(
            f"max_questions_per_context must be at least 1, got {max_questions}", field="max_questions_per_context"
        )
    before_a, _ = renderer.frame_ids("가")
    before_b, _ = renderer.frame_ids("나")
    if before_a != before_b:
        raise KoqaError(
            f"template '{renderer.template.name}' puts the question before the context, so questions cannot share it",
            field="template",
            fix="use ko_instruct, or shared_context: false",
        )
    before = before_a
    by_context: dict[str, list] = {}
    for r in records:
        by_context.setdefault(r.context, []).append(r)

    examples, excluded = [], []
    for context, group in by_context.items():
        enc = renderer.tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        ctx, offsets = enc.input_ids, enc["offset_mapping"]
        items = []  # (first, last, budget, after ids, answer ids, record)
        for r in group:
            answer, start = renderer.target(r)
            if start is None:  # unanswerable: any window of the context will do; the head is first
                span = (0, 0)
            else:
                span = _answer_token_span(offsets, start, len(answer)) if start >= 0 else None
            if span is None:
                excluded.append({"id": r.id, "reason": "answer not found in the context"})
                continue
            _, after = renderer.frame_ids(r.question)
            budget = renderer.max_length - len(before) - len(after) - renderer.max_answer_tokens
            if budget < 16 or span[1] - span[0] + 1 > budget:
                excluded.append({"id": r.id, "reason": "answer not in the context window kept under max_length"})
                continue
            items.append((span[0], span[1], budget, after, renderer.answer_ids(answer), r))
        items.sort(key=lambda item: (item[0], item[1]))
        while items:
            members = [items.pop(0)]
            while items and len(members) < max_questions:
                first = members[0][0]
                last = max(m[1] for m in members + [items[0]])
                if last - first + 1 > min(m[2] for m in members + [items[0]]):
                    break
                members.append(items.pop(0))
            window = min(m[2] for m in members)
            lo = 0
            if len(ctx) > window:
                centre = (members[0][0] + max(m[1] for m in members)) // 2
                lo = max(0, min(centre - window // 2, len(ctx) - window))
            prefix = before + ctx[lo : lo + window]
            ids, completion, positions = list(prefix), [0] * len(prefix), list(range(len(prefix)))
            for _, _, _, after, answer_ids, _ in members:
                branch = after + answer_ids
                ids += branch
                completion += [0] * len(after) + [1] * len(answer_ids)
                positions += range(len(prefix), len(prefix) + len(branch))
            examples.append({"input_ids": ids, "completion_mask": completion, "position_ids": positions})
    return examples, excluded


def branch_attention_mask(position_ids, padding_mask, dtype, sliding_window: int | None = None, boolean: bool = False):
    """Additive [batch, 1, seq, seq] mask: causal, a branch sees the passage and itself, padding
    sees only itself. With `sliding_window`, keys further back than the window (in positions) are
    masked too, as a sliding-window layer does. `boolean`: True where a query may attend instead,
    which SDPA reads faster than an additive mask (eager attention adds the mask: it needs floats)."""
    import torch

    seq = position_ids.shape[1]
    idx = torch.arange(seq, device=position_ids.device)
    resets = torch.zeros_like(position_ids, dtype=torch.bool)
    resets[:, 1:] = position_ids[:, 1:] <= position_ids[:, :-1]  # the second and later branches start here
    # every branch restarts at the passage's end, so the position at the first reset is the passage's
    # length; a row without resets has one branch, which may see everything before it anyway
    first_reset = torch.where(
        resets.any(dim=1), resets.float().argmax(dim=1), torch.zeros_like(resets[:, 0], dtype=torch.long)
    )
    passage_len = torch.where(
        resets.any(dim=1), position_ids.gather(1, first_reset[:, None])[:, 0], torch.full_like(first_reset, seq)
    )
    in_passage = idx[None, :] < passage_len[:, None]
    branch = torch.where(in_passage, 0, 1 + resets.long().cumsum(dim=1))  # 0: instruction and passage
    causal = idx[None, :, None] >= idx[None, None, :]
    same_or_prefix = (branch[:, None, :] == 0) | (branch[:, :, None] == branch[:, None, :])
    real = padding_mask.bool()
    allowed = causal & same_or_prefix & real[:, None, :] & real[:, :, None]
    if sliding_window:
        allowed &= (position_ids[:, :, None] - position_ids[:, None, :]) < sliding_window
    allowed |= torch.eye(seq, dtype=torch.bool, device=position_ids.device)[None]  # padding rows: no NaN
    if boolean:
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def model_attention_masks(model_config, position_ids, padding_mask, dtype):
    """What the model's forward takes as `attention_mask` for shared-context sequences: one mask,
    or one per layer type where the model mixes full and sliding-window attention (Gemma 3).
    Boolean where the model attends through SDPA, additive in `dtype` otherwise."""
    config = model_config.get_text_config()
    boolean = getattr(model_config, "_attn_implementation", None) == "sdpa"

    def mask(window=None):
        return branch_attention_mask(position_ids, padding_mask, dtype, window, boolean=boolean)

    layer_types = set(getattr(config, "layer_types", None) or [])
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return mask()
    if layer_types == {"full_attention"}:
        return mask()
    if "full_attention" in layer_types:
        return {"full_attention": mask(), "sliding_attention": mask(window)}
    return mask(window)


class SharedContextCollator:
    """Right-pads shared-context examples: input_ids, labels (answer tokens only; from labels or
    completion_mask), position_ids and the 2D padding mask; the trainer turns the last two into the
    branch mask."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "position_ids": [], "attention_mask": []}
        for f in features:
            ids, n = list(f["input_ids"]), len(f["input_ids"])
            pad = width - n
            batch["input_ids"].append(ids + [self.pad_token_id] * pad)
            labels = (
                list(f["labels"]) if "labels" in f else [t if c else -100 for t, c in zip(ids, f["completion_mask"])]
            )  # TRL builds labels itself
            batch["labels"].append(labels + [-100] * pad)
            batch["position_ids"].append(list(f["position_ids"]) + [0] * pad)
            batch["attention_mask"].append([1] * n + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

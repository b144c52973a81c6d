"""Ensembles of adapters: `koqa eval --adapter RUN_A --adapter RUN_B ...`.

Each member answers every question greedily with its own prompt template (its own `koqa eval`
folder, OUT/member-1, OUT/member-2..., resumable as usual). Where the members' answers differ, every
member scores every candidate answer: the log-probability of the answer's tokens and the end of
sequence after its own prompt, the way training tokenised the answers. The candidate with the
highest sum over members wins (a product of the members' distributions, restricted to the answers
they proposed); a tie keeps the earlier member's answer. Where all members agree nothing is scored.

The scores are appended to OUT/ensemble_scores.jsonl as they are computed, keyed by the members'
settings like the answer logs, so a re-run after a crash scores only what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from koqa.data_tools.normalize import build_normalizer
from koqa.errors import KoqaError
from koqa.eval.answer_log import AnswerLog
from koqa.eval.eval_config import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, EvalConfig
from koqa.eval.metrics import score_one
from koqa.eval.pipeline import generate_answers, open_generator, postprocess, prepare_eval, read_eval_records
from koqa.eval.report import score_and_report

log = logging.getLogger(__name__)


def candidate_answers(answers: list[str]) -> list[str]:
    """The members' answers without repeats, in member order."""
    return list(dict.fromkeys(answers))


def choose(candidates: list[str], member_scores: list[dict[str, float]]) -> str:
    """The candidate with the highest summed log-probability; the first one on a tie."""
    best, best_score = candidates[0], None
    for candidate in candidates:
        total = sum(scores[candidate] for scores in member_scores)
        if best_score is None or total > best_score:
            best, best_score = candidate, total
    return best


def _score_key(member: int, qid: str, candidate: str) -> str:
    return json.dumps([member, qid, candidate], ensure_ascii=False)


def refuse_repeated_members(members: list, adapters: list[str]) -> None:
    """The same adapter named twice in two spellings (a trailing slash, the run or its adapter/ folder,
    a link, a copy): the same weights on the same base counted twice are not an ensemble."""
    seen: dict[str, str] = {}
    for member, given in zip(members, adapters):
        where = member.fingerprint["adapter_digest"]
        if where in seen:
            raise KoqaError(
                f"is the same adapter as '{seen[where]}' (the same weights on the same base model)",
                file=given,
                field="adapter",
                fix="name each run once",
            )
        seen[where] = given


def evaluate_ensemble(config: EvalConfig, generators: list | None = None) -> dict:
    """Evaluate each of `config.adapter`, then combine their answers; `generators` (one per adapter,
    objects with `.generate` and `.score`) replace the backends, for tests."""
    adapters = config.adapter
    if len(adapters) < 2:
        raise KoqaError("an ensemble needs at least two adapters", field="adapter")
    normalize = build_normalizer(config.answer_normalization)
    records = read_eval_records(config)
    out = Path(config.out)
    members = [prepare_eval(records, config, adapter) for adapter in adapters]
    refuse_repeated_members(members, adapters)

    # 1. every member's own answers (and its own scored folder, to compare against)
    answers = []
    member_metrics = []
    for k, (member, adapter) in enumerate(zip(members, adapters), start=1):
        member_out = out / f"member-{k}"
        generated = generate_answers(member, member_out, config, generators[k - 1] if generators else None)
        raw, no_answer = generated["raw"], member.renderer.no_answer
        answers.append({r.id: postprocess(raw[r.id], r.context, normalize, "off", no_answer) for r in records})
        own = {r.id: postprocess(raw[r.id], r.context, normalize, config.span, no_answer) for r in records}
        scored = score_and_report(
            records, own, member_out, config, member.settings(config), {"backend": generated["backend"]}
        )
        member_metrics.append(
            {
                "adapter": str(adapter),
                **{name: value for name, value in scored["metrics"].items() if name in ("f1", "exact_match")},
            }
        )

    # 2. where they differ, every member scores every candidate
    candidates = {r.id: candidate_answers([a[r.id] for a in answers]) for r in records}
    disputed = [r for r in records if len(candidates[r.id]) > 1]
    fingerprint = {
        "members": [m.fingerprint for m in members],
        "answer_normalization": list(config.answer_normalization),
    }
    score_log = AnswerLog(out / "ensemble_scores.jsonl", fingerprint)
    scored, started = 0, time.perf_counter()
    for k, member in enumerate(members, start=1):
        todo = [(r, c) for r in disputed for c in candidates[r.id] if _score_key(k, r.id, c) not in score_log.done]
        if not todo:
            continue
        log.info("member %d scores %d candidate answers on %d questions", k, len(todo), len(disputed))
        owned = generators is None
        generator = open_generator(member, config) if owned else generators[k - 1]
        try:
            size = config.chunk_size or DEFAULT_CHUNK_SIZE
            for start in range(0, len(todo), size):
                chunk = todo[start : start + size]
                prompts = [member.renderer.render(r.context, r.question).ids for r, _ in chunk]
                continuations = [member.renderer.answer_ids(c) for _, c in chunk]
                logprobs = generator.score(prompts, continuations, batch_size=config.batch_size or DEFAULT_BATCH_SIZE)
                score_log.append([(_score_key(k, r.id, c), repr(float(lp))) for (r, c), lp in zip(chunk, logprobs)])
                scored += len(chunk)
        finally:
            if owned:
                generator.close()

    # 3. the winners, post-processed like any answer, scored and reported
    chosen = {}
    for r in records:
        options = candidates[r.id]
        if len(options) == 1:
            chosen[r.id] = options[0]
        else:
            per_member = [
                {c: float(score_log.done[_score_key(k, r.id, c)]) for c in options} for k in range(1, len(members) + 1)
            ]
            chosen[r.id] = choose(options, per_member)
    predictions = {r.id: postprocess(chosen[r.id], r.context, lambda text: text, config.span) for r in records}
    extra = {
        "members": member_metrics,
        "agreement": round(1 - len(disputed) / len(records), 4),
        "disputed": len(disputed),
        "scored": scored,
        "scoring_seconds": round(time.perf_counter() - started, 2) if scored else None,
    }
    if all(r.has_gold for r in records):
        # the best any choice among the candidates could do: how much room the members leave
        extra["oracle_f1"] = sum(max(score_one(c, r.answers)["f1"] for c in candidates[r.id]) for r in records) / len(
            records
        )
    settings = {
        "data": config.data,
        "adapters": ", ".join(map(str, adapters)),
        "combination": "sum of log-probabilities",
        "span": config.span,
        "answer_normalization": ",".join(config.answer_normalization),
    }
    return score_and_report(records, predictions, out, config, settings, extra)

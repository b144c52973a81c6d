"""The vLLM side of span-constrained decoding: a per-request logits processor the engine loads by name
(`VLLM_SPAN_PROCESSOR`), applying koqa.eval.span_constraint to each request that carries its passage."""

from __future__ import annotations

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from koqa.eval.span_constraint import SpanConstraint, token_texts_for

PASSAGE_KEY = "koqa_span_passage"


class VLLMSpanLogitsProcessor(AdapterLogitsProcessor):
    """Masks each request's logits to the tokens that keep its answer a span of the passage in
    SamplingParams.extra_args[PASSAGE_KEY]; requests without one are left alone."""

    def __init__(self, vllm_config, device, is_pin_memory):
        super().__init__(vllm_config, device, is_pin_memory)
        self.tokenizer_path = vllm_config.model_config.tokenizer

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        passage = (params.extra_args or {}).get(PASSAGE_KEY)
        if passage is None:
            return None
        constraint = SpanConstraint(passage, token_texts_for(self.tokenizer_path))

        def process(output_ids, logits):
            constraint.follow(output_ids)
            return constraint.mask(logits)

        return process

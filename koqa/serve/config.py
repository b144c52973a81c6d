"""`koqa serve` settings: one dataclass, its fields the command's flags (see koqa/settings.py)."""

import os
import re
from dataclasses import dataclass

from koqa.data_tools.normalize import DEFAULT_STEPS, STEPS
from koqa.eval.backends import BACKEND_CHOICES
from koqa.eval.eval_config import SPAN_MODES, EvalConfig, backend_problems
from koqa.runs import CHECKPOINTS
from koqa.runtime import DTYPES
from koqa.settings import NON_NEGATIVE, POSITIVE, Rule, setting

LOOPBACK = ("127.0.0.1", "::1", "localhost")
# the transformers backend's batcher; vLLM's async engine schedules every question as it arrives
DEFAULT_MAX_BATCH = 64
DEFAULT_BATCH_WAIT_MS = 5.0


PORT: Rule = ("a port number from 0 (any free port) to 65535", lambda v: 0 <= v <= 65535)
ENV_NAME: Rule = ("an environment variable name", lambda v: bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)))


@dataclass
class ServeConfig:
    adapter: str | None = setting(help="a `koqa sft` or `koqa rl` run folder (or adapter folder) to serve")
    checkpoint: str = setting("best", help="of a run trained with eval_steps: the best adapter, or the final one",
                              choices=CHECKPOINTS)  # fmt: skip
    model: str | None = setting(help="base model (default: the run's, else the embedded Gemma 3 270M)")
    backend: str = setting("auto", help="generation backend, chosen as koqa eval chooses", choices=BACKEND_CHOICES)
    host: str = setting("127.0.0.1", help="address to listen on; other than loopback only with a bearer token")
    port: int = setting(8000, help="TCP port; 0 takes any free port and prints it", check=PORT)
    token_env: str = setting(
        "KOQA_SERVE_TOKEN",
        help="environment variable holding the bearer token that /answer and /metrics ask for; none while it is unset",
        check=ENV_NAME,
    )
    template: str | None = setting(help="prompt template (default: the run's, else ko_instruct)")
    max_length: int | None = setting(help="prompt token limit (default: the run's, else 1024)", check=POSITIVE)
    max_new_tokens: int | None = setting(help="answer token limit (default: the run's, else 32)", check=POSITIVE)
    no_answer: str | None = setting(help="the answer that means 'no answer' (default: the run's, else 답 없음)")
    span: str = setting("off", help="as koqa eval --span", choices=SPAN_MODES)
    answer_normalization: list[str] = setting(
        list(DEFAULT_STEPS), flag="--normalize", choices=tuple(STEPS), help="comma-separated answer post-processing"
    )
    dtype: str = setting("auto", help="compute dtype; auto is bf16 where the CPU or GPU has it", choices=DTYPES)
    batch_size: int | None = setting(
        help="transformers backend: questions a forward pass (default 16)", check=POSITIVE
    )
    max_batch: int | None = setting(
        help=f"transformers backend: questions generated in one call at most (default {DEFAULT_MAX_BATCH})",
        check=POSITIVE,
    )
    batch_wait_ms: float | None = setting(
        help="transformers backend: how long a question may wait for others to fill its batch "
        f"(default {DEFAULT_BATCH_WAIT_MS:g})",
        check=NON_NEGATIVE,
    )
    max_queue: int = setting(
        1024,
        help="questions waiting (transformers) or in the engine (vLLM) at most; beyond, requests get 503",
        check=POSITIVE,
    )
    max_body_bytes: int = setting(4_000_000, help="largest request body accepted", check=POSITIVE)
    max_questions: int = setting(256, help="questions in one request at most", check=POSITIVE)
    max_context_chars: int = setting(20_000, help="longest context accepted, in characters", check=POSITIVE)
    max_question_chars: int = setting(1_000, help="longest question accepted, in characters", check=POSITIVE)
    drain_seconds: float = setting(
        60.0, help="on SIGTERM: how long requests in flight may take to finish", check=POSITIVE
    )

    def eval_config(self) -> EvalConfig:
        """The `koqa eval` settings the same answers come from."""
        return EvalConfig(
            adapter=[self.adapter] if self.adapter else [],
            checkpoint=self.checkpoint,
            model=self.model,
            backend=self.backend,
            batch_size=self.batch_size,
            max_length=self.max_length,
            max_new_tokens=self.max_new_tokens,
            no_answer=self.no_answer,
            template=self.template,
            span=self.span,
            answer_normalization=list(self.answer_normalization),
            dtype=self.dtype,
        )

    def unhonoured(self, backend: str) -> list[tuple[str, str]]:
        """The settings `backend` would not honour, each (field, why): checked for an explicit
        --backend when the settings are read, and again once `auto` has chosen one."""
        return backend_problems(self.eval_config(), backend) + self.batcher_problems(backend)

    def batcher_problems(self, backend: str) -> list[tuple[str, str]]:
        """The batcher's settings, which only the transformers backend honours."""
        return [
            (key, f"{key} is a transformers (hf) setting; vLLM's async engine schedules every question")
            for key in ("max_batch", "batch_wait_ms")
            if backend == "vllm" and getattr(self, key) is not None
        ]

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.backend != "auto":
            found += self.unhonoured(self.backend)
        if self.host not in LOOPBACK and not os.environ.get(self.token_env):
            found.append(
                (
                    "host",
                    f"listening on {self.host} without a bearer token; set {self.token_env} first, or keep 127.0.0.1",
                )
            )
        if self.max_batch is not None and self.max_batch > self.max_queue:
            found.append(("max_batch", "is larger than max_queue, so a batch could never fill"))
        return found

"""The child process of an evaluation during training with eval_backend vllm (koqa.train.evaluation):
merge the adapter of the moment into a copy of the base model, answer the prompts with a vLLM engine
on it, write the answers, exit (so that the engine's memory goes back with the process).

    python -m koqa.train.vllm_answers SPEC.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(spec_file: str) -> None:
    from koqa.atomic import write_json
    from koqa.eval.backends import GenerationParams
    from koqa.eval.vllm_backend import VLLMGenerator
    from koqa.merging import MergeConfig, merge

    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    merged = merge(MergeConfig(adapter=spec["adapter"], out=spec["merged"], model=spec["model"]))
    longest = max(len(p) for p in spec["prompts"])
    generator = VLLMGenerator(merged, max_model_len=longest + spec["max_new_tokens"])
    try:
        answers = generator.generate(spec["prompts"], GenerationParams(max_new_tokens=spec["max_new_tokens"]))
    finally:
        generator.close()
    write_json(spec["answers"], answers)


if __name__ == "__main__":
    main(sys.argv[1])

"""`koqa export`: a run's adapter merged into its base and written where other runtimes can use it: a
GGUF file for llama.cpp and Ollama (with the prompt template recorded and a Modelfile beside it) or a
merged safetensors folder. With `--check DATA` the written model is read back by an independent reader
(transformers' GGUF loader, which dequantises) and scored against the unexported model on the same
questions, with `koqa compare`'s paired intervals.

OUT/
  model-<quant>.gguf | model/   the exported model
  Modelfile                     Ollama: the template with the passage as the system text, the question as the prompt
  template.txt                  koqa's prompt template (also in the GGUF under koqa.prompt_template)
  koqa_export.json              what was exported, from what, its size and sha256 (written last)
  check/                        with --check: unexported/, exported/ (koqa eval folders), reloaded/, compare/
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from koqa.atomic import atomic_folder, write_json, write_text
from koqa.errors import KoqaError
from koqa.eval.backends import BACKEND_CHOICES
from koqa.eval.eval_config import KORQUAD_SPLITS, EvalConfig
from koqa.export.gguf_file import QUANTS
from koqa.model_store import file_sha256
from koqa.outputs import check_out, own_output
from koqa.runs import CHECKPOINTS
from koqa.settings import POSITIVE, setting

log = logging.getLogger(__name__)
EXPORT_MARKER = "koqa_export.json"  # in every folder koqa export writes: the one kind of --out it replaces
FORMATS = ("gguf", "hf")
DEFAULT_QUANT = "q8_0"


@dataclass
class ExportConfig:
    out: str | None = setting(help="output folder", required=True)
    adapter: str | None = setting(help="a `koqa sft` or `koqa rl` run folder (LoRA or QLoRA) to merge and export")
    checkpoint: str = setting("best", help="of a run trained with eval_steps: the best adapter, or the final one",
                              choices=CHECKPOINTS)  # fmt: skip
    model: str | None = setting(help="base model (default: the run's, else the embedded Gemma 3 270M)")
    format: str = setting(
        "gguf", help="a GGUF file (llama.cpp, Ollama) or a merged safetensors folder", choices=FORMATS
    )
    quant: str | None = setting(
        help=f"GGUF tensor type of the 2-D weights (default {DEFAULT_QUANT}; 1-D ones stay f32)", choices=tuple(QUANTS)
    )
    check: str | None = setting(help="questions to score the exported model on, against the unexported one")
    korquad_split: str | None = setting(help="with --check on the KorQuAD dev JSON: those articles only",
                                        choices=KORQUAD_SPLITS)  # fmt: skip
    limit: int | None = setting(help="with --check: the first N questions only", check=POSITIVE)
    backend: str = setting("auto", help="with --check: the koqa eval backend both models answer with",
                           choices=BACKEND_CHOICES)  # fmt: skip

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.format == "hf" and self.quant:
            found.append(("quant", "quant is a GGUF setting; --format hf writes the merged weights as they are"))
        for key in ("korquad_split", "limit"):
            if getattr(self, key) is not None and not self.check:
                found.append((key, f"{key} chooses the --check questions: give --check DATA"))
        return found

    @property
    def quant_name(self) -> str:
        return self.quant or DEFAULT_QUANT


def _merged(prepared):
    """The base model with the run's LoRA merged in, at the dtype koqa eval runs it."""
    import torch

    from koqa.merging import merged_model
    from koqa.runtime import pick_device, pick_dtype

    dtype = pick_dtype("auto", pick_device())
    return merged_model(prepared.adapter, prepared.model, dtype if dtype != torch.float16 else None)


def modelfile(prepared, gguf_name: str) -> str:
    """An Ollama Modelfile whose template is koqa's: the passage as the system text, the question as
    the prompt."""
    before, after = prepared.renderer.frame_texts("{{ .Prompt }}")
    if '"""' in before + after or before.count("{{") + after.count("{{") != 1:
        raise KoqaError('the prompt template holds """ or {{, which a Modelfile cannot carry', field="template")
    return "\n".join(
        [
            "# Written by koqa export. Ask with the passage as the system text and the question as the prompt:",
            "#   ollama create koqa-qa -f Modelfile",
            "#   curl localhost:11434/api/generate -d "
            '\'{"model": "koqa-qa", "system": "<passage>", "prompt": "<question>", "stream": false}\'',
            "# koqa keeps the first non-empty line of the answer and reads its no-answer phrase "
            f"({prepared.renderer.no_answer}) as no answer.",
            f"FROM ./{gguf_name}",
            f'TEMPLATE """{before}{{{{ .System }}}}{after}"""',
            "PARAMETER temperature 0",
            f"PARAMETER num_predict {prepared.max_new_tokens}",
            f"PARAMETER num_ctx {prepared.max_length + prepared.max_new_tokens}",
            "",
        ]
    )


def _write(config: ExportConfig, prepared, work: Path) -> dict:
    from transformers import AutoConfig

    from koqa.export.gguf_file import architecture_of, write_gguf

    if config.format == "gguf":  # a family GGUF cannot hold is refused before the model loads
        architecture_of(AutoConfig.from_pretrained(prepared.model))
    model = _merged(prepared)
    template = prepared.renderer.template.text
    write_text(work / "template.txt", template)
    if config.format == "hf":
        from transformers import AutoTokenizer

        model.save_pretrained(work / "model", safe_serialization=True)
        AutoTokenizer.from_pretrained(prepared.model).save_pretrained(work / "model")
        return {"file": "model"}
    name = f"model-{config.quant_name}.gguf"
    metadata = {
        "prompt_template": template,
        "max_length": prepared.max_length,
        "max_answer_tokens": prepared.max_new_tokens,
        "no_answer": prepared.renderer.no_answer,
    }
    written = write_gguf(model, Path(prepared.model), work / name, config.quant_name, metadata)
    write_text(work / "Modelfile", modelfile(prepared, name))
    return {"file": name, **written, "bytes": (work / name).stat().st_size, "sha256": file_sha256(work / name)}


def export(config: ExportConfig) -> dict:
    from koqa.eval.pipeline import prepare_eval
    from koqa.runs import adapter_digest

    check_out(config.out, [("--adapter", config.adapter), ("--model", config.model), ("--check", config.check)],
              command="export")  # fmt: skip
    out = own_output(config.out, EXPORT_MARKER, "a folder koqa export wrote", "export")
    eval_config = EvalConfig(adapter=[config.adapter] if config.adapter else [], checkpoint=config.checkpoint,
                             model=config.model)  # fmt: skip
    prepared = prepare_eval([], eval_config, config.adapter)
    with atomic_folder(out) as work:
        result = _write(config, prepared, work)
        result.update(
            format=config.format,
            base_model=prepared.model,
            adapter=prepared.adapter_dir,
            adapter_digest=adapter_digest(prepared.adapter_dir, prepared.model) if prepared.adapter else None,
        )
        write_json(work / EXPORT_MARKER, result)
    log.info("exported to %s", out / result["file"])
    if config.check:
        result["check"] = check_export(config, prepared, out / result["file"])
        write_json(out / EXPORT_MARKER, result)
    return {**result, "out": str(out)}


def _reloaded(exported: Path, target: Path) -> Path:
    """The exported file read back by transformers' own GGUF reader (weights dequantised, tokenizer
    rebuilt from the file's vocabulary) and saved as a plain folder koqa eval can load."""
    if exported.is_dir():
        return exported
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("reading %s back with transformers' GGUF loader", exported.name)
    model = AutoModelForCausalLM.from_pretrained(exported.parent, gguf_file=exported.name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(exported.parent, gguf_file=exported.name)
    model.hf_quantizer = None  # dequantised on reading: plain weights from here on
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def check_export(config: ExportConfig, prepared, exported: Path) -> dict:
    """F1 / EM of the exported model against the unexported one on --check's questions (OUT/check/)."""
    from koqa.eval.compare import CompareConfig, compare
    from koqa.eval.evaluate import evaluate

    folder = exported.parent / "check"
    reloaded = _reloaded(exported, folder / "reloaded")
    common = dict(data=config.check, korquad_split=config.korquad_split, limit=config.limit, backend=config.backend)
    unexported = EvalConfig(out=str(folder / "unexported"), adapter=[config.adapter] if config.adapter else [],
                            checkpoint=config.checkpoint, model=config.model, **common)  # fmt: skip
    evaluate(unexported)
    evaluate(
        EvalConfig(
            out=str(folder / "exported"),
            model=str(reloaded),
            template=str(exported.parent / "template.txt"),
            max_length=prepared.max_length,
            max_new_tokens=prepared.max_new_tokens,
            no_answer=prepared.renderer.no_answer,
            **common,
        )
    )
    result = compare(CompareConfig(runs=[unexported.out, str(folder / "exported")], out=str(folder / "compare")))
    row = result["runs"][0]
    return {
        "questions": result["n"],
        "f1_unexported": result["base"]["f1"],
        "exact_match_unexported": result["base"]["exact_match"],
        "f1": row["f1"],
        "exact_match": row["exact_match"],
        "delta_f1": row["delta_f1"],
        "delta_f1_ci95": row["delta_f1_ci95"],
        "delta_exact_match": row["delta_exact_match"],
        "delta_exact_match_ci95": row["delta_exact_match_ci95"],
    }

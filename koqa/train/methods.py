"""The fine-tuning methods: the one place where lora, qlora, prefix and prompt differ.

Each `Method` says how its PEFT config is built, its default learning rate, whether the base model
is quantised, and what its weights allow: LoRA weights can be merged into the base model and
served by vLLM, and only they work with shared contexts, DoRA and LoRA+; prompt tuning puts its
virtual tokens in front of every sequence, which shifts the positions the LM head must keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from koqa.runs import LORA_PEFT_TYPES


def _lora(config, model, model_path: str):
    from peft import LoraConfig

    from koqa.errors import KoqaError

    n_layers = model.config.get_text_config().num_hidden_layers
    if not 0 <= config.skip_layers < n_layers:
        raise KoqaError(f"skip_layers must be in [0, {n_layers}), got {config.skip_layers}", field="skip_layers")
    layers = list(range(config.skip_layers, n_layers)) if config.skip_layers else None
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=layers,
        use_dora=config.use_dora,
    )


def _prefix(config, model, model_path: str):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens)


def _prompt(config, model, model_path: str):
    from peft import PromptTuningConfig, PromptTuningInit

    if not config.prompt_init_text:
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens)
    return PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=config.prompt_init_text,
        tokenizer_name_or_path=model_path,
    )


LORA_SETTINGS = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "skip_layers",
    "use_dora",
    "loraplus_lr_ratio",
)


@dataclass(frozen=True)
class Method:
    name: str
    peft_type: str  # as PEFT writes it into adapter_config.json
    learning_rate: float  # the default when the config sets none
    build_peft_config: Callable[[Any, Any, str], Any]  # (train config, base model, model path) -> PEFT config
    lora: bool = False  # LoRA weights: mergeable, served by vLLM, shared contexts, DoRA and LoRA+
    quantized: bool = False  # the base model is loaded in 4-bit NF4 through bitsandbytes
    virtual_tokens_in_sequence: bool = False  # trained embeddings are prepended to every sequence
    settings: tuple[str, ...] = ()  # the method's own settings: another method refuses them (train_config)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("lora", LORA_PEFT_TYPES[0], 2e-4, _lora, lora=True, settings=LORA_SETTINGS),
        Method("qlora", LORA_PEFT_TYPES[0], 2e-4, _lora, lora=True, quantized=True, settings=LORA_SETTINGS),
        Method("prefix", "PREFIX_TUNING", 1e-2, _prefix, settings=("num_virtual_tokens",)),
        Method(
            "prompt",
            "PROMPT_TUNING",
            3e-2,
            _prompt,
            virtual_tokens_in_sequence=True,
            settings=("num_virtual_tokens", "prompt_init_text"),
        ),
    )
}
# every setting that some method reads and another does not
METHOD_SETTINGS = tuple(dict.fromkeys(name for m in METHODS.values() for name in m.settings))

"""Config is data: a dataclass per stage, filled from defaults < YAML/TOML file < CLI flags.

Unknown keys are errors (all of them reported at once); secrets are refused, never stored.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from koqa.errors import KoqaError

T = TypeVar("T")
# Keys named like credentials (hf_token, HUB_TOKEN, api_key, wandb_secret), and values shaped like a
# Hugging Face token.  `max_new_tokens` and the like are not credentials.
_SECRET_KEY = re.compile(r"(^|[_-])(token|secret|password|passwd|api[_-]?key|access[_-]?key)$", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KoqaError("config file not found", file=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise KoqaError(f"cannot parse config: {exc}".splitlines()[0], file=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KoqaError("config must be a mapping of keys to values", file=str(path))
    return data


def _check_secrets(data: dict[str, Any], source: str) -> None:
    found = [k for k, v in data.items() if _SECRET_KEY.search(k) or _SECRET_VALUE.search(str(v))]
    if found:
        raise KoqaError(f"config contains secret-like key(s) {found}; koqa never stores secrets",
                        file=source, field=found[0], fix="set HF_TOKEN in the environment instead")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key, source) if len(non_none) == 1 else value
    try:
        if origin in (list, tuple):
            items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
            return list(items) if origin is list else tuple(items)
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float, str):
            return tp(value)
    except (TypeError, ValueError):
        raise KoqaError(f"cannot read {value!r} as {getattr(tp, '__name__', tp)}", file=source,
                        field=key) from None
    return value


def build_config(cls: type[T], *layers: tuple[str, dict[str, Any]]) -> T:
    """Merge (source, mapping) layers over the dataclass defaults; later layers win."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    problems = []
    for source, data in layers:
        _check_secrets(data, source)
        for key, value in data.items():
            if key not in names:
                problems.append(f"{source}: unknown key '{key}'")
                continue
            values[key] = _coerce(value, hints[key], key, source)
    if problems:
        raise KoqaError("; ".join(problems) + f" (known keys: {', '.join(sorted(names))})")
    return cls(**values)


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    layers = []
    if path:
        layers.append((str(path), read_config_file(path)))
    if overrides:
        layers.append(("command line", {k: v for k, v in overrides.items() if v is not None}))
    return build_config(cls, *layers)


# Value rules for `check_values`: what the value must be, in words, and the test.
POSITIVE = ("positive", lambda v: v > 0)
NON_NEGATIVE = ("0 or more", lambda v: v >= 0)
FRACTION = ("between 0 and 1", lambda v: 0 <= v <= 1)
BELOW_ONE = ("at least 0 and below 1", lambda v: 0 <= v < 1)
STEPS_OR_NO_LIMIT = ("-1 (no limit) or positive", lambda v: v == -1 or v > 0)


def check_values(config: Any, rules: dict[str, tuple[str, Callable[[Any], bool]]]) -> None:
    """Check numeric settings before any work starts; every broken rule is reported in one error.

    A setting left at None (meaning "not set") is not checked.
    """
    problems = []
    for key, (wanted, ok) in rules.items():
        value = getattr(config, key)
        if value is not None and not ok(value):
            problems.append((key, f"{key} must be {wanted}, got {value!r}"))
    if problems:
        raise KoqaError("; ".join(text for _, text in problems), field=problems[0][0] if len(problems) == 1 else None)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_set_overrides(items: list[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML scalars (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise KoqaError(f"--set expects key=value, got '{item}'", field="--set")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out

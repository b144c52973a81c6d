"""Config is data: one dataclass per stage, whose fields are also its command-line flags.

A stage's settings are a dataclass whose fields are declared with `setting(...)`: the default, the
help text, the choices (taken from the module that owns them) and a value rule.  `koqa.cli` turns
the fields into flags; `load` fills the dataclass from, in order of precedence,

    the defaults  <  a YAML/TOML file (--config)  <  --set key=value  <  flags the user gave

A flag the user did not give never overrides the file.  Every problem (unknown keys, values of the
wrong type, values out of range, required settings missing) is collected and reported in one
`KoqaError` before any work starts.  Keys named like credentials and values shaped like a hub token
are refused, and never echoed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from koqa.errors import SECRET_SHAPE, KoqaError

T = TypeVar("T")
Rule = tuple[str, Callable[[Any], bool]]

# Value rules: what the value must be, in words, and the test.
POSITIVE: Rule = ("positive", lambda v: v > 0)
NON_NEGATIVE: Rule = ("0 or more", lambda v: v >= 0)
FRACTION: Rule = ("between 0 and 1", lambda v: 0 <= v <= 1)
BELOW_ONE: Rule = ("at least 0 and below 1", lambda v: 0 <= v < 1)
STEPS_OR_NO_LIMIT: Rule = ("-1 (no limit) or positive", lambda v: v == -1 or v > 0)
AT_LEAST_ONE: Rule = ("1 or more", lambda v: v >= 1)

# Keys named like credentials (hf_token, HUB_TOKEN, api_key, wandb_secret), and values shaped like a
# Hugging Face token.  `max_new_tokens` and the like are not credentials.
_SECRET_KEY = re.compile(r"(^|[_-])(token|secret|password|passwd|api[_-]?key|access[_-]?key)$", re.IGNORECASE)
_SECRET_VALUE = SECRET_SHAPE
COMMAND_LINE = "command line"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: typing.Sequence[str] | None = None,
    check: Rule | None = None,
    flag: str | None = None,
    positional: bool = False,
    append: bool = False,
    required: bool = False,
    section: type | None = None,
    cli: bool = True,
) -> Any:
    """A stage setting: a dataclass field that also describes its command-line flag.

    `flag` names the flag when it differs from the field (`--normalize` for answer_normalization);
    `append` makes a list flag repeatable (`--adapter A --adapter B`); `required` settings may come
    from the file or the command line; `section` marks a mapping of another stage's settings (the
    demo's); `cli=False` keeps a setting out of the flags (file and --set only).
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices else None,
        "check": check,
        "flag": flag,
        "positional": positional,
        "append": append,
        "required": required,
        "section": section,
        "cli": cli,
    }
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    if default is dataclasses.MISSING:
        default = None
    return dataclasses.field(default=default, metadata=metadata)


def columns_setting() -> Any:
    """The column-mapping setting of every command that reads questions."""
    return setting(
        [],
        help="FIELD=COLUMN,...: the source's names for id, context, question, answers, title "
        "(e.g. id=guid,context=passage)",
    )


def encoding_setting() -> Any:
    """The input encoding setting that every command reading text files takes."""
    return setting(
        "auto",
        help="input text encoding: auto reads UTF-8 (with or without a BOM), else a detected "
        "CP949/EUC-KR with a notice; a name forces that one, e.g. cp949",
    )


def fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: settings never need them, and nested aliases expand a few
    hundred bytes into more memory than the machine has."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in koqa settings", event.start_mark
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader that also refuses aliases


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KoqaError("config file not found", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KoqaError(f"bytes at offset {exc.start} are not valid UTF-8", file=str(path)) from None
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else parse_yaml(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise KoqaError(f"cannot parse config: {exc}".splitlines()[0], file=str(path)) from None
    except RecursionError:
        raise KoqaError("cannot parse config: nested too deeply", file=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KoqaError("config must be a mapping of keys to values", file=str(path))
    return data


def parse_set_overrides(items: typing.Iterable[str] | None) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML scalars (numbers, booleans, lists).
    `section.key=value` sets a key of a section (the demo's `sft.max_steps=5`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise KoqaError(f"--set expects key=value, got '{item}'", field="--set")
        key, raw = (part.strip() for part in item.split("=", 1))
        try:
            value = parse_yaml(raw)
        except (yaml.YAMLError, RecursionError):
            raise KoqaError(f"cannot read the value of --set {key}=... as YAML", field=key) from None
        target = out
        *sections, name = key.split(".")
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise KoqaError(f"--set {key}: '{section}' is set as a value and as a section", field=key)
        target[name] = value
    return out


def _secret_keys(data: dict[str, Any]) -> list[str]:
    found = []
    for key, value in data.items():
        if isinstance(value, dict):
            found += [f"{key}.{inner}" for inner in _secret_keys(value)]
        elif _SECRET_KEY.search(str(key)) or _SECRET_VALUE.search(str(value)):
            found.append(str(key))
    return found


class _Problems(list):
    def add(self, source: str, key: str, message: str) -> None:
        self.append((key, f"{source}: {message}" if source != COMMAND_LINE else message))


def _type_name(tp: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(tp, str(tp))


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ValueError(f"must be true or false, got {value!r}")


def _as_int(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {value!r}")
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return float(value)


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[Any], Any]] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp`, or ValueError saying why not. Strict: 16.9 is not an int, true is not a
    number, inf and nan are not numbers, a mapping is not a list."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0])
    if value is None:
        raise ValueError("must be set (null is not allowed here)")
    if origin is list:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list):
            raise ValueError(f"must be a list, not {type(value).__name__}")
        return [coerce(item, args[0]) for item in value] if args else value
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping of keys to values, not {type(value).__name__}")
        return value
    return _SCALARS[tp](value) if tp in _SCALARS else value


def check_rules(config: Any) -> list[tuple[str, str]]:
    """(field, problem) for every choice and value rule `config` breaks; unset (None) values pass."""
    problems = []
    for f in fields(type(config)):
        value = getattr(config, f.name)
        choices, rule = f.metadata.get("choices"), f.metadata.get("check")
        items = value if isinstance(value, list) else [value]
        if choices:
            wrong = [v for v in items if v is not None and v not in choices]
            if wrong:
                problems.append((f.name, f"{f.name} must be one of {', '.join(choices)}, got {wrong[0]!r}"))
        if rule and value is not None:
            wanted, ok = rule
            wrong = [v for v in items if not ok(v)]
            if wrong:
                problems.append((f.name, f"{f.name} must be {wanted}, got {wrong[0]!r}"))
        if f.metadata.get("required") and value in (None, [], ""):
            how = f"give {flag_name(f)}" if f.metadata.get("cli") else "set it"
            problems.append((f.name, f"{f.name} is required ({how}, or set {f.name}: in the --config file)"))
    return problems


def raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        fields_named = [key for key, _ in problems if key]
        raise KoqaError(
            "; ".join(text for _, text in problems), field=fields_named[0] if len(fields_named) == 1 else None
        )


def flag_name(f: dataclasses.Field) -> str:
    if f.metadata.get("positional"):
        return f.name.upper()
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def load(
    cls: type[T],
    *,
    config_file: str | Path | None = None,
    sets: typing.Iterable[str] | None = None,
    flags: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> T:
    """The stage config `cls` from its defaults < `base` < `config_file` < `sets` < `flags`, checked.

    `flags` holds only what the user gave on the command line.  A class may define `resolve(self)`
    to fill derived defaults and `problems(self) -> list[(field, message)]` for rules across fields.
    """
    layers = []
    if base:
        layers.append(("defaults", base))
    if config_file:
        layers.append((str(config_file), read_config_file(config_file)))
    if sets:
        layers.append((COMMAND_LINE, parse_set_overrides(sets)))
    if flags:
        layers.append((COMMAND_LINE, flags))
    return build(cls, layers)


def build(cls: type[T], layers: list[tuple[str, dict[str, Any]]]) -> T:
    """`cls` from its defaults and the (source, mapping) layers, later layers winning; checked."""
    types_ = field_types(cls)
    by_name = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    problems, unknown = _Problems(), False
    for source, data in layers:
        secrets = _secret_keys(data)
        if secrets:
            raise KoqaError(
                f"config contains secret-like key(s) {secrets}; koqa never stores secrets",
                file=None if source == COMMAND_LINE else source,
                field=secrets[0],
                fix="set HF_TOKEN in the environment instead",
            )
        for key, value in data.items():
            if key not in by_name:
                problems.add(source, str(key), f"unknown key '{key}'")
                unknown = True
                continue
            try:
                value = coerce(value, types_[key])
            except ValueError as exc:
                problems.add(source, key, f"{key} {exc}")
                continue
            section = by_name[key].metadata.get("section")
            if section is not None:  # a mapping of another stage's settings: its keys are checked here
                known = {f.name for f in fields(section)}
                for name in sorted(set(value) - known):
                    problems.add(
                        source, f"{key}.{name}", f"unknown key '{key}.{name}' (not a setting of {section.__name__})"
                    )
                value = {**values.get(key, {}), **value}
            values[key] = value
    if unknown:
        problems.append(("", f"known keys: {', '.join(sorted(by_name))}"))
    # the values that were read are checked too, so that one message lists every problem
    return _finish(cls(**values), problems)


def _finish(config: T, problems: list[tuple[str, str]] | None = None) -> T:
    """Derived defaults, then every value and cross-field rule; the settings already found wrong
    (`problems`) are not checked again."""
    found = list(problems or [])
    if hasattr(config, "resolve"):
        config.resolve()
    wrong = {key for key, _ in found}
    found += [(key, text) for key, text in check_rules(config) if key not in wrong]
    if hasattr(config, "problems"):
        found += config.problems()
    raise_problems(found)
    return config


def check(config: T) -> T:
    """Check a config built in Python (not through `load`): types, choices, ranges, cross-field rules."""
    cls = type(config)
    types_ = field_types(cls)
    problems = []
    for f in fields(cls):
        try:
            setattr(config, f.name, coerce(getattr(config, f.name), types_[f.name]))
        except ValueError as exc:
            problems.append((f.name, f"{f.name} {exc}"))
    return _finish(config, problems)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def replace(config: T, **changes: Any) -> T:
    """A copy of `config` with `changes`, checked like any other."""
    return check(dataclasses.replace(config, **changes))

"""The `koqa` command line: a table of commands, each a stage's settings dataclass and entry function.

Every command's flags are made from its settings dataclass (koqa/settings.py), and every command
takes `--config FILE` and `--set key=value`; a flag the user did not give never overrides the file.
The CLI only parses, calls the stage and prints its result lines. Heavy libraries (torch,
transformers, TRL, vLLM) are imported inside the stages, so `koqa --help` and `koqa score` start at
once. A `KoqaError` is printed as one line with exit status 2; any other exception keeps its
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from koqa import __version__
from koqa.errors import KoqaError, redact

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _print_preprocess(config, stats) -> None:
    print(
        f"{stats['records']} records ({stats['excluded_rows']} excluded, see rejected.csv)"
        if stats["excluded_rows"]
        else f"{stats['records']} records"
    )
    if stats.get("corrected_answer_starts"):
        print(f"{stats['corrected_answer_starts']} answer_start offsets moved to the nearest occurrence (stats.md)")
    print(f"splits: {stats['splits']}; prompts over {config.max_length} tokens: {stats['prompts_over_max_length']}")
    print(
        f"wrote {config.out}/data.html, stats.md, stats.json, prompt_tokens_hist.png and the split JSONL files "
        f"in {stats['seconds']} s"
    )


def _print_sft(config, run) -> None:
    print(f"adapter: {run['adapter']}")
    best = run.get("best")
    if best:
        stopped = " (stopped early)" if run.get("stopped_early") else ""
        print(
            f"best: step {best['step']}, validation F1 {best['eval_f1']:.4f}, EM {best['eval_exact_match']:.4f} "
            f"({config.out}/best, what `koqa eval --adapter {config.out}` takes){stopped}"
        )
    if run.get("validation"):
        print("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in run["validation"].items() if isinstance(v, float)))


def _print_export(config, result) -> None:
    size = f", {result['bytes'] / 2**20:.1f} MiB" if result.get("bytes") else ""
    print(f"exported: {result['out']}/{result['file']}{size}")
    check = result.get("check")
    if check:
        low, high = check["delta_f1_ci95"]
        print(
            f"check on {check['questions']} questions: F1 {check['f1']:.4f} against {check['f1_unexported']:.4f} "
            f"unexported (ΔF1 {check['delta_f1']:+.4f} [{low:+.4f}, {high:+.4f}]), EM {check['exact_match']:.4f} "
            f"against {check['exact_match_unexported']:.4f} ({result['out']}/check/compare/compare.md)"
        )


def _print_rl(config, run) -> None:
    print(f"adapter: {run['adapter']} ({run['global_step']} steps on {run['questions']} questions)")
    best = run.get("best")
    if best:
        print(
            f"best: step {best['step']}, validation F1 {best['eval_f1']:.4f}, EM {best['eval_exact_match']:.4f} "
            f"({config.out}/best, what `koqa eval --adapter {config.out}` takes)"
            + (" (stopped early)" if run.get("stopped_early") else "")
        )
    if run.get("diverged"):
        print("the reward rose while validation F1 fell (see koqa.log)")


def _print_eval(config, result) -> None:
    metrics = result["metrics"]
    for k, member in enumerate(metrics.get("members", []), start=1):
        print(f"member {k}: f1 {member['f1']:.4f}  exact_match {member['exact_match']:.4f}  ({member['adapter']})")
    if metrics:
        print(
            f"f1 {metrics['f1']:.4f}  exact_match {metrics['exact_match']:.4f}  "
            f"token_f1 {metrics['token_f1']:.4f}  n {metrics['n']}"
            + (f"  (members agree on {metrics['agreement']:.1%})" if "agreement" in metrics else "")
        )
    print(
        f"wrote {config.out}/predictions.csv"
        + (", report.html, metrics.json, report.md, errors.csv, f1_hist.png" if metrics else "")
    )


def _print_submit(config, report) -> None:
    print(f"wrote {config.out}: {report['rows']} rows, {report['empty']} empty answers ({report['empty_policy']})")


def _shipped_demo_config() -> str:
    from koqa.demo import shipped_demo_config

    return shipped_demo_config()


@dataclass(frozen=True)
class Command:
    help: str
    settings: str  # "module:Class", the stage's settings dataclass
    entry: str  # "module:function", called with the settings
    report: Callable[[Any, Any], None] = lambda config, result: print(result)
    default_config: Callable[[], str] | None = None  # a config file read when --config is not given
    log_in_out: bool = False  # the libraries' output goes to OUT/koqa.log (koqa/console.py)

    def load(self, name: str):
        module, attr = getattr(self, name).split(":")
        return getattr(importlib.import_module(module), attr)


COMMANDS: dict[str, Command] = {
    "preprocess": Command(
        "read, normalise, count, report and split QA data",
        "koqa.preprocess:PreprocessConfig",
        "koqa.preprocess:preprocess",
        _print_preprocess,
        log_in_out=True,
    ),
    "sft": Command(
        "fine-tune with TRL + PEFT (lora, qlora, prefix, prompt)",
        "koqa.train.train_config:TrainConfig",
        "koqa.train:train",
        _print_sft,
        log_in_out=True,
    ),
    "rl": Command(
        "continue a LoRA run with GRPO on the leaderboard F1, checked on held-out questions",
        "koqa.train.rl_config:RLConfig",
        "koqa.train.rl:rl",
        _print_rl,
        log_in_out=True,
    ),
    "eval": Command(
        "generate answers and score them",
        "koqa.eval.eval_config:EvalConfig",
        "koqa.eval.evaluate:evaluate",
        _print_eval,
        log_in_out=True,
    ),
    "score": Command(
        "score existing predictions",
        "koqa.eval.scoring:ScoreConfig",
        "koqa.eval.scoring:score",
        lambda config, metrics: print(json.dumps(metrics, ensure_ascii=False)),
    ),
    "compare": Command(
        "compare evaluation runs on the same questions, each against the first, with paired intervals",
        "koqa.eval.compare:CompareConfig",
        "koqa.eval.compare:compare",
        lambda config, result: print(result["markdown"], end=""),
    ),
    "sweep": Command(
        "train and score variants of a training config, with a table against the base",
        "koqa.sweep:SweepConfig",
        "koqa.sweep:sweep",
        lambda config, result: print(result["markdown"], end=""),
        log_in_out=True,
    ),
    "submit": Command(
        "write a contest submission CSV",
        "koqa.eval.submission:SubmitConfig",
        "koqa.eval.submission:submit",
        _print_submit,
    ),
    "serve": Command(
        "answer questions over HTTP with a run or model, as koqa eval answers them",
        "koqa.serve.config:ServeConfig",
        "koqa.serve.app:serve",
        lambda config, result: print(f"koqa serve: stopped after {result['questions']} questions"),
    ),
    "export": Command(
        "a run merged into its base as GGUF (llama.cpp, Ollama) or safetensors, scored again with --check",
        "koqa.export.command:ExportConfig",
        "koqa.export.command:export",
        _print_export,
        log_in_out=True,
    ),
    "merge": Command(
        "merge a LoRA adapter into the base model (for vLLM)", "koqa.merging:MergeConfig", "koqa.merging:merge"
    ),
    "model": Command(
        "manage the embedded default model", "koqa.model_store:ModelConfig", "koqa.model_store:model_command"
    ),
    "demo": Command(
        "the main job: preprocess -> sft -> eval -> submission on the embedded demo data",
        "koqa.demo:DemoConfig",
        "koqa.demo:demo",
        lambda config, result: None,
        _shipped_demo_config,
        log_in_out=True,
    ),
}


class _HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=34)


def _help(f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if default in (None, [], {}, False) or "(default" in text:
        return text
    shown = ",".join(default) if isinstance(default, list) else default
    return f"{text} (default: {shown})".replace("%", "%%")


def add_settings(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per setting of `cls` (see koqa.settings.setting); none has a default of its own, so
    only what the user gives reaches the settings."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        tp = hints[f.name]
        is_list = typing.get_origin(tp) is list
        choices = meta.get("choices")
        kwargs: dict[str, Any] = {"help": _help(f), "default": argparse.SUPPRESS}
        if meta.get("positional"):
            # choices are checked with the other settings: argparse would check the absent default too
            metavar = "{" + ",".join(choices) + "}" if choices and not is_list else f.name.upper()
            parser.add_argument(f.name, nargs="*" if is_list else "?", metavar=metavar, **kwargs)
            continue
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("append"):
            kwargs.update(action="append", metavar=f.name.upper())
        elif choices and not is_list:
            kwargs["choices"] = choices
        else:
            kwargs["metavar"] = "A,B,..." if is_list else f.name.upper()
        parser.add_argument(meta.get("flag") or "--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koqa",
        formatter_class=_HelpFormatter,
        description="Korean question answering: preprocess, fine-tune, evaluate, submit.",
    )
    parser.add_argument("--version", action="version", version=f"koqa {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="the libraries' warnings, banners and progress bars on the terminal too, and debug logging "
        "(without it they go to koqa.log in the output folder)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        cls = command.load("settings")
        hints = typing.get_type_hints(cls)
        positional = " ".join(
            f.name.upper() + ("..." if typing.get_origin(hints[f.name]) is list else "")
            for f in dataclasses.fields(cls)
            if f.metadata.get("positional")
        )
        p = sub.add_parser(
            name,
            formatter_class=_HelpFormatter,
            help=command.help,
            description=command.help,
            usage=f"koqa {name} {positional} [--config FILE] [--set KEY=VALUE] [options]".replace("  ", " "),
        )
        shipped = "default: koqa/configs/demo.yaml" if command.default_config else "koqa/configs/ has examples"
        p.add_argument(
            "--config", default=None, metavar="FILE", help=f"YAML/TOML file with these settings ({shipped})"
        )
        p.add_argument(
            "--set",
            action="append",
            default=None,
            metavar="KEY=VALUE",
            dest="set_",
            help="set any setting, also those without a flag (repeatable; values read as YAML)",
        )
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="the libraries' output too"
        )
        add_settings(p, cls)
    return parser


def settings_from_args(command: Command, args: argparse.Namespace):
    """The command's settings: defaults < --config file < --set < the flags given."""
    from koqa.settings import load

    cls = command.load("settings")
    names = {f.name for f in dataclasses.fields(cls)}
    flags = {k: v for k, v in vars(args).items() if k in names and v != []}
    config_file = args.config or (command.default_config() if command.default_config else None)
    return load(cls, config_file=config_file, sets=args.set_, flags=flags)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from koqa import console

    console.setup(args.verbose, None)
    command = COMMANDS[args.command]
    try:
        config = settings_from_args(command, args)
        if command.log_in_out and getattr(config, "out", None):
            console.setup(args.verbose, config.out)
        command.report(config, command.load("entry")(config))
        return 0
    except KoqaError as exc:
        console.forget_refused()
        print(f"koqa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # disk full, permission denied...: the user's to fix, said in one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            redact(f"koqa {args.command}: error: {where}{exc.strerror or exc} (nothing already written was changed)"),
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = (
            " Run the same command with --resume to continue."
            if args.command in ("sft", "rl")
            else " Run the same command again: finished answers are kept and skipped."
            if args.command == "eval"
            else " Run the same sweep command again (without --resume): it continues each variant itself."
            if args.command == "sweep"
            else ""
        )
        print(f"koqa {args.command}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""The `koqa` command line.  It parses arguments, calls one stage, and reports errors.

Heavy libraries (torch, transformers, TRL, vLLM) are imported inside the stages, so
`koqa --help` and `koqa score` start at once.  A `KoqaError` is printed as one line with a
non-zero exit; any other exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from koqa import __version__
from koqa.errors import KoqaError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it has none or its help already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or "(default" in text:
            return text
        return super()._get_help_string(action)


def _formatter(prog):
    return _DefaultsHelpFormatter(prog, max_help_position=34)


def _add_model(p):
    p.add_argument("--model", default=None,
                   help="local HF model folder or cached hub id (default: the embedded Gemma 3 270M)")


def _add_encoding(p):
    p.add_argument("--encoding", default=None,
                   help="input text encoding; UTF-8 with or without BOM by default (e.g. cp949)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="koqa", formatter_class=_formatter,
                                     description="Korean question answering: preprocess, fine-tune, evaluate, submit.")
    parser.add_argument("--version", action="version", version=f"koqa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("preprocess", formatter_class=_formatter,
                       help="read, normalise, count, report and split QA data")
    p.add_argument("inputs", nargs="+", help="Dacon CSV and/or SQuAD/KorQuAD JSON files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None, help="YAML/TOML file with preprocess settings")
    p.add_argument("--format", default=None, choices=["auto", "dacon", "squad"], help="input format (default auto)")
    p.add_argument("--on-bad-row", default=None, choices=["fail", "skip"],
                   help="fail on the first bad row (default), or exclude bad rows and list them in rejected.csv")
    p.add_argument("--split", default=None, choices=["context", "korquad-articles", "none"],
                   help="train/validation split: by context hash (default), KorQuAD article index, or none")
    p.add_argument("--validation-fraction", type=float, default=None, help="share of questions for validation (default 0.1)")
    p.add_argument("--max-length", type=int, default=None, help="prompt token limit reported on (default 1024)")
    p.add_argument("--template", default=None, help="prompt template name in prompts/ or a file (default ko_instruct)")
    p.add_argument("--normalize", default=None,
                   help="comma-separated answer normalisation steps: nfc,whitespace,quotes_brackets,special_chars,josa")
    p.add_argument("--seed", type=int, default=None, help="split seed (default 0)")
    _add_model(p)
    _add_encoding(p)

    p = sub.add_parser("sft", formatter_class=_formatter, help="fine-tune with TRL + PEFT")
    p.add_argument("--method", default=None, choices=["lora", "qlora", "prefix", "prompt"], help="adapter method (default lora)")
    p.add_argument("--data", required=True, help="training file (CSV/JSON/JSONL) or a `koqa preprocess` folder")
    p.add_argument("--validation", default=None, help="validation file (default: validation.jsonl in --data folder)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default=None, help="YAML/TOML run config (see koqa/configs/)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after N minutes of training (counted across --resume); with --set schedule_over=minutes the cosine learning rate decays to 0 within them")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key (repeatable)")
    _add_model(p)

    p = sub.add_parser("eval", formatter_class=_formatter, help="generate answers and score them")
    p.add_argument("--data", required=True, help="questions: Dacon CSV, SQuAD JSON or processed JSONL")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--adapter", action="append", default=None,
                   help="a `koqa sft` run folder or adapter folder; name two or more for an ensemble "
                        "(each answers, and where they differ the answer they find most likely together wins)")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"], help="generation backend")
    p.add_argument("--config", default=None, help="YAML/TOML eval config")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions")
    p.add_argument("--batch-size", type=int, default=None, help="transformers backend batch size (default 16)")
    p.add_argument("--max-length", type=int, default=None, help="prompt token limit (default: the run's, else 1024)")
    p.add_argument("--template", default=None, help="prompt template (default: the adapter run's, else ko_instruct)")
    p.add_argument("--span", default=None, choices=["off", "snap"], help="snap answers to a span of the context (default off)")
    p.add_argument("--normalize", default=None, help="comma-separated answer post-processing steps")
    p.add_argument("--korquad-split", default=None, choices=["train", "eval"],
                   help="with the KorQuAD dev JSON: keep only the training or evaluation articles")
    p.add_argument("--morphemes", action="store_true", help="token F1 over kiwipiepy morphemes")
    p.add_argument("--vllm-compile", action="store_true",
                   help="torch.compile in the vLLM engine: faster generation, longer start-up")
    _add_model(p)
    _add_encoding(p)

    p = sub.add_parser("score", formatter_class=_formatter, help="score existing predictions")
    p.add_argument("--gold", required=True, help="Dacon train-style CSV or SQuAD JSON with answers")
    p.add_argument("--pred", required=True, help="CSV id,answer (or id,prediction) or JSON {id: answer}")
    p.add_argument("--out", default=None, help="folder for metrics.json")
    p.add_argument("--morphemes", action="store_true", help="token F1 over kiwipiepy morphemes")
    _add_encoding(p)

    p = sub.add_parser("submit", formatter_class=_formatter, help="write a contest submission CSV")
    p.add_argument("--pred", required=True, help="predictions.csv from koqa eval (or id,answer CSV)")
    p.add_argument("--sample", required=True, help="the contest's sample_submission.csv")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--empty", default="fail", choices=["fail", "keep", "fill"],
                   help="what to do with empty answers: fail, keep them empty (reported), or fill with --fill-text")
    p.add_argument("--fill-text", default="없음", help="text for empty answers with --empty fill")
    _add_encoding(p)

    p = sub.add_parser("merge", formatter_class=_formatter, help="merge a LoRA adapter into the base model (for vLLM)")
    p.add_argument("--adapter", required=True, help="a `koqa sft` run folder or adapter folder")
    p.add_argument("--out", required=True, help="merged model folder")
    _add_model(p)

    p = sub.add_parser("model", formatter_class=_formatter, help="manage the embedded default model")
    p.add_argument("action", choices=["prepare", "path"], help="prepare: build the HF folder; path: print it")
    p.add_argument("--force", action="store_true", help="rebuild even if present")

    p = sub.add_parser("demo", formatter_class=_formatter,
                       help="the main job: preprocess -> sft -> eval -> submission on the embedded demo data")
    p.add_argument("--out", default="runs/demo", help="folder for every artefact")
    p.add_argument("--data", default=None, help="folder with train.csv, test.csv, sample_submission.csv (default: embedded demo)")
    p.add_argument("--max-steps", type=int, default=None, help="training steps (default from the demo config)")
    p.add_argument("--backend", default="auto", choices=["auto", "vllm", "hf"], help="generation backend")
    _add_model(p)
    return parser


def _overrides(args, *names) -> dict:
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _cmd_preprocess(args) -> int:
    from koqa.config import load_config
    from koqa.preprocess import PreprocessConfig, run_preprocess

    over = _overrides(args, "format", "on_bad_row", "split", "validation_fraction", "max_length", "template",
                      "seed", "model", "encoding")
    if args.normalize is not None:
        over["answer_normalization"] = [s for s in args.normalize.split(",") if s]
    config = load_config(PreprocessConfig, args.config, over)
    stats = run_preprocess(args.inputs, args.out, config)
    print(f"{stats['records']} records ({stats['excluded_rows']} excluded, see rejected.csv)"
          if stats["excluded_rows"] else f"{stats['records']} records")
    print(f"splits: {stats['splits']}; prompts over {config.max_length} tokens: {stats['prompts_over_max_length']}")
    print(f"wrote {args.out}/stats.md, stats.json, prompt_tokens_hist.png and the split JSONL files "
          f"in {stats['seconds']} s")
    return 0


def _cmd_sft(args) -> int:
    from koqa.sft import run_sft

    run = run_sft(data=args.data, out_dir=args.out, config_path=args.config, method=args.method,
                  model=args.model, max_steps=args.max_steps, max_minutes=args.max_minutes,
                  resume=args.resume, validation=args.validation, sets=args.set)
    print(f"adapter: {run['adapter']}")
    if run.get("validation"):
        print("validation: " + ", ".join(f"{k} {v:.4f}" for k, v in run["validation"].items() if isinstance(v, float)))
    return 0


def _cmd_eval(args) -> int:
    from koqa.config import load_config
    from koqa.eval.evaluate import EvalConfig, run_eval

    over = _overrides(args, "backend", "batch_size", "max_length", "template", "span", "model", "limit",
                      "korquad_split", "encoding")
    if args.normalize is not None:
        over["answer_normalization"] = [s for s in args.normalize.split(",") if s]
    if args.morphemes:
        over["morphemes"] = True
    if args.vllm_compile:
        over["vllm_compile"] = True
    config = load_config(EvalConfig, args.config, over)
    adapters = args.adapter or []
    if len(adapters) > 1:
        from koqa.eval.ensemble import run_ensemble_eval

        result = run_ensemble_eval(args.data, args.out, config, adapters)
    else:
        result = run_eval(args.data, args.out, config, adapter=adapters[0] if adapters else None)
    metrics = result["metrics"]
    for k, member in enumerate(metrics.get("members", []), start=1):
        print(f"member {k}: f1 {member['f1']:.4f}  exact_match {member['exact_match']:.4f}  ({member['adapter']})")
    if metrics:
        print(f"f1 {metrics['f1']:.4f}  exact_match {metrics['exact_match']:.4f}  "
              f"token_f1 {metrics['token_f1']:.4f}  n {metrics['n']}"
              + (f"  (members agree on {metrics['agreement']:.1%})" if "agreement" in metrics else ""))
    print(f"wrote {args.out}/predictions.csv" + (", metrics.json, report.md, f1_hist.png" if metrics else ""))
    return 0


def _cmd_score(args) -> int:
    from koqa.atomic import write_json
    from koqa.data_tools.readers import read_predictions, read_records
    from koqa.eval.metrics import score_dataset

    encoding = args.encoding or "utf-8"
    gold = read_records(args.gold, encoding=encoding, check_span=False)
    if not gold.has_answers:
        raise KoqaError("has no gold answers", file=args.gold, fix="pass a train.csv-style file or SQuAD JSON")
    preds = read_predictions(args.pred, encoding=encoding)
    gold_ids = {r.id for r in gold.records}
    unknown = [i for i in preds if i not in gold_ids]
    if unknown and len(unknown) == len(preds):
        raise KoqaError(f"no prediction id matches the gold file (e.g. '{unknown[0]}')", file=args.pred,
                        field="id", fix="are these predictions for another test set?")
    metrics = score_dataset({r.id: r.answers for r in gold.records}, preds, morphemes=args.morphemes)
    metrics["unknown_ids"] = len(unknown)
    print(json.dumps(metrics, ensure_ascii=False))
    if args.out:
        write_json(f"{args.out}/metrics.json", metrics)
    return 0


def _cmd_submit(args) -> int:
    from koqa.eval.submission import write_submission

    report = write_submission(args.pred, args.sample, args.out, empty=args.empty, fill_text=args.fill_text,
                              encoding=args.encoding or "utf-8")
    print(f"wrote {args.out}: {report['rows']} rows, {report['empty']} empty answers ({report['empty_policy']})")
    return 0


def _cmd_merge(args) -> int:
    from koqa.merging import merge_adapter

    print(merge_adapter(args.adapter, args.out, model=args.model))
    return 0


def _cmd_model(args) -> int:
    from koqa.model_store import default_model_dir, prepare_default_model

    print(prepare_default_model(force=args.force) if args.action == "prepare" else default_model_dir())
    return 0


def _cmd_demo(args) -> int:
    from koqa.demo import run_demo

    run_demo(out_dir=args.out, data_dir=args.data, model=args.model, max_steps=args.max_steps,
             backend=args.backend)
    return 0


COMMANDS = {"preprocess": _cmd_preprocess, "sft": _cmd_sft, "eval": _cmd_eval, "score": _cmd_score,
            "submit": _cmd_submit, "merge": _cmd_merge, "model": _cmd_model, "demo": _cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
    except KoqaError as exc:
        print(f"koqa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # disk full, permission denied...: the user's to fix, said in one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"koqa {args.command}: error: {where}{exc.strerror or exc} (nothing already written was changed)",
              file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = " Run the same command with --resume to continue." if args.command == "sft" else \
            " Run the same command again: finished answers are kept and skipped." if args.command == "eval" else ""
        print(f"koqa {args.command}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

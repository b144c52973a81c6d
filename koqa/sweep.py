"""`koqa sweep`: train and score several variants of one training config, and tabulate them.

A sweep is a base config (an sft config file, `--base`, and the sweep file's `sft:` section over it)
and variants of it: named ones (`variants:` in the sweep file, or `--variant NAME:key=value;key=value`)
and a grid (`grid:` in the sweep file, or `--vary key=v1,v2`, several making every combination). The
base is a variant too, the first row. Each variant is an ordinary run folder, OUT/<variant>/run, with
its evaluation on the validation questions in OUT/<variant>/eval; both run as child processes, so
that each starts with the machine's memory free (vLLM sizes its cache from what is left).

The table (printed, and written to OUT/sweep.md and sweep.json) gives each variant's overrides,
training minutes and questions seen, F1 and EM with their 95% intervals, and ΔF1 against the base
with its paired bootstrap interval (koqa.eval.compare). Run the same command again after an
interruption: finished variants are neither retrained nor re-scored, a variant stopped mid-training
resumes from its last checkpoint.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from koqa.errors import KoqaError
from koqa.eval.eval_config import EvalConfig
from koqa.outputs import check_out, inside
from koqa.runs import RunFolder
from koqa.settings import POSITIVE, build, read_config_file, setting, to_dict
from koqa.trackers import report_to_setting
from koqa.train.train_config import TrainConfig

log = logging.getLogger(__name__)
BASE = "base"
SET_BY_THE_SWEEP = ("data", "out", "resume", "validation")
SET_FOR_THE_SCORING = ("data", "out", "adapter", "limit")
# each variant is a training run: a grid larger than this is a typo, not a plan
MAX_VARIANTS = 200


@dataclass
class SweepConfig:
    out: str | None = setting(help="sweep folder: one folder per variant, sweep.md and sweep.json", required=True)
    data: str | None = setting(help="training data: a file or a `koqa preprocess` folder", required=True)
    validation: str | None = setting(
        help="the questions every variant is scored on (default: validation.jsonl in the --data folder)"
    )
    base: str | None = setting(help="the sft config file every variant starts from (e.g. koqa/configs/lora.yaml)")
    vary: list[str] = setting(
        [], append=True, help="KEY=V1,V2: one variant per value; several --vary make every combination"
    )
    variant: list[str] = setting([], append=True, help="NAME:key=value;key=value: a named variant")
    eval_limit: int | None = setting(help="score only the first N validation questions", check=POSITIVE)
    sft: dict = setting({}, section=TrainConfig, cli=False, help="settings of every variant, over --base")
    eval: dict = setting({}, section=EvalConfig, cli=False, help="`koqa eval` settings of the scoring")
    variants: dict = setting({}, cli=False, help="NAME: {key: value}: named variants")
    grid: dict = setting({}, cli=False, help="KEY: [values]: every combination is a variant")
    report_to: list[str] = report_to_setting(
        "every variant's training and scores, and the sweep's table (a run in --out)"
    )


@dataclass
class Variant:
    name: str
    overrides: dict
    train: TrainConfig
    folder: Path

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.folder / "run")

    @property
    def eval_dir(self) -> Path:
        return self.folder / "eval"

    def describe(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.overrides.items()) or "-"


def folder_name(name: str) -> str:
    """A variant's folder under --out: letters, digits, '.', '_' and '-', never starting with a dot (so
    never '.' or '..'): a name cannot lead outside the sweep's folder."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".").strip("_") or "variant"


def parse_pairs(text: str, what: str) -> dict:
    """'key=value;key=value' as a mapping of strings (typed later, as --set values are)."""
    pairs = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KoqaError(f"{what}: '{item}' is not key=value", field="variant")
        pairs[key.strip()] = yaml.safe_load(value.strip()) if value.strip() else ""
    return pairs


def variant_overrides(config: SweepConfig) -> list[tuple[str, dict]]:
    """(name, overrides) of every variant, the base first."""
    found: list[tuple[str, dict]] = [(BASE, {})]
    for name, overrides in config.variants.items():
        if not isinstance(overrides, dict):
            raise KoqaError(f"variant '{name}' must be a mapping of settings, not {overrides!r}", field="variants")
        found.append((str(name), dict(overrides)))
    for text in config.variant:
        name, sep, rest = text.partition(":")
        if not sep or not name.strip() or not rest.strip():
            raise KoqaError(f"--variant needs NAME:key=value[;key=value], got '{text}'", field="variant")
        found.append((name.strip(), parse_pairs(rest, f"--variant {name.strip()}")))
    grid = dict(config.grid)
    for text in config.vary:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise KoqaError(f"--vary needs KEY=V1,V2..., got '{text}'", field="vary")
        grid[key.strip()] = [yaml.safe_load(v.strip()) for v in values.split(",") if v.strip()]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise KoqaError(f"grid key '{key}' needs a list of values, got {values!r}", field="grid")
    keys = list(grid)
    planned = len(found) + (math.prod(len(v) for v in grid.values()) if keys else 0)
    if planned > MAX_VARIANTS:
        raise KoqaError(
            f"the sweep has {planned} variants, more than {MAX_VARIANTS}: each one is a training run",
            field="grid" if keys else "variants",
            fix="vary fewer settings or fewer values at a time",
        )
    for combination in itertools.product(*(grid[k] for k in keys)) if keys else ():
        overrides = dict(zip(keys, combination))
        found.append((",".join(f"{k}={v}" for k, v in overrides.items()), overrides))
    folders = [folder_name(name) for name, _ in found]
    repeated = sorted({name for (name, _), folder in zip(found, folders) if folders.count(folder) > 1})
    if repeated:
        raise KoqaError(
            f"variant names must differ, also as folder names ({BASE} is the base's): {', '.join(repeated)}",
            field="variants",
        )
    return found


def refuse_sweep_keys(section: dict, fixed: tuple[str, ...], name: str) -> None:
    """A sweep file's section may not set what the sweep sets for every variant."""
    taken = sorted(set(section) & set(fixed))
    if taken:
        raise KoqaError(
            f"the sweep file's '{name}' section sets {', '.join(taken)}, which the sweep sets for every variant",
            field=name,
            fix=f"remove {', '.join(taken)} from it (the sweep's own flags set them)",
        )


def plan(config: SweepConfig) -> list[Variant]:
    """Every variant's training settings, built and checked before anything is trained."""
    out = Path(config.out)
    # the sweep scores every variant itself: no scoring after training unless the settings ask for it
    base_layers = [("sweep defaults", {"validation_limit": 0})]
    if config.base:
        base = read_config_file(config.base)
        replaced = sorted(set(base) & set(SET_BY_THE_SWEEP))
        if replaced:
            log.info("%s: its %s are replaced by the sweep's for every variant", config.base, ", ".join(replaced))
        base_layers.append((config.base, base))
    refuse_sweep_keys(config.sft, SET_BY_THE_SWEEP, "sft")
    base_layers.append(("sweep section 'sft'", config.sft))
    variants, problems = [], []
    for name, overrides in variant_overrides(config):
        fixed = sorted(set(overrides) & set(SET_BY_THE_SWEEP))
        if fixed:
            problems.append(f"variant '{name}' sets {', '.join(fixed)}, which the sweep sets for every variant")
            continue
        folder = inside(out, out / folder_name(name), f"variant '{name}'")
        run = RunFolder(folder / "run")
        files = {"data": config.data, "out": str(run.path), "resume": run.holds_a_run()}
        if config.report_to:
            files["report_to"] = list(config.report_to)
        try:
            train = build(TrainConfig, [*base_layers, (f"variant '{name}'", overrides), ("sweep", files)])
        except KoqaError as exc:
            problems.append(f"variant '{name}': {exc}")
            continue
        variants.append(Variant(name, overrides, train, folder))
    if problems:
        raise KoqaError("; ".join(problems))
    return variants


def eval_config(config: SweepConfig, variant: Variant) -> EvalConfig:
    refuse_sweep_keys(config.eval, SET_FOR_THE_SCORING, "eval")
    validation = config.validation or str(Path(config.data) / "validation.jsonl")
    if not Path(validation).is_file():
        raise KoqaError(
            "no validation questions to score the variants on",
            file=validation,
            fix="pass --validation FILE, or a `koqa preprocess` folder (with validation.jsonl) as --data",
        )
    files = {"data": validation, "out": str(variant.eval_dir), "adapter": [str(variant.run.path)]}
    if config.eval_limit:
        files["limit"] = config.eval_limit
    if config.report_to:
        files["report_to"] = list(config.report_to)
    return build(EvalConfig, [("sweep section 'eval'", config.eval), ("sweep", files)])


def run_child(command: str, settings: dict, settings_file: Path, variant: Variant) -> None:
    """One koqa command in a child process, its settings written beside the variant's run."""
    from koqa.atomic import write_text

    write_text(settings_file, yaml.safe_dump(settings, allow_unicode=True, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "koqa.cli", command, "--config", str(settings_file)])
    if result.returncode:
        raise KoqaError(
            f"variant '{variant.name}': koqa {command} stopped with exit status {result.returncode}",
            file=str(settings_file),
            fix="fix what it reported and run the sweep again: finished variants are kept",
        )


def sweep(config: SweepConfig) -> dict:
    """Train, score and tabulate every variant; returns {"rows": [...], "markdown": ...}."""
    from koqa.atomic import write_json, write_text

    check_out(config.out, [("--data", config.data), ("--base", config.base)], command="sweep")
    variants = plan(config)
    evals = [eval_config(config, v) for v in variants]
    log.info("sweep of %d variants into %s", len(variants), config.out)
    for number, (variant, scoring) in enumerate(zip(variants, evals), start=1):
        run = variant.run
        if run.metrics_file.is_file():
            log.info("[%d/%d] %s: trained already", number, len(variants), variant.name)
        else:
            how = "resuming" if variant.train.resume else "training"
            log.info("[%d/%d] %s: %s (%s)", number, len(variants), variant.name, how, variant.describe())
            shutil.rmtree(variant.eval_dir, ignore_errors=True)  # answers of an earlier adapter of this variant
            run_child("sft", to_dict(variant.train), variant.folder / "sft.yaml", variant)
        scored = variant.eval_dir / "metrics.json"
        if scored.is_file() and scored.stat().st_mtime >= run.metrics_file.stat().st_mtime:
            log.info("[%d/%d] %s: scored already", number, len(variants), variant.name)
        else:
            log.info("[%d/%d] %s: scoring", number, len(variants), variant.name)
            run_child("eval", to_dict(scoring), variant.folder / "eval.yaml", variant)
    result = tabulate(variants)
    write_json(Path(config.out) / "sweep.json", {k: v for k, v in result.items() if k != "markdown"})
    write_text(Path(config.out) / "sweep.md", result["markdown"])
    if config.report_to:
        from koqa.trackers import log_scores

        table = {row["variant"]: {k: v for k, v in row.items() if k != "variant"} for row in result["rows"]}
        log_scores(config.report_to, table, Path(config.out), prefix="sweep")
    return result


def tabulate(variants: list[Variant]) -> dict:
    from koqa.atomic import read_json
    from koqa.eval.compare import read_scored_rows
    from koqa.eval.significance import compare_two

    scored = [read_scored_rows(variant.eval_dir) for variant in variants]
    rows = []
    for variant, answers in zip(variants, scored):
        metrics = read_json(variant.eval_dir / "metrics.json")
        trained = read_json(variant.run.metrics_file)
        paired = compare_two(scored[0], answers) if variant is not variants[0] else None
        rows.append(
            {
                "variant": variant.name,
                "overrides": variant.overrides,
                "run": str(variant.run.path),
                "minutes": round(trained["train_seconds"] / 60, 2),
                "questions_seen": trained["questions_seen"],
                "n": metrics["n"],
                "f1": metrics["f1"],
                "f1_ci95": metrics["f1_ci95"],
                "exact_match": metrics["exact_match"],
                "exact_match_ci95": metrics["exact_match_ci95"],
                "delta_f1": paired["delta_f1"] if paired else 0.0,
                "delta_f1_ci95": paired["delta_f1_ci95"] if paired else None,
                "delta_f1_p": paired["delta_f1_p"] if paired else None,
            }
        )
    return {"rows": rows, "markdown": sweep_markdown(rows, variants)}


def sweep_markdown(rows: list[dict], variants: list[Variant]) -> str:
    lines = [
        f"Each variant against `{rows[0]['variant']}` on the same {rows[0]['n']} validation questions; "
        "95% intervals by bootstrap over the questions (ΔF1: paired).",
        "",
        "| variant | overrides | minutes | questions seen | F1 [95% CI] | EM [95% CI] | ΔF1 [95% CI] | p | answers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, variant in zip(rows, variants):
        f1_ci, em_ci = row["f1_ci95"], row["exact_match_ci95"]
        if row["delta_f1_ci95"] is None:
            delta, p = "-", "-"
        else:
            low, high = row["delta_f1_ci95"]
            delta, p = f"{row['delta_f1']:+.4f} [{low:+.4f}, {high:+.4f}]", f"{row['delta_f1_p']:.3g}"
        lines.append(
            f"| {row['variant']} | {variant.describe()} | {row['minutes']:.1f} | {row['questions_seen']:,} | "
            f"{row['f1']:.4f} [{f1_ci[0]:.3f}, {f1_ci[1]:.3f}] | "
            f"{row['exact_match']:.4f} [{em_ci[0]:.3f}, {em_ci[1]:.3f}] | {delta} | {p} | "
            f"[report.html]({variant.folder.name}/eval/report.html) |"
        )
    return "\n".join(lines) + "\n"

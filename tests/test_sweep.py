"""`koqa sweep` on the tiny model: variants from a file and from flags, the table against the base,
settings checked before anything trains, and an interrupted sweep continuing without retraining."""

import json
import re
import subprocess
import sys

import pytest
import yaml

from koqa.errors import KoqaError
from koqa.settings import load
from koqa.sweep import SweepConfig, eval_config, plan, variant_overrides


def koqa(*args):
    return subprocess.run([sys.executable, "-m", "koqa.cli", *args], capture_output=True, text=True, timeout=900)


def sweep_file(tmp_path, tiny_model_dir, **extra):
    settings = {
        "sft": {
            "model": str(tiny_model_dir),
            "max_steps": 2,
            "max_length": 256,
            "batch_size": 2,
            "lora_r": 4,
            "save_steps": 1,
            "logging_steps": 1,
            "validation_limit": 0,
        },
        "eval": {"backend": "hf", "max_new_tokens": 8},
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    return path


def test_variants_from_file_and_flags_grid_and_names(tmp_path):
    config = load(
        SweepConfig,
        config_file=sweep_file(tmp_path, "m", variants={"r8": {"lora_r": 8}}, grid={"learning_rate": [1e-4, 2e-4]}),
        flags={
            "out": str(tmp_path / "s"),
            "data": "d.csv",
            "vary": ["lora_dropout=0,0.1"],
            "variant": ["seed7:seed=7"],
        },
    )
    names = [name for name, _ in variant_overrides(config)]
    alone = load(SweepConfig, flags={"out": str(tmp_path / "o"), "data": "d"})
    assert [name for name, _ in variant_overrides(alone)] == ["base"]
    assert plan(alone)[0].train.validation_limit == 0  # the sweep scores the variants itself
    assert names[0] == "base" and names[1:3] == ["r8", "seed7"]
    # the file's grid and --vary make every combination: 2 x 2
    assert len(names) == 3 + 4 and "learning_rate=0.0001,lora_dropout=0.1" in names
    variants = plan(config)
    assert [v.train.lora_r for v in variants[:2]] == [4, 8] and variants[2].train.seed == 7
    assert all(v.train.out == str(tmp_path / "s" / v.folder.name / "run") for v in variants)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"variant": ["bad:lora_r=0"]}, "variant 'bad': field 'lora_r': lora_r must be positive, got 0"),
        ({"variant": ["x:no_such_key=1"]}, "unknown key 'no_such_key'"),
        ({"variant": ["x:out=elsewhere"]}, "which the sweep sets for every variant"),
        ({"variant": ["base:lora_r=8"]}, "variant names must differ"),
        ({"variant": ["noequals"]}, "--variant needs NAME:key=value"),
        ({"vary": ["lora_r"]}, "--vary needs KEY=V1,V2"),
    ],
)
def test_bad_variants_are_refused_before_anything_trains(tmp_path, flags, message):
    config = load(
        SweepConfig, config_file=sweep_file(tmp_path, "m"), flags={"out": str(tmp_path / "s"), "data": "d", **flags}
    )
    with pytest.raises(KoqaError, match=message):
        plan(config)
    assert not (tmp_path / "s").exists()


def test_sweep_trains_scores_tabulates_and_resumes_without_retraining(tmp_path, tiny_model_dir, dacon_train):
    out = tmp_path / "sweep"
    args = [
        "sweep", "--config", str(sweep_file(tmp_path, tiny_model_dir)), "--data", str(dacon_train),
        "--validation", str(dacon_train), "--out", str(out), "--vary", "learning_rate=2e-3",
    ]  # fmt: skip
    first = koqa(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["base", "learning_rate=2e-3"]
    for row in rows:
        assert (tmp_path / row["run"] / "adapter" / "adapter_model.safetensors").is_file()
        assert row["n"] == 6 and row["f1_ci95"][0] <= row["f1"] <= row["f1_ci95"][1]
    assert rows[0]["delta_f1"] == 0 and rows[0]["delta_f1_ci95"] is None
    assert rows[1]["delta_f1_ci95"][0] <= rows[1]["delta_f1"] <= rows[1]["delta_f1_ci95"][1]
    config = yaml.safe_load((out / "learning_rate_2e-3" / "sft.yaml").read_text(encoding="utf-8"))
    assert config["learning_rate"] == 0.002 and config["lora_r"] == 4
    table = (out / "sweep.md").read_text(encoding="utf-8")
    assert "| base | - |" in table and "| learning_rate=2e-3 | learning_rate=2e-3 |" in table
    assert table in first.stdout
    for link in re.findall(r"\[report.html\]\(([^)]+)\)", table):  # each variant's answers, a click away
        assert (out / link).is_file()
    assert len(re.findall(r"\[report.html\]", table)) == len(rows)

    # as if the sweep had been stopped while training the last variant: its checkpoint stays, its end
    # (adapter, summary) and its scoring are gone; the finished variants must not be touched again
    last = out / "learning_rate_2e-3"
    for name in ("metrics.json",):
        (last / "run" / name).unlink()
    (last / "eval" / "metrics.json").unlink()
    finished = {v: (out / v / "run" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns for v in ("base",)}
    again = koqa(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "base: trained already" in again.stderr and "base: scored already" in again.stderr
    assert "learning_rate=2e-3: resuming" in again.stderr
    assert (out / "base" / "run" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == finished["base"]
    assert json.loads((out / "sweep.json").read_text(encoding="utf-8"))["rows"][1]["f1"] == rows[1]["f1"]


@pytest.mark.parametrize(
    ("section", "key"),
    [("sft", "out"), ("sft", "data"), ("sft", "resume"), ("eval", "adapter"), ("eval", "out"), ("eval", "limit")],
)
def test_a_sweep_file_section_may_not_set_what_the_sweep_sets(tmp_path, section, key):
    path = sweep_file(tmp_path, "m")
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    settings[section][key] = [str(tmp_path / "x")] if key == "adapter" else (True if key == "resume" else 3)
    if key in ("out", "data"):
        settings[section][key] = str(tmp_path / "elsewhere")
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    config = load(SweepConfig, config_file=path, flags={"out": str(tmp_path / "s"), "data": str(tmp_path)})
    with pytest.raises(KoqaError, match=f"'{section}' section sets {key}, which the sweep sets"):
        variants = plan(config)
        eval_config(config, variants[0])
    assert not (tmp_path / "s").exists() and not (tmp_path / "elsewhere").exists()


def test_a_grid_too_large_to_train_is_refused_at_once(tmp_path):
    grid = {f"k{i}": list(range(10)) for i in range(6)}  # 10^6 variants
    flags = {"out": str(tmp_path / "s"), "data": "d"}
    config = load(SweepConfig, config_file=sweep_file(tmp_path, "m", grid=grid), flags=flags)
    with pytest.raises(KoqaError, match="the sweep has 1000001 variants, more than 200"):
        variant_overrides(config)
    small = load(SweepConfig, flags={"out": str(tmp_path / "s"), "data": "d", "vary": ["lora_r=4,8"]})
    assert len(variant_overrides(small)) == 3

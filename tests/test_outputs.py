"""One rule for outputs (koqa/outputs.py): a command writes only inside its --out, never over what it
reads, and never removes what it did not write. Each command is run through the CLI with an --out
that is, contains or lies inside one of its inputs, or holds a training run: one line, exit 2, and
every file it was given is left as it was."""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_weights
from koqa.errors import KoqaError
from koqa.outputs import check_out, inside
from koqa.runs import RunInfo


def koqa(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "koqa.cli", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def refused(result, *words):
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and all(w in line for w in words), line


def fake_run(folder: Path) -> Path:
    """A training run's files, as koqa sft leaves them (their content does not matter here)."""
    (folder / "adapter").mkdir(parents=True)
    info = RunInfo(None, "m", "lora", "ko_instruct", 1024, 512, 42, 6, 6, 600)
    (folder / "koqa_run.json").write_text(json.dumps(info.to_json()), encoding="utf-8")
    (folder / "metrics.json").write_text('{"global_step": 40}', encoding="utf-8")
    (folder / "adapter" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4}', encoding="utf-8")
    write_weights(folder / "adapter" / "adapter_model.safetensors", b"lora")
    (folder / "notes.txt").write_text("a file of the user's own", encoding="utf-8")
    return folder


segment = st.text(alphabet="abc", min_size=1, max_size=2)
paths = st.lists(segment, min_size=1, max_size=4)


@given(paths, paths)
def test_an_out_is_refused_exactly_when_it_overlaps_an_input(out_parts, input_parts):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp).resolve()
        out, source = base.joinpath(*out_parts), base.joinpath(*input_parts)
        source.mkdir(parents=True)
        overlaps = out == source or source.is_relative_to(out) or out.is_relative_to(source)
        try:
            check_out(out, [("--data", source)], command="eval")
        except KoqaError as error:
            assert overlaps and error.field == "out" and str(source) in str(error)
        else:
            assert not overlaps


def test_inputs_named_rather_than_on_disk_never_overlap(tmp_path, monkeypatch):
    """A template or model given by name (ko_instruct, a cached hub id) is no folder --out could hold."""
    monkeypatch.chdir(tmp_path)
    check_out(".", [("--template", "ko_instruct"), ("--model", "google/gemma-3-270m")], command="eval")


def test_hub_ids_and_unset_inputs_are_not_paths(tmp_path):
    check_out(tmp_path / "out", [("--data", "hf:KorQuAD/squad_kor_v1"), ("--model", None)], command="eval")


def test_a_run_folder_is_refused_as_out_except_by_sft(tmp_path):
    run = fake_run(tmp_path / "run")
    with pytest.raises(KoqaError, match="holds a `koqa sft` run"):
        check_out(run, [], command="eval")
    check_out(run, [], command="sft", may_hold_a_run=True)


def test_a_derived_folder_must_stay_inside_its_parent(tmp_path):
    assert inside(tmp_path, tmp_path / "a" / "b", "variant 'x'") == tmp_path / "a" / "b"
    for escaping in (tmp_path / "..", tmp_path / ".." / "x", tmp_path, Path("/etc")):
        with pytest.raises(KoqaError, match="lies outside"):
            inside(tmp_path, escaping, "variant 'x'")


def test_preprocess_never_writes_over_its_input(tmp_path, dacon_train):
    before = snapshot(tmp_path)
    refused(koqa("preprocess", dacon_train, "--out", tmp_path), "contains the input")
    refused(koqa("preprocess", dacon_train, "--out", dacon_train), "is the input")
    refused(koqa("preprocess", dacon_train, "--out", tmp_path / "train.csv" / "x"), "lies inside the input")
    assert snapshot(tmp_path) == before


def test_merge_never_replaces_a_run_or_a_folder_it_did_not_write(tmp_path):
    run = fake_run(tmp_path / "run")
    before = snapshot(tmp_path)
    refused(koqa("merge", "--adapter", run, "--out", run), "is the --adapter")
    refused(koqa("merge", "--adapter", run, "--out", run / "merged"), "lies inside the --adapter")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine", encoding="utf-8")
    refused(koqa("merge", "--adapter", run, "--out", mine), "not a model koqa merge wrote")
    assert snapshot(tmp_path) == {**before, "mine/keep.txt": snapshot(mine)["keep.txt"]}


def test_eval_never_writes_into_a_run_or_over_its_data(tmp_path, dacon_train):
    run = fake_run(tmp_path / "run")
    before = snapshot(tmp_path)
    refused(koqa("eval", "--data", dacon_train, "--adapter", run, "--out", run), "is the --adapter")
    refused(koqa("eval", "--data", dacon_train, "--adapter", run, "--out", run / "eval"), "lies inside the --adapter")
    refused(koqa("eval", "--data", dacon_train, "--out", tmp_path), "contains the --data")
    assert snapshot(tmp_path) == before


def test_score_compare_sweep_and_sft_refuse_an_overlapping_out(tmp_path, dacon_train):
    run = fake_run(tmp_path / "run")
    before = snapshot(tmp_path)
    refused(koqa("score", "--gold", dacon_train, "--pred", dacon_train, "--out", tmp_path), "contains the --gold")
    refused(koqa("compare", run, run, "--out", run), "is the run")
    refused(koqa("sweep", "--data", tmp_path, "--out", tmp_path / "sweep"), "lies inside the --data")
    refused(koqa("sft", "--data", dacon_train, "--out", tmp_path), "contains the --data")
    assert snapshot(tmp_path) == before


def test_a_sweep_variant_named_to_escape_stays_inside_the_sweep(tmp_path):
    from koqa.settings import load
    from koqa.sweep import SweepConfig, plan

    config = load(SweepConfig, flags={"data": "d", "out": str(tmp_path / "sweep"), "variant": ["..:lora_r=8"]})
    folders = [v.folder.resolve() for v in plan(config)]
    assert all(
        f.is_relative_to((tmp_path / "sweep").resolve()) and f != (tmp_path / "sweep").resolve() for f in folders
    )
    assert (tmp_path / "sweep").resolve().parent / "run" not in [f / "run" for f in folders]


def test_an_answer_log_of_other_questions_under_the_same_ids_is_refused(tmp_path):
    from koqa.eval.answer_log import AnswerLog, question_digest

    path, fingerprint = tmp_path / "generations.jsonl", {"model": "m"}
    first = {"q1": question_digest("서울은 수도다.", "수도는?"), "q2": question_digest("가", "나")}
    AnswerLog(path, fingerprint, first).append([("q1", "서울"), ("q2", "가")])
    assert AnswerLog(path, fingerprint, first).done == {"q1": "서울", "q2": "가"}  # the same questions: reused
    other = {**first, "q2": question_digest("가", "다른 질문?")}
    with pytest.raises(KoqaError, match="other questions or passages under the same ids") as info:
        AnswerLog(path, fingerprint, other)
    assert "'q2'" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe garbage",
        b"[1, 2]\n",
        b'{"fingerprint": [1]}\n',
        b"[" * 100000,
        b'{"fingerprint": {"model": "m"}}\n[1]\n',
    ],
)
def test_a_corrupted_answer_log_is_one_line_error_or_ignored_lines(tmp_path, content):
    from koqa.eval.answer_log import AnswerLog

    path = tmp_path / "generations.jsonl"
    path.write_bytes(content)
    try:
        log = AnswerLog(path, {"model": "m"})
    except KoqaError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert log.done == {}  # the one readable header, and no answer line to reuse


@pytest.mark.parametrize("name", ["koqa_run.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"])
@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe\x00binary", b"[" * 100000, b'{"r": 4}'])
def test_a_corrupted_run_file_is_a_one_line_error_in_eval_and_merge(tmp_path, dacon_train, name, content):
    from koqa.runs import locate_adapter

    run = fake_run(tmp_path / "run")
    (run / name).write_bytes(content)
    if name == "koqa_run.json" and content == b'{"r": 4}':
        return  # an object without the run's fields: the next case covers it
    with pytest.raises(KoqaError) as info:
        adapter = locate_adapter(run, "final")
        adapter.peft_type  # noqa: B018  what eval and merge read next
    assert "\n" not in str(info.value) and name.split("/")[-1] in str(info.value)


def test_a_run_stopped_before_its_adapter_says_to_resume(tmp_path):
    from koqa.runs import locate_adapter

    run = fake_run(tmp_path / "run")
    for folder in ("adapter",):
        for f in (run / folder).iterdir():
            f.unlink()
        (run / folder).rmdir()
    with pytest.raises(KoqaError, match="no adapter yet") as info:
        locate_adapter(run)
    assert "--resume" in str(info.value)


def test_parallel_sizes_on_a_machine_without_gpus_are_one_line_errors(tiny_model_dir):
    import torch

    from koqa.eval.vllm_backend import VLLMGenerator

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine may split a model")
    for key in ("tensor_parallel_size", "pipeline_parallel_size"):
        with pytest.raises(KoqaError) as info:
            VLLMGenerator(str(tiny_model_dir), **{key: 2})
        assert info.value.field == key


@pytest.mark.parametrize("given", ["bf16", "fp16", "fp32", "bfloat16"])
def test_every_dtype_name_koqa_takes_reaches_vllm_as_its_name(given, tiny_model_dir, monkeypatch):
    vllm = pytest.importorskip("vllm")
    asked = []
    monkeypatch.setattr(vllm, "LLM", lambda **kwargs: asked.append(kwargs))
    from koqa.eval.vllm_backend import VLLMGenerator

    VLLMGenerator(str(tiny_model_dir), dtype=given)
    assert asked[0]["dtype"] in ("bfloat16", "float16", "float32")


def test_adapter_weights_cut_short_are_a_one_line_error(tmp_path):
    from koqa.runs import locate_adapter

    run = fake_run(tmp_path / "run")
    weights = run / "adapter" / "adapter_model.safetensors"
    whole = weights.read_bytes()
    assert locate_adapter(run, "final").dir == str(run / "adapter")
    for cut in (0, 4, 8, 20, len(whole) - 1):
        weights.write_bytes(whole[:cut])
        with pytest.raises(KoqaError, match=r"adapter_model.safetensors: is not a whole safetensors file"):
            locate_adapter(run, "final")
    weights.unlink()
    with pytest.raises(KoqaError, match="no adapter_model.safetensors"):
        locate_adapter(run, "final")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
file_bytes = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())


@settings(deadline=None)  # the first example pays for imports
@given(file_bytes, st.lists(file_bytes, max_size=3))
def test_any_answer_log_reads_as_answers_or_a_one_line_error(header, lines):
    from koqa.eval.answer_log import AnswerLog

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generations.jsonl"
        path.write_bytes(b"\n".join([header, *lines]))
        try:
            log = AnswerLog(path, {"model": "m"})
        except KoqaError as error:
            assert "\n" not in str(error) and str(path) in str(error)
        else:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in log.done.items())


@settings(deadline=None)
@given(file_bytes, st.sampled_from(["koqa_run.json", "adapter/adapter_config.json"]))
def test_any_run_file_reads_or_is_a_one_line_error(content, name):
    from koqa.runs import locate_adapter

    with tempfile.TemporaryDirectory() as tmp:
        run = fake_run(Path(tmp) / "run")
        (run / name).write_bytes(content)
        try:
            adapter = locate_adapter(run, "final")
            adapter.peft_type  # noqa: B018  what eval and merge read next
        except KoqaError as error:
            assert "\n" not in str(error) and name.split("/")[-1] in str(error)

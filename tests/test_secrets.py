"""Secrets are never printed, logged or written: every message goes through koqa.errors.redact, and a
token-shaped string in any position a user can put one (a --set key, value or bare item, a column
name, a --columns mapping, a template, a path) is refused or redacted, never echoed or stored."""

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from conftest import DACON_ROWS, write_csv
from koqa.errors import REDACTED, KoqaError, redact

TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWx12"
tokens = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["hf_", "sk-", "ghp_"]),
    st.text(alphabet="ABCDEFGHIJabcdefghij0123456789", min_size=24, max_size=40),
)


@given(st.text(max_size=30), tokens, st.text(max_size=30))
def test_redact_hides_a_token_wherever_it_stands(before, token, after):
    assert token not in redact(before + token + after)


@given(tokens)
def test_every_error_message_is_redacted(token):
    error = KoqaError(f"bad value {token}", file=f"data/{token}.csv", field=token, fix=f"not {token}")
    assert token not in str(error) and REDACTED in str(error) and token not in (error.file + error.field)


def run(tmp_path, *args):
    """The command's result and the text of every file it wrote (the inputs given to it excluded)."""
    given_files = {p for p in tmp_path.rglob("*") if p.is_file()}
    result = subprocess.run(
        [sys.executable, "-m", "koqa.cli", *map(str, args)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p not in given_files]
    return result, "".join(p.read_text(encoding="utf-8", errors="replace") for p in written)


def never_shown(tmp_path, *args, refused=True):
    result, written = run(tmp_path, *args)
    if refused:
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert TOKEN not in result.stdout + result.stderr + written
    return result


def test_set_keys_values_and_bare_items(tmp_path, dacon_train):
    base = ["sft", "--data", dacon_train, "--out", "run"]
    never_shown(tmp_path, *base, "--set", TOKEN)
    never_shown(tmp_path, *base, "--set", f"{TOKEN}=1")
    never_shown(tmp_path, *base, "--set", f"lora_r={TOKEN}")
    result = never_shown(tmp_path, *base, "--set", f"model=x{TOKEN}")  # a letter before the prefix hides nothing
    assert "koqa never stores secrets" in result.stderr  # refused as a secret, before anything looks for it
    assert not (tmp_path / "run").exists()


def test_column_names_and_column_maps(tmp_path):
    header = ["id", "context", TOKEN, TOKEN]
    write_csv(tmp_path / "repeated.csv", header, [r for r in DACON_ROWS])
    never_shown(tmp_path, "preprocess", "repeated.csv", "--out", "out")
    write_csv(tmp_path / "train.csv", ["id", "context", "question", "answer", TOKEN], [(*r, "x") for r in DACON_ROWS])
    never_shown(tmp_path, "preprocess", "train.csv", "--columns", f"id={TOKEN}", "--out", "out2")


def test_a_template_file_with_a_token_is_refused_before_it_is_copied(tmp_path, dacon_train):
    (tmp_path / "mine.txt").write_text(f"{{context}}\n{{question}}\n# {TOKEN}\n답:", encoding="utf-8")
    never_shown(tmp_path, "sft", "--data", dacon_train, "--out", "run", "--template", "mine.txt")
    assert not (tmp_path / "run" / "template.txt").exists()


def test_a_path_holding_a_token_is_refused_without_it(tmp_path):
    result = never_shown(tmp_path, "score", "--gold", f"{TOKEN}.csv", "--pred", "p.csv")
    assert "field 'gold'" in result.stderr

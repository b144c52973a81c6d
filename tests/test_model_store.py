import json

import pytest

from koqa import model_store
from koqa.errors import KoqaError


def test_default_model_is_prepared_and_verified(default_model_dir):
    assert model_store.verify_model_dir(default_model_dir, deep=True)
    info = json.loads((default_model_dir / model_store.MARKER).read_text(encoding="utf-8"))
    assert "model.safetensors" in info["files"] and not list(default_model_dir.glob("*.bin"))
    assert model_store.resolve_model(None) == str(default_model_dir)
    assert model_store.prepare_default_model() == default_model_dir  # idempotent, returns at once


def test_a_folder_without_marker_or_with_a_truncated_file_is_not_complete(tmp_path, default_model_dir):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(default_model_dir, copy)
    assert model_store.verify_model_dir(copy)
    with open(copy / "config.json", "a", encoding="utf-8") as handle:
        handle.write(" ")
    assert not model_store.verify_model_dir(copy)
    (copy / model_store.MARKER).unlink()
    assert not model_store.verify_model_dir(copy)


def test_crash_half_way_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KOQA_HOME", str(tmp_path))

    def crash(*args, **kwargs):
        raise RuntimeError("killed half-way")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", crash)
    with pytest.raises(RuntimeError, match="killed half-way"):
        model_store.prepare_default_model()
    models = tmp_path / "models"
    assert not model_store.default_model_dir().exists()
    assert list(models.iterdir()) == []  # the work folder was removed


def test_hub_id_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(KoqaError, match="model 'someone/no-such-model' is not a local folder.*pass its folder"):
        model_store.resolve_model("someone/no-such-model")


def test_not_a_model_folder(tmp_path):
    with pytest.raises(KoqaError, match="not a model folder: no config.json"):
        model_store.resolve_model(str(tmp_path))

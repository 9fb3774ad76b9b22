"""Models (bench/catalog/models.py): specs from matrix entries, and untrusted code and files: custom
model code needs an explicit opt-in, weights never unpickle."""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
import torch

from bench.catalog import models
from bench.errors import ConfigError, UnsupportedError
from bench.exec.worker import run_cell
from bench.spec import Cell, MethodSpec, ModelSpec, TaskSpec
from tests.helpers import TINY, tiny_config


def custom_code_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    (folder / "configuration_evil.py").write_text(
        "raise SystemExit('custom code ran')\n")
    return folder


def test_custom_code_is_refused_without_trust_remote_code(tmp_path: Path) -> None:
    folder = custom_code_model(tmp_path / "evil")
    with pytest.raises(UnsupportedError, match="trust_remote_code = true"):
        models.load_config(ModelSpec("evil", id=str(folder)))
    rec = run_cell(Cell(ModelSpec("evil", id=str(folder)), MethodSpec("full", "full", {}), TaskSpec("synthetic"),
                        TINY, 0))
    assert rec.status == "unsupported" and "trust_remote_code" in rec.error
    assert rec.model_spec["trust_remote_code"] is False


def test_pickled_weights_are_never_loaded(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(tiny_config("tiny-llama"))
    model.save_pretrained(tmp_path / "m", safe_serialization=False)  # pytorch_model.bin only
    if (tmp_path / "m" / "model.safetensors").exists():
        (tmp_path / "m" / "model.safetensors").unlink()
    spec = ModelSpec("m", id=str(tmp_path / "m"))
    config = models.load_config(spec)
    with pytest.raises(OSError, match="safetensors"):
        models.load_model(spec, config, models.model_info(spec, config), 2, torch.float32, torch.device("cpu"), {})


def test_a_missing_folder_offline_is_unsupported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read when it was imported

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(UnsupportedError, match="'nobody/nothing' is not available here"):
        models.load_config(ModelSpec("nothing", id="nobody/nothing"))


@pytest.mark.parametrize("entry, spec", [
    ("tiny-llama", ModelSpec("tiny-llama")),
    ("org/some-model", ModelSpec("some-model", id="org/some-model")),
    ({"id": "org/other", "revision": "abc"}, ModelSpec("other", id="org/other", revision="abc")),
    ({"name": "mine", "id": "org/x", "trust_remote_code": True}, ModelSpec("mine", id="org/x", trust_remote_code=True)),
])
def test_model_entries_become_specs(entry: object, spec: ModelSpec) -> None:
    assert models.parse_spec(entry, "m.toml: models[0]") == spec


@pytest.mark.parametrize("entry, message", [
    ("tiny-lama", "unknown model 'tiny-lama' (did you mean 'tiny-llama'?)"),
    ({"name": "tiny-llama", "revison": "x"}, "unknown key 'revison' (did you mean 'revision'?)"),
    ({"id": "org/x", "trust_remote_code": "yes"}, "trust_remote_code = 'yes' must be true or false"),
    ({}, "a model needs 'name' (a built-in) or 'id'"),
    (3, "expected a model name or a table"),
])
def test_bad_model_entries_name_the_problem(entry: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("m.toml: models[0]: " + message)):
        models.parse_spec(entry, "m.toml: models[0]")


@pytest.mark.parametrize("name, kind", [("tiny-llama", "causal"), ("tiny-gpt2", "causal"), ("tiny-bert", "encoder")])
def test_model_info_reads_the_config(name: str, kind: str) -> None:
    config = tiny_config(name)
    info = models.model_info(ModelSpec(name), config)
    assert (info.kind, info.model_type, info.random_weights) == (kind, config.model_type, True)
    assert (info.hidden_size, info.num_layers, info.vocab_size) == (
        config.hidden_size, config.num_hidden_layers, config.vocab_size)


def test_a_quantized_random_model_is_quantized_in_memory_as_a_checkpoint_would_be(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random weights for a quantized row load from memory: nothing is written to disk, and the
    quantized model holds what saving the random model and loading it with the same config gives."""
    import bitsandbytes  # noqa: F401  (in the lock: missing, this test fails rather than skips)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

    def quant() -> BitsAndBytesConfig:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)

    spec, cpu = ModelSpec("tiny-llama"), torch.device("cpu")
    config = models.load_config(spec)
    torch.manual_seed(0)
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", lambda *a, **k: pytest.fail("wrote the model to disk"))
    loaded = models.load_model(spec, config, models.model_info(spec, config), 2, torch.bfloat16, cpu,
                               {"quantization_config": quant(), "dtype": torch.bfloat16})
    monkeypatch.undo()
    torch.manual_seed(0)
    random = models.from_config(models.load_config(spec), models.model_info(spec, config), 2, torch.bfloat16, cpu)
    random.save_pretrained(tmp_path / "saved")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", quantization_config=quant(),
                                                     device_map={"": cpu}, dtype=torch.bfloat16)
    got, want = loaded.state_dict(), reference.state_dict()
    assert getattr(loaded, "is_loaded_in_4bit", False)
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want if isinstance(want[k], torch.Tensor))

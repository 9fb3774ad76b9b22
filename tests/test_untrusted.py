"""Untrusted code and files: custom model code needs an explicit opt-in, weights never unpickle,
and a matrix can name only registered methods."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import models
from bench.config import Cell, MethodSpec, ModelSpec, TaskSpec
from bench.errors import ConfigError, UnsupportedError
from bench.worker import run_cell
from tests.helpers import TINY


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
    assert rec["status"] == "unsupported" and "trust_remote_code" in rec["error"]
    assert rec["model_spec"]["trust_remote_code"] is False


def test_pickled_weights_are_never_loaded(tmp_path: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{**models.BUILTIN["tiny-llama"].config})
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(tmp_path / "m", safe_serialization=False)  # pytorch_model.bin only
    if (tmp_path / "m" / "model.safetensors").exists():
        (tmp_path / "m" / "model.safetensors").unlink()
    spec = ModelSpec("m", id=str(tmp_path / "m"))
    config = models.load_config(spec)
    with pytest.raises(OSError, match="safetensors"):
        models.load_model(spec, config, models.model_info(spec, config), 2, torch.float32, torch.device("cpu"), {})


def test_a_matrix_cannot_name_arbitrary_python(tmp_path: Path) -> None:
    from bench.config import load_matrix

    path = tmp_path / "m.toml"
    path.write_text('models = ["tiny-llama"]\ntasks = ["synthetic"]\n[[methods]]\nmethod = "os:system"\n')
    with pytest.raises(ConfigError, match="unknown method 'os:system'"):
        load_matrix(str(path))

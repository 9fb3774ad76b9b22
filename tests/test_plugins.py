"""A method from outside the repository: a throwaway distribution that declares the `bench.methods`
entry point is put on PYTHONPATH (no pip install), then `bench list` shows it and `bench run`
runs it in a matrix like a built-in."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]

PLUGIN_MODULE = '''
"""Norm tuning: train only the normalisation layers (and an encoder's classification head)."""
from dataclasses import dataclass

from bench.method import CellContext, Method
from bench.registry import register_method


@dataclass(frozen=True)
class NormTuningOptions:
    train_head: bool = False  # also train a causal LM's output head (an encoder's head always trains)


@register_method
class NormTuning(Method):
    name = "norm_tuning"
    Config = NormTuningOptions
    description = "train only the normalisation layers"

    def adapt(self, model, ctx: CellContext):
        model.requires_grad_(False)
        for module in model.modules():
            if type(module).__name__.lower().endswith("norm"):
                module.requires_grad_(True)
        if ctx.model.kind == "encoder":
            backbone = {id(p) for p in model.base_model.parameters()}
            for p in model.parameters():
                p.requires_grad_(p.requires_grad or id(p) not in backbone)
        elif self.config.train_head:
            model.get_output_embeddings().requires_grad_(True)
        return model
'''

MATRIX = '''
name = "plugin"
models = ["tiny-llama"]
tasks = ["synthetic"]
seeds = [0]

[defaults]
batch_size = 4
seq_len = 32
steps = 2
warmup_steps = 1
lr = 1e-3
eval_examples = 16
threads = 2
timeout_s = 300

[[methods]]
method = "norm_tuning"
options = { train_head = true }
'''


def make_plugin(site: Path) -> None:
    """A package plus the *.dist-info folder that importlib.metadata reads its entry points from."""
    (site / "bench_norm_tuning.py").write_text(textwrap.dedent(PLUGIN_MODULE).lstrip())
    info = site / "bench_norm_tuning-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-norm-tuning\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bench.methods]\nnorm_tuning = bench_norm_tuning:NormTuning\n")


def bench(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_plugin_is_listed_and_runs_in_a_matrix(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    make_plugin(site)

    listed = bench(["list"], site)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.strip().startswith("norm_tuning"))
    assert "[plugin: bench_norm_tuning]" in line
    assert "train_head: bool = False" in listed.stdout

    matrix = tmp_path / "plugin.toml"
    matrix.write_text(MATRIX)
    out = tmp_path / "run"
    ran = bench(["run", str(matrix), "--out", str(out)], site)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
    assert [r["method"] for r in records] == ["norm_tuning"]
    rec = records[0]
    assert rec["status"] == "ok", (rec["error"], rec.get("traceback"))
    # tiny-llama: two RMSNorm weights a layer and the final one, and the hidden x vocab output head
    config = tiny_config("tiny-llama")
    norms = (2 * config.num_hidden_layers + 1) * config.hidden_size
    assert rec["params"]["trainable"] == norms + config.hidden_size * config.vocab_size
    assert len(rec["time"]["step_s"]) == 2

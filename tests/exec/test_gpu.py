"""GPU checks (marked `gpu`: skipped without CUDA). Each runs a whole cell in its own process,
as the runner does, and checks what only a GPU can show."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import load_matrix
from bench.exec import runner
from bench.results import store
from bench.results.record import Record

pytestmark = pytest.mark.gpu

MATRIX = """
name = "gpu-test"
models = ["tiny-llama"]
tasks = ["synthetic"]
[defaults]
batch_size = 8
seq_len = 128
steps = 5
warmup_steps = 2
precision = "bf16"
eval_examples = 16
timeout_s = 300
"""


def run(tmp_path: Path, methods: str, env: dict[str, str] | None = None, model: str = "tiny-llama") -> list[Record]:
    path = tmp_path / "m.toml"
    path.write_text(MATRIX.replace('models = ["tiny-llama"]', f'models = ["{model}"]') + methods)
    matrix = load_matrix(str(path))
    runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, {"command": "t", "started_at": "n"},
                      slots=[env or {}], allow_busy_gpu=True)
    return store.read_records(tmp_path / "run")


def test_cuda_cell_records_allocator_nvml_and_event_times(tmp_path: Path) -> None:
    (rec,) = run(tmp_path, '[[methods]]\nmethod = "lora"\n')
    assert rec.status == "ok", rec.error
    mem, t = rec.memory, rec.time
    assert rec.device.kind == "cuda" and rec.cuda
    assert mem.peak_allocated_bytes >= mem.weights_bytes > 0
    assert mem.peak_reserved_bytes >= mem.peak_allocated_bytes
    assert mem.nvml_device_peak_bytes is not None and mem.nvml_device_peak_bytes > 0
    assert len(t.step_s) == 5 and all(s > 0 for s in t.step_s)
    assert t.tokens_per_s > 0


def test_energy_of_seconds_of_timed_steps_is_read_from_nvml(tmp_path: Path) -> None:
    # NVML's counter ticks every 20 to 100 ms: the span must last seconds for a mean power to mean
    # anything, so the Qwen2.5-0.5B shape at 8 x 512 tokens (LoRA, bf16), 40 timed steps: ~2 s or more
    (rec,) = run(tmp_path, '[[methods]]\nmethod = "lora"\nsettings = { batch_size = 8, seq_len = 512, steps = 40, '
                           'warmup_steps = 3, eval_examples = 16 }\n', model="qwen2.5-0.5b")
    assert rec.status == "ok", rec.error
    e = rec.energy  # NVML's energy counter (or power samples) over the timed steps
    assert e.source in ("nvml_total_energy", "nvml_power_samples"), e.note
    assert e.train_j > 0 and 20 < e.train_mean_w < 1500 and e.train_j_per_1k_tokens > 0, e
    assert e.train_s >= sum(rec.time.step_s)  # the span holds the timed steps
    assert e.eval_j is not None and e.eval_j >= 0
    if e.source == "nvml_total_energy":  # read at its ticks, as the record says (or why not)
        assert "at its ticks" in e.reading or e.reading.startswith("read at once"), e.reading
        assert ("at its ticks" in e.reading) == (e.tick_s is not None) and (e.tick_s is None or 0 < e.tick_s < 0.3)
    else:
        assert "power sampled" in e.reading and e.tick_s is None


def test_compiled_lora_with_chunked_loss_and_a_target_runs_on_cuda(tmp_path: Path) -> None:
    (rec,) = run(tmp_path, '[[methods]]\nmethod = "lora"\nsettings = { compile = "default", loss = "chunked", '
                           'target_accuracy = 0.99, target_every = 2 }\n')
    assert rec.status == "ok", rec.error
    assert rec.time.compile_warmup_steps >= 3 and rec.time.compile_s is not None
    assert [p["step"] for p in rec.target.curve] == [2, 4, 6, 7] and rec.target.reached is not None


def test_paged_optimizer_state_is_managed_and_seen_by_nvml(tmp_path: Path) -> None:
    # bitsandbytes pages the state of parameters of at least 1e5 elements only: tiny-llama's largest
    # has 20,480, so the Qwen2.5-0.5B shape (its embedding: 151936 x 896), at a small batch
    (rec,) = run(tmp_path, '[[methods]]\nmethod = "full"\nsettings = { optimizer = "paged_adamw", batch_size = 1, '
                           'seq_len = 64, steps = 3, warmup_steps = 1, eval_examples = 0 }\n', model="qwen2.5-0.5b")
    assert rec.status == "ok", rec.error
    opt, mem = rec.optimizer, rec.memory
    assert opt.paged_active is True and opt.state_bytes_managed > 0
    assert opt.state_bytes_device < opt.state_bytes_managed
    assert f"{opt.state_bytes_managed} bytes" in opt.paged_note
    # torch's counters do not see the managed state; NVML's device figure does
    assert mem.nvml_device_peak_bytes - mem.peak_allocated_bytes >= 0.5 * opt.state_bytes_managed


def test_out_of_memory_is_recorded_and_the_next_cell_runs(tmp_path: Path) -> None:
    # Under a 2 GiB cap: the fp32 logits of 512 x 2048 tokens x 320 are 1.3 GiB, and the loss needs
    # several such tensors.
    methods = ('[[methods]]\nname = "huge"\nmethod = "full"\nsettings = { batch_size = 512, seq_len = 2048 }\n'
               '[[methods]]\nname = "small"\nmethod = "full"\n')
    recs = run(tmp_path, methods, {"BENCH_MEMORY_CAP_BYTES": str(2 * 2**30)})
    assert [r.status for r in recs] == ["oom", "ok"], [r.error for r in recs]
    assert recs[0].failed_step == 0 and "out of memory" in recs[0].error
    assert recs[0].memory_cap.cap_bytes == 2 * 2**30  # the probe's cap is in the record

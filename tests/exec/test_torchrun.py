"""Multi-rank cells on the CPU: torchrun with the gloo backend and 2 ranks on a tiny Llama.

DDP and FSDP2, full fine-tuning and LoRA, must give the loss curve one rank gives on the same global
batch (each rank trains on its half of every batch). The tolerance is 1e-5 relative: the ranks'
gradients are averaged by an all-reduce (DDP) or a reduce-scatter (FSDP), which sums the same fp32
numbers in another order than one rank's batch mean, a difference of a few ulps (measured: at most
2e-7 relative over 5 steps). A real fault is orders of magnitude larger: a rank training on the
wrong rows, or gradients not averaged, moves the loss by more than 1e-3 from the second step (the
last test shows it). A rank that dies is an `error` record, a rank that hangs a `timeout`, and the
matrix goes on after either."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import load_matrix
from bench.exec import runner, torchrun
from bench.exec.launchers import CellLauncher
from bench.results import store
from bench.results.record import Record
from tests.exec.faults import alive

MATRIX = """
name = "ranks"
models = ["tiny-llama"]
tasks = [{{ name = "synthetic", words = 12, min_words = 1 }}]
[defaults]
batch_size = 2
seq_len = 48
steps = 4
warmup_steps = 1
lr = 3e-3
eval_examples = 8
threads = 1
timeout_s = {timeout}
{methods}
"""
# no dropout: one rank draws one mask over 4 rows, two ranks two masks over 2 rows each, and the
# curves would part by the masks (0.2% by the fifth step at LoRA's default 0.05), not by the sharding
LORA = 'method = "lora"\noptions = { r = 4, alpha = 8, dropout = 0.0 }'


def _ranks_alive() -> list[int]:
    import subprocess

    out = subprocess.run(["pgrep", "-f", "bench.exec.rank |tests.exec.rank_faults "], capture_output=True, text=True)
    return [p for p in map(int, out.stdout.split()) if alive(p)]


def _run(tmp_path: Path, methods: str, timeout: float = 240, launcher: CellLauncher | None = None) -> list[Record]:
    path = tmp_path / "m.toml"
    path.write_text(MATRIX.format(timeout=timeout, methods=methods))
    matrix = load_matrix(str(path))
    runner.run_matrix(matrix, matrix.cells, tmp_path / "run", False, {"command": "t", "started_at": "n"},
                      launcher=launcher)
    return store.read_records(tmp_path / "run")


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Record]:
    """One rank on the global batch of 4 rows, and 2 ranks of 2 rows each, per strategy and method."""
    rows = []
    for method, body in (("full", 'method = "full"'), ("lora", LORA)):
        rows.append(f'[[methods]]\nname = "{method}-single"\n{body}\nsettings = {{ batch_size = 4 }}')
        for strategy in ("ddp", "fsdp"):
            rows.append(f'[[methods]]\nname = "{method}-{strategy}"\n{body}\n'
                        f'settings = {{ strategy = "{strategy}", nproc = 2 }}')
    recs = _run(tmp_path_factory.mktemp("ranked"), "\n".join(rows))
    return {r.variant: r for r in recs}


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_give_the_loss_curve_of_one_rank_on_the_global_batch(ranked: dict[str, Record], method: str,
                                                                      strategy: str) -> None:
    one, two = ranked[f"{method}-single"], ranked[f"{method}-{strategy}"]
    assert one.status == "ok" and two.status == "ok", (one.error, two.error)
    assert len(two.quality.train_loss) == 5
    assert two.quality.train_loss == pytest.approx(one.quality.train_loss, rel=1e-5)
    assert two.quality.train_loss[-1] < two.quality.train_loss[0]  # it trains


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_every_rank_reports_its_peak_and_step_times(ranked: dict[str, Record], strategy: str) -> None:
    rec = ranked[f"full-{strategy}"]
    r = rec.ranks
    assert r.strategy == strategy and r.world_size == 2 and r.backend == "gloo"
    assert [b["rank"] for b in r.per_rank] == [0, 1]
    for b in r.per_rank:
        assert b["peak_rss_above_baseline_bytes"] > 0 and len(b["step_s"]) == 4 and b["step_s_median"] > 0
    peaks = [b["peak_rss_above_baseline_bytes"] for b in r.per_rank]
    assert r.over_ranks["peak_rss_above_baseline_bytes"] == {"max": max(peaks), "min": min(peaks),
                                                             "mean": sum(peaks) / 2}
    assert r.global_tokens_per_step == pytest.approx(sum(b["tokens_per_step"] for b in r.per_rank))
    assert r.collectives_s is None and "not measured" in r.collectives_note
    assert ("fully_shard" in r.wrapped) == (strategy == "fsdp")


def test_fsdp_shards_what_ddp_replicates(ranked: dict[str, Record]) -> None:
    ddp, fsdp = ranked["full-ddp"].memory.breakdown, ranked["full-fsdp"].memory.breakdown
    assert ddp.parameters_bytes == ranked["full-single"].memory.breakdown.parameters_bytes
    # each rank holds about half of every parameter, gradient and moment (plus the uneven rows' rest)
    for key in ("parameters_bytes", "gradients_bytes", "optimizer_bytes"):
        assert 0.45 < getattr(fsdp, key) / getattr(ddp, key) < 0.6, key


def test_without_averaged_gradients_the_curve_parts_at_once(ranked: dict[str, Record], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What the tolerance above guards against: two DDP ranks whose gradients are never averaged
    (each keeps its own) start on the one rank's loss, the same rows through the same weights, and
    leave its curve by more than 1e-3 from the second step."""
    monkeypatch.setenv("BENCH_TEST_RANK_FAULT", "unsynced")
    recs = _run(tmp_path, '[[methods]]\nname = "unsynced"\nmethod = "full"\nsettings = { strategy = "ddp", nproc = 2 }',
                launcher=CellLauncher(rank_module="tests.exec.rank_faults"))
    assert recs[0].status == "ok", recs[0].error
    one, unsynced = ranked["full-single"].quality.train_loss, recs[0].quality.train_loss
    assert unsynced[0] == pytest.approx(one[0], rel=1e-5)
    assert all(abs(u - o) > 1e-3 * o for u, o in zip(unsynced[1:], one[1:])), (unsynced, one)


def test_a_rank_that_dies_takes_its_cell_down_and_the_matrix_goes_on(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_TEST_RANK_FAULT", "die")
    methods = (f'[[methods]]\nname = "dies"\n{LORA}\nsettings = {{ strategy = "ddp", nproc = 2, steps = 100000 }}\n'
               f'[[methods]]\nname = "after"\n{LORA}')
    recs = _run(tmp_path, methods, launcher=CellLauncher(rank_module="tests.exec.rank_faults"))
    assert [r.variant for r in recs] == ["dies", "after"]
    assert recs[0].status == "error" and "torchrun exited with code" in recs[0].error, recs[0].error
    assert recs[1].status == "ok"
    assert _ranks_alive() == []  # torchrun ended rank 0 when rank 1 died


def test_a_hung_collective_ends_at_the_cells_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_TEST_RANK_FAULT", "hang")
    methods = (f'[[methods]]\nname = "hangs"\n{LORA}\nsettings = {{ strategy = "ddp", nproc = 2, timeout_s = 25 }}\n'
               f'[[methods]]\nname = "after"\n{LORA}')
    recs = _run(tmp_path, methods, launcher=CellLauncher(rank_module="tests.exec.rank_faults"))
    assert recs[0].status == "timeout" and "timeout_s = 25" in recs[0].error and "2 ranks" in recs[0].error
    assert recs[1].status == "ok"
    assert _ranks_alive() == []  # torchrun's session was killed whole, the hung rank with it


def test_fsdp_over_4bit_weights_is_unsupported_with_the_reason(tmp_path: Path) -> None:
    recs = _run(tmp_path, '[[methods]]\nmethod = "qlora"\nsettings = { strategy = "fsdp", nproc = 2 }')
    assert recs[0].status == "unsupported", recs[0].error
    assert "Params4bit" in recs[0].error and "rank" not in recs[0].error.split(":")[0]


def test_one_node_is_standalone_and_several_meet_at_the_jobs_first_node() -> None:
    from tests.helpers import cell

    one = cell("lora", strategy="ddp", nproc=2)
    cmd = torchrun.command(one, "c.json", "out", "m")
    assert "--standalone" in cmd and "--nproc-per-node=2" in cmd and cmd[-4:] == ["bench.exec.rank", "c.json",
                                                                                   "out", "m"]
    many = cell("lora", strategy="fsdp", nproc=4, nnodes=2)
    with pytest.raises(ValueError, match="rendezvous"):
        torchrun.command(many, "c.json", "out", "m")
    cmd = torchrun.command(many, "c.json", "out", "m", torchrun.Rendezvous("node07", 1))
    assert "--standalone" not in cmd
    assert {"--nnodes=2", "--nproc-per-node=4", "--node-rank=1", "--master-addr=node07"} <= set(cmd)



def test_a_cell_wanting_more_gpus_than_the_node_has_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tests.helpers import cell

    eight = cell("lora", strategy="fsdp", nproc=8)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "need 8 GPUs, and this node has 2" in torchrun.too_few_gpus(eight)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # no CUDA: the ranks run on the CPU
    assert torchrun.too_few_gpus(eight) is None


def test_recipe_axes_a_multi_rank_cell_cannot_take_are_refused_before_loading() -> None:
    from bench.recipe import distributed_reason
    from tests.helpers import cell

    assert distributed_reason(cell("lora", strategy="ddp", nproc=2).settings) is None
    for axis, words in (({"loss": "chunked"}, "LM head"), ({"compile": "default"}, "own clock"),
                        ({"padding": "packed"}, "one row")):
        assert words in distributed_reason(cell("lora", strategy="fsdp", nproc=2, **axis).settings)


def test_a_multi_node_cell_on_one_machine_and_a_slot_short_of_gpus_are_unsupported(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from tests.helpers import cell

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert "this node has 2" in torchrun.too_few_gpus(cell("lora", strategy="ddp", nproc=4),
                                                      {"CUDA_VISIBLE_DEVICES": "0,1"})
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    rec = torchrun.run(cell("lora", strategy="ddp", nproc=2, nnodes=2), "m", {}, tmp_path / "log")
    assert rec.status == "unsupported" and "--executor slurm" in rec.error


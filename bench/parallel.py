"""One cell over several ranks (settings `strategy`, `nproc`, `nnodes`), inside each rank's process.

torchrun starts the ranks (bench/exec/torchrun.py); each runs the harness's one loop on its slice of
every global batch. `ddp` wraps the model in DistributedDataParallel (gradients as views of its
buckets, so no second copy of them); `fsdp` applies FSDP2's `fully_shard` to every decoder layer and
then to the root, with a mixed-precision policy from the cell's precision and optionally the sharded
parameters in CPU memory. Step times are taken between barriers, so they mean the same on every rank;
each rank's figures go to rank 0, which writes the cell's one record with its `ranks` block. Each
rank measures its own device's energy; the cell's is their sum over the distinct counters (ranks that
share one, as RAPL's packages on one machine, count it once).
"""
from __future__ import annotations

import os
import socket
import statistics
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from bench.errors import UnsupportedError
from bench.spec import Settings


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int


def world() -> World | None:
    """This process's place in the cell's process group; None when the cell runs on one rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init(timeout_s: float) -> World:
    """Join torchrun's process group (NCCL on CUDA, gloo on the CPU); collectives give up after the
    cell's timeout, and the launcher kills the ranks at it anyway."""
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    if cuda:
        if local >= torch.cuda.device_count():
            raise UnsupportedError(f"local rank {local} needs GPU {local}; this node has "
                                   f"{torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    kwargs: dict[str, Any] = {"device_id": torch.device("cuda", local)} if cuda else {}
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s), **kwargs)
    found = world()
    assert found is not None
    return found


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks to shard one by one: the children of the longest ModuleList."""
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > (len(best) if best is not None else 0):
            best = module
    return list(best) if best is not None else []


def prepare(model: nn.Module, trainable: list[nn.Parameter], settings: Settings,
            device: torch.device) -> tuple[nn.Module, list[nn.Parameter], dict[str, Any]]:
    """The model the training step runs (wrapped or sharded), the parameters the optimizer takes
    (FSDP replaces them with sharded ones) and how it was done, for the record."""
    here = world()
    if here is None or not settings.distributed:
        return model, trainable, {}
    info: dict[str, Any] = {"strategy": settings.strategy, "world_size": here.size,
                            "backend": torch.distributed.get_backend()}
    if settings.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                          gradient_as_bucket_view=True)
        info["wrapped"] = "DistributedDataParallel(gradient_as_bucket_view=True)"
        return wrapped, trainable, info
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if settings.precision == "bf16-mixed" else MixedPrecisionPolicy()
    offload = CPUOffloadPolicy() if settings.fsdp_cpu_offload else OffloadPolicy()
    layers = decoder_layers(model)
    if not layers:
        raise UnsupportedError("strategy 'fsdp' shards per decoder layer, and this model has no ModuleList of layers")
    for layer in layers:
        fully_shard(layer, mp_policy=mp, offload_policy=offload)
    fully_shard(model, mp_policy=mp, offload_policy=offload)
    info["wrapped"] = (f"fully_shard on each of {len(layers)} {type(layers[0]).__name__} and the root; "
                       f"mixed precision {'bf16 params, fp32 reduce' if settings.precision == 'bf16-mixed' else 'off'}"
                       f"{'; parameters offloaded to CPU' if settings.fsdp_cpu_offload else ''}")
    return model, [p for p in model.parameters() if p.requires_grad], info


def rank_slice(batch: dict[str, torch.Tensor], here: World | None) -> dict[str, torch.Tensor]:
    """This rank's rows of a global batch (rank r takes rows r*b to (r+1)*b)."""
    if here is None:
        return batch
    rows = next(iter(batch.values())).shape[0] // here.size
    return {k: v[here.rank * rows:(here.rank + 1) * rows] for k, v in batch.items()}


def local_bytes(t: torch.Tensor) -> int:
    """Bytes this rank holds of a tensor (its shard of a DTensor)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


class BarrierTimer:
    """A step timer whose steps start and end at a barrier: every rank's step then spans the same
    interval, the slowest rank's, collective waits included."""

    def __init__(self, timer: Any) -> None:
        self.timer = timer

    def start(self) -> None:
        torch.distributed.barrier()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()
        torch.distributed.barrier()


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The global batch's figure from each rank's (every rank's loss is the mean over its rows)."""
    if world() is None:
        return values
    out = values.detach().clone()
    torch.distributed.all_reduce(out)
    return out / torch.distributed.get_world_size()


def rank_block(rec: Any) -> dict[str, Any]:
    """What one rank contributes to the record's `ranks` block."""
    here = world()
    m, t = rec.memory, rec.time
    return {"rank": here.rank if here else 0, "local_rank": here.local_rank if here else 0,
            "host": socket.gethostname(),
            "peak_allocated_bytes": m.peak_allocated_bytes, "peak_reserved_bytes": m.peak_reserved_bytes,
            "nvml_process_peak_bytes": m.nvml_process_peak_bytes,
            "peak_rss_above_baseline_bytes": m.peak_rss_above_baseline_bytes,
            "step_s": t.step_s, "step_s_median": t.step_s_median, "tokens_per_step": t.tokens_per_step,
            "energy": {k: getattr(rec.energy, k) for k in RANK_ENERGY}}


# a rank's own energy figures, in its rank block (its counter's scope names the GPU by its UUID)
RANK_ENERGY = ("source", "scope", "reading", "note", "train_j", "train_s", "train_mean_w", "eval_j", "eval_mean_w")


def summarize_ranks(blocks: list[dict[str, Any]], info: dict[str, Any]) -> dict[str, Any]:
    """The `ranks` block: every rank's figures, their max / min / mean, the global tokens/s."""
    out: dict[str, Any] = {**info, "per_rank": blocks, "over_ranks": {}}
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "nvml_process_peak_bytes",
                "peak_rss_above_baseline_bytes", "step_s_median"):
        values = [b[key] for b in blocks if b.get(key) is not None]
        if values:
            out["over_ranks"][key] = {"max": max(values), "min": min(values), "mean": statistics.fmean(values)}
    medians = [b["step_s_median"] for b in blocks if b.get("step_s_median")]
    tokens = sum(b.get("tokens_per_step") or 0 for b in blocks)
    out["global_tokens_per_step"] = tokens
    out["global_tokens_per_s"] = tokens / max(medians) if medians else None
    out["collectives_s"] = None
    out["collectives_note"] = ("not measured: the timed steps run without the profiler (it would slow them); "
                               "the step times include the collectives' waits")
    return out


def energy_over_ranks(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's `energy` figures from every rank's: summed over the distinct counters (one per
    host, source and scope; a GPU's scope has its UUID, so two GPUs of one model are two), per step
    and per 1,000 of all ranks' real tokens. Without any rank's counter: nothing (rank 0's note stays);
    where a rank has none, or no figure, no sum, and the note names it."""
    counters: dict[tuple[Any, ...], dict[str, Any]] = {}
    unmeasured = []
    for b in blocks:
        e = b.get("energy") or {}
        if e.get("source") is None or e.get("train_j") is None:
            unmeasured.append(f"rank {b['rank']} ({e.get('note') or 'no figure'})")
            continue
        counters.setdefault((b.get("host"), e["source"], e.get("scope")), e)
    if not counters:
        return {}
    summed = list(counters.values())
    scope = (f"the sum over {len(summed)} distinct counter{'s' * (len(summed) > 1)} of the {len(blocks)} ranks"
             f"{' (ranks sharing one count it once)' if len(summed) < len(blocks) else ''}: "
             + "; ".join(e["scope"] or "?" for e in summed))
    info = {"source": "+".join(sorted({e["source"] for e in summed})), "scope": scope,
            "reading": "; ".join(dict.fromkeys(e["reading"] for e in summed if e.get("reading"))) or None}
    figures = dict.fromkeys(("train_j", "train_s", "train_j_per_step", "train_j_per_1k_tokens", "train_mean_w",
                             "eval_j", "eval_mean_w"))
    if unmeasured:
        return {**info, **figures, "note": "no sum over the ranks: " + ", ".join(unmeasured) + " measured none"}
    steps = len(blocks[0].get("step_s") or [])
    tokens = sum((b.get("tokens_per_step") or 0) * len(b.get("step_s") or []) for b in blocks)
    joules = sum(e["train_j"] for e in summed)
    evals = [e.get("eval_j") for e in summed]
    eval_w = [e.get("eval_mean_w") for e in summed]
    caveats = "; ".join(dict.fromkeys(e["note"] for e in summed if e.get("note"))) or None  # found by index, say
    return {**info, "note": caveats, "train_j": joules, "train_s": max(e["train_s"] for e in summed),
            "train_j_per_step": joules / steps if steps else None,
            "train_j_per_1k_tokens": 1000 * joules / tokens if tokens else None,
            # each counter's mean power over its own span, summed: the devices drew it together
            "train_mean_w": sum(e["train_mean_w"] for e in summed) if all(e.get("train_mean_w") is not None
                                                                          for e in summed) else None,
            "eval_j": sum(evals) if None not in evals else None,
            "eval_mean_w": sum(eval_w) if None not in eval_w else None}

"""What sharding does to a rank's static memory (settings `strategy`, `nproc`, `nnodes`).

`ddp`: every rank holds the whole model, its gradients (DDP's buckets are the gradients themselves:
`gradient_as_bucket_view`) and its optimizer state, so a rank's figures are one rank's.
`fsdp` (FSDP2, one `fully_shard` per decoder layer and one on the root): a rank holds 1/world of
every parameter, gradient and moment; on top of that, while a layer computes, its parameters are
gathered whole, and the next layer's are prefetched (two layers, in the compute dtype); the root's
own parameters (embeddings, final norm, LM head) stay gathered through the step (FSDP2 does not
reshard the root after its forward); and a layer's gradients exist whole until they are
reduce-scattered. With `fsdp_cpu_offload` on CUDA, the shards and the optimizer state live in CPU
memory and only the gathered parameters and the unsharded gradients are on the device.

An upper bound in places, by design of one peak formula: the gathered layers and the unsharded
gradients are counted at the optimizer step too, where FSDP has resharded them; and the memory
model's bf16 weight casts (bf16-mixed) are counted although FSDP's policy gathers bf16 directly.
No GPU has checked these figures yet.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.predict.static import tensor_bytes

if TYPE_CHECKING:
    from bench.build import MetaBuilt


def shard(out: dict[str, Any], built: MetaBuilt, device_type: str) -> str | None:
    """Turn the whole-model static figures in `out` into one rank's; the formula's words, or None."""
    settings = built.plan.cell.settings
    world = settings.world_size
    if settings.strategy != "fsdp":
        return None if settings.strategy == "single" else f"ddp over {world} ranks: every rank holds the whole model"
    compute = built.plan.ctx.compute_dtype.itemsize
    from bench.parallel import decoder_layers

    layers = decoder_layers(built.model)
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    trainable = {id(p) for p in built.trainable}

    def gathered(params: Any) -> int:
        return sum(p.numel() * compute for p in params)

    largest = max((gathered(layer.parameters()) for layer in layers), default=0)
    largest_grads = max((sum(tensor_bytes(p) for p in layer.parameters() if id(p) in trainable)
                         for layer in layers), default=0)
    root = gathered(p for p in built.model.parameters() if id(p) not in in_layers)
    shards, grads = out["parameters_bytes"] / world, out["gradients_bytes"] / world
    optim = out["optimizer_bytes"] / world
    offload = settings.fsdp_cpu_offload and device_type == "cuda"
    if offload:
        shards = grads = optim = 0
    out.update(parameters_bytes=int(shards + root + 2 * largest), gradients_bytes=int(grads + largest_grads),
               optimizer_bytes=int(optim))
    out["sharding"] = {"world_size": world, "shard_bytes": int(shards), "root_gathered_bytes": root,
                       "layers_gathered_bytes": 2 * largest, "unsharded_layer_gradients_bytes": largest_grads,
                       "cpu_offload": offload}
    return (f"fsdp over {world} ranks: parameters, gradients and optimizer state / {world}"
            f"{' (in CPU memory)' if offload else ''}, + the root's parameters and two layers' gathered "
            f"(compute dtype), + one layer's unsharded gradients")

"""The speed and memory recipe axes of a cell (settings `gradient_checkpointing`, `activation_offload`,
`compile`, `attn_implementation`, `loss`, `padding`): what each needs before anything loads, and how
each applies to a built model. The loop stays generic: it calls the step loss and the forward context
this module hands it.
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING, Any, Callable, ContextManager

from bench.catalog.batches import IGNORE
from bench.loop import StepLoss, model_loss

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.method import Method, ModelInfo
    from bench.spec import Settings

def unsupported_reason(info: "ModelInfo", settings: "Settings", method: "Method", device_type: str) -> str | None:
    """Why this recipe cannot run for that model, method and device, or None (known before loading)."""
    if settings.padding == "packed":
        if info.kind != "causal":
            return ("padding = 'packed' needs a causal LM: transformers separates packed examples through "
                    f"position ids in decoder attention only, and {info.name} is an encoder")
        if method.virtual_tokens:
            return (f"padding = 'packed' with {method.name}: its virtual tokens go in front of a row, so in a "
                    "packed row only the first example would see them")
    if settings.loss != "standard" and info.kind != "causal":
        return (f"loss = {settings.loss!r} needs a causal LM: {info.name} is an encoder whose classification "
                "head has no vocabulary-sized logits to chunk or fuse")
    # the meta device (the memory model) runs nothing: only what the model and method allow matters there
    if settings.loss == "liger" and device_type not in ("cuda", "meta"):
        return "loss = 'liger' needs CUDA: Liger-Kernel's fused linear cross-entropy is a Triton kernel"
    if settings.loss == "liger" and device_type == "cuda" and importlib.util.find_spec("liger_kernel") is None:
        return "loss = 'liger' needs the liger-kernel package (pip install 'ft-bench[liger]'), not installed"
    missing = attention_missing(settings.attn_implementation) if device_type != "meta" else None
    if missing:
        return f"attn_implementation = {settings.attn_implementation!r}: {missing}"
    if settings.compile not in ("off", "default", "max-autotune-no-cudagraphs") and device_type not in ("cuda", "meta"):
        return f"compile = {settings.compile!r} uses CUDA graphs, which need CUDA: use 'default' on the CPU"
    return distributed_reason(settings)


def distributed_reason(settings: "Settings") -> str | None:
    """Recipe axes a multi-rank cell does not take yet (each would train something else than it says)."""
    if not settings.distributed:
        return None
    if settings.loss != "standard":
        return (f"strategy = {settings.strategy!r} with loss = {settings.loss!r}: the loss replaces the LM head before "
                "the model is wrapped or sharded, so DDP would not synchronise its gradients and FSDP would not shard "
                "or train it; use loss = 'standard'")
    if settings.compile != "off":
        return (f"strategy = {settings.strategy!r} with compile = {settings.compile!r}: each rank would decide on its "
                "own clock when compilation has settled, and the ranks' collectives would stop pairing up")
    if settings.padding == "packed":
        return (f"strategy = {settings.strategy!r} with padding = 'packed': a packed batch is one row, which cannot "
                "be split between ranks")
    return None


def attention_missing(name: str | None) -> str | None:
    """What an attention implementation lacks on this machine, by transformers' own checks."""
    from transformers import utils

    check = {"flash_attention_2": ("is_flash_attn_2_available", "the flash-attn package (2.x) with CUDA"),
             "flash_attention_3": ("is_flash_attn_3_available", "the flash-attn 3 package with a Hopper GPU"),
             "flex_attention": ("is_torch_flex_attn_available", "torch's flex attention")}.get(name or "")
    if check is None:
        return None
    available = getattr(utils, check[0], None)
    if available is None or not available():
        return f"needs {check[1]}, which is not available here"
    return None


def load_kwargs(settings: "Settings") -> dict[str, Any]:
    """Extra `from_pretrained` / `from_config` arguments of the recipe."""
    return {"attn_implementation": settings.attn_implementation} if settings.attn_implementation else {}


def check_attention(model: "nn.Module", settings: "Settings") -> None:
    """transformers may swap an implementation it cannot use for another: never a silent fallback."""
    from bench.errors import UnsupportedError

    if not settings.attn_implementation:
        return
    config = getattr(model, "config", None)
    got = getattr(config, "_attn_implementation", None)
    if got != settings.attn_implementation:
        raise UnsupportedError(f"attn_implementation = {settings.attn_implementation!r} was asked for, but the "
                               f"model loaded with {got!r}")


def apply_checkpointing(model: "nn.Module", every: int) -> int:
    """Activation checkpointing on every `every`-th decoder layer (transformers' own, non-reentrant);
    returns how many layers are checkpointed."""
    if not every:
        return 0
    # transformers >= 5.2x names it activation_checkpointing_enable (the old name warns); the GPU
    # image's 5.17 has only the old one.
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if hasattr(m, "gradient_checkpointing") and _is_layer(m)]
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i % every == 0
    return sum(1 for m in layers if m.gradient_checkpointing)


def _is_layer(module: Any) -> bool:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return isinstance(module, GradientCheckpointingLayer)


def forward_context(settings: "Settings", autocast: Callable[[], ContextManager[Any]],
                    device: "torch.device") -> Callable[[], ContextManager[Any]]:
    """The context each training forward runs in: autocast, and save-on-CPU hooks when offloading."""
    if not settings.activation_offload:
        return autocast

    @contextlib.contextmanager
    def both() -> Any:
        import torch

        with autocast(), torch.autograd.graph.save_on_cpu(pin_memory=device.type == "cuda"):
            yield

    return both


def head_owner(model: "nn.Module") -> "nn.Module":
    """The module holding the LM head (`lm_head`), under any wrapper (peft, our adapters)."""
    import torch

    for m in model.modules():  # its own child, not one a wrapper's __getattr__ forwards to
        if isinstance(m._modules.get("lm_head"), torch.nn.Linear):
            return m
    from bench.errors import UnsupportedError

    raise UnsupportedError(f"no lm_head (a Linear) found in {type(model).__name__}: the loss cannot be chunked")


class HeadlessLoss:
    """A loss computed from the last hidden states and the LM head's weight: the model runs with its
    head swapped for an identity (so no full logits exist), and `loss_fn(hidden, weight, bias, labels)`
    makes the loss. `restore()` puts the head back (evaluation needs it). `recomputes_head`: the
    loss runs the head's forward again in backward (the chunked loss' checkpointed slices)."""

    def __init__(self, model: "nn.Module", loss_fn: Callable[..., "torch.Tensor"],
                 recomputes_head: bool = False) -> None:
        import torch

        self.owner = head_owner(model)
        self.head = self.owner.lm_head
        self.identity = torch.nn.Identity()  # the same object each time: a compiled model's guards hold
        self.owner.lm_head = self.identity
        self.loss_fn = loss_fn
        self.recomputes_head = recomputes_head

    def __call__(self, model: "nn.Module", batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        labels = batch["labels"]
        hidden = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        hidden = hidden[:, -labels.shape[1]:]  # prompt tuning puts virtual tokens in front
        h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
        y = labels[:, 1:].reshape(-1)
        return self.loss_fn(h, self.head.weight, self.head.bias, y)

    def recomputed_flops(self, batch: dict[str, "torch.Tensor"]) -> int:
        """The matmul FLOPs its backward adds on `batch` by running the head's forward again: 2 x rows
        x hidden x vocab, rows being the hidden states fed to the loss (the bias is no matmul)."""
        if not self.recomputes_head:
            return 0
        rows = batch["labels"].shape[0] * (batch["labels"].shape[1] - 1)
        return 2 * rows * self.head.in_features * self.head.out_features

    def restore(self) -> None:
        self.owner.lm_head = self.head

    @contextlib.contextmanager
    def headed(self) -> Any:
        """The head in place for an evaluation between training steps, then swapped out again."""
        self.owner.lm_head = self.head
        try:
            yield
        finally:
            self.owner.lm_head = self.identity


def head_on(loss: StepLoss) -> ContextManager[Any]:
    """What an evaluation between training steps runs in: the LM head in place."""
    return loss.headed() if isinstance(loss, HeadlessLoss) else contextlib.nullcontext()


def recomputed_flops(loss: StepLoss, batch: dict[str, "torch.Tensor"]) -> int:
    """FLOPs the step's loss recomputes in its backward on `batch`, which a FLOP count sees twice."""
    return loss.recomputed_flops(batch) if isinstance(loss, HeadlessLoss) else 0


def chunked_cross_entropy(chunks: int) -> Callable[..., "torch.Tensor"]:
    """Cross-entropy over `chunks` slices of the tokens, each slice's logits recomputed in backward
    (activation checkpointing of the head), so at most one slice of fp32 logits is alive at a time.
    The mean over labelled tokens, as transformers' causal-LM loss."""

    def loss(h: "torch.Tensor", weight: "torch.Tensor", bias: "torch.Tensor | None",
             y: "torch.Tensor") -> "torch.Tensor":
        import torch
        from torch.utils.checkpoint import checkpoint

        total = h.new_zeros((), dtype=torch.float32)
        for hc, yc in zip(h.chunk(chunks), y.chunk(chunks)):
            total = total + checkpoint(_slice_loss, hc, weight, bias, yc, use_reentrant=False)
        return total / (y != IGNORE).sum().clamp(min=1)

    return loss


def _slice_loss(h: "torch.Tensor", weight: "torch.Tensor", bias: "torch.Tensor | None",
                y: "torch.Tensor") -> "torch.Tensor":
    import torch.nn.functional as F

    logits = F.linear(h, weight.to(h.dtype), None if bias is None else bias.to(h.dtype)).float()
    return F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum")


def liger_cross_entropy() -> Callable[..., "torch.Tensor"]:
    """Liger-Kernel's fused linear cross-entropy (CUDA only; checked before the cell loads)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    fused = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE)

    def loss(h: "torch.Tensor", weight: "torch.Tensor", bias: "torch.Tensor | None",
             y: "torch.Tensor") -> "torch.Tensor":
        return fused(weight, h, y, bias)

    return loss


def step_loss(model: "nn.Module", settings: "Settings") -> tuple[StepLoss, Callable[[], None]]:
    """(the training step's loss, what puts the model back as it was for evaluation)."""
    if settings.loss == "standard":
        return model_loss, lambda: None
    chunked = settings.loss == "chunked"  # Liger's fused kernel computes the input gradient in its forward
    headless = HeadlessLoss(model, chunked_cross_entropy(settings.loss_chunks) if chunked else liger_cross_entropy(),
                            recomputes_head=chunked)
    return headless, headless.restore


def compiled(model: "nn.Module", settings: "Settings") -> "nn.Module":
    """The module the training steps call: `torch.compile` of the model in the setting's mode
    (shapes marked dynamic where padding varies them), or the model itself."""
    if settings.compile == "off":
        return model
    import torch

    return torch.compile(model, mode=settings.compile, dynamic=settings.padding != "max_length" or None)

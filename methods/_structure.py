"""Where things are inside a transformer, found by structure (not by model class): the list of
layers, a layer's attention output and feed-forward block, projections, norms, an encoder's head.
Shared by the methods that place their own modules (bottleneck adapters, (IA)^3 targets); not a
method (the leading underscore keeps it out of discovery)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.errors import UnsupportedError

if TYPE_CHECKING:
    from torch import nn

# Paths inside one transformer layer, tried in order; the first that exists is the site.
SITES: dict[str, tuple[str, ...]] = {
    # the attention output projection (before the residual add / the residual LayerNorm)
    "attention": ("self_attn.o_proj", "attn.c_proj", "attention.output.dense", "self_attention.dense",
                  "attention.dense", "attn.out_proj", "attn.attention.out_proj", "self_attn.out_proj",
                  "attention.out_lin", "attn.o_proj", "attention.wo"),
    # the feed-forward block's output (the whole MLP where it is one module, else its last projection)
    "feed_forward": ("mlp", "feed_forward", "ffn", "output.dense", "fc2"),
}

def is_projection(module: "nn.Module") -> bool:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def out_width(module: "nn.Module") -> int | None:
    """Output width of a projection, or of a block's last projection; None if it has none."""
    projections = [m for m in module.modules() if is_projection(m)]
    if not projections:
        return None
    last = projections[-1]
    return int(getattr(last, "out_features", None) or getattr(last, "nf"))


def find_layers(model: "nn.Module", num_layers: int) -> tuple[str, "nn.ModuleList"]:
    """The ModuleList of transformer layers: same-class blocks, `num_layers` of them if one matches,
    in which the feed-forward site resolves."""
    from torch import nn

    lists = [(name, mod) for name, mod in model.named_modules()
             if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(b) for b in mod}) == 1
             and resolve_site(mod[0], "feed_forward") is not None]
    if not lists:
        raise UnsupportedError(
            f"no list of transformer layers found in {type(model).__name__}: looked for a ModuleList of "
            f"same-class blocks containing one of {', '.join(SITES['feed_forward'])}")
    exact = [x for x in lists if len(x[1]) == num_layers]
    return (exact or sorted(lists, key=lambda x: -len(x[1])))[0]


def resolve_site(layer: "nn.Module", site: str) -> tuple[str, "nn.Module"] | None:
    """(path, module) of the first known path for `site` inside `layer`, or None."""
    for path in SITES[site]:
        try:
            return path, layer.get_submodule(path)
        except AttributeError:
            continue
    return None


def is_norm(module: "nn.Module") -> bool:
    from torch import nn

    return isinstance(module, nn.LayerNorm) or type(module).__name__.lower().endswith("norm")


def head_parameters(model: "nn.Module") -> list["nn.Parameter"]:
    """Parameters outside the backbone (`model.base_model`): the classification head of an encoder."""
    backbone = {id(p) for p in getattr(model, "base_model", model).parameters()}
    return [p for p in model.parameters() if id(p) not in backbone]

"""(IA)^3 (Liu et al., 2022) through peft: learned vectors that rescale keys, values and the
feed-forward activations.

Target modules are peft's defaults for the model type where peft has them; for other
architectures they are derived from the model's structure: the key and value projections of
the attention block (every input projection where there are no separate ones) and the
feed-forward block's output projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import UnsupportedError, require
from bench.method import CellContext, Method
from bench.registry import register_method
from methods._peft import task_type, wrap
from methods._structure import SITES, find_layers, is_projection, resolve_site

KEY_VALUE_NAMES = {"k_proj", "v_proj", "key", "value", "k_lin", "v_lin", "wk", "wv", "k", "v"}


@dataclass(frozen=True)
class Ia3Options:
    target_modules: list[str] | None = None  # None: peft's defaults for the model type, else derived
    feedforward_modules: list[str] | None = None  # the targets whose input (not output) is scaled

    def __post_init__(self) -> None:
        require((self.target_modules is None) == (self.feedforward_modules is None), "feedforward_modules",
                self.feedforward_modules, "set both target_modules and feedforward_modules, or neither "
                "(then peft's defaults for the model type apply)")
        if self.target_modules is not None and self.feedforward_modules is not None:
            require(bool(self.target_modules), "target_modules", self.target_modules, "must name at least one module")
            extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
            require(not extra, "feedforward_modules", self.feedforward_modules,
                    f"must be a subset of target_modules; {extra} are not in it")


def derive_targets(model: Any, num_layers: int) -> tuple[list[str], list[str]]:
    """(target_modules, feedforward_modules) as full module names, found by structure."""
    prefix, layers = find_layers(model, num_layers)
    targets: list[str] = []
    feedforward: list[str] = []
    for i, layer in enumerate(layers):
        where = f"{prefix}.{i}"
        attn, ffn = resolve_site(layer, "attention"), resolve_site(layer, "feed_forward")
        if attn is None or ffn is None:
            raise UnsupportedError(f"cannot derive (IA)^3 targets for {type(layer).__name__}: looked for "
                                   f"{', '.join(SITES['attention'])} and {', '.join(SITES['feed_forward'])}; "
                                   "set target_modules and feedforward_modules")
        block_path = attn[0].split(".")[0]
        inputs = [(f"{block_path}.{n}", m) for n, m in layer.get_submodule(block_path).named_modules()
                  if n and is_projection(m) and f"{block_path}.{n}" != attn[0]]
        kv = [path for path, _ in inputs if path.rsplit(".", 1)[-1] in KEY_VALUE_NAMES]
        ffn_path, ffn_module = ffn
        if not is_projection(ffn_module):
            ffn_path += "." + [n for n, m in ffn_module.named_modules() if n and is_projection(m)][-1]
        targets += [f"{where}.{p}" for p in (kv or [p for p, _ in inputs])] + [f"{where}.{ffn_path}"]
        feedforward.append(f"{where}.{ffn_path}")
    return targets, feedforward


@register_method
class Ia3(Method):
    name = "ia3"
    Config = Ia3Options
    description = "(IA)^3 through peft (peft's target modules per model type, else derived from the structure)"

    def adapt(self, model: Any, ctx: CellContext) -> Any:
        from peft import IA3Config
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF,
        )
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
        )

        cfg = self.config
        targets, feedforward = cfg.target_modules, cfg.feedforward_modules
        source = "options"
        if targets is None:
            model_type = ctx.model.model_type
            if model_type in TARGETS and model_type in FF:
                targets, feedforward, source = list(TARGETS[model_type]), list(FF[model_type]), "peft defaults"
            else:
                targets, feedforward = derive_targets(model, ctx.model.num_layers)
                source = "derived from the model structure"
        ctx.notes["ia3_targets"] = source
        return wrap(model, IA3Config(task_type=task_type(ctx), target_modules=targets,
                                     feedforward_modules=feedforward))

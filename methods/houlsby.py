"""Houlsby adapters (Houlsby et al., 2019): two bottleneck adapters per transformer layer, after the
attention output projection and after the feed-forward block, with the layer norms trained too."""
from __future__ import annotations

from dataclasses import dataclass

from bench.registry import register_method
from methods._bottleneck import BottleneckMethod, BottleneckOptions


@dataclass(frozen=True)
class HoulsbyOptions(BottleneckOptions):
    train_layer_norms: bool = True  # the paper trains them


@register_method
class Houlsby(BottleneckMethod):
    name = "houlsby"
    Config = HoulsbyOptions
    sites = ("attention", "feed_forward")
    description = "Houlsby bottleneck adapters after attention and feed-forward (size m, or hidden / reduction_factor, default 16)"

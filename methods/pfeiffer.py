"""Pfeiffer adapters (Pfeiffer et al., 2020): one bottleneck adapter per transformer layer, after
the feed-forward block; the base model, layer norms included, stays frozen unless asked."""
from __future__ import annotations

from dataclasses import dataclass

from bench.registry import register_method
from methods._bottleneck import BottleneckMethod, BottleneckOptions


@dataclass(frozen=True)
class PfeifferOptions(BottleneckOptions):
    pass


@register_method
class Pfeiffer(BottleneckMethod):
    name = "pfeiffer"
    Config = PfeifferOptions
    sites = ("feed_forward",)
    description = "Pfeiffer bottleneck adapter after the feed-forward block (size m, or hidden / reduction_factor, default 16)"

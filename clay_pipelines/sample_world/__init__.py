"""The sample world: a small but realistic platform, generated deterministically from a seed."""

from clay_pipelines.sample_world.generator import WorldParameters
from clay_pipelines.sample_world.loader import LoadSummary, load_world

__all__ = ["LoadSummary", "WorldParameters", "load_world"]

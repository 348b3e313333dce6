"""Memory planning: what one training worker of a student needs (`estimate`), from the model's
config alone (`shape`), checked against `gpu_memory_gb` and used to resolve ``num_workers: auto``
(`plan`). No Ray, no weights read."""

from w2sweep.memory.estimate import GB, MAX_WORKERS, Estimate, Layout, estimate, layout_of
from w2sweep.memory.shape import ModelShape, model_shape, spec_shape

__all__ = ["GB", "MAX_WORKERS", "Estimate", "Layout", "ModelShape", "estimate", "layout_of", "model_shape",
           "spec_shape"]

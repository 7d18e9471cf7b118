"""How an architecture lays out its layers, shared by the builders (models.py) and the closed-form
parameter counts of the registry (architectures.py). Torch-free, and no registry rows: the
trainer's code closure holds this module, so a new registry row retrains nothing."""

from __future__ import annotations


def plain_stage_convs(depth: int) -> list[int]:
    """Convolutions per stage of a plain net: depth − 1 of them, spread over three stages."""
    convs = depth - 1
    return [convs // 3 + (1 if stage < convs % 3 else 0) for stage in range(3)]

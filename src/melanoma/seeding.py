"""Seeds: a run draws every random number from its one `--seed`, through these two functions.

Every epoch's shuffle, every sample's augmentation, every batch's dropout and mixing, and every
change of the shift suite take a seed derived from (run seed, epoch, index, ...), so a resumed run
draws exactly what the uninterrupted one would have and worker processes change nothing.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from a tuple of integers (run seed, epoch, index, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (what builds the network's initial weights)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

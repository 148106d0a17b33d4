"""A small synthetic image-caption source for training tests: learnable, deterministic, CPU-fast.

Each pair shows a coloured square in one of four quadrants on a noisy background, and its caption
names the colour and the quadrant ("a red square at the top left"): 16 concepts a tiny CLIP
learns in a few dozen steps, with the same batch format as the dataset loader
(uint8 images [B,3,S,S], tokens [B,ctx], proposal ids).
"""

from __future__ import annotations

import numpy as np
import torch

COLOURS = {"red": (230, 40, 40), "green": (40, 210, 60), "blue": (50, 70, 240), "yellow": (235, 225, 40)}
PLACES = ("top left", "top right", "bottom left", "bottom right")


def make_pairs(n: int, image_size: int, seed: int) -> tuple[torch.Tensor, list[str], list[int]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(n, 3, image_size, image_size), dtype=np.uint8)
    captions, concepts = [], []
    half = image_size // 2
    side = image_size // 3
    names = list(COLOURS)
    for i in range(n):
        c, p = int(rng.integers(4)), int(rng.integers(4))
        y0 = (0 if p < 2 else half) + int(rng.integers(0, half - side + 1))
        x0 = (0 if p % 2 == 0 else half) + int(rng.integers(0, half - side + 1))
        images[i, :, y0:y0 + side, x0:x0 + side] = np.array(COLOURS[names[c]], dtype=np.uint8)[:, None, None]
        captions.append(f"a {names[c]} square at the {PLACES[p]}")
        concepts.append(4 * c + p)
    return torch.from_numpy(images), captions, concepts


class SyntheticPairs:
    """One epoch per iteration; reshuffled by `set_epoch`; a rank's share under DDP."""

    def __init__(self, tokenizer, *, n: int = 256, batch_size: int = 32, image_size: int = 64, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.images, self.captions, self.concepts = make_pairs(n, image_size, seed)
        self.tokens = tokenizer(self.captions)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.captions)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
                 if self.shuffle else torch.arange(n))
        global_batch = self.batch_size * self.world_size
        for start in range(0, n - global_batch + 1, global_batch):
            idx = order[start + self.rank * self.batch_size: start + (self.rank + 1) * self.batch_size]
            yield self.images[idx], self.tokens[idx], [str(int(i)) for i in idx]

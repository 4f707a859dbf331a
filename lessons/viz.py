"""Figures the chapters draw by code: architecture diagrams and receptive-field maps.

Plotting only; every number a figure shows is computed by the caller (from a model, a config or a count), so a
figure can never disagree with the code it illustrates. Matplotlib, no other plotting library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import FancyBboxPatch, Rectangle

# One colour per kind of block, shared by every chapter's diagrams (colour-blind-safe "Okabe-Ito" tones, lightened).
BLOCK_COLOURS = {
    "input": "#e8e8e8",
    "conv": "#cfe3f5",
    "mv2": "#d5ecd4",
    "transformer": "#fbd9b0",
    "head": "#e9d5ee",
}


@dataclass(frozen=True)
class Block:
    """One box of an architecture diagram: a name, a few lines of detail, and its kind (which sets its colour)."""

    name: str
    detail: str = ""
    kind: str = "conv"
    below: str = ""  # a label under the box, e.g. the output shape or stride

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_COLOURS:
            raise ValueError(f"kind must be one of {sorted(BLOCK_COLOURS)}, got {self.kind!r}")


def draw_blocks(
    blocks: Sequence[Block], title: str | None = None, width: float = 1.6, height: float = 1.35, gap: float = 0.45,
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """Draw ``blocks`` left to right, joined by arrows (an architecture diagram). Returns the axes."""
    if not blocks:
        raise ValueError("draw_blocks needs at least one Block")
    if ax is None:
        _, ax = plt.subplots(figsize=(len(blocks) * (width + gap) * 0.95, height + 1.4))
    for i, block in enumerate(blocks):
        x = i * (width + gap)
        ax.add_patch(FancyBboxPatch(
            (x, 0), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=BLOCK_COLOURS[block.kind], edgecolor="#444444", linewidth=1.0,
        ))
        ax.text(x + width / 2, height - 0.2, block.name, ha="center", va="top", fontsize=9, fontweight="bold")
        ax.text(x + width / 2, height / 2 - 0.12, block.detail, ha="center", va="center", fontsize=7.5,
                linespacing=1.3)
        if block.below:
            ax.text(x + width / 2, -0.12, block.below, ha="center", va="top", fontsize=7.5, color="#333333",
                    linespacing=1.25)
        if i:
            ax.annotate("", xy=(x, height / 2), xytext=(x - gap, height / 2),
                        arrowprops={"arrowstyle": "->", "color": "#444444", "lw": 1.0})
    ax.set_xlim(-0.1, len(blocks) * (width + gap) - gap + 0.1)
    ax.set_ylim(-0.85, height + 0.15)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    return ax


def attention_reach(size: int, patch: int, kernel: int, pixel: tuple[int, int]) -> np.ndarray:
    """Pixels that output ``pixel`` of "n x n conv -> unfold -> attention -> fold" depends on (MobileViT Fig. 4).

    Attention connects ``pixel`` with the pixels at the same position inside every other patch (they share one
    sequence after unfolding); each of those already mixed its ``kernel x kernel`` neighbourhood through the
    convolution (zero padding: the neighbourhood is cut at the border). Returns a ``size x size`` boolean map.
    """
    if size < 1 or patch < 1 or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"need size, patch >= 1 and an odd kernel >= 1, got {size=}, {patch=}, {kernel=}")
    if size % patch:
        raise ValueError(f"size {size} must be a multiple of the patch size {patch}")
    row, col = pixel
    if not (0 <= row < size and 0 <= col < size):
        raise ValueError(f"pixel {pixel} is outside a {size}x{size} map")
    reach = np.zeros((size, size), dtype=bool)
    half = kernel // 2
    for r in range(row % patch, size, patch):  # same position in every patch row ...
        for c in range(col % patch, size, patch):  # ... and every patch column
            reach[max(r - half, 0): r + half + 1, max(c - half, 0): c + half + 1] = True
    return reach


def draw_reach(
    ax: plt.Axes, reach: np.ndarray, patch: int, pixel: tuple[int, int], title: str | None = None
) -> plt.Axes:
    """Draw a reach map: reached pixels light blue, others grey, patch borders black, the pixel red, partners blue."""
    size = reach.shape[0]
    ax.imshow(reach, cmap=ListedColormap(["#f2f2f2", "#a6cee3"]), vmin=0, vmax=1, origin="upper")
    row, col = pixel
    for r in range(row % patch, size, patch):
        for c in range(col % patch, size, patch):
            colour = "#d62728" if (r, c) == (row, col) else "#1f4e9a"
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=colour, edgecolor="none"))
    ax.set_xticks(np.arange(-0.5, size, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, size, 1), minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.4)
    for edge in np.arange(-0.5, size, patch):  # patch borders
        ax.axhline(edge, color="black", linewidth=1.2)
        ax.axvline(edge, color="black", linewidth=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.tick_params(which="minor", length=0)
    if title:
        ax.set_title(title, fontsize=10)
    return ax

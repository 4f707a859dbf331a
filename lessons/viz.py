"""Figures the chapters draw by code: architecture diagrams, receptive-field maps, and the results of the miniature
experiments (learning curves over seeds, a mean ± std table beside the paper's numbers, trained predictions).

Plotting only; every number a figure shows is computed by the caller (from a model, a config or a count), so a
figure can never disagree with the code it illustrates. Matplotlib, no other plotting library.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
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
    ax: plt.Axes | None = None, per_row: int | None = None, row_gap: float = 1.25,
) -> plt.Axes:
    """Draw ``blocks`` left to right, joined by arrows (an architecture diagram). Returns the axes.

    ``per_row`` wraps the diagram after that many blocks (a row ends and the next begins with an arrow), so a long
    network fits the page's width at a readable size; ``row_gap`` is the room under a row for the labels below it.
    """
    if not blocks:
        raise ValueError("draw_blocks needs at least one Block")
    if per_row is not None and per_row < 1:
        raise ValueError(f"per_row must be a positive int, got {per_row!r}")
    columns = min(per_row or len(blocks), len(blocks))
    rows = -(-len(blocks) // columns)
    pitch = height + row_gap  # vertical distance between rows
    if ax is None:
        _, ax = plt.subplots(figsize=(columns * (width + gap) * 0.95, (rows - 1) * pitch * 0.95 + height + 1.4))
    for i, block in enumerate(blocks):
        x, y = (i % columns) * (width + gap), -(i // columns) * pitch
        ax.add_patch(FancyBboxPatch(
            (x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=BLOCK_COLOURS[block.kind], edgecolor="#444444", linewidth=1.0,
        ))
        ax.text(x + width / 2, y + height - 0.2, block.name, ha="center", va="top", fontsize=9, fontweight="bold")
        ax.text(x + width / 2, y + height / 2 - 0.12, block.detail, ha="center", va="center", fontsize=7.5,
                linespacing=1.3)
        if block.below:
            ax.text(x + width / 2, y - 0.12, block.below, ha="center", va="top", fontsize=7.5, color="#333333",
                    linespacing=1.25)
        if i:  # an arrow in from the left (at a row's start: from the margin, continuing the row above)
            ax.annotate("", xy=(x, y + height / 2), xytext=(x - gap, y + height / 2),
                        arrowprops={"arrowstyle": "->", "color": "#444444", "lw": 1.0})
        if (i + 1) % columns == 0 and i + 1 < len(blocks):  # the row continues below
            ax.annotate("", xy=(x + width + gap, y + height / 2), xytext=(x + width, y + height / 2),
                        arrowprops={"arrowstyle": "-", "color": "#444444", "lw": 1.0})
    if rows == 1:
        ax.set_xlim(-0.1, columns * (width + gap) - gap + 0.1)
    else:  # room for the arrows that leave and enter a row
        ax.set_xlim(-gap - 0.1, columns * (width + gap) + 0.1)
    ax.set_ylim(-(rows - 1) * pitch - 0.85, height + 0.15)
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


# --------------------------------------------------------------------------------------------------------------------
# Learning in miniature: results of lessons.experiments (read through lessons.claims.core.load_results)
# --------------------------------------------------------------------------------------------------------------------

# Colour-blind-safe (Okabe-Ito) tones, then matplotlib's tab10 for longer lists; fixed by the variant's position in
# the experiment's definition, so a variant keeps its colour in every figure of a chapter.
VARIANT_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#8c564b")


def variant_order(results: dict) -> list[str]:
    """The variants of the experiment in the order its code defines them (the JSON file stores them sorted)."""
    from .experiments import EXPERIMENTS

    exp = EXPERIMENTS.get(results.get("name", ""))
    return list(exp.variants) if exp is not None else list(results["definition"]["variants"])


def variant_colours(results: dict) -> dict[str, str]:
    """One colour per variant of the experiment's definition (order of definition)."""
    return {name: VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i, name in enumerate(variant_order(results))}


def learning_curves(results: dict, variant: str, metric: str = "top1") -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values[seed, step])`` of one variant's evaluations, on the steps every seed evaluated.

    ``metric="train_loss"``: the training loss the trainer logged (one batch's loss every ``log_every`` steps).
    """
    runs = results["runs"][variant]
    if metric == "train_loss":
        curves = [dict(zip(runs[s]["history"]["step"], runs[s]["history"]["loss"])) for s in sorted(runs, key=int)]
    else:
        curves = [{r["step"]: r[metric] for r in runs[s]["history"]["eval"]} for s in sorted(runs, key=int)]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return np.array(steps), np.array([[c[t] for t in steps] for c in curves], dtype=float)


def metric_label(metric: str) -> str:
    """An axis label: ``top1`` -> "top-1 (%)", ``top1@48`` -> "top-1 at 48 px (%)", others as they are."""
    name, _, size = metric.partition("@")
    label = {"top1": "top-1", "loss": "loss", "miou": "mIoU", "pixel_acc": "pixel accuracy"}.get(name, name)
    label += f" at {size} px" if size else ""
    return label + (" (%)" if is_percent(name) else "")


PERCENT_METRICS = ("top1", "miou", "pixel_acc")  # fractions in the results files, drawn and printed in percent


def is_percent(metric: str) -> bool:
    """Whether a metric is a fraction shown in percent: top-1, mIoU, pixel accuracy, a class's IoU (``iou.NAME``)
    or a data set's IoU group (``context_iou``)."""
    name = metric.partition("@")[0]
    return name in PERCENT_METRICS or name.startswith("iou.") or name.endswith("_iou")


def _finish_axes(ax: plt.Axes, xlabel: str, ylabel: str, title: str | None, legend: str | None) -> plt.Axes:
    """Labels at 11 pt, ticks and legend at 10 pt (readable at the site's column width), a light grid."""
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=11)
    if legend:
        ax.legend(fontsize=10, loc=legend, framealpha=0.9)
    return ax


def plot_learning_curves(
    results: dict, variants: Sequence[str] | None = None, metric: str = "top1", ax: plt.Axes | None = None,
    band: str = "minmax", title: str | None = None, labels: Mapping[str, str] | None = None, legend: bool = True,
    max_step: int | None = None,
) -> plt.Axes:
    """Test ``metric`` (or ``"train_loss"``) against training step: the mean over seeds as a line, the spread as a
    shaded band. ``max_step``: draw only the steps up to it (the start of training, where the variants differ).

    ``band``: ``"minmax"`` (the lowest and highest seed) or ``"std"`` (mean ± one sample standard deviation).
    ``variants``: the variants to draw (default: every variant the results hold, in the definition's order).
    Top-1 is drawn in percent. The legend says how many seeds each line averages.
    """
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std', got {band!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = variant_colours(results)
    order = [v for v in variant_order(results) if v in results["runs"]]
    variants = order if variants is None else list(variants)
    scale = 100.0 if is_percent(metric) else 1.0
    for variant in variants:
        steps, values = learning_curves(results, variant, metric)
        if max_step is not None:
            keep = steps <= max_step
            steps, values = steps[keep], values[:, keep]
        values = values * scale
        mean = values.mean(axis=0)
        if band == "minmax":
            low, high = values.min(axis=0), values.max(axis=0)
        else:
            std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            low, high = mean - std, mean + std
        name = (labels or {}).get(variant, variant)
        ax.plot(steps, mean, color=colours[variant], linewidth=1.8, label=f"{name} (n={len(values)})")
        ax.fill_between(steps, low, high, color=colours[variant], alpha=0.18, linewidth=0)
    ylabel = "training loss (one batch)" if metric == "train_loss" else f"test {metric_label(metric)}"
    where = "upper right" if metric.endswith("loss") else "lower right"
    return _finish_axes(ax, "training step", ylabel, title, where if legend else None)


def plot_by_size(
    results: dict, sizes: Sequence[int], base_size: int, metric: str = "top1", ax: plt.Axes | None = None,
    variants: Sequence[str] | None = None, labels: Mapping[str, str] | None = None, title: str | None = None,
) -> plt.Axes:
    """Final test ``metric`` against the test resolution: mean over seeds with the lowest and highest seed as error
    bars. ``base_size`` is the data set's own size (its metric is ``metric``; the others ``metric@SIZE``)."""
    from .claims.core import spread

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = variant_colours(results)
    order = [v for v in variant_order(results) if v in results["runs"]]
    sizes = sorted(sizes)
    scale = 100.0 if metric.startswith("top1") else 1.0
    for k, variant in enumerate(order if variants is None else variants):
        spreads = [spread(results, variant, metric if s == base_size else f"{metric}@{s}") for s in sizes]
        mean = np.array([sp.mean for sp in spreads]) * scale
        low = mean - np.array([min(sp.values) for sp in spreads]) * scale
        high = np.array([max(sp.values) for sp in spreads]) * scale - mean
        x = np.array(sizes, dtype=float) + (k - 0.5) * 0.8  # side by side, not on top of each other
        name = (labels or {}).get(variant, variant)
        ax.errorbar(x, mean, yerr=[low, high], color=colours[variant], marker="o", linewidth=1.8, capsize=3,
                    label=f"{name} (n={spreads[0].n})")
    ax.axvline(base_size, color="#777777", linestyle=":", linewidth=1.2)
    ax.set_xticks(sizes)
    return _finish_axes(ax, "test resolution (pixels a side; dotted: training base)",
                        f"final test {metric_label(metric)}", title, "center left")


def format_spread(mean: float, std: float, metric: str) -> str:
    """``mean ± std`` in the metric's natural unit: % for top-1, whole steps, milliseconds per step."""
    if is_percent(metric):
        return f"{100 * mean:.1f} ± {100 * std:.1f}%"
    if metric.startswith("steps_to_"):
        return f"{mean:.0f} ± {std:.0f}"
    if metric == "s_per_step":
        return f"{1000 * mean:.0f} ± {1000 * std:.0f} ms"
    return f"{mean:.4g} ± {std:.2g}"


class ResultsTable:
    """Per variant: seeds, ``mean ± std`` of each metric, and the paper's number where it has one.

    Renders as HTML in Jupyter and on the site, as aligned text elsewhere (and in nbval's comparison).
    """

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[str]], note: str = "") -> None:
        self.header, self.rows, self.note = tuple(header), [tuple(r) for r in rows], note

    def __repr__(self) -> str:
        rows = [self.header, *self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + ([self.note] if self.note else []))

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        # its own scrolling box: on a phone a wide table scrolls inside the output, never the page
        return (f'<div style="overflow-x: auto; max-width: 100%"><table class="results-table"><thead><tr>{head}'
                f'</tr></thead><tbody>{body}</tbody></table></div>{note}')


def results_table(
    results: dict, metrics: Sequence[str] = ("top1",), paper: Mapping[str, str] | None = None,
    paper_header: str = "paper", labels: Mapping[str, str] | None = None, metric_names: Mapping[str, str] | None = None,
) -> ResultsTable:
    """The final numbers of every variant the results hold: n seeds and ``mean ± std`` (sample std) per metric.

    ``metrics``: final metrics (``"top1"``, ``"top1@40"``) or derived ones (``"steps_to_60"``, ``"s_per_step"``; see
    :data:`lessons.claims.core.DERIVED_METRICS`). ``paper``: variant -> the paper's number as text (its own units
    and source; ImageNet, not this data set), shown in a last column; variants it lacks show a dash.
    """
    from .claims.core import spread

    order = [v for v in variant_order(results) if v in results["runs"]]
    header = ["variant", "seeds", *((metric_names or {}).get(m, m) for m in metrics)]
    if paper is not None:
        header.append(paper_header)
    rows, censored_note = [], False
    for variant in order:
        row = [(labels or {}).get(variant, variant), str(len(results["runs"][variant]))]
        for metric in metrics:
            s = spread(results, variant, metric)
            cell = format_spread(s.mean, s.std, metric)
            if s.censored:
                cell += f" ({s.censored} never)"
                censored_note = True
            row.append(cell)
        if paper is not None:
            row.append(paper.get(variant, "–"))
        rows.append(row)
    note = ("'never': seeds that did not reach the threshold within the step budget; they count as the budget "
            "(so the mean is a lower bound)." if censored_note else "")
    return ResultsTable(header, rows, note)


def normalise(images: torch.Tensor, dataset) -> torch.Tensor:
    """Images in [0, 1] as the trainer feeds them to a model: ``(x - dataset.mean) / dataset.std`` per channel."""
    mean = torch.tensor(dataset.mean, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean) / std


def show_predictions(
    images: torch.Tensor | Sequence[torch.Tensor], targets: Sequence[int], predictions: Mapping[str, Sequence[int]],
    class_names: Sequence[str] | None = None, titles: Sequence[str] | None = None, ncols: int | None = None,
    width: float = 9.0,
) -> plt.Figure:
    """A row (or rows) of test images, each titled with its label and every model's prediction (✓ right, ✗ wrong).

    ``images``: ``[N, 3, H, W]`` in [0, 1] (not normalised), or N images ``[3, H, W]`` of different sizes (each drawn
    at the same width, pixels as blocks). ``predictions``: model name -> N predicted classes.
    """
    n = len(images)
    ncols = ncols or n
    nrows = -(-n // ncols)
    lines = 1 + len(predictions) + (1 if titles else 0)
    cell = width / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, nrows * (cell + 0.2 * lines)), squeeze=False)
    name = (lambda c: class_names[c]) if class_names is not None else str
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        text = ([titles[i]] if titles else []) + [f"label: {name(int(targets[i]))}"]
        for model, pred in predictions.items():
            mark = "✓" if int(pred[i]) == int(targets[i]) else "✗"
            text.append(f"{model}: {name(int(pred[i]))} {mark}")
        ax.set_title("\n".join(text), fontsize=10, loc="left")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Widgets that work on the static site: every state rendered in advance, switched in the browser
# --------------------------------------------------------------------------------------------------------------------


IMAGE_FORMATS = ("png", "jpeg")


def figure_bytes(fig: plt.Figure, image_format: str = "png", dpi: int = 100) -> bytes:
    """The figure as PNG or JPEG bytes (closed afterwards, so the notebook does not also show it as an output).

    JPEG (quality 85) is for figures made of photographs, which it stores in a fraction of PNG's size.
    """
    import io

    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    buffer = io.BytesIO()
    extra = {"pil_kwargs": {"quality": 85}} if image_format == "jpeg" else {}
    fig.savefig(buffer, format=image_format, dpi=dpi, **extra)
    plt.close(fig)
    return buffer.getvalue()


def precomputed_widget(render, controls: Mapping[str, Sequence], labels: Mapping[str, str] | None = None,
                       value: Mapping[str, object] | None = None, image_format: str = "png"):
    """A widget that needs no kernel: ``render(**state)`` for every combination of ``controls``, switched in the page.

    ``controls`` maps each keyword of ``render`` to the values it may take (one slider per keyword, in order;
    ``labels`` gives a slider's description, the keyword by default). ``render`` returns a matplotlib figure (shown
    as an image, PNG or ``image_format="jpeg"``) or a string (shown as HTML). The states are nested ``ipywidgets.Stack``s, one level per control, and
    each slider's ``index`` is tied to every stack of its level with ``jslink``: the link runs in the browser, so the
    page saved with its widget state responds to the sliders without Python. Keep the number of states small (they
    are all stored in the notebook): a dozen or two.
    """
    import itertools

    import ipywidgets as widgets

    if not controls:
        raise ValueError("precomputed_widget needs at least one control")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    names = list(controls)
    options = {name: list(controls[name]) for name in names}
    for name, values in options.items():
        if not values:
            raise ValueError(f"control {name!r} has no values")
    states = int(np.prod([len(v) for v in options.values()]))
    if states > 64:
        raise ValueError(f"{states} states are too many to store in a notebook; offer fewer values")
    labels = dict(labels or {})
    value = dict(value or {})
    start = {name: options[name].index(value[name]) if name in value else 0 for name in names}

    image_layout = widgets.Layout(max_width="100%", height="auto")  # one layout model shared by every image

    def leaf(state: dict) -> widgets.Widget:
        out = render(**state)
        if isinstance(out, str):
            return widgets.HTML(out)
        return widgets.Image(value=figure_bytes(out, image_format), format=image_format, layout=image_layout)

    def build(level: int, prefix: dict) -> tuple[widgets.Widget, list[list[widgets.Stack]]]:
        """The stack for ``prefix`` and, per level below it, every stack it contains."""
        name = names[level]
        if level == len(names) - 1:
            children = [leaf({**prefix, name: v}) for v in options[name]]
            stack = widgets.Stack(children, selected_index=start[name])
            return stack, [[stack]]
        built = [build(level + 1, {**prefix, name: v}) for v in options[name]]
        stack = widgets.Stack([b[0] for b in built], selected_index=start[name])
        below = [list(itertools.chain.from_iterable(b[1][i] for b in built)) for i in range(len(names) - level - 1)]
        return stack, [[stack], *below]

    root, stacks_by_level = build(0, {})
    sliders = []
    for level, name in enumerate(names):
        slider = widgets.SelectionSlider(
            options=[str(v) for v in options[name]], index=start[name], description=labels.get(name, name),
            continuous_update=True, style={"description_width": "initial"},
        )
        for stack in stacks_by_level[level]:
            widgets.jslink((slider, "index"), (stack, "selected_index"))
        sliders.append(slider)
    return widgets.VBox([*sliders, root])


# --------------------------------------------------------------------------------------------------------------------
# Segmentation: label maps in colour, images beside ground truth and predictions
# --------------------------------------------------------------------------------------------------------------------

# SceneWorld's six classes (lessons.data.SCENE_CLASSES): background black, wire white, dot orange, beacon grey,
# the two context classes in clearly different tones (a disk's class is the point of the world).
SCENE_CLASS_COLOURS = ("#000000", "#ffffff", "#e69f00", "#999999", "#d55e00", "#56b4e9")


def colour_labels(labels: torch.Tensor, colours: Sequence[str] = SCENE_CLASS_COLOURS) -> np.ndarray:
    """A label map ``[H, W]`` (ints) as an RGB image ``[H, W, 3]`` in [0, 1], one colour per class."""
    if labels.ndim != 2:
        raise ValueError(f"expected one label map [H, W], got shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= len(colours):
        raise ValueError(f"labels must be in [0, {len(colours)}), got {int(labels.min())}..{int(labels.max())}")
    from matplotlib.colors import to_rgb

    palette = np.array([to_rgb(c) for c in colours])
    return palette[labels.numpy()]


def show_segmentations(
    images: torch.Tensor, targets: torch.Tensor, predictions: Mapping[str, torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None, colours: Sequence[str] = SCENE_CLASS_COLOURS, width: float = 10.0,
    row_titles: Sequence[str] | None = None,
) -> plt.Figure:
    """One row per image: the image, its ground-truth labels, then every model's predicted labels (same colours).

    ``images``: ``[N, 3, H, W]`` in [0, 1]; ``targets``: ``[N, H, W]``; ``predictions``: model name -> ``[N, H, W]``
    (argmax labels, computed by the caller). Pixels are drawn as blocks, so a one-pixel wire stays one pixel.
    """
    predictions = dict(predictions or {})
    if images.ndim != 4 or targets.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"images [N, 3, H, W] and targets [N, H, W] must match, got {tuple(images.shape)} and "
                         f"{tuple(targets.shape)}")
    for name, pred in predictions.items():
        if pred.shape != targets.shape:
            raise ValueError(f"prediction {name!r} has shape {tuple(pred.shape)}, targets {tuple(targets.shape)}")
    columns = ["image", "ground truth", *predictions]
    n, ncols = len(images), len(columns)
    cell = width / ncols
    fig, axes = plt.subplots(n, ncols, figsize=(width, n * cell + 0.6 + (0.7 if class_names else 0)),
                             squeeze=False)
    for i in range(n):
        panels = [images[i].permute(1, 2, 0).clamp(0, 1).numpy(), colour_labels(targets[i], colours)]
        panels += [colour_labels(p[i], colours) for p in predictions.values()]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=10)
        if row_titles:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=9)
    if class_names:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=c, edgecolor="#444444", label=name) for c, name in zip(colours, class_names)]
        ncol = min(len(handles), 6 if width >= 8 else 3)  # two rows of names under a narrow figure
        rows = -(-len(handles) // ncol)
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, 0.3 * rows / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------------------------
# Labels beside scatter points that do not run into each other
# --------------------------------------------------------------------------------------------------------------------

# where a label may sit around its point (offset in points, alignment), nearest first; the far ones get a leader line
_LABEL_SPOTS = [(dx * r, dy * r, ha, va) for r in (1, 3, 5) for dx, dy, ha, va in (
    (4, 2, "left", "bottom"), (4, -2, "left", "top"), (-4, 2, "right", "bottom"), (-4, -2, "right", "top"),
    (0, 5, "center", "bottom"), (0, -5, "center", "top"))]


def label_points(ax: plt.Axes, points: Sequence[tuple[float, float, str]], fontsize: float = 8) -> list:
    """Write each ``(x, y, text)`` beside its point, trying spots around it until the label overlaps no other
    label, no point and stays inside the axes (greedy, left to right, so the result is deterministic).

    Call it after the axes' scales and limits are final: it measures the labels as drawn. A label that finds no free
    spot goes to the first one (it then may overlap; the list returned holds every label).
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    dots = [ax.transData.transform((x, y)) for x, y, _ in points]
    dot_boxes = [plt.matplotlib.transforms.Bbox.from_extents(px - 4, py - 4, px + 4, py + 4) for px, py in dots]
    placed, texts = [], []
    def text_box(t, renderer):  # the text alone, not its leader line
        t.update_positions(renderer)
        return plt.matplotlib.text.Text.get_window_extent(t, renderer)

    for x, y, text in sorted(points, key=lambda p: (p[0], p[1])):
        for i, (dx, dy, ha, va) in enumerate(_LABEL_SPOTS):
            far = abs(dx) > 4 or abs(dy) > 5
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=fontsize, arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "grey"} if far
                            else None)
            box = text_box(t, renderer)
            free = (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                    and not any(box.overlaps(b) for b in placed + dot_boxes))
            if free or i == len(_LABEL_SPOTS) - 1:
                if not free:  # nowhere free: fall back to the nearest spot
                    t.remove()
                    t = ax.annotate(text, (x, y), xytext=_LABEL_SPOTS[0][:2], textcoords="offset points",
                                    fontsize=fontsize)
                    box = text_box(t, renderer)
                placed.append(box)
                texts.append(t)
                break
            t.remove()
    return texts

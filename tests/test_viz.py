"""lessons.viz helpers that the chapters' figures and widgets rely on: wrapped diagrams and kernel-free widgets."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib
from ipywidgets.widgets.widget import _instances as widget_instances
from ipywidgets.widgets.widget_link import Link

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from lessons.viz import Block, draw_blocks, figure_bytes, precomputed_widget  # noqa: E402


def _links_to(stack: widgets.Stack) -> list[Link]:
    """The jslinks (every live widget is registered) whose target is this stack's selected index."""
    return [w for w in list(widget_instances.values()) if isinstance(w, Link) and w.target == (stack, "selected_index")]


def test_every_state_is_rendered_and_each_slider_drives_every_stack_of_its_level() -> None:
    calls = []

    def render(a: int, b: str) -> str:
        calls.append((a, b))
        return f"state {a}-{b}"

    box = precomputed_widget(render, {"a": [1, 2, 3], "b": ["x", "y"]}, labels={"a": "first"}, value={"a": 3, "b": "y"})
    slider_a, slider_b, root = box.children
    assert sorted(calls) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]
    assert (slider_a.description, slider_a.options, slider_a.index) == ("first", ("1", "2", "3"), 2)
    assert (slider_b.description, slider_b.index) == ("b", 1)
    assert root.selected_index == 2 and len(root.children) == 3
    for i, a in enumerate((1, 2, 3)):
        inner = root.children[i]
        assert inner.selected_index == 1
        assert [leaf.value for leaf in inner.children] == [f"state {a}-x", f"state {a}-y"]
        # the inner stacks follow slider b in the browser; the root follows slider a
        assert [link.source for link in _links_to(inner)] == [(slider_b, "index")]
    assert [link.source for link in _links_to(root)] == [(slider_a, "index")]


def test_figures_become_images_and_are_closed() -> None:
    def render(k: int) -> plt.Figure:
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.set_title(str(k))
        return fig

    before = len(plt.get_fignums())
    box = precomputed_widget(render, {"k": [1, 2]}, image_format="jpeg")
    images = box.children[1].children
    assert all(isinstance(img, widgets.Image) and img.format == "jpeg" for img in images)
    assert images[0].value[:2] == b"\xff\xd8" and images[0].value != images[1].value
    assert len(plt.get_fignums()) == before  # no stray figure output in the notebook
    fig, _ = plt.subplots()
    assert figure_bytes(fig)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("controls, kwargs, message", [
    ({}, {}, "at least one control"),
    ({"a": []}, {}, "no values"),
    ({"a": list(range(9)), "b": list(range(8))}, {}, "too many"),
    ({"a": [1]}, {"image_format": "gif"}, "image_format"),
])
def test_bad_widget_arguments_are_clear_errors(controls: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        precomputed_widget(lambda **state: "", controls, **kwargs)


def test_draw_blocks_wraps_rows() -> None:
    blocks = [Block(f"b{i}") for i in range(7)]
    ax = draw_blocks(blocks, per_row=3)
    rows = {round(p.get_y(), 3) for p in ax.patches if isinstance(p, FancyBboxPatch)}
    columns = {round(p.get_x(), 3) for p in ax.patches if isinstance(p, FancyBboxPatch)}
    assert (len(rows), len(columns)) == (3, 3)
    width_one_row = draw_blocks(blocks).figure.get_figwidth()
    assert ax.figure.get_figwidth() < width_one_row / 2
    plt.close("all")
    with pytest.raises(ValueError, match="per_row"):
        draw_blocks(blocks, per_row=0)


def test_label_points_keeps_labels_of_a_tight_cluster_apart():
    """Six points almost on top of each other: every label is placed, and no two labels' boxes overlap."""
    import matplotlib.pyplot as plt

    from lessons.viz import label_points

    fig, ax = plt.subplots(figsize=(4, 3))
    points = [(1 + 0.01 * i, 1 + 0.01 * i, f"model_{i}") for i in range(6)]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set(xlim=(0.5, 1.5), ylim=(0.5, 1.5))
    texts = label_points(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in texts:
        t.update_positions(renderer)
        boxes.append(plt.matplotlib.text.Text.get_window_extent(t, renderer))
    assert sorted(t.get_text() for t in texts) == sorted(p[2] for p in points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)

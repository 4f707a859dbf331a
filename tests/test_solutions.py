"""The exercises' solutions: every function of lessons/solutions.py gives the right answer, checked against an
independent computation, and the code each chapter shows in its collapsed solutions is that function's source."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lessons
from lessons import hrvit, solutions
from lessons.layers import MultiHeadSelfAttention
from lessons.measure import count_macs, count_macs_fvcore, count_params, flops_by_part, macs_by_operator, mmcv_flops_by_part
from helpers import one_thread_for_the_module

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(p.stem for p in BOOK.glob("*.ipynb"))
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread_for_the_module()


def solution_cells(chapter: str) -> list[str]:
    nb = json.loads((BOOK / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["id"].startswith(f"solution-{chapter}-")]


# ---- the chapters show the module's code, and every exercise has a solution ---------------------------------


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_exercise_has_a_collapsed_solution(chapter: str) -> None:
    nb = json.loads((BOOK / f"{chapter}.ipynb").read_text(encoding="utf-8"))
    sources = ["".join(c["source"]) for c in nb["cells"]]
    exercise = next(i for i, s in enumerate(sources) if "## Exercises" in s)
    exercises = re.findall(r"^(\d+)\. ", sources[exercise].split("## Exercises", 1)[1], re.M)
    cells = solution_cells(chapter)
    assert len(cells) == len(exercises) == 3, (chapter, exercises, len(cells))
    for n, cell in enumerate(cells, start=1):
        assert cell.startswith(f"````{{dropdown}} Solution to exercise {n}\n") and cell.endswith("\n````"), cell[:60]
    # the solutions sit right after the exercises, in order
    assert [c["id"] for c in nb["cells"][exercise + 1: exercise + 4]] == [f"solution-{chapter}-{n}" for n in (1, 2, 3)]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_shown_solution_code_is_the_module_source(chapter: str) -> None:
    shown = [block for cell in solution_cells(chapter) for block in CODE_BLOCK.findall(cell)]
    for block in shown:
        name = re.match(r"(?:def|class) (\w+)", block)
        assert name, f"{chapter}: a solution code block that is not one function or class:\n{block[:200]}"
        source = inspect.getsource(getattr(solutions, name.group(1)))
        assert block == source, f"{chapter}: the code shown for {name.group(1)} differs from lessons/solutions.py"


def test_every_solution_function_is_shown_in_its_chapter() -> None:
    shown = {re.match(r"(?:def|class) (\w+)", b).group(1)
             for chapter in CHAPTERS for cell in solution_cells(chapter) for b in CODE_BLOCK.findall(cell)}
    defined = {name for name, obj in vars(solutions).items()
               if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == solutions.__name__}
    assert shown == defined


# ---- Foundations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, out_chs, groups, padding", [(6, 6, 6, 1), (6, 4, 2, 0), (4, 8, 1, 1)])
def test_grouped_conv_as_matmul_equals_conv2d(channels: int, out_chs: int, groups: int, padding: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, 9, 7, generator=g)
    weight = torch.randn(out_chs, channels // groups, 3, 3, generator=g)
    expected = F.conv2d(x, weight, padding=padding, groups=groups)
    torch.testing.assert_close(solutions.conv2d_grouped_as_matmul(x, weight, groups, padding), expected)


@pytest.mark.parametrize("tokens, dim", [(256, 64), (64, 80), (16, 96), (1024, 64)])
def test_attention_costs_match_the_counter(tokens: int, dim: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    products, projections = solutions.attention_costs(tokens, dim)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        # on the meta device, as count_macs: there scaled_dot_product_attention runs as two counted bmm
        MultiHeadSelfAttention(dim, num_heads=4).to("meta")(torch.zeros(1, tokens, dim, device="meta"))
    by_op = {str(op).removeprefix("aten."): n // 2 for op, n in counter.get_flop_counts()["Global"].items()}
    assert (by_op["bmm"], by_op["addmm"]) == (products, projections)
    assert (products > projections) == (tokens > 2 * dim)


def test_torchinfo_every_token_differs_from_the_exact_count_by_products_biases_and_norms() -> None:
    model = lessons.create_model("mobilevit_xxs").eval()
    fixed = solutions.torchinfo_macs_every_token(model, (1, 3, 256, 256))
    exact = macs_by_operator(model, (3, 256, 256))
    tokens = {}
    hooks = [m.register_forward_hook(lambda m, i, o: tokens.__setitem__(m, o.numel() // m.out_features))
             for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    biases = sum(m.out_features * tokens[m] for m in tokens if m.bias is not None)
    norms = sum(2 * m.normalized_shape[0] * 4 for m in model.modules() if isinstance(m, nn.LayerNorm))  # batch dim 4
    norms += sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert fixed - sum(exact.values()) == biases + norms - exact["bmm"]


# ---- MobileViT -----------------------------------------------------------------------------------------------


def test_both_patch_configurations_reach_every_pixel_at_the_end() -> None:
    assert solutions.final_map_reach((2, 2, 2), size=128) == 1.0
    assert solutions.final_map_reach((8, 4, 2), size=128) == 1.0


def test_vit_attention_is_p_times_mobilevits() -> None:
    model = lessons.create_model("mobilevit_s")
    block = model.stages[2][1]  # stage 3's MobileViT block, at a 32 x 32 map for a 256 input
    dim, depth = model.config.transformer_dims[0], model.config.transformer_depths[0]
    chs = block.local_rep[0].in_channels if hasattr(block, "local_rep") else None
    products = macs_by_operator(block, (1, chs, 32, 32))["bmm"]
    assert products * 4 == depth * solutions.vit_attention_macs(32, 32, dim)


def test_paper_anchor_keeps_pixels_per_step_more_constant() -> None:
    cvnets, paper = solutions.pixels_per_step(256), solutions.pixels_per_step(320)
    spread = lambda d: max(d.values()) / min(d.values())  # noqa: E731
    assert spread(paper) < 1.01 < spread(cvnets)
    assert cvnets[320] == paper[320] == 128 * 320 * 320


# ---- PoolFormer ----------------------------------------------------------------------------------------------


def test_max_pooling_mixer_changes_no_count() -> None:
    from lessons.poolformer import MetaFormerBlock, Pooling

    blocks = [MetaFormerBlock(64, lambda d: Pooling(3)), MetaFormerBlock(64, lambda d: solutions.MaxPoolMixer(True)),
              MetaFormerBlock(64, lambda d: solutions.MaxPoolMixer(False))]
    assert len({count_macs(b, (1, 64, 14, 14)) for b in blocks}) == 1
    assert len({count_macs_fvcore(b, (1, 64, 14, 14)) for b in blocks}) == 1
    x = torch.randn(1, 64, 5, 5)
    assert torch.equal(solutions.MaxPoolMixer(False)(x), F.max_pool2d(x, 3, 1, 1))


def test_spatial_mlp_params_match_the_module() -> None:
    from lessons.poolformer import SpatialMlp

    for side, params in zip((56, 28, 14, 7), solutions.spatial_mlp_params()):
        assert count_params(SpatialMlp((side, side))) == params


def test_the_two_heads_disagree_on_some_input() -> None:
    official, timm_style = solutions.heads_disagree()
    assert (official.argmax(1) != timm_style.argmax(1)).any()


# ---- TopFormer -----------------------------------------------------------------------------------------------


def test_pool_stride_32_mmcv_sees_the_convolutions_not_the_products() -> None:
    from lessons.claims.topformer import MMCV_RULES

    exact = {s: flops_by_part(lessons.create_model("topformer_tiny", pool_stride=s), (1, 3, 512, 512))["extractor"]
             for s in (64, 32)}
    mmcv = {s: mmcv_flops_by_part(lessons.create_model("topformer_tiny", pool_stride=s), (1, 3, 512, 512),
                                  rules=MMCV_RULES)["extractor"] for s in (64, 32)}
    assert mmcv[32] == 4 * mmcv[64]  # four times the tokens, four times the counted convolutions
    assert exact[32] > 4 * exact[64]  # the products grow with the square


def test_gate_after_upsampling_differs_and_equals_the_module_when_it_cannot() -> None:
    from lessons.topformer import SemanticInjection

    torch.manual_seed(0)
    sim = SemanticInjection(8, 8).eval()
    x_local, x_global = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 4, 4) * 5
    with torch.no_grad():
        assert not torch.allclose(solutions.gate_after_upsampling(sim, x_local, x_global), sim(x_local, x_global))
        same_size = torch.randn(1, 8, 16, 16)  # no upsampling: the order cannot matter
        torch.testing.assert_close(solutions.gate_after_upsampling(sim, x_local, same_size), sim(x_local, same_size))


def test_attn_ratio_changes_only_the_extractor() -> None:
    from lessons.measure import params_by_part

    parts = {r: params_by_part(lessons.create_model("topformer_base", attn_ratio=r)) for r in (1, 2, 4)}
    assert parts[1]["extractor"] < parts[2]["extractor"] < parts[4]["extractor"]
    assert all(parts[r]["token_pyramid"] == parts[2]["token_pyramid"] for r in (1, 4))


# ---- SeaFormer -----------------------------------------------------------------------------------------------


def test_sea_product_share_is_flat_on_squares_and_grows_on_thin_maps() -> None:
    squares = [solutions.sea_product_share(s, s) for s in (16, 64, 128)]
    assert max(squares) - min(squares) < 0.001 and max(squares) < 0.01
    assert solutions.sea_product_share(32, 512) < 0.10 < solutions.sea_product_share(16, 1024)


def test_row_branch_ignores_column_order_before_the_embeddings() -> None:
    from lessons.seaformer import squeeze_rows

    x = torch.randn(1, 4, 6, 10)
    shuffled = x[..., torch.randperm(10)]
    torch.testing.assert_close(squeeze_rows(shuffled), squeeze_rows(x))
    torch.testing.assert_close(shuffled.amax(-1), x.amax(-1))


# ---- PP-MobileSeg --------------------------------------------------------------------------------------------


def test_vim_disagrees_on_more_than_half_of_the_pixels() -> None:
    assert solutions.vim_disagreement() > 0.5


def test_aamsx8_fits_the_ablation_step() -> None:
    steps = solutions.fusion_steps()
    assert abs(steps["aam_x8"] - 80_000) <= 10_000 < abs(steps["aam"] - 80_000)  # README ablation: +0.08M


# ---- HRViT ---------------------------------------------------------------------------------------------------


def test_stripe_costs_per_branch() -> None:
    default = solutions.stripe_macs_by_branch((1, 2, 7, 7))
    assert default[0] == 2 * 256 * 256**2 * 16  # 256 one-row stripes of 256 tokens, 16 channels per half, twice
    wide, mixed = solutions.stripe_macs_by_branch((7, 7, 7, 7)), solutions.stripe_macs_by_branch((1, 2, 3, 9))
    changes = [abs(w - d) for w, d in zip(wide, default)]
    assert changes.index(max(changes)) == 0
    assert wide[0] == 2 * 37 * (7 * 256) ** 2 * 16  # ceil(256 / 7) = 37 stripes of 7 rows (padding included)
    assert mixed[:2] == default[:2] and mixed[2] < default[2] and mixed[3] > default[3]
    # stripes of 9 on the 32-row map: ceil(32 / 9) = 4 stripes, computed with their padding
    assert mixed[3] == 2 * 4 * (9 * 32) ** 2 * 128


@pytest.mark.parametrize("channels", [48, 96, 240, 384])  # HRViT-b2's widths
def test_official_des_factor_is_a_best_one(channels: int) -> None:
    p = hrvit.kronecker_factor(channels)
    assert solutions.des_params(channels, p) == count_params(hrvit.DiversityEnhancedShortcut(channels))
    best_p, best_q = solutions.best_factorisation(channels)
    assert best_p * best_q == channels
    assert p**2 + (channels // p) ** 2 == best_p**2 + best_q**2
    assert all(best_p**2 + best_q**2 <= d**2 + (channels // d) ** 2 for d in range(1, channels + 1) if channels % d == 0)


def test_upward_only_fusion_is_cheaper_and_cannot_pass_back() -> None:
    channels = (8, 16, 32, 64)
    fusion = solutions.upward_only_fusion(channels).eval()
    neighbours = hrvit.FusionLayer(channels, channels, dense=False)
    assert count_params(fusion) < count_params(neighbours)
    xs = [torch.randn(1, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate(channels)]
    changed = xs[:3] + [xs[3] + 1.0]
    with torch.no_grad():
        assert torch.equal(fusion(xs)[0], fusion(changed)[0])  # 1/32 never reaches 1/4
        assert not torch.equal(fusion(xs)[3], fusion(changed)[3])


# ---- Comparison ----------------------------------------------------------------------------------------------


def test_more_classes_make_the_ending_a_larger_share() -> None:
    assert solutions.ending_share(150, size=256, runs=5) > solutions.ending_share(19, size=256, runs=5)


def test_closest_pair_and_their_operators() -> None:
    rows = json.loads((BOOK / "data" / "cpu_latency.json").read_text())["models"]
    a, b = solutions.closest_in_macs(rows)
    by_name = {r["model"]: r for r in rows}
    ratio = by_name[b]["macs"] / by_name[a]["macs"]
    classifiers = [r for r in rows if r["task"] == "classification"]
    for r in classifiers:
        for s in classifiers:
            if r["family"] != s["family"] and r["macs"] <= s["macs"]:
                assert s["macs"] / r["macs"] >= ratio
    assert {a, b} == {"poolformer_s12", "mobilevit_s"}  # the pair the solution's text discusses
    pool, vit = solutions.operator_shares("poolformer_s12", 224), solutions.operator_shares("mobilevit_s", 256)
    assert "bmm" not in pool and pool["convolution"] > 0.99
    assert vit["bmm"] > 0.05 and abs(sum(vit.values()) - 1) < 1e-9

"""The committed ours-against-timm timing (book/data/timm_speed.json) still describes the code and says how it was made.

Timings cannot be re-checked in CI (they belong to the machine that took them), but what they were taken of can:
the cells ``scripts/timm_speed.py`` defines, the torch and timm versions, and a fingerprint of the code our models
run (parameter count and a hash of the source of every ``lessons`` class and function they use, docstrings and
comments left out). Change the timed code and this fails until the script is run again.
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
from pathlib import Path

import pytest
import timm
import torch

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "book" / "data" / "timm_speed.json"


SCRIPT = load_script("timm_speed")
RECORD = json.loads(DATA.read_text())
CELLS = RECORD["cells"]


def cell_id(cell: dict) -> str:
    return f"{cell['mode']}-{cell['model']}-b{cell['batch']}-t{cell['threads']}"


def test_the_data_covers_exactly_the_cells_the_script_defines():
    expected = SCRIPT.grid(SCRIPT.MODELS, SCRIPT.BATCHES, SCRIPT.THREADS, SCRIPT.MODES, SCRIPT.COMPILE_MODELS,
                           SCRIPT.COMPILE_BATCHES)
    timed = [(c["mode"], c["model"], c["batch"], c["threads"]) for c in CELLS]
    assert len(timed) == len(set(timed)) and set(timed) == set(expected)  # runs appended (--append) keep their order
    assert all(c["input_side"] == SCRIPT.INPUT_SIDE[c["model"].split("_")[0]] for c in CELLS)
    assert set(RECORD["fingerprints"]) == set(SCRIPT.MODELS)


def test_the_data_says_how_it_was_made():
    assert RECORD["runs"] and all(run["complete"] for run in RECORD["runs"]), "a run stopped before its last cell"
    for run in RECORD["runs"]:
        assert run["command"].startswith("python scripts/timm_speed.py") and run["date"]
        assert len(run["loadavg_start"]) == 3 and len(run["loadavg_end"]) == 3
    assert {c["run"] for c in CELLS} == set(range(len(RECORD["runs"])))
    machine = RECORD["machine"]
    assert machine["platform"] and machine["processor"] and machine["cpu_count"] >= max(SCRIPT.THREADS)
    settings = RECORD["settings"]
    assert settings["rounds"] == SCRIPT.DEFAULT_ROUNDS >= 15 and settings["omp_wait_policy"] == "PASSIVE"
    assert settings["agree_tolerance"] == SCRIPT.AGREE_TOLERANCE and "dynamic_threads" in settings["compile"]


def test_the_data_was_taken_with_the_installed_torch_and_timm():
    # requirements.txt pins both; a new version is new code under the timings (the local +cpu/+cu suffix is not)
    versions = RECORD["versions"]
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0], "run scripts/timm_speed.py again"
    assert versions["timm"] == timm.__version__, "run scripts/timm_speed.py again"


@pytest.mark.parametrize("cell", CELLS, ids=[cell_id(c) for c in CELLS])
def test_every_pair_agreed_and_every_summary_matches_its_rounds(cell):
    assert cell["max_abs_diff_eager"] <= SCRIPT.AGREE_TOLERANCE and cell["max_abs_diff"] <= SCRIPT.AGREE_TOLERANCE
    assert not cell["recompiled_while_timing"]
    assert (cell["compile_s"] is not None) == (cell["mode"] == "compile")
    ratios = cell["ratios"]
    assert cell["rounds"] == len(ratios) == RECORD["settings"]["rounds"]
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    assert cell["ratio_median"] == pytest.approx(statistics.median(ratios))
    assert (cell["ratio_q1"], cell["ratio_q3"]) == pytest.approx((q1, q3))
    assert cell["ours_ms"] > 0 and cell["timm_ms"] > 0 and len(cell["loadavg_1min"]) == 2


@pytest.mark.parametrize("name", SCRIPT.MODELS)
def test_the_timed_code_has_not_changed(name):
    assert SCRIPT.code_fingerprint(name) == RECORD["fingerprints"][name], (
        f"the code {name} runs changed since it was timed against timm: run "
        f"`{RECORD['runs'][0]['command']}` again (and the notebook book/comparison.ipynb)"
    )


def test_the_fingerprint_follows_the_code_not_its_docstrings(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))

    def normalized(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        module = importlib.import_module(name)
        try:
            return SCRIPT._normalized_source(module.Block)
        finally:
            del sys.modules[name]

    base = normalized("fp_a", 'class Block:\n    """Doc."""\n    def forward(self, x):\n        return x + 1\n')
    reworded = normalized("fp_b", 'class Block:\n    """Other words."""\n\n    def forward(self, x):  # note\n'
                                  '        """More."""\n        return x + 1\n')
    changed = normalized("fp_c", 'class Block:\n    """Doc."""\n    def forward(self, x):\n        return x + 2\n')
    assert base == reworded and base != changed
    covered = set(RECORD["fingerprints"]["mobilevit_s"]["code_objects"])
    assert {"lessons.mobilevit.MobileViTBlock", "lessons.mobilevit.unfold_patches", "lessons.layers.make_act",
            "lessons.layers.InvertedResidual", "lessons.layers.TransformerEncoderLayer"} <= covered


@pytest.mark.parametrize("args, message", [
    (["--models", "mobilevit_xxxl"], "unknown mobilevit_xxxl"),
    (["--modes", "jit"], "unknown jit"),
    (["--rounds", "2"], "--rounds must be at least"),
    (["--threads", "0"], "thread counts must be between 1"),
    (["--batches", "0"], "batch sizes must be positive"),
    (["--threads", "1", "1"], "lists a value twice"),
    (["--modes", "compile", "--models", "mobilevit_xxs", "--compile-models", "mobilevit_s"], "nothing to time"),
    (["--modes", "compile", "--batches", "1", "--compile-batches", "8"], "nothing to time"),
    (["--append"], "--append needs --out"),
])
def test_the_script_refuses_bad_arguments_with_a_clear_message(args, message, tmp_path, capsys):
    out = tmp_path / "x.json"
    with pytest.raises(SystemExit) as err:
        SCRIPT.main([*args, "--out", str(out)] if "--append" not in args else args)
    assert err.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()

"""The committed CPU benchmark (book/data/cpu_latency.json) still describes the code: same models, same counts.

Timings cannot be re-checked in CI (they belong to the machine that took them), but the parameters and multiply-adds
recorded beside them can: if a model changes, this fails until ``scripts/cpu_latency.py`` is run again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "book" / "data" / "cpu_latency.json"


SCRIPT = load_script("cpu_latency")
RECORD = json.loads(DATA.read_text())


def test_the_data_covers_exactly_the_models_the_script_times():
    timed = [row["model"] for row in RECORD["models"]]
    assert timed == [name for names in SCRIPT.GROUPS.values() for name in names]
    sizes = {name: side for (_, side), names in SCRIPT.GROUPS.items() for name in names}
    assert all(row["input_size"] == [1, 3, sizes[row["model"]], sizes[row["model"]]] for row in RECORD["models"])


def test_the_data_says_how_it_was_made():
    assert RECORD["command"].startswith("python scripts/cpu_latency.py")
    assert RECORD["settings"]["threads"] == 1 and RECORD["settings"]["batch"] == 1
    assert RECORD["machine"]["cpu"] and RECORD["software"]["torch"]
    runs = RECORD["settings"]["rounds"] * RECORD["settings"]["per_round"]
    for row in RECORD["models"]:
        assert row["runs"] == runs and row["median_ms"] > 0 and row["iqr_ms"] >= 0, row["model"]


@pytest.mark.parametrize("row", RECORD["models"], ids=[row["model"] for row in RECORD["models"]])
def test_recorded_counts_match_the_code(row):
    params, macs = SCRIPT.costs(row["model"], row["input_size"][-1])
    assert (row["params"], row["macs"]) == (params, macs), (
        f"{row['model']} changed since the benchmark was taken: run `{RECORD['command']}` again"
    )


def test_the_script_refuses_unknown_models_and_empty_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        SCRIPT.main(["--out", str(tmp_path / "x.json"), "--only", "mobilevit_xxxl"])
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        SCRIPT.main(["--out", str(tmp_path / "x.json"), "--rounds", "0"])
    assert not (tmp_path / "x.json").exists()

"""Statements about reading checkpoint files and loading them into models (``lessons.checkpoints``); each family's
own converter is tested in its family's test file, on every official variant's key list."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lessons import checkpoints
from lessons.checkpoints import check_state_dict, read_checkpoint, read_pdparams, rename_by_rules


def small_state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2)}


def test_a_mapping_is_taken_as_it_is_and_nested_weights_are_unwrapped() -> None:
    state = small_state()
    assert read_checkpoint(state).keys() == state.keys()
    mmseg_style = {"meta": {"epoch": 3}, "state_dict": state}
    deit_style = {"model": state, "optimizer": {"lr": 0.1}}
    for wrapped in (mmseg_style, deit_style):
        out = read_checkpoint(wrapped)
        assert out.keys() == state.keys() and torch.equal(out["a.weight"], state["a.weight"])


def test_a_torch_file_is_read_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"state_dict": small_state()}, path)
    assert torch.equal(read_checkpoint(path)["a.bias"], torch.ones(2))
    assert torch.equal(read_checkpoint(str(path))["a.bias"], torch.ones(2))


def test_a_truncated_torch_file_says_the_download_was_cut(tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save(small_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not read .*cut.pth.*download it again"):
        read_checkpoint(path)


def test_a_missing_file_and_a_wrong_type_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        read_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(TypeError, match="file path or a state dict"):
        read_checkpoint(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'a.weight' is a list"):
        read_checkpoint({"a.weight": [1, 2]})


def write_pdparams(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``paddle.save(layer.state_dict(), path)`` writes: a pickle (protocol 2) of a dict of NumPy arrays."""
    with path.open("wb") as f:
        pickle.dump({**arrays, "StructuredToParameterName@@": {"x": "y"}}, f, protocol=2)


def test_pdparams_is_read_without_paddle_as_tensors(tmp_path: Path) -> None:
    path = tmp_path / "model.pdparams"
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_pdparams(path, {"linear.weight": weight, "bn._mean": np.zeros(4, dtype=np.float32)})
    out = read_checkpoint(path)
    assert set(out) == {"linear.weight", "bn._mean"}  # Paddle's name table is dropped
    assert out["linear.weight"].dtype == torch.float32 and torch.equal(out["linear.weight"], torch.from_numpy(weight))


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_pdparams_with_anything_but_arrays_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pdparams"
    with path.open("wb") as f:
        pickle.dump({"w": _Exploit()}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load posix.getcwd|refusing to load os.getcwd"):
        read_pdparams(path)


def test_a_truncated_pdparams_file_says_the_download_was_cut(tmp_path: Path) -> None:
    path = tmp_path / "cut.pdparams"
    write_pdparams(path, {"w": np.ones((64, 64), dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="PaddlePaddle .pdparams.*download it again"):
        read_checkpoint(path)


def test_rename_by_rules_uses_the_first_rule_that_matches_the_whole_key() -> None:
    state = {"backbone.stem.conv.weight": torch.zeros(1), "decode_head.conv_seg.bias": torch.ones(1)}
    rules = [(r"backbone\.stem\.(.*)", r"stem.\1"), (r"backbone\.(.*)", r"never.\1"), (r"decode_head\.conv_seg\.(.*)", r"head.\1")]
    assert list(rename_by_rules(state, rules, "toy")) == ["stem.conv.weight", "head.bias"]


def test_rename_by_rules_refuses_keys_of_another_model_and_collisions() -> None:
    with pytest.raises(ValueError, match=r"1 key\(s\) of this checkpoint are not keys of the official toy model.*'other.w'"):
        rename_by_rules({"other.w": torch.zeros(1)}, [(r"backbone\.(.*)", r"\1")], "toy")
    with pytest.raises(ValueError, match="two checkpoint keys map to 'w'"):
        rename_by_rules({"a.w": torch.zeros(1), "b.w": torch.zeros(1)}, [(r".*\.(w)", r"\1")], "toy")


def test_check_state_dict_names_missing_unexpected_and_misshapen_tensors() -> None:
    model = nn.Linear(3, 2)
    check_state_dict(model, {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"1 tensor\(s\) missing, e.g. bias"):
        check_state_dict(model, {"weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"1 unexpected tensor\(s\), e.g. extra"):
        check_state_dict(model, {"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"weight: checkpoint \(3, 3\), model \(2, 3\)"):
        check_state_dict(model, {"weight": torch.zeros(3, 3), "bias": torch.zeros(2)})


class ToyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)


def test_load_official_uses_the_converter_registered_for_the_model_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "_CONVERTERS", {})

    @checkpoints.register_official_converter(ToyNet)
    def convert(state_dict: dict, model: nn.Module) -> dict:
        return rename_by_rules(state_dict, [(r"classifier\.(.*)", r"fc.\1")], "ToyNet")

    official = {"classifier.weight": torch.randn(2, 3), "classifier.bias": torch.randn(2)}
    model = checkpoints.load_official(ToyNet(), {"state_dict": official})
    assert torch.equal(model.fc.weight, official["classifier.weight"])
    with pytest.raises(TypeError, match="no official checkpoint converter for Linear; models with one: ToyNet"):
        checkpoints.load_official(nn.Linear(3, 2), official)


def test_averaged_weights_come_first_unless_asked_otherwise() -> None:
    plain, averaged = small_state(), {k: v + 1 for k, v in small_state().items()}
    wrapped = {"state_dict": plain, "state_dict_ema": averaged}
    assert torch.equal(read_checkpoint(wrapped)["a.bias"], averaged["a.bias"])
    assert torch.equal(read_checkpoint(wrapped, use_ema=False)["a.bias"], plain["a.bias"])

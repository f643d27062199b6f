import pytest
import torch

from cosface.checkpoint import atomic_save, checkpoint_name, list_checkpoints, load_checkpoint
from cosface.errors import CosfaceError


def test_checkpoint_names_sort_in_training_order(tmp_path):
    names = [checkpoint_name(2), checkpoint_name(1, 7), checkpoint_name(1), checkpoint_name(2, 12),
             checkpoint_name(10), checkpoint_name(1, 3)]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("ignored")
    order = [p.name for p in list_checkpoints(tmp_path)]
    assert order == ["epoch_001_step_00000003.pt", "epoch_001_step_00000007.pt", "epoch_001.pt",
                     "epoch_002_step_00000012.pt", "epoch_002.pt", "epoch_010.pt"]


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    target = tmp_path / "c.pt"
    atomic_save({"a": torch.ones(2)}, target)
    with pytest.raises(Exception):
        atomic_save({"a": Boom()}, target)
    assert torch.load(target, weights_only=True)["a"].tolist() == [1.0, 1.0]  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]                      # no temp files left


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(CosfaceError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    good = tmp_path / "good.pt"
    atomic_save({"format": "cosface-checkpoint", "format_version": 1, "config": {}, "num_classes": 1,
                 "class_names": ["a"], "preprocessing": {}, "backbone": {}, "head": {}}, good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CosfaceError, match=r"trunc.pt cannot be read \(truncated"):
        load_checkpoint(trunc)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CosfaceError, match="not a cosface checkpoint"):
        load_checkpoint(other)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "cosface-checkpoint", "x": Evil()}, evil)
    with pytest.raises(CosfaceError, match="cannot be read"):
        load_checkpoint(evil)  # weights_only refuses to call print
    assert load_checkpoint(good)["class_names"] == ["a"]


def test_torchscript_export_given_as_a_checkpoint_says_what_it_is(tmp_path, recwarn):
    script = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(script))
    with pytest.raises(CosfaceError) as e:
        load_checkpoint(script)
    assert str(e.value) == f"checkpoint {script} is a TorchScript model (an export), not a cosface checkpoint"
    assert not [w for w in recwarn if "TorchScript" in str(w.message)]   # no torch warning beside the one line

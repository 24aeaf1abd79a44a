"""The study runner never loses finished work and refuses bad counts (the second hostile
sweep)."""

from __future__ import annotations

import pytest
from study_helpers import fake_calls, plan_file, study


def test_a_trained_checkpoint_without_record_or_result_is_never_deleted(
    tmp_path, fake_usnet, capsys
):
    plan = plan_file(tmp_path, runs=[{"method": "us", "epochs": 2}])
    assert study(tmp_path, "run", plan) == 0
    folder = tmp_path / "runs/p/us-e2-s0"
    (folder / "study.json").unlink()
    (tmp_path / "results/p/us-e2-s0.json").unlink()
    before = (folder / "checkpoint/model.safetensors").read_bytes()
    assert study(tmp_path, "run", plan) == 2
    assert "us-e2-s0 hold a trained checkpoint but no study.json" in capsys.readouterr().err
    assert (folder / "checkpoint/model.safetensors").read_bytes() == before
    assert len(fake_calls(fake_usnet)) == 1  # not trained again


def test_counts_below_one_are_refused_not_recorded(tmp_path, capsys):
    plan = plan_file(tmp_path, runs=[{"method": "us", "epochs": 2}])
    with pytest.raises(SystemExit) as e:
        study(tmp_path, "run", plan, "--threads", "-1")
    assert e.value.code == 2 and "argument --threads: must be >= 1, got -1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

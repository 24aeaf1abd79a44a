"""Suite-wide settings: one intra-op thread (tiny models run fastest so, and results repeat);
the checkpoint tests' calibrated model and its saved checkpoint (`model`, `ckpt`); the study
tests' fake `usnet` (tests/fake_usnet.py, tests/study_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_stats import CHECKPOINT_WIDTHS, fake_calibrate, randomize_affine


@pytest.fixture(scope="session", autouse=True)
def _one_thread_session():
    """Before any fixture of any scope builds or measures a model."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    """Again for each test: a command under test may have set another count (--threads)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def study_template(tmp_path_factory) -> Path:
    """A small real checkpoint whose weights the fake ``usnet train`` copies."""
    from study_helpers import TINY

    import usnet

    model = usnet.create_model("us_mobilenet_v2_small", in_chans=1, num_classes=10, **TINY)
    return usnet.save(model, tmp_path_factory.mktemp("template") / "ckpt")


@pytest.fixture
def fake_usnet(tmp_path, study_template, monkeypatch) -> Path:
    """The study tests' stand-in for ``usnet`` (tests/fake_usnet.py): its environment; returns
    the file it logs its calls to."""
    calls = tmp_path / "calls.log"
    calls.touch()
    monkeypatch.setenv("FAKE_TEMPLATE", str(study_template))
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    monkeypatch.delenv("FAKE_REJECT", raising=False)
    monkeypatch.setenv("FAKE_EPOCH_SECONDS", "0")
    return calls


@pytest.fixture
def model():
    torch.manual_seed(0)
    import usnet

    m = usnet.create_model("us_mobilenet_v2_small", num_classes=7)
    randomize_affine(m)
    fake_calibrate(m, CHECKPOINT_WIDTHS)
    return m.eval()


@pytest.fixture
def ckpt(model, tmp_path) -> Path:
    from usnet.checkpoint import save

    return save(model, tmp_path / "run" / "ckpt", meta={"config": {"lr": 0.1}, "epoch": 3})

"""Universally slimmable super-resolution: models, data, metrics, training, upscale command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import usnet.models.edsr  # noqa: F401  (registers us_edsr)
import usnet.models.wdsr  # noqa: F401  (registers us_wdsr)
from usnet import checkpoint, create_model, get_width, set_width
from usnet.cli import main
from usnet.config import ConfigError, build_config
from usnet.data.sr import SRPairs, SRPatches, SRTestSet, bicubic_pair, folder_images
from usnet.nn import USConv2d
from usnet.tasks.sr import TASK, L1Loss, SRConfig
from usnet.tasks.sr.evaluate import bicubic_metrics, evaluate
from usnet.tasks.sr.metrics import psnr_y, rgb_to_y, ssim_y
from usnet.training import train
from usnet.training.step import sandwich_step

TINY = {"n_resblocks": 1, "n_feats": 16}


def _photo(h: int, w: int, seed: int) -> Image.Image:
    """A smooth synthetic RGB image (gradients and waves), so bicubic is a fair baseline."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = [
        0.5
        + 0.4 * np.sin(x / rng.uniform(3, 8) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 8))
        for _ in range(3)
    ]
    return Image.fromarray((np.stack(chans, -1) * 255).round().astype(np.uint8), "RGB")


@pytest.fixture
def image_dirs(tmp_path):
    train, test = tmp_path / "train_hr", tmp_path / "test_hr"
    train.mkdir()
    test.mkdir()
    for i in range(2):
        _photo(40, 44, i).save(train / f"{i:04d}.png")
    _photo(36, 40, 9).save(test / "0900.png")
    return train, test


# -- models -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["us_edsr", "us_wdsr"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_models_upscale_at_every_width(name, scale):
    model = create_model(name, scale=scale, **TINY)
    assert model.task == "sr" and model.scale == scale
    assert model.width_range == (0.25, 1.0)
    x = torch.rand(1, 3, 7, 9)
    for w in (0.25, 0.6, 1.0):
        set_width(model, w)
        assert model(x).shape == (1, 3, 7 * scale, 9 * scale)


def test_body_slims_image_channels_do_not():
    model = create_model("us_edsr", n_feats=32)
    set_width(model, 0.25)
    assert model.head.weight[:, :].shape[1] == 3 and model.head.out_span.active == 8
    assert model.tail[0].out_span.active == 12 and model.tail[0].in_span.active == 8
    with pytest.raises(ValueError, match="scale"):
        create_model("us_edsr", scale=5)


def test_edsr_upsample_skip_starts_at_bicubic():
    model = create_model("us_edsr", upsample_skip=True, **TINY).eval()
    x = torch.rand(1, 3, 8, 8)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), expected)


def test_untrained_wdsr_is_nearest_neighbour_upscaling():
    model = create_model("us_wdsr", scale=3, **TINY).eval()
    x = torch.rand(1, 3, 5, 4)
    set_width(model, 0.25)
    torch.testing.assert_close(model(x), F.interpolate(x, scale_factor=3, mode="nearest"))


def test_weight_norm_is_over_the_active_slice():
    torch.manual_seed(0)
    model = create_model("us_wdsr", n_resblocks=2, n_feats=32)
    conv = model.body[0].body[0]
    with torch.no_grad():
        conv.weight_g.uniform_(0.5, 2.0)
    for w in (0.25, 0.5, 1.0):
        set_width(model, w)
        weight = conv._current()[0]
        assert weight.shape[:2] == (conv.out_span.active, conv.in_span.active)
        norms = weight.flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, conv.weight_g.flatten()[: weight.shape[0]])


def test_weight_norm_conv_starts_as_its_direction_and_exports_dense():
    model = create_model("us_wdsr", **TINY).eval()
    conv = model.head
    set_width(model, 1.0)
    torch.testing.assert_close(conv._current()[0], conv.weight)
    x = torch.rand(1, 3, 6, 6)
    for w in (0.25, 1.0):
        set_width(model, w)
        dense = conv.to_dense()
        assert type(dense) is torch.nn.Conv2d and dense.out_channels == conv.out_span.active
        torch.testing.assert_close(dense(x), conv(x))
    assert isinstance(conv, USConv2d) and conv.weight_norm


@pytest.mark.parametrize("name", ["us_edsr", "us_wdsr"])
def test_export_is_dense_and_matches_the_us_model(name):
    from usnet.export import extract

    model = create_model(name, **TINY).eval()
    x = torch.rand(1, 3, 6, 6)
    dense = extract(model, 0.5)
    set_width(model, 0.5)
    torch.testing.assert_close(dense(x), model(x))
    slimmable = (USConv2d,)
    assert not any(isinstance(m, slimmable) for m in dense.modules())
    assert any(type(m) is torch.nn.Conv2d for m in dense.modules())


def test_checkpoint_round_trip_of_wdsr(tmp_path):
    model = create_model("us_wdsr", scale=3, **TINY).eval()
    x = torch.rand(1, 3, 5, 5)
    checkpoint.save(model, tmp_path / "ck")
    loaded = checkpoint.load(tmp_path / "ck")
    set_width(model, 0.5)
    set_width(loaded, 0.5)
    torch.testing.assert_close(loaded(x), model(x))


# -- data -------------------------------------------------------------------------------------
def test_bicubic_pair_crops_to_a_multiple_of_the_scale():
    lr, hr = bicubic_pair(_photo(31, 20, 0), 3)
    assert hr.size == (18, 30) and lr.size == (6, 10)


def test_patches_are_aligned_reproducible_and_augmented():
    pairs = SRPairs([("a", _photo(40, 48, 1))], scale=2)
    plain = SRPatches(pairs, patch_size=8, length=4, seed=3, augment=False)
    lr, hr = plain[1]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16)
    # the LR patch is the bicubic downscale of the HR patch (up to the patch border)
    down = F.interpolate(hr[None], scale_factor=0.5, mode="bicubic", antialias=True)[0]
    assert (down - lr)[:, 2:-2, 2:-2].abs().mean() < 0.02
    again = SRPatches(pairs, patch_size=8, length=4, seed=3, augment=True)
    torch.testing.assert_close(again[2][0], again[2][0])
    first = again[2][0]
    again.set_epoch(1)
    assert not torch.equal(again[2][0], first)
    with pytest.raises(ValueError, match="patch_size"):
        SRPatches(pairs, patch_size=64, length=4)


def test_folder_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_images(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images"):
        folder_images(tmp_path)


# -- metrics ----------------------------------------------------------------------------------
def test_y_channel_and_psnr_values():
    white, black = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    assert torch.allclose(rgb_to_y(white), torch.full((2, 2), 235 / 255))
    assert torch.allclose(rgb_to_y(black), torch.full((2, 2), 16 / 255))
    hr = torch.full((3, 10, 10), 100 / 255)
    sr_img = hr + 1 / 255
    expected = 10 * math.log10(1 / ((219 / 255 / 255) ** 2))
    assert psnr_y(sr_img, hr) == pytest.approx(expected, abs=1e-3)
    assert psnr_y(hr, hr) == math.inf
    hr[:, :2] = 0  # a border the crop removes
    assert psnr_y(sr_img, hr, border=2) == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(hr, hr[:, 1:])


def test_ssim_is_one_for_equal_images_and_lower_for_noise():
    img = torch.from_numpy(np.array(_photo(32, 32, 2))).permute(2, 0, 1).float() / 255
    assert ssim_y(img, img, 2) == pytest.approx(1.0)
    noisy = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(
        0, 1
    )
    assert ssim_y(noisy, img, 2) < 0.9


# -- training ---------------------------------------------------------------------------------
@pytest.mark.parametrize("distill", [True, False])
def test_inplace_distillation_switch_sets_the_target(distill):
    torch.manual_seed(0)
    model = create_model("us_edsr", **TINY)
    lr_img, hr_img = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    parts = sandwich_step(model, lr_img, hr_img, [1.0, 0.25], L1Loss(), distill)
    losses = {w: float(p["loss"]) for w, p in zip([1.0, 0.25], parts, strict=True)}
    with torch.no_grad():
        set_width(model, 1.0)
        teacher = model(lr_img)
        set_width(model, 0.25)
        student = model(lr_img)
    assert losses[1.0] == pytest.approx(float(F.l1_loss(teacher, hr_img)), rel=1e-5)
    target = teacher if distill else hr_img
    assert losses[0.25] == pytest.approx(float(F.l1_loss(student, target)), rel=1e-5)
    other = teacher if not distill else hr_img
    assert losses[0.25] != pytest.approx(float(F.l1_loss(student, other)), rel=1e-3)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="scale"):
        build_config(SRConfig, {"task": "sr", "scale": 5})
    with pytest.raises(ConfigError, match="widths"):
        build_config(SRConfig, {"train": {"sampling": "fixed"}})
    with pytest.raises(ConfigError, match="kwargs.scale"):
        build_config(SRConfig, {"model": {"kwargs": {"scale": 2}}})


def _raw(train, test, out, epochs=2):
    return {
        "task": "sr",
        "scale": 2,
        "model": {"name": "us_edsr", "kwargs": {**TINY, "upsample_skip": True}},
        "data": {"train_dir": str(train), "test_dir": str(test), "patch_size": 8, "batch_size": 2},
        "train": {"epochs": epochs, "steps_per_epoch": 3, "log_every": 1},
        "optim": {"lr": 1e-3},
        "eval": {"widths": [0.25, 0.5, 1.0], "every": 1},
        "output": {"dir": str(out)},
    }


def _run(raw: dict, resume: bool = False) -> str:
    return train(TASK, build_config(SRConfig, raw), resume=resume).text


def test_run_end_to_end_resumes_and_upscales(image_dirs, tmp_path, capsys, monkeypatch):
    train_dir, test_dir = image_dirs
    assert "| 0.25 |" in _run(_raw(train_dir, test_dir, tmp_path / "full"))
    results = json.loads((tmp_path / "full" / "results.json").read_text())
    assert [r["width"] for r in results["widths"]] == [0.25, 0.5, 1.0]
    macs = [r["macs"] for r in results["widths"]]
    assert macs == sorted(macs) and macs[0] < macs[-1]
    assert results["bicubic"]["psnr"] > 20
    ckpt = tmp_path / "full" / "checkpoint"
    assert checkpoint.read_meta(ckpt)["results"]["widths"][0]["width"] == 0.25

    # interrupted after one epoch, then resumed: the same weights as the uninterrupted run
    real_save_state = checkpoint.save_state

    def crash_after_saving(obj, path):
        real_save_state(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_state", crash_after_saving)
    with pytest.raises(KeyboardInterrupt):
        _run(_raw(train_dir, test_dir, tmp_path / "part"))
    monkeypatch.undo()
    _run(_raw(train_dir, test_dir, tmp_path / "part"), resume=True)
    a = checkpoint.load(ckpt).state_dict()
    b = checkpoint.load(tmp_path / "part" / "checkpoint").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)

    # killed between the epoch-2 checkpoint and its resume.pt (defect 6): the resumed run
    # retrains epoch 2 from resume.pt's own weights and optimizer, not the newer checkpoint's
    calls = []

    def die_at_second_save(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_save_state(obj, path)

    monkeypatch.setattr(checkpoint, "save_state", die_at_second_save)
    with pytest.raises(KeyboardInterrupt):
        _run(_raw(train_dir, test_dir, tmp_path / "between"))
    monkeypatch.undo()
    assert checkpoint.read_meta(tmp_path / "between" / "checkpoint")["epoch"] == 2
    _run(_raw(train_dir, test_dir, tmp_path / "between"), resume=True)
    c = checkpoint.load(tmp_path / "between" / "checkpoint").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], c[k], rtol=0, atol=0, msg=k)

    # usnet upscale at two widths
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    _photo(10, 12, 5).save(src)
    assert main(["upscale", str(ckpt), "--width", "0.5", str(src), str(out)]) == 0
    assert Image.open(out).size == (24, 20)
    assert main(["upscale", str(ckpt), "--width", "0.1", str(src), str(out)]) == 2
    assert "outside" in capsys.readouterr().err


def test_evaluate_restores_width_and_bicubic_reference(image_dirs):
    _, test_dir = image_dirs
    test = SRTestSet(SRPairs(folder_images(test_dir), 2))
    model = create_model("us_edsr", upsample_skip=True, **TINY)
    set_width(model, 0.5)
    m = evaluate(model, 1.0, test)
    assert set(m) == {"psnr", "ssim"} and get_width(model) == 0.5
    bic = bicubic_metrics(test)
    # an untrained model with the bicubic skip is torch's bicubic: close to Pillow's
    assert bic["psnr"] > 45 and abs(m["psnr"] - bic["psnr"]) < 5

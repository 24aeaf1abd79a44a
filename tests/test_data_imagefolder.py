"""usnet.data image folders and the authors' ImageNet transforms (torchvision ops + lighting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from usnet.data import ImageNetEval, ImageNetTrain, create_dataset, create_loader, dataset_info
from usnet.data.seeding import sample_generator
from usnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, lighting

SIZE = 32  # small crops keep the tests fast; the default is 224


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("n01", "n02")):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                h, w = 40 + 7 * i, 50 + 5 * c
                arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                ext = "JPEG" if i % 2 == 0 else "png"
                Image.fromarray(arr).save(d / f"img{i}.{ext}")
            (d / "notes.txt").write_text("not an image")
    return tmp_path


def test_imagefolder_layout_labels_and_shapes(folder):
    train = create_dataset("imagenet", folder, "train", augment=True, input_size=SIZE)
    val = create_dataset("imagefolder", folder, "test", input_size=SIZE)  # test -> val/
    assert train.classes == ["n01", "n02"] and len(train) == 6 and len(val) == 4
    assert [y for _, y in train.samples] == [0, 0, 0, 1, 1, 1]
    x, y = train[4]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32 and y == 1
    assert val[0][0].shape == (3, SIZE, SIZE)
    assert dataset_info("imagenet", folder, input_size=SIZE) == {
        "num_classes": 2,
        "in_chans": 3,
        "input_size": SIZE,
    }


def test_imagefolder_augmentation_seeded_per_epoch_and_worker_independent(folder):
    ds = create_dataset("imagenet", folder, "train", augment=True, input_size=SIZE, seed=4)
    first = ds[2][0]
    assert torch.equal(first, ds[2][0])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[2][0])
    serial = create_loader(ds, 3, shuffle=True, seed=2)
    parallel = create_loader(ds, 3, shuffle=True, seed=2, num_workers=2)
    for loader in (serial, parallel):
        loader.set_epoch(1)
    a, b = list(serial), list(parallel)
    assert len(a) == 2 and a[0][0].shape == (3, 3, SIZE, SIZE)
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True)
    )


def test_eval_transform_is_resize_then_centre_crop():
    # 128x64 with a white band at columns 40..87; shorter side to 32 halves it (band 20..43),
    # the centre 28x28 crop starts at column 18: black edges, white middle
    arr = np.zeros((64, 128, 3), dtype=np.uint8)
    arr[:, 40:88] = 255
    x = ImageNetEval(size=28, resize=32)(Image.fromarray(arr))
    assert x.shape == (3, 28, 28)
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    black = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[:, :, 4:24].mean((1, 2)), white, atol=1e-4, rtol=0)
    torch.testing.assert_close(x[:, :, 0].mean(1), black, atol=0.05, rtol=0)
    torch.testing.assert_close(x[:, :, 27].mean(1), black, atol=0.05, rtol=0)


def test_lighting_and_train_transform_are_seeded_per_sample():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 8, 8, generator=g)
    assert torch.equal(lighting(img, 0.0, g), img)
    shift = lighting(img, 0.1, g) - img  # one RGB offset for every pixel
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift))
    arr = np.random.default_rng(0).integers(0, 256, size=(60, 40, 3), dtype=np.uint8)
    train = ImageNetTrain(size=16)
    state = torch.get_rng_state()
    a, b = (train(Image.fromarray(arr), sample_generator(0, 0, i)) for i in (1, 2))
    assert torch.equal(a, train(Image.fromarray(arr), sample_generator(0, 0, 1)))
    assert not torch.equal(a, b) and a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert -3 < float(a.min()) and float(a.max()) < 3


def test_imagefolder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist.*root/train/<class>"):
        create_dataset("imagenet", tmp_path / "nowhere")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no val or test folder"):
        create_dataset("imagenet", tmp_path / "empty", "val")
    bad = folder / "train" / "n01" / "img0.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])
    ds = create_dataset("imagenet", folder, "train", input_size=SIZE)
    with pytest.raises(ValueError, match="img0.JPEG: cannot decode"):
        ds[0]

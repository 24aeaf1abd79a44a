"""usnet.data: IDX and CIFAR binary readers, batched augmentation, seeded resumable loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from usnet.data import (
    InMemoryImageDataset,
    calibration_loader,
    create_dataset,
    create_loader,
    dataset_info,
    list_datasets,
    read_idx,
)
from usnet.data.fashion_mnist import DEFAULT_ROOT
from usnet.data.transforms import random_crop_flip

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fmnist(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    data = {}
    for split, prefix, n in (("train", "train", 24), ("test", "t10k", 8)):
        x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y)
        data[split] = (x, y)
    return tmp_path, data


def write_cifar(folder: Path, files: list[str], label_bytes: int, n: int, classes: int) -> dict:
    folder.mkdir(parents=True)
    out = {}
    for f in files:
        labels = RNG.integers(0, classes, size=(n, label_bytes), dtype=np.uint8)
        if label_bytes == 2:
            labels[:, 0] = labels[:, 1] // 5  # coarse class of the fine one
        pixels = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        (folder / f).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
        out[f] = (labels, pixels.reshape(n, 3, 32, 32))
    return out


@pytest.fixture
def cifar10(tmp_path: Path) -> tuple[Path, dict]:
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    return tmp_path, write_cifar(tmp_path / "cifar-10-batches-bin", files, 1, 4, 10)


# --------------------------------------------------------------------------- Fashion-MNIST
def test_fashion_mnist_reads_idx_and_normalises(fmnist):
    root, data = fmnist
    ds = create_dataset("fashion_mnist", root, "train")
    assert len(ds) == 24 and ds.images.dtype == torch.uint8
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3
    raw = torch.from_numpy(data["train"][0][3]).float() / 255
    torch.testing.assert_close(x[0] * 0.3530 + 0.2860, raw)
    test = create_dataset("fashion_mnist", root, "val")  # val means the test split
    assert len(test) == 8 and torch.equal(test.labels, torch.from_numpy(data["test"][1]).long())


def test_fashion_mnist_augmentation_is_a_seeded_crop_and_flip(fmnist):
    root, data = fmnist
    ds = create_dataset("fashion_mnist", root, "train", augment=True, seed=1)
    x1, _ = ds.__getitems__(list(range(24)))
    x2, _ = ds.__getitems__(list(range(24)))
    assert x1.shape == (24, 1, 28, 28) and torch.equal(x1, x2)
    ds.set_epoch(1)
    assert not torch.equal(ds.__getitems__(list(range(24)))[0], x1)
    # every augmented image is some crop of the 2-px zero-padded original, maybe flipped
    plain = create_dataset("fashion_mnist", root, "train")
    pad = torch.nn.functional.pad(plain.__getitems__([5])[0], (2, 2, 2, 2), value=-0.2860 / 0.3530)
    crops = [pad[0, 0, t : t + 28, s : s + 28] for t in range(5) for s in range(5)]
    crops += [c.flip(-1) for c in crops]
    ds.set_epoch(0)
    assert any(torch.allclose(ds[5][0][0], c) for c in crops)


def test_random_crop_flip_covers_offsets_and_flips():
    x = torch.arange(4 * 4, dtype=torch.uint8).view(1, 1, 4, 4).expand(2, 1, 4, 4)
    u = torch.tensor([[0.0, 0.0, 0.9], [0.99, 0.99, 0.1]], dtype=torch.float64)
    out = random_crop_flip(x, 1, u)
    assert torch.equal(out[0, 0, 1:, 1:], x[0, 0, :3, :3]) and out[0, 0, 0].sum() == 0
    # crop at (2, 2) of the padded image, then mirror: zero column first, zero row last
    assert torch.equal(out[1, 0, :3, 1:], x[0, 0, 1:, 1:].flip(-1))
    assert out[1, 0, :, 0].sum() == 0 and out[1, 0, 3].sum() == 0


def test_fashion_mnist_missing_and_truncated_files(tmp_path, fmnist):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        create_dataset("fashion_mnist", tmp_path / "nowhere")
    root, _ = fmnist
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz"):
        create_dataset("fashion_mnist", root, "train")
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:500])  # a cut-off gzip stream
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz"):
        create_dataset("fashion_mnist", root, "test")
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 8, 28, 28)
    path.write_bytes(gzip.compress(header + bytes(100)))  # valid gzip, too few pixels
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(), reason=f"{DEFAULT_ROOT} not installed")
def test_real_fashion_mnist():
    train = create_dataset("fashion_mnist")
    test = create_dataset("fashion_mnist", split="test")
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert torch.equal(train.labels.bincount(), torch.full((10,), 6000))
    x, _ = train.__getitems__(list(range(0, 60000, 6)))
    assert abs(x.mean().item()) < 0.02 and abs(x.std().item() - 1) < 0.02


# ---------------------------------------------------------------------------------- CIFAR
def test_cifar10_binary_records(cifar10):
    root, raw = cifar10
    ds = create_dataset("cifar10", root, "train")
    assert ds.images.shape == (20, 3, 32, 32) and ds.labels.dtype == torch.int64
    labels3, pixels3 = raw["data_batch_3.bin"]
    assert torch.equal(ds.images[9], torch.from_numpy(pixels3[1]))  # batches in order
    assert ds.labels[9] == labels3[1, 0]
    test = create_dataset("cifar10", root / "cifar-10-batches-bin", "test")  # folder itself
    assert len(test) == 4
    aug = create_dataset("cifar10", root, "train", augment=True)
    assert aug.padding == 4 and aug.__getitems__([0, 1])[0].shape == (2, 3, 32, 32)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    raw = write_cifar(tmp_path / "cifar-100-binary", ["train.bin", "test.bin"], 2, 6, 100)
    fine = create_dataset("cifar100", tmp_path, "train")
    coarse = create_dataset("cifar100", tmp_path, "train", label_mode="coarse")
    assert torch.equal(fine.labels, torch.from_numpy(raw["train.bin"][0][:, 1]).long())
    assert torch.equal(coarse.labels, fine.labels // 5)
    assert dataset_info("cifar100", label_mode="coarse")["num_classes"] == 20
    with pytest.raises(ValueError, match="label_mode"):
        create_dataset("cifar100", tmp_path, label_mode="medium")


def test_cifar_missing_and_truncated(tmp_path, cifar10):
    with pytest.raises(FileNotFoundError, match="cifar-10-binary.tar.gz"):
        create_dataset("cifar10", tmp_path / "nowhere")
    root, _ = cifar10
    path = root / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="test_batch.bin.*3073-byte records"):
        create_dataset("cifar10", root, "test")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="lacks.*test_batch.bin"):
        create_dataset("cifar10", root, "train")


# ------------------------------------------------------------------------------ factory
def test_factory_errors_and_info(fmnist):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*cifar10.*fashion_mnist"):
        create_dataset("mnist")
    root, _ = fmnist
    with pytest.raises(ValueError, match="split 'valid'"):
        create_dataset("fashion_mnist", root, "valid")
    with pytest.raises(ValueError, match="bad arguments.*label_mode"):
        create_dataset("fashion_mnist", root, label_mode="fine")
    with pytest.raises(ValueError, match="needs root"):
        create_dataset("imagenet")
    assert "imagenet" in list_datasets()
    assert dataset_info("fashion_mnist") == {"num_classes": 10, "in_chans": 1, "input_size": 28}
    assert dataset_info("imagenet")["input_size"] == 224


# ------------------------------------------------------------------------------- loaders
def _epoch(loader, epoch, start_batch=0):
    loader.set_epoch(epoch, start_batch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_batches_depend_only_on_seed_and_epoch(fmnist):
    root, _ = fmnist
    ds = create_dataset("fashion_mnist", root, augment=True, seed=3)
    a = create_loader(ds, 5, shuffle=True, seed=7)
    b = create_loader(create_dataset("fashion_mnist", root, augment=True, seed=3), 5, True, seed=7)
    e1a, e1b = _epoch(a, 1), _epoch(b, 1)
    assert len(e1a) == 5 and e1a[0][0].shape == (5, 1, 28, 28) and e1a[-1][0].shape[0] == 4
    assert all(
        torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(e1a, e1b, strict=True)
    )
    e2 = _epoch(a, 2)
    assert a.dataset.epoch == 2  # set_epoch reaches the augmentation
    assert not torch.equal(torch.cat([y for _, y in e1a]), torch.cat([y for _, y in e2]))
    # a resume after 2 finished batches of epoch 1 sees the rest of epoch 1 exactly
    tail = _epoch(b, 1, start_batch=2)
    assert len(tail) == 3 and all(
        torch.equal(p[0], q[0]) for p, q in zip(tail, e1a[2:], strict=True)
    )
    assert sorted(torch.cat([y for _, y in e1a]).tolist()) == sorted(ds.labels.tolist())


def test_loader_distributed_split(fmnist):
    root, _ = fmnist
    ds = create_dataset("fashion_mnist", root)
    ranks = [
        create_loader(ds, 4, True, seed=1, distributed=True, num_replicas=3, rank=r)
        for r in range(3)
    ]
    seen = [torch.cat([x.flatten(1) for x, _ in _epoch(loader, 0)]) for loader in ranks]
    assert [s.shape[0] for s in seen] == [8, 8, 8]
    everything = torch.cat(seen)
    assert torch.unique(everything, dim=0).shape[0] == 24  # disjoint shards covering all
    with pytest.raises(ValueError, match="process group"):
        create_loader(ds, 4, True, distributed=True)


def test_calibration_loader_is_fixed_and_unaugmented(fmnist):
    root, data = fmnist
    a = [y for _, y in calibration_loader("fashion_mnist", root, num_samples=10, batch_size=4)]
    b = [y for _, y in calibration_loader("fashion_mnist", root, num_samples=10, batch_size=4)]
    assert [len(y) for y in a] == [4, 4, 2] and all(
        torch.equal(p, q) for p, q in zip(a, b, strict=True)
    )
    loader = calibration_loader("fashion_mnist", root, num_samples=3, batch_size=3, seed=5)
    x, y = next(iter(loader))
    idx = loader.dataset.indices
    raw = torch.from_numpy(data["train"][0][idx]).float() / 255
    torch.testing.assert_close(x[:, 0] * 0.3530 + 0.2860, raw)  # no crop, no flip
    assert isinstance(loader.dataset.dataset, InMemoryImageDataset)

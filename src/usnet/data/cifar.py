"""CIFAR-10 and CIFAR-100 in their binary format (fixed-length records; nothing unpickled)."""

from __future__ import annotations

import hashlib
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .memory import InMemoryImageDataset

DEFAULT_ROOT = "data"
IMAGE_BYTES = 3 * 32 * 32


class _Spec:
    """Where one CIFAR variant lives and how its records are laid out."""

    def __init__(self, folder, train, test, label_bytes, classes, url, md5, mean, std):
        self.folder, self.train, self.test = folder, train, test
        self.label_bytes, self.num_classes = label_bytes, classes
        self.url, self.md5, self.mean, self.std = url, md5, mean, std

    def files(self, split: str) -> list[str]:
        return self.train if split == "train" else self.test

    def how_to_get(self, root: Path) -> str:
        return (
            f"download {self.url} and extract it into {root} (giving {root / self.folder}/), "
            f"or call usnet.data.download_cifar(..., root={str(root)!r})"
        )


SPECS = {
    "cifar10": _Spec(
        "cifar-10-batches-bin",
        [f"data_batch_{i}.bin" for i in range(1, 6)],
        ["test_batch.bin"],
        1,
        10,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "c32a1d4ab5d03f1284b67883e8d87530",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": _Spec(
        "cifar-100-binary",
        ["train.bin"],
        ["test.bin"],
        2,  # coarse label byte, then fine label byte
        100,
        "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "03b5dce01913d631647c71ecec9e9cb8",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
}
LABEL_MODES = ("fine", "coarse")


def _folder(name: str, root: str | Path | None) -> Path:
    """The extracted folder: ``root/<folder>`` or ``root`` itself if it holds the files."""
    spec = SPECS[name]
    root = Path(root if root is not None else DEFAULT_ROOT)
    for cand in (root / spec.folder, root):
        if all((cand / f).is_file() for f in spec.train + spec.test):
            return cand
    for cand in (root / spec.folder, root):
        if cand.is_dir() and any((cand / f).exists() for f in spec.train + spec.test):
            missing = [f for f in spec.train + spec.test if not (cand / f).is_file()]
            raise FileNotFoundError(
                f"{name} folder {cand} lacks {missing}; {spec.how_to_get(root)}"
            )
    raise FileNotFoundError(
        f"{name} binary files not found under {root}: expected {root / spec.folder}/ with "
        f"{', '.join(spec.train + spec.test)}; {spec.how_to_get(root)}"
    )


def read_cifar_bin(path: str | Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Records of ``label_bytes`` label bytes + 3072 pixel bytes -> images (N,3,32,32), labels.

    Labels come back as (N, label_bytes) uint8 (CIFAR-100: column 0 coarse, 1 fine).
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise UsageError(
            f"{path}: {raw.size} bytes is not a whole number of {record}-byte records "
            f"({label_bytes} label byte(s) + 3072 pixels); the file is truncated or not CIFAR binary"
        )
    rec = raw.reshape(-1, record)
    return rec[:, label_bytes:].reshape(-1, 3, 32, 32), rec[:, :label_bytes]


def load_cifar(
    name: str, root: str | Path | None, split: str, label_mode: str = "fine"
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, 3, 32, 32)`` and int64 labels of ``cifar10``/``cifar100``."""
    if name not in SPECS:
        raise UsageError(f"CIFAR variant {name!r} is unknown; allowed: {list(SPECS)}")
    if split not in ("train", "test"):
        raise UsageError(f"CIFAR split {split!r} is unknown; allowed: ['train', 'test']")
    if label_mode not in LABEL_MODES:
        raise UsageError(f"label_mode {label_mode!r} is unknown; allowed: {list(LABEL_MODES)}")
    if name == "cifar10" and label_mode != "fine":
        raise UsageError("label_mode 'coarse' applies to cifar100 only")
    spec = SPECS[name]
    folder = _folder(name, root)
    images, labels = [], []
    column = spec.label_bytes - 1 if label_mode == "fine" else 0
    limit = 20 if label_mode == "coarse" else spec.num_classes
    for f in spec.files(split):
        x, y = read_cifar_bin(folder / f, spec.label_bytes)
        y = y[:, column]
        if y.max() >= limit:
            raise UsageError(f"{folder / f}: label {y.max()} >= {limit} classes; not {name} binary")
        images.append(x)
        labels.append(y)
    return (
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels).astype(np.int64)),
    )


def cifar(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    augment: bool = False,
    padding: int = 4,
    seed: int = 0,
    label_mode: str = "fine",
) -> InMemoryImageDataset:
    """CIFAR-10/100 (3x32x32); augmentation = 4-px pad, random crop 32, flip."""
    images, labels = load_cifar(name, root, split, label_mode)
    spec = SPECS[name]
    return InMemoryImageDataset(
        images, labels, spec.mean, spec.std, augment=augment, padding=padding, seed=seed
    )


def _safe(member: str, folder: str) -> bool:
    parts = Path(member).parts
    return bool(parts) and parts[0] == folder and ".." not in parts and not member.startswith("/")


def download_cifar(name: str, root: str | Path | None = None) -> Path:
    """Download and extract the binary archive of ``cifar10``/``cifar100`` into ``root``.

    Checks the archive's MD5 published on the CIFAR page. Returns the extracted folder.
    (Not exercised by the tests: they never use the network.)
    """
    if name not in SPECS:
        raise UsageError(f"CIFAR variant {name!r} is unknown; allowed: {list(SPECS)}")
    spec = SPECS[name]
    root = Path(root if root is not None else DEFAULT_ROOT)
    try:
        return _folder(name, root)
    except FileNotFoundError:
        pass
    root.mkdir(parents=True, exist_ok=True)
    archive = root / spec.url.rsplit("/", 1)[1]
    if not archive.is_file():
        tmp = archive.with_suffix(".part")
        with urllib.request.urlopen(spec.url) as resp, open(tmp, "wb") as out:  # noqa: S310
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        tmp.rename(archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    if md5 != spec.md5:
        raise UsageError(f"{archive}: MD5 {md5} != published {spec.md5}; delete it and retry")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and _safe(m.name, spec.folder)]
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # Python < 3.12 without the backported filter
            tar.extractall(root, members=members)  # noqa: S202
    return _folder(name, root)

"""An image folder as a task, decoded lazily: only file names sit in memory.

Layout (`[task] images = "DIR"`):

    DIR/<class>/*.png|jpg|jpeg|bmp                  one folder per class, split 60/20/20
                                                    per class by the spec's seed
    DIR/{train,val,test}/<class>/*.png|...          the given splits, used as they are

Classes are the folder names, sorted. Every image is resized (bilinear) to
`image_size` (default: the first image's size) and scaled to [0, 1] (pixel / 255);
the channel count follows the files: 1 when every image is greyscale, else 3 (RGB,
alpha dropped). Files with other suffixes and hidden files are ignored (and counted).

Before anything starts every image file's header is read and checked (PIL `verify`):
an unreadable or non-image file stops the launch with one line naming it and the
count of such files (exit 2). Skipping them instead would silently change the data
and the split; fix or remove them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from search.core.errors import UsageError
from search.core.spec import TaskSource
from search.tasks.task import TEST_FRACTION, VAL_FRACTION, Scaling, Task

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "val", "test")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
MIN_PER_CLASS = 5  # a seeded 60/20/20 split needs a few of each class


class ImageFiles(Dataset):
    """Image files decoded on access: `dataset[i]` is (C×H×W float tensor in [0, 1], class)."""

    def __init__(self, files: list[str], labels: list[int], size: tuple[int, int], channels: int):
        self.files, self.labels = list(files), np.asarray(labels, dtype=np.int64)
        self.size, self.channels = (int(size[0]), int(size[1])), int(channels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        path = self.files[index]
        height, width = self.size
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
        except Exception as exc:  # noqa: BLE001 - name the file: the trial's failure reason
            raise ValueError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
        tensor = torch.from_numpy(pixels.copy()).float().div_(255.0)
        tensor = tensor[None] if self.channels == 1 else tensor.permute(2, 0, 1).contiguous()
        return tensor, int(self.labels[index])


@dataclass
class _Scan:
    files: list[str]
    labels: list[int]
    ignored: int


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(root: Path, classes: list[str]) -> _Scan:
    """Image files under root/<class>/ for each class (a missing class folder: none)."""
    files, labels, ignored = [], [], 0
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
        for file in names:
            if file.lower().endswith(SUFFIXES):
                files.append(str(folder / file))
                labels.append(label)
            else:
                ignored += 1
    return _Scan(files, labels, ignored)


def _check_headers(files: list[str], key: str) -> tuple[tuple[int, int], bool]:
    """Open every file's header (and verify it); returns the first image's (height,
    width) and whether every image is greyscale. An unreadable file is a UsageError."""
    from PIL import Image

    first_size, grey, bad = None, True, []
    for path in files:
        try:
            with Image.open(path) as image:
                mode, (width, height) = image.mode, image.size
                image.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            bad.append((path, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"))
            continue
        if first_size is None:
            first_size = (height, width)
        grey = grey and mode in GREY_MODES
    if bad:
        path, why = bad[0]
        more = f"; {len(bad)} unreadable files in all" if len(bad) > 1 else ""
        raise UsageError(f"{key}: {path}: not a readable image ({why}){more}; fix or remove it")
    return first_size, grey


def _split(scan: _Scan, seed: int) -> tuple[_Scan, _Scan, _Scan]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(scan.files))
    labels = np.asarray(scan.labels)
    trval, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=seed)
    train, val = train_test_split(
        trval, test_size=VAL_FRACTION / (1 - TEST_FRACTION), stratify=labels[trval], random_state=seed
    )
    pick = lambda rows: _Scan([scan.files[i] for i in sorted(rows)], [scan.labels[i] for i in sorted(rows)], 0)  # noqa: E731
    return pick(train), pick(val), pick(test)


def load_image_folder(source: TaskSource, seed: int):
    """The task of an image folder; UsageError naming the folder or file when unusable."""
    root = Path(source.images)
    key = f"task.images {root}"
    if not root.is_dir():
        raise UsageError(f"{key}: no such directory")
    split_folders = [name for name in SPLITS if (root / name).is_dir()]
    if split_folders and len(split_folders) != len(SPLITS):
        missing = [name for name in SPLITS if name not in split_folders]
        raise UsageError(
            f"{key}: has {', '.join(f + '/' for f in split_folders)} but no {', '.join(m + '/' for m in missing)}; "
            "give all of train/, val/, test/ or none"
        )
    class_root = root / "train" if split_folders else root
    classes = [p.name for p in _class_folders(class_root)]
    if not classes:
        raise UsageError(f"{key}: no class folders (expected {class_root}/<class>/*.png|jpg|jpeg|bmp)")
    if len(classes) < 2:
        raise UsageError(f"{key}: only one class folder ({classes[0]}); a classification task needs at least 2")
    if split_folders:
        for name in SPLITS[1:]:
            unknown = sorted({p.name for p in _class_folders(root / name)} - set(classes))
            if unknown:
                raise UsageError(f"{key}: {name}/{unknown[0]} is not a class of train/ ({', '.join(classes)})")
        scans = [_scan(root / name, classes) for name in SPLITS]
        everything = _Scan([f for s in scans for f in s.files], [label for s in scans for label in s.labels], sum(s.ignored for s in scans))
    else:
        everything = _scan(root, classes)
        scans = None
    counts = np.bincount(np.asarray(everything.labels, dtype=np.int64), minlength=len(classes))
    if counts.min() == 0:
        empty = classes[int(counts.argmin())]
        raise UsageError(f"{key}: class folder {empty} holds no image (.png, .jpg, .jpeg, .bmp)")
    if scans is None and counts.min() < MIN_PER_CLASS:
        small = classes[int(counts.argmin())]
        raise UsageError(f"{key}: class {small} has {counts.min()} images; need >= {MIN_PER_CLASS} per class for the 60/20/20 split")
    if scans is not None:
        for name, scan in zip(SPLITS, scans):
            if not scan.files:
                raise UsageError(f"{key}: {name}/ holds no image")
    first_size, grey = _check_headers(everything.files, key)
    size = tuple(source.image_size) if source.image_size is not None else first_size
    channels = 1 if grey else 3
    train, val, test = scans if scans is not None else _split(everything, seed)
    make = lambda s: ImageFiles(s.files, s.labels, size, channels)  # noqa: E731
    return Task(
        train=make(train),
        val=make(val),
        test=make(test),
        input_shape=(channels, *size),
        n_classes=len(classes),
        name=root.name,
        kind="image",
        class_labels=tuple(classes),
        preprocessing={
            "source": "image files",
            "color": "L (greyscale)" if channels == 1 else "RGB (alpha dropped)",
            "resize": f"{size[0]}x{size[1]} (height x width), bilinear",
            "scale": "pixel / 255, to [0, 1]",
            "ignored_files": everything.ignored,
            "split": "train/, val/, test/ folders" if scans is not None else f"seeded 60/20/20 per class (seed {seed})",
        },
        streamed=True,
        scaling=Scaling(0.0, 255.0, f"{'greyscale' if channels == 1 else 'RGB'} pixel values 0-255 (resized to {size[0]}x{size[1]}) divided by 255"),
    )

"""Image folders as tasks: class folders and split folders, resizing, greyscale and RGB,
lazy decoding through DataLoader workers, and every kind of bad folder as one line
naming the folder or file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search.core.errors import UsageError
from search.core.spec import from_dict
from search.tasks.data import load_task
from search.tasks.images import ImageFiles
from search.tasks.task import loader
from tests.conftest import run_cli, tiny_spec_dict, write_toml


def write_images(root: Path, classes=("cat", "dog", "eel"), per_class=10, size=(12, 10), mode="RGB", seed=0) -> Path:
    """Class folders of small images whose mean brightness encodes the class."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = 40 + 80 * label
            pixels = np.clip(rng.normal(value, 5, (size[1], size[0], channels)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
            image.save(folder / f"{i:03d}.png")
    return root


def spec_for(root: Path, **task):
    return from_dict(tiny_spec_dict(task={"images": str(root), **task}))


def test_class_folders_split_60_20_20_and_decode_to_unit_range(tmp_path):
    root = write_images(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("not an image")
    task = load_task(spec_for(root))
    assert task.kind == "image" and task.input_shape == (3, 10, 12) and task.n_classes == 3
    assert task.class_labels == ("cat", "dog", "eel")
    assert (len(task.train), len(task.val), len(task.test)) == (18, 6, 6)
    assert task.preprocessing["ignored_files"] == 1 and task.streamed
    x, y = task.train[0]
    assert x.dtype == torch.float32 and x.shape == (3, 10, 12) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    # The class is in the pixels: brightness 40 + 80·label over 255.
    assert float(x.mean()) == pytest.approx((40 + 80 * y) / 255, abs=0.03)
    files = set(task.train.files) | set(task.val.files) | set(task.test.files)
    assert len(files) == 30  # disjoint splits covering every image
    assert load_task(spec_for(root)).test.files == task.test.files  # fixed by the seed


def test_lazy_dataset_holds_file_names_and_streams_through_workers(tmp_path):
    root = write_images(tmp_path / "imgs", per_class=12)
    task = load_task(spec_for(root))
    assert isinstance(task.train, ImageFiles) and all(isinstance(f, str) for f in task.train.files)
    assert not any(isinstance(v, (np.ndarray, torch.Tensor)) and v.size > 1000 for v in vars(task.train).values())
    plain = [b for b in loader(task.train, 5, shuffle=True, seed=3)]
    streamed = [b for b in loader(task.train, 5, shuffle=True, seed=3, workers=2)]
    assert len(plain) == len(streamed)
    for (xa, ya), (xb, yb) in zip(plain, streamed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_split_subfolders_are_used_as_given(tmp_path):
    root = tmp_path / "imgs"
    write_images(root / "train", per_class=4)
    write_images(root / "val", per_class=2, seed=1)
    write_images(root / "test", classes=("cat", "eel"), per_class=3, seed=2)
    task = load_task(spec_for(root))
    assert (len(task.train), len(task.val), len(task.test)) == (12, 6, 6)
    assert task.class_labels == ("cat", "dog", "eel")
    assert {y for _, y in (task.test[i] for i in range(len(task.test)))} == {0, 2}  # eel keeps its index
    assert task.preprocessing["split"].startswith("train/")


def test_resize_and_greyscale(tmp_path):
    root = write_images(tmp_path / "grey", mode="L", size=(9, 9))
    task = load_task(spec_for(root, image_size=[16, 20]))
    assert task.input_shape == (1, 16, 20)
    x, _ = task.val[0]
    assert x.shape == (1, 16, 20)
    # Mixed greyscale and RGB files: three channels for all.
    write_images(root, classes=("zebra",), mode="RGB", size=(9, 9))
    assert load_task(spec_for(root)).input_shape == (3, 9, 9)


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda root: (root / "dog" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "dog/005.png: not a readable image"),
        (lambda root: (root / "cat" / "fake.jpg").write_text("hello"), "cat/fake.jpg: not a readable image"),
        (lambda root: [p.unlink() for p in (root / "eel").iterdir()], "class folder eel holds no image"),
        (lambda root: [p.unlink() for p in list((root / "eel").iterdir())[3:]], "class eel has 3 images"),
        (lambda root: (root / "train").mkdir(), "has train/ but no val/, test/"),
    ],
    ids=["corrupt-png", "text-as-jpg", "empty-class", "tiny-class", "partial-splits"],
)
def test_bad_folders_name_the_folder_or_file(tmp_path, breakage, expected):
    root = write_images(tmp_path / "imgs")
    breakage(root)
    with pytest.raises(UsageError) as info:
        load_task(spec_for(root))
    message = str(info.value)
    assert expected in message and "task.images" in message and "\n" not in message


def test_one_class_and_missing_folder(tmp_path):
    root = write_images(tmp_path / "one", classes=("only",))
    with pytest.raises(UsageError, match="only one class folder"):
        load_task(spec_for(root))
    with pytest.raises(UsageError, match="no such directory"):
        load_task(spec_for(tmp_path / "nowhere"))


def test_cli_bad_image_folder_exits_2_with_one_line_and_writes_nothing(tmp_path):
    root = write_images(tmp_path / "imgs")
    (root / "dog" / "001.png").write_bytes(b"broken")
    spec = write_toml(tmp_path / "s.toml", tiny_spec_dict(task={"images": "imgs"}))
    result = run_cli("launch", str(spec), "--storage", f"sqlite:///{tmp_path / 'o.db'}", cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert "dog/001.png" in lines[0] and not (tmp_path / "o.db").exists()


def test_task_keys_are_one_of_path_images_factory(tmp_path):
    with pytest.raises(UsageError, match="exactly one of path, images, factory"):
        from_dict(tiny_spec_dict(task={"images": "a", "factory": "b.py:make"}))
    with pytest.raises(UsageError, match="image_size goes with images"):
        from_dict(tiny_spec_dict(task={"path": "a.npz", "image_size": [8, 8]}))
    (tmp_path / "sub").mkdir()
    spec = write_toml(tmp_path / "sub" / "s.toml", tiny_spec_dict(task={"images": "data/imgs"}))
    from search.core.spec import load

    assert load(spec).task.images == tmp_path / "sub" / "data" / "imgs"  # relative to the spec file

"""Write an image folder from scikit-learn's digits: no download.

Each 8x8 digit is upsampled to 32x32, moved by a random rotation, shift and zoom,
painted in a random light colour on a random dark background, and given a little
noise, then saved as an RGB PNG in DIR/<digit>/ (or DIR/{train,val,test}/<digit>/
with --splits). Seeded: the same arguments write the same files.

    python examples/own_model/make_images.py --out examples/own_model/data/glyphs --count 4000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

SIZE = 32


def glyph(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One augmented, coloured 32x32 RGB rendering of an 8x8 digit (values 0..16)."""
    mask = Image.fromarray((digit / 16.0 * 255).astype(np.uint8)).resize((SIZE - 8, SIZE - 8), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (SIZE, SIZE))
    canvas.paste(mask, (4, 4))
    zoom = rng.uniform(0.85, 1.15)
    canvas = canvas.resize((round(SIZE * zoom),) * 2, Image.Resampling.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR,
                           translate=(rng.integers(-3, 4), rng.integers(-3, 4)))
    left = (canvas.width - SIZE) // 2
    canvas = canvas.crop((left, left, left + SIZE, left + SIZE))
    m = np.asarray(canvas, dtype=np.float32)[..., None] / 255.0
    # A light stroke on a dark background, each in a random colour.
    foreground, background = rng.uniform(140, 255, 3), rng.uniform(0, 110, 3)
    pixels = background * (1 - m) + foreground * m + rng.normal(0, 8, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "glyphs")
    parser.add_argument("--count", type=int, default=4000, help="images to write (digits are reused with new augmentations)")
    parser.add_argument("--splits", action="store_true", help="write train/ val/ test/ (60/20/20) instead of one folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    digits = load_digits()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(args.count) % len(digits.target)
    for index, source in enumerate(order):
        label = int(digits.target[source])
        folder = args.out
        if args.splits:
            folder = folder / ("train" if index % 5 < 3 else "val" if index % 5 == 3 else "test")
        folder = folder / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        glyph(digits.images[source], rng).save(folder / f"{index:06d}.png")
    print(f"wrote {args.count} images to {args.out}")


if __name__ == "__main__":
    main()

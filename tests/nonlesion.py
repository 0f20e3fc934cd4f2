"""Pictures that are not skin lesions, to check that the out-of-distribution score flags them.

A test fixture (tests/test_ood.py); `python tests/nonlesion.py OUT_DIR` writes the same 60 for
`evaluate --ood-against` (seeded, the same on every run): flat colours, colour gradients, printed
text, drawn faces, drawn landscapes, stripes, checkerboards and noise, and photographs with a free licence that ship with matplotlib (Grace Hopper's US Navy
portrait, public domain, whole and cropped; its sample pictures). Nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 320
WORDS = ["invoice", "meeting at noon", "hello world", "SALE 50%", "page 12", "lorem ipsum dolor", "THE END", "menu",
         "receipt total", "chapter one"]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def flat(rng: np.random.Generator) -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), _colour(rng))


def gradient(rng: np.random.Generator) -> Image.Image:
    a, b = np.array(_colour(rng), float), np.array(_colour(rng), float)
    t = np.linspace(0, 1, SIZE)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, SIZE)[None, :, None]
    return Image.fromarray((a + (b - a) * t * np.ones((SIZE, SIZE, 1))).astype(np.uint8))


def text(rng: np.random.Generator) -> Image.Image:
    background = (255, 255, 255) if rng.random() < 0.6 else _colour(rng)
    im = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(im)
    for line in range(int(rng.integers(2, 6))):
        font = ImageFont.load_default(size=int(rng.integers(18, 44)))
        ink = (0, 0, 0) if background == (255, 255, 255) else _colour(rng)
        draw.text((int(rng.integers(5, 60)), 20 + 60 * line), str(rng.choice(WORDS)), fill=ink, font=font)
    return im


def face(rng: np.random.Generator) -> Image.Image:
    im = Image.new("RGB", (SIZE, SIZE), _colour(rng))
    draw = ImageDraw.Draw(im)
    skin = tuple(int(c) for c in (np.array([224, 172, 140]) * rng.uniform(0.45, 1.1)).clip(0, 255))
    cx, cy, rx, ry = SIZE // 2, SIZE // 2 + 10, int(rng.integers(80, 110)), int(rng.integers(100, 130))
    draw.ellipse((cx - rx, cy - ry - 25, cx + rx, cy + ry - 70), fill=_colour(rng))  # hair
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    for side in (-1, 1):
        ex = cx + side * rx // 2
        draw.ellipse((ex - 14, cy - 40, ex + 14, cy - 22), fill=(255, 255, 255))
        draw.ellipse((ex - 6, cy - 37, ex + 6, cy - 25), fill=(40, 30, 20))
    draw.line((cx, cy - 15, cx - 8, cy + 20, cx + 4, cy + 22), fill=(120, 80, 60), width=3)
    draw.arc((cx - 40, cy + 20, cx + 40, cy + 70), 20, 160, fill=(150, 40, 40), width=5)
    return im


def landscape(rng: np.random.Generator) -> Image.Image:
    sky = np.array([110, 170, 235]) * rng.uniform(0.6, 1.1)
    im = Image.fromarray((np.linspace(0.7, 1.1, SIZE)[:, None, None] * sky * np.ones((SIZE, SIZE, 1))).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    sx, sy = int(rng.integers(40, SIZE - 40)), int(rng.integers(30, 100))
    draw.ellipse((sx - 25, sy - 25, sx + 25, sy + 25), fill=(255, 230, 120))
    for layer, green in enumerate(((70, 130, 60), (50, 100, 40), (90, 80, 50))):
        xs = np.linspace(0, SIZE, 9)
        ys = SIZE * (0.45 + 0.15 * layer) + rng.normal(0, 25, len(xs))
        draw.polygon([(0, SIZE)] + list(zip(xs.tolist(), ys.tolist())) + [(SIZE, SIZE)], fill=green)
    return im.filter(ImageFilter.GaussianBlur(1))


def pattern(rng: np.random.Generator) -> Image.Image:
    kind = rng.integers(3)
    if kind == 2:
        return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    period = int(rng.integers(8, 40))
    yy, xx = np.mgrid[:SIZE, :SIZE] // period
    on = (xx % 2 == 0) if kind == 0 else ((xx + yy) % 2 == 0)
    return Image.fromarray(np.where(on[..., None], np.array(_colour(rng)), np.array(_colour(rng))).astype(np.uint8))


def photographs() -> list[tuple[str, Image.Image]]:
    """matplotlib's sample pictures: Grace Hopper's portrait (whole, face, uniform, a corner) and two others."""
    from matplotlib import cbook

    def sample(name: str) -> Image.Image:
        with cbook.get_sample_data(name) as f:
            return Image.open(f).convert("RGB")

    hopper = sample("grace_hopper.jpg")  # 512 x 600
    return [("photo_hopper", hopper), ("photo_hopper_face", hopper.crop((130, 60, 390, 320))),
            ("photo_hopper_uniform", hopper.crop((60, 380, 460, 600))), ("photo_hopper_corner", hopper.crop((0, 0, 200, 200))),
            ("photo_present", sample("Minduka_Present_Blue_Pack.png")), ("photo_logo", sample("logo2.png"))]


KINDS = {"flat": flat, "gradient": gradient, "text": text, "face": face, "landscape": landscape, "pattern": pattern}


def write(out: str | Path, per_kind: int = 9, seed: int = 0) -> list[Path]:
    """Write per_kind images of each drawn kind, and the photographs, as PNG; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = [(f"{name}_{i}", make(rng)) for name, make in KINDS.items() for i in range(per_kind)] + photographs()
    paths = []
    for name, im in items:
        paths.append(out / f"{name}.png")
        im.save(paths[-1])
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/nonlesion.py OUT_DIR")
    print(f"{len(write(sys.argv[1]))} pictures written to {sys.argv[1]}")

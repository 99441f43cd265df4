"""Test images and the reference preprocessing, for tests/clip_preprocess.rs.

Usage: python clip_preprocess_ref.py OUT_DIR
Writes OUT_DIR/images/*.{png,jpg,gif} made from scikit-image's photos (odd sizes, grayscale, RGBA,
palette, EXIF-rotated) and OUT_DIR/ref.safetensors: for each file name, what open_clip's eval
transform (224, OpenAI mean/std) gives after PIL.ImageOps.exif_transpose.
"""
import os
import sys
from pathlib import Path

import numpy as np
import open_clip
import skimage
import torch
from PIL import Image, ImageOps
from safetensors.torch import save_file

out = Path(sys.argv[1])
imgs = out / "images"
imgs.mkdir(parents=True, exist_ok=True)
data = Path(skimage.__file__).parent / "data"

astronaut = Image.open(data / "astronaut.png").convert("RGB")
coffee = Image.open(data / "coffee.png").convert("RGB")
chelsea = Image.open(data / "chelsea.png").convert("RGB")
rocket = Image.open(data / "rocket.jpg")
camera = Image.open(data / "camera.png")  # L

cases = {
    "astronaut.png": astronaut,
    "coffee_odd.png": coffee.resize((333, 251), Image.BICUBIC),
    "chelsea_tall.png": chelsea.crop((50, 0, 151, 300)),  # 101 x 300
    "tiny.png": astronaut.resize((37, 23), Image.BILINEAR),
    "exact224.png": coffee.resize((224, 224), Image.BILINEAR),
    "w225.png": chelsea.resize((300, 225), Image.BILINEAR),
    "camera_gray.png": camera,
    "gray_odd.png": camera.resize((301, 227), Image.BILINEAR),
}
rgba = coffee.resize((260, 310), Image.BILINEAR).convert("RGBA")
a = np.array(rgba)
yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
a[..., 3] = ((xx * 255) // a.shape[1]).astype(np.uint8)
a[:40, :, 3] = 0
cases["coffee_rgba.png"] = Image.fromarray(a, "RGBA")
cases["chelsea_la.png"] = chelsea.convert("LA").resize((250, 230), Image.BILINEAR)
cases["astronaut_palette.png"] = astronaut.resize((300, 260), Image.BILINEAR).quantize(64)
for name, im in cases.items():
    im.save(imgs / name)

rocket.save(imgs / "rocket.jpg", quality=95)
rocket.save(imgs / "rocket_q60.jpg", quality=60)
for orientation in (3, 6, 8):
    exif = Image.Exif()
    exif[0x0112] = orientation
    chelsea.save(imgs / f"chelsea_exif{orientation}.jpg", quality=92, exif=exif)

preprocess = open_clip.image_transform(224, is_train=False)  # ViT-B-32's: OpenAI mean/std
tensors = {}
for p in sorted(imgs.iterdir()):
    im = ImageOps.exif_transpose(Image.open(p))
    tensors[p.name] = preprocess(im).contiguous()
save_file(tensors, str(out / "ref.safetensors"))
print(len(tensors))

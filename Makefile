# hemalite: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
DATA ?= ../shared/data/all4
WEIGHTS ?= ../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5
RUN ?= runs/all4
VENV := .venv
EDGE_VENV := .venv-edge
MODELS := hemalite/models

.PHONY: demo test venv edge-venv model bench clean

# The full environment: TensorFlow for train/convert, plotting for bench, pytest.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[train,bench,dev]"
	touch $@
venv: $(VENV)/.installed

# The edge install only (what a Raspberry Pi gets): no TensorFlow.
$(EDGE_VENV)/.installed: setup.cfg pyproject.toml $(wildcard $(MODELS)/*) $(shell find hemalite edge benchmarks -name "*.py")
	$(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install -q --upgrade pip
	$(EDGE_VENV)/bin/pip install -q .
	touch $@
edge-venv: $(EDGE_VENV)/.installed

test: venv
	$(VENV)/bin/python -m pytest -q

# Classify the bundled model's own test split (never its training images) with the edge install.
demo: edge-venv
	@test -d "$(DATA)" || { echo "dataset not found at $(DATA): download the ALL image dataset (see README) and run make demo DATA=/path/to/it"; exit 2; }
	$(EDGE_VENV)/bin/edge-classify --manifest $(MODELS)/test_split.csv --data-root "$(DATA)" --verbose

# Rebuild the bundled model from the dataset: train, convert, benchmark, copy into the package.
model: venv
	$(VENV)/bin/hemalite train "$(DATA)" --out $(RUN) --weights "$(WEIGHTS)" --fine-tune-epochs 6
	$(VENV)/bin/hemalite convert $(RUN) --all
	$(VENV)/bin/hemalite bench $(RUN)/tflite/model_float32.tflite $(RUN)/tflite/model_int8.tflite \
		--manifest $(RUN)/splits/test.csv --data-root "$(DATA)" \
		--out benchmarks/reports/$(shell uname -m) --runs 100 --warmup 10
	cp $(RUN)/tflite/model_int8.tflite $(MODELS)/hemalite_int8.tflite
	cp $(RUN)/tflite/model_float32.tflite $(MODELS)/hemalite_float32.tflite
	cp $(RUN)/splits/test.csv $(MODELS)/test_split.csv

clean:
	rm -rf $(VENV) $(EDGE_VENV) build *.egg-info

"""Run a .tflite on the CPU with no TensorFlow: load, quantise in, dequantise out.

Runtimes, first found wins: ai_edge_litert (LiteRT), tflite_runtime, tensorflow.lite;
HEMALITE_RUNTIME=NAME in the environment picks one for every command (and its child
processes) that is not given a runtime explicitly.
The pure parts (quantise, dequantise, top_k) take arrays and are testable without a model.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass

import numpy as np

from hemalite.errors import HemaliteError
from hemalite.files import native_noise_filtered
from hemalite.metadata import ModelInfo, read_model_info

RUNTIMES = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite.python.interpreter"),
)


class RuntimeNotFound(HemaliteError):
    """No TFLite runtime installed, or not the one asked for."""


class ModelError(HemaliteError):
    """A model file the runtime cannot load (one clear line)."""


def load_runtime(name: str | None = None):
    """Return (Interpreter class, runtime name, version), trying RUNTIMES in order.

    `name` (else $HEMALITE_RUNTIME) asks for one runtime: not installed is an error then.
    """
    name = name or os.environ.get("HEMALITE_RUNTIME") or None
    if name is not None and name not in dict(RUNTIMES):
        raise RuntimeNotFound(f"unknown runtime {name!r} (HEMALITE_RUNTIME or --runtime): "
                              f"choose from {', '.join(dict(RUNTIMES))}")
    tried = []
    for runtime, module in RUNTIMES:
        if name not in (None, runtime):
            continue
        try:
            with native_noise_filtered():  # tensorflow.lite prints its start-up lines
                mod = importlib.import_module(module)
        except ImportError as err:
            tried.append(f"{runtime} ({err})")
            continue
        package = importlib.import_module(runtime)
        version = getattr(package, "__version__", "unknown")
        return mod.Interpreter, runtime, version
    raise RuntimeNotFound("no TFLite runtime found; install ai-edge-litert "
                          "(or tflite-runtime): " + "; ".join(tried))


def quantise(x: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float or raw pixels -> the tensor's dtype using its own scale and zero point."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return x.astype(dtype)
    if scale == 0:  # not quantised: an integer tensor that takes values as they are
        return x.astype(dtype)
    if dtype == np.uint8 and scale == 1.0 and zero_point == 0 and x.dtype == np.uint8:
        return x  # the camera's pixels, exactly
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantise(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Tensor values -> float32 scores; widen to int64 before subtracting the zero point."""
    if q.dtype.kind == "f" or scale == 0:
        return q.astype(np.float32)
    return ((q.astype(np.int64) - zero_point) * scale).astype(np.float32)


def top_k(scores: np.ndarray, k: int, threshold: float = 0.0) -> list[tuple[int, float]]:
    """The k best (class, score) pairs at or above threshold, best first."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order if scores[i] >= threshold]


@dataclass
class Model:
    """A loaded .tflite with its metadata: `predict(pixels)` -> probabilities."""

    path: str
    info: ModelInfo
    interpreter: object
    runtime: str
    runtime_version: str
    num_threads: int

    @property
    def input_details(self) -> dict:
        return self.interpreter.get_input_details()[0]

    @property
    def output_details(self) -> dict:
        """The class-probability output (the first, as the metadata orders them)."""
        return self.interpreter.get_output_details()[0]

    def get_output(self, name: str) -> np.ndarray:
        """Read and dequantise the output the metadata names `name` (first batch item)."""
        d = self.interpreter.get_output_details()[self.info.outputs.index(name)]
        scale, zero_point = d["quantization"]
        return dequantise(self.interpreter.get_tensor(d["index"])[0], scale, zero_point)

    def has_output(self, name: str) -> bool:
        return name in self.info.outputs

    @functools.cached_property
    def domain(self):
        """The model's domain check (hemalite.domain.DomainCheck), or None if it has none;
        read once (it was parsed again for every image)."""
        from hemalite.domain import DOMAIN_FILE, DomainCheck

        data = self.info.files.get(DOMAIN_FILE)
        return DomainCheck.from_bytes(data) if data else None

    def set_input(self, pixels: np.ndarray) -> None:
        """Put one (H, W, 3) uint8 image, already preprocessed, into the input tensor."""
        d = self.input_details
        scale, zero_point = d["quantization"]
        self.interpreter.set_tensor(d["index"], quantise(pixels[None], d["dtype"], scale,
                                                         zero_point))

    def get_scores(self) -> np.ndarray:
        """Read and dequantise the output tensor: float32 probabilities, one per label."""
        d = self.output_details
        scale, zero_point = d["quantization"]
        return dequantise(self.interpreter.get_tensor(d["index"])[0], scale, zero_point)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for one preprocessed image."""
        self.set_input(pixels)
        self.invoke()
        return self.get_scores()

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for each of (N, H, W, 3) preprocessed images, one invoke each."""
        return np.stack([self.predict(img) for img in images])


def load_model(path: str | os.PathLike, num_threads: int | None = None,
               runtime: str | None = None) -> Model:
    """Load a .tflite and its metadata; raises MetadataError / ModelError with one line."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelError(f"{path} is a folder: give the .tflite file inside it")
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    info = read_model_info(path)  # labels and input spec travel inside the model
    interpreter_cls, name, version = load_runtime(runtime)
    threads = num_threads or os.cpu_count() or 1
    try:
        interpreter = interpreter_cls(model_path=path, num_threads=threads)
        with native_noise_filtered():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"{path}: the runtime cannot load this model ({err})") from None
    model = Model(path, info, interpreter, name, version, threads)
    shape = tuple(model.input_details["shape"])
    if shape[1:3] != (info.spec.height, info.spec.width):
        raise ModelError(f"{path}: input tensor {shape} does not match the metadata's "
                         f"{info.spec.height}x{info.spec.width}")
    n_out = model.output_details["shape"][-1]
    if n_out != len(info.labels):
        raise ModelError(f"{path}: {n_out} outputs but {len(info.labels)} labels in metadata")
    tensors = len(interpreter.get_output_details())
    if tensors != len(info.outputs):
        raise ModelError(f"{path}: {tensors} output tensors but the metadata describes "
                         f"{len(info.outputs)} ({', '.join(info.outputs)})")
    return model


DEFAULT_MODEL = "hemalite_int8.tflite"


def default_model_path() -> str:
    """The int8 model shipped inside the package (hemalite/models/)."""
    from importlib import resources

    path = resources.files("hemalite") / "models" / DEFAULT_MODEL
    if not path.is_file():
        raise ModelError(f"the bundled model {DEFAULT_MODEL} is missing from this install; "
                         "pass --model")
    return str(path)

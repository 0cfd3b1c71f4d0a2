"""Standard TFLite metadata: write it (convert stage) and read it back (edge, no TensorFlow).

A .tflite made by hemalite carries, in the standard places a TFLite Support / MediaPipe
client looks:
- a `TFLITE_METADATA` buffer holding a `ModelMetadata` flatbuffer (schema "M001": name,
  description with the dataset citation, version, input image properties, the input
  normalisation (mean, std) and stats, and the output's label file);
- the associated files zipped onto the end of the model: `labels.txt` (one label per line,
  in output order) and `hemalite.json` (the InputSpec and provenance, for hemalite itself).

The metadata is written and read through the classes flatc generated from the official
metadata_schema.fbs (hemalite/third_party/metadata_schema.py, `make metadata-schema`); the
model flatbuffer itself through the TFLite schema's generated module that LiteRT ships.
A field the runner needs (input size, normalisation, labels, resize filter) that is
missing is a MetadataError naming it: nothing is guessed.
"""
from __future__ import annotations

import functools
import importlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field

import flatbuffers
import numpy as np

from hemalite.contract import NORM_MEAN, NORM_STD, InputSpec
from hemalite.errors import HemaliteError
from hemalite.third_party import metadata_schema

METADATA_BUFFER_NAME = "TFLITE_METADATA"
METADATA_FILE_ID = b"M001"
LABEL_FILE = "labels.txt"
SPEC_FILE = "hemalite.json"
MIN_PARSER_VERSION = "1.0.0"


class MetadataError(HemaliteError):
    """A model file whose metadata or labels cannot be read."""


@dataclass(frozen=True)
class ModelInfo:
    """What a .tflite says about itself: everything a runner needs besides the weights."""

    labels: tuple[str, ...]
    spec: InputSpec
    name: str = "hemalite"
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    mean: float = NORM_MEAN
    std: float = NORM_STD
    extra: dict = field(default_factory=dict)  # provenance: calibration, training run ...
    # Output tensors in order: the first is always the class probabilities; hemalite's
    # MobileNetV2 models add the pooled embedding (the domain check) and the flattened
    # class-activation maps (heatmaps). Names come from OUTPUT_DESCRIPTIONS.
    outputs: tuple[str, ...] = ("probability",)
    files: dict = field(default_factory=dict)  # more associated files: {name: bytes}


OUTPUT_DESCRIPTIONS = {
    "probability": "Softmax probability of each class.",
    "domain": "Whitened pooled features for the domain check, not a classification.",
    "embedding": "Pooled last-layer features (what the head reads), not a classification.",
    "cam": "Class-activation maps, flattened (rows x columns x classes), not a classification.",
}


@functools.cache
def tflite_schema():
    """The TFLite model schema's generated Python module: LiteRT's copy, else TensorFlow's."""
    for module in ("ai_edge_litert.schema_py_generated",
                   "tensorflow.lite.python.schema_py_generated"):
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise MetadataError("reading a .tflite needs ai-edge-litert (pip install ai-edge-litert)")


# ----------------------------------------------------------------------------- writing
def _table(cls, **fields):
    """An object-API table with these fields set (a misspelt field raises, never vanishes)."""
    table = cls()
    for name, value in fields.items():
        if not hasattr(table, name):
            raise AttributeError(f"{cls.__name__} has no field {name!r}")
        setattr(table, name, value)
    return table


def _stats(high: float, low: float) -> metadata_schema.StatsT:
    return _table(metadata_schema.StatsT, max=[high], min=[low])


def _input_metadata(info: ModelInfo) -> metadata_schema.TensorMetadataT:
    """The input tensor: an RGB image of raw pixels, normalised (x - mean) / std inside."""
    size = _table(metadata_schema.ImageSizeT, width=info.spec.width, height=info.spec.height)
    image = _table(metadata_schema.ImagePropertiesT,
                   colorSpace=metadata_schema.ColorSpaceType.RGB, defaultSize=size)
    content = _table(metadata_schema.ContentT, contentProperties=image,
                     contentPropertiesType=metadata_schema.ContentProperties.ImageProperties)
    norm = _table(metadata_schema.NormalizationOptionsT, mean=[info.mean] * 3,
                  std=[info.std] * 3)
    unit = _table(metadata_schema.ProcessUnitT, options=norm,
                  optionsType=metadata_schema.ProcessUnitOptions.NormalizationOptions)
    return _table(metadata_schema.TensorMetadataT, name="image",
                  description="RGB image, raw 0-255 pixels", content=content,
                  processUnits=[unit], stats=_stats(255.0, 0.0))


def _output_metadata(name: str, first: bool) -> metadata_schema.TensorMetadataT:
    """TensorMetadata of one output: the first carries the labels file and [0, 1] stats."""
    content = _table(metadata_schema.ContentT,
                     contentProperties=metadata_schema.FeaturePropertiesT(),
                     contentPropertiesType=metadata_schema.ContentProperties.FeatureProperties)
    tensor = _table(metadata_schema.TensorMetadataT, name=name,
                    description=OUTPUT_DESCRIPTIONS.get(name, name), content=content)
    if first:
        tensor.stats = _stats(1.0, 0.0)
        tensor.associatedFiles = [_associated_file(
            LABEL_FILE, "Class labels, one per line, in output order.",
            metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS)]
    return tensor


def _associated_file(name: str, description: str, kind: int) -> metadata_schema.AssociatedFileT:
    return _table(metadata_schema.AssociatedFileT, name=name, description=description,
                  type=kind)


def build_metadata(info: ModelInfo) -> bytes:
    """Serialise `info` as a ModelMetadata flatbuffer (file identifier M001)."""
    subgraph = _table(metadata_schema.SubGraphMetadataT,
                      inputTensorMetadata=[_input_metadata(info)],
                      outputTensorMetadata=[_output_metadata(name, first=i == 0)
                                            for i, name in enumerate(info.outputs)])
    described = metadata_schema.AssociatedFileType.DESCRIPTIONS
    files = [_associated_file(SPEC_FILE, "hemalite input spec and provenance (JSON).",
                              described)]
    files += [_associated_file(name, "hemalite model data.", described) for name in info.files]
    root = _table(metadata_schema.ModelMetadataT, name=info.name,
                  description=info.description, version=info.version,
                  subgraphMetadata=[subgraph], author=info.author, license=info.license,
                  associatedFiles=files, minParserVersion=MIN_PARSER_VERSION)
    b = flatbuffers.Builder(1024)
    b.Finish(root.Pack(b), file_identifier=METADATA_FILE_ID)
    return bytes(b.Output())


def associated_files(info: ModelInfo) -> dict[str, bytes]:
    """The files zipped onto the model: labels.txt and hemalite.json."""
    spec = {"height": info.spec.height, "width": info.spec.width,
            "resample": info.spec.resample, "zoom": info.spec.zoom, "hue": info.spec.hue,
            "saturation": info.spec.saturation, "mean": info.mean,
            "std": info.std,
            "labels": list(info.labels), "version": info.version, **info.extra}
    return {LABEL_FILE: ("\n".join(info.labels) + "\n").encode(),
            SPEC_FILE: json.dumps(spec, indent=2, sort_keys=True).encode(), **info.files}


def zip_onto(model: bytes, files: dict[str, bytes]) -> bytes:
    """Append `files` to the model as a zip archive (how TFLite Support packs them)."""
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def embed_metadata(model: bytes, info: ModelInfo) -> bytes:
    """Add the TFLITE_METADATA buffer and zip labels.txt / hemalite.json onto the model.

    `model` may already carry hemalite's metadata (a model being rewritten: a site
    calibration): its metadata entry, the buffer it pointed to and the appended files are
    replaced, not added to. No TensorFlow: the edge rewrites models too (edge-calibrate)."""
    schema = tflite_schema()
    tflite = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    order_outputs(tflite, info.outputs)
    drop_metadata(tflite)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(build_metadata(info), dtype=np.uint8)
    tflite.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "TFLITE_METADATA"
    entry.buffer = len(tflite.buffers) - 1
    tflite.metadata = [*(tflite.metadata or []), entry]
    builder = flatbuffers.Builder(len(model) + 4096)
    builder.Finish(tflite.Pack(builder), file_identifier=b"TFL3")
    return zip_onto(bytes(builder.Output()), associated_files(info))


def order_outputs(tflite, names: tuple[str, ...]) -> None:
    """Put the subgraph's outputs in `names` order (the converter sorts them by name).

    The signature keeps every output's name, so this only changes positions: the one the
    metadata (and so MediaPipe) expects, probability first.
    """
    if not tflite.signatureDefs:
        return
    by_name = {m.name.decode(): m.tensorIndex for m in tflite.signatureDefs[0].outputs}
    if set(by_name) != set(names):
        raise MetadataError(f"model outputs {sorted(by_name)} do not match {list(names)}")
    tflite.subgraphs[0].outputs = [by_name[n] for n in names]
    tflite.signatureDefs[0].outputs.sort(key=lambda m: names.index(m.name.decode()))


def drop_metadata(tflite) -> None:
    """Remove the TFLITE_METADATA entry of an unpacked model and empty its buffer (buffers
    are referenced by index, so the slot stays)."""
    kept = []
    for entry in tflite.metadata or []:
        if entry.name in (METADATA_BUFFER_NAME, METADATA_BUFFER_NAME.encode()):
            tflite.buffers[entry.buffer].data = None
        else:
            kept.append(entry)
    tflite.metadata = kept


# ----------------------------------------------------------------------------- reading
def find_metadata_buffer(model: bytes) -> bytes | None:
    """Return the TFLITE_METADATA bytes of a .tflite flatbuffer, or None when absent."""
    root = tflite_schema().Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() == METADATA_BUFFER_NAME.encode():
            buffer = root.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # large models keep buffer data outside the flatbuffer
                return bytes(model[buffer.Offset():buffer.Offset() + buffer.Size()])
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return None


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


def _first(tables: list | None, what: str):
    if not tables:
        raise MetadataError(f"the metadata has no {what}")
    return tables[0]


def _image_size(tensor: metadata_schema.TensorMetadataT) -> tuple[int, int]:
    """(width, height) from the input's ImageProperties."""
    content = tensor.content
    if (content is None or content.contentPropertiesType
            != metadata_schema.ContentProperties.ImageProperties
            or content.contentProperties.defaultSize is None):
        raise MetadataError("the metadata has no input image size "
                            "(ImageProperties.default_size of the input tensor)")
    size = content.contentProperties.defaultSize
    return size.width, size.height


def _normalisation(tensor: metadata_schema.TensorMetadataT) -> tuple[list, list]:
    """(mean, std) from the input's NormalizationOptions process unit."""
    for unit in tensor.processUnits or []:
        if unit.optionsType == metadata_schema.ProcessUnitOptions.NormalizationOptions:
            if unit.options.mean is None or unit.options.std is None:
                break
            return [float(v) for v in unit.options.mean], [float(v) for v in unit.options.std]
    raise MetadataError("the metadata has no input normalisation (NormalizationOptions "
                        "with mean and std on the input tensor)")


def parse_metadata(meta: bytes) -> dict:
    """Read the fields hemalite uses from a ModelMetadata flatbuffer; MetadataError names a
    required field (input size, normalisation, output tensors, labels file) that is missing."""
    if len(meta) < 8 or not metadata_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(
            meta, 0):
        raise MetadataError("metadata buffer is not a TFLite ModelMetadata (M001)")
    root = metadata_schema.ModelMetadataT.InitFromObj(
        metadata_schema.ModelMetadata.GetRootAs(meta, 0))
    subgraph = _first(root.subgraphMetadata, "subgraph metadata")
    image = _first(subgraph.inputTensorMetadata, "input tensor metadata")
    outputs = subgraph.outputTensorMetadata or []
    probability = _first(outputs, "output tensor metadata")
    width, height = _image_size(image)
    mean, std = _normalisation(image)
    label_files = [_text(f.name) for f in probability.associatedFiles or []
                   if f.type == metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS]
    if not label_files:
        raise MetadataError("the metadata names no labels file (an associated file of type "
                            "TENSOR_AXIS_LABELS on the first output)")
    return {"name": _text(root.name), "description": _text(root.description),
            "version": _text(root.version), "author": _text(root.author),
            "license": _text(root.license), "width": width, "height": height,
            "mean": mean, "std": std, "label_files": label_files,
            "outputs": tuple(_text(o.name) for o in outputs)}


def _read_packed(path: str, model: bytes, label_file: str) -> tuple[tuple, dict, dict]:
    """(labels, hemalite.json, other files) from the zip appended to the model."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(model))
    except zipfile.BadZipFile:
        raise MetadataError(f"{path}: metadata names no packed files (labels missing)") from None
    with archive:
        names = set(archive.namelist())
        if label_file not in names:
            raise MetadataError(f"{path}: the label file named in the metadata is missing")
        labels = tuple(line.strip() for line in
                       archive.read(label_file).decode("utf-8").splitlines() if line.strip())
        if SPEC_FILE not in names:
            raise MetadataError(f"{path}: no {SPEC_FILE} packed in the model: its input resize "
                                "filter is unknown (convert it with `hemalite convert`)")
        spec = json.loads(archive.read(SPEC_FILE))
        files = {n: archive.read(n) for n in sorted(names - {LABEL_FILE, SPEC_FILE})}
    if not labels:
        raise MetadataError(f"{path}: the label file is empty")
    if "resample" not in spec:
        raise MetadataError(f"{path}: {SPEC_FILE} has no 'resample' (the input resize filter)")
    return labels, spec, files


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read labels, input spec and description from a .tflite made by `hemalite convert`.

    Raises MetadataError (one clear line) when the file has no metadata, no labels or a
    missing field: hemalite never guesses labels from a file name, nor a size or filter.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        model = fh.read()
    if len(model) < 8 or model[4:8] != b"TFL3":
        raise MetadataError(f"{path}: not a TFLite model (no TFL3 identifier)")
    meta = find_metadata_buffer(model)
    if meta is None:
        raise MetadataError(f"{path}: no TFLite metadata; convert it with `hemalite convert` "
                            "or add metadata with labels")
    try:
        fields = parse_metadata(meta)
    except MetadataError as err:
        raise MetadataError(f"{path}: {err}") from None
    labels, extra, files = _read_packed(path, model, fields["label_files"][0])
    # models made before site calibration existed carry no zoom nor colour step: none
    spec = InputSpec(height=int(fields["height"]), width=int(fields["width"]),
                     resample=extra["resample"], zoom=float(extra.get("zoom", 1.0)),
                     hue=float(extra.get("hue", 0.0)),
                     saturation=float(extra.get("saturation", 1.0)))
    keep = {k: v for k, v in extra.items() if k not in
            ("height", "width", "resample", "zoom", "hue", "saturation", "mean", "std",
             "labels", "version")}
    return ModelInfo(labels=labels, spec=spec, name=fields["name"],
                     description=fields["description"], version=fields["version"],
                     author=fields["author"], license=fields["license"],
                     mean=fields["mean"][0], std=fields["std"][0], extra=keep,
                     outputs=fields["outputs"], files=files)


def count_parameters(model: bytes) -> int:
    """Number of constant values (weights, biases) stored in a .tflite flatbuffer."""
    root = tflite_schema().Model.GetRootAs(model, 0)
    total = 0
    for s in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            index = tensor.Buffer()
            if not index or index >= root.BuffersLength():
                continue
            buffer = root.Buffers(index)
            if buffer.DataLength() or buffer.Offset() > 1:
                shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else []
                total += int(np.prod(shape)) if len(shape) else 1
    return total

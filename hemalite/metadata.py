"""Standard TFLite metadata: write it (convert stage) and read it back (edge, no TensorFlow).

A .tflite made by hemalite carries, in the standard places a TFLite Support / MediaPipe
client looks:
- a `TFLITE_METADATA` buffer holding a `ModelMetadata` flatbuffer (schema "M001": name,
  description with the dataset citation, version, input image properties, the input
  normalisation (mean, std) and stats, and the output's label file);
- the associated files zipped onto the end of the model: `labels.txt` (one label per line,
  in output order) and `hemalite.json` (the InputSpec and provenance, for hemalite itself).

Only the small part of metadata_schema.fbs that an image classifier uses is written and read
here, with the plain `flatbuffers` package; the slot numbers below are the field order of
tflite-support's metadata_schema.fbs.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
from flatbuffers import number_types as nt
from flatbuffers.table import Table

from hemalite.contract import NORM_MEAN, NORM_STD, InputSpec
from hemalite.errors import HemaliteError

METADATA_BUFFER_NAME = "TFLITE_METADATA"
METADATA_FILE_ID = b"M001"
LABEL_FILE = "labels.txt"
SPEC_FILE = "hemalite.json"
MIN_PARSER_VERSION = "1.0.0"

# metadata_schema.fbs enum values used here
_COLOR_SPACE_RGB = 1
_CONTENT_IMAGE_PROPERTIES = 2
_CONTENT_FEATURE_PROPERTIES = 1
_PROCESS_UNIT_NORMALIZATION = 1
_FILE_TENSOR_AXIS_LABELS = 2
_FILE_DESCRIPTIONS = 1


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
    "embedding": "Pooled last-layer features (the domain check's input), not a classification.",
    "cam": "Class-activation maps, flattened (rows x columns x classes), not a classification.",
}


# ----------------------------------------------------------------------------- writing
def _strings(b: flatbuffers.Builder, values: list[str]) -> list[int]:
    return [b.CreateString(v) for v in values]


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: list[float]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _table(b: flatbuffers.Builder, num_fields: int, offsets: dict[int, int],
           scalars: tuple[tuple[int, str, int], ...] = ()) -> int:
    """One table: offset fields by slot, then (slot, Prepend<Type>Slot, value) scalars.

    Everything an offset points to must be built before this call (flatbuffers builds
    children first), which evaluating the arguments does.
    """
    b.StartObject(num_fields)
    for slot, offset in offsets.items():
        b.PrependUOffsetTRelativeSlot(slot, offset, 0)
    for slot, prepend, value in scalars:
        getattr(b, prepend)(slot, value, 0)
    return b.EndObject()


def _associated_file(b: flatbuffers.Builder, name: str, description: str, kind: int) -> int:
    n, d = _strings(b, [name, description])
    return _table(b, 5, {0: n, 1: d}, ((2, "PrependInt8Slot", kind),))


def _stats(b: flatbuffers.Builder, high: float, low: float) -> int:
    return _table(b, 2, {0: _floats(b, [high]), 1: _floats(b, [low])})


def _output_metadata(b: flatbuffers.Builder, name: str, first: bool) -> int:
    """TensorMetadata of one output: the first carries the labels file and [0, 1] stats."""
    content = _table(b, 3, {1: _table(b, 0, {})},
                     ((0, "PrependUint8Slot", _CONTENT_FEATURE_PROPERTIES),))
    out_name, out_desc = _strings(b, [name, OUTPUT_DESCRIPTIONS.get(name, name)])
    if not first:
        return _table(b, 7, {0: out_name, 1: out_desc, 3: content})
    labels_file = _associated_file(b, LABEL_FILE, "Class labels, one per line, in output order.",
                                   _FILE_TENSOR_AXIS_LABELS)
    return _table(b, 7, {0: out_name, 1: out_desc, 3: content, 5: _stats(b, 1.0, 0.0),
                         6: _vector(b, [labels_file])})


def build_metadata(info: ModelInfo) -> bytes:
    """Serialise `info` as a ModelMetadata flatbuffer (file identifier M001)."""
    b = flatbuffers.Builder(1024)
    # input tensor: an RGB image, normalised (x - mean) / std inside the model
    image_size = _table(b, 2, {}, ((0, "PrependUint32Slot", info.spec.width),
                                   (1, "PrependUint32Slot", info.spec.height)))
    image_props = _table(b, 2, {1: image_size}, ((0, "PrependInt8Slot", _COLOR_SPACE_RGB),))
    in_content = _table(b, 3, {1: image_props},
                        ((0, "PrependUint8Slot", _CONTENT_IMAGE_PROPERTIES),))
    norm = _table(b, 2, {0: _floats(b, [info.mean] * 3), 1: _floats(b, [info.std] * 3)})
    unit = _table(b, 2, {1: norm}, ((0, "PrependUint8Slot", _PROCESS_UNIT_NORMALIZATION),))
    in_name, in_desc = _strings(b, ["image", "RGB image, raw 0-255 pixels"])
    input_meta = _table(b, 7, {0: in_name, 1: in_desc, 3: in_content, 4: _vector(b, [unit]),
                               5: _stats(b, 255.0, 0.0)})
    # output tensors: class probabilities labelled by labels.txt, then any extra outputs
    output_metas = [_output_metadata(b, name, first=i == 0) for i, name in enumerate(info.outputs)]
    subgraph = _table(b, 10, {2: _vector(b, [input_meta]), 3: _vector(b, output_metas)})
    spec_file = _associated_file(b, SPEC_FILE, "hemalite input spec and provenance (JSON).",
                                 _FILE_DESCRIPTIONS)
    more = [_associated_file(b, name, "hemalite model data.", _FILE_DESCRIPTIONS)
            for name in info.files]
    name, desc, version, author, lic, parser = _strings(b, [
        info.name, info.description, info.version, info.author, info.license,
        MIN_PARSER_VERSION])
    root = _table(b, 8, {0: name, 1: desc, 2: version, 3: _vector(b, [subgraph]), 4: author,
                         5: lic, 6: _vector(b, [spec_file, *more]), 7: parser})
    b.Finish(root, file_identifier=METADATA_FILE_ID)
    return bytes(b.Output())


def associated_files(info: ModelInfo) -> dict[str, bytes]:
    """The files zipped onto the model: labels.txt and hemalite.json."""
    spec = {"height": info.spec.height, "width": info.spec.width,
            "resample": info.spec.resample, "mean": info.mean, "std": info.std,
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


# ----------------------------------------------------------------------------- reading
class _T:
    """A flatbuffer table with slot-numbered accessors (the schema's field order)."""

    def __init__(self, buf: bytes | bytearray, pos: int):
        self.t = Table(buf, pos)

    def _off(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str:
        o = self._off(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8", "replace") if o else ""

    def scalar(self, slot: int, flags, default=0):
        o = self._off(slot)
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def table(self, slot: int) -> "_T | None":
        o = self._off(slot)
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, slot: int) -> list["_T"]:
        o = self._off(slot)
        if not o:
            return []
        start = self.t.Vector(o)
        return [_T(self.t.Bytes, self.t.Indirect(start + 4 * i))
                for i in range(self.t.VectorLen(o))]

    def floats(self, slot: int) -> list[float]:
        o = self._off(slot)
        if not o:
            return []
        start = self.t.Vector(o)
        return [self.t.Get(nt.Float32Flags, start + 4 * i) for i in range(self.t.VectorLen(o))]

    def bytes_view(self, slot: int) -> memoryview:
        o = self._off(slot)
        if not o:
            return memoryview(b"")
        start = self.t.Vector(o)
        return memoryview(self.t.Bytes)[start:start + self.t.VectorLen(o)]


def _root(buf: bytes | bytearray) -> _T:
    return _T(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))


def find_metadata_buffer(model: bytes) -> bytes | None:
    """Return the TFLITE_METADATA bytes of a .tflite flatbuffer, or None when absent."""
    root = _root(model)  # tflite Model: slot 4 buffers, slot 6 metadata
    buffers = root.tables(4)
    for entry in root.tables(6):  # Metadata {name, buffer}
        if entry.string(0) == METADATA_BUFFER_NAME:
            buffer = buffers[entry.scalar(1, nt.Uint32Flags)]
            offset = buffer.scalar(1, nt.Uint64Flags)  # Buffer {data, offset, size}
            if offset > 1:  # large models keep buffer data outside the flatbuffer
                return bytes(model[offset:offset + buffer.scalar(2, nt.Uint64Flags)])
            return bytes(buffer.bytes_view(0))
    return None


def parse_metadata(meta: bytes) -> dict:
    """Read the fields hemalite uses from a ModelMetadata flatbuffer."""
    if meta[4:8] != METADATA_FILE_ID:
        raise MetadataError("metadata buffer is not a TFLite ModelMetadata (M001)")
    root = _root(meta)
    out = {"name": root.string(0), "description": root.string(1), "version": root.string(2),
           "author": root.string(4), "license": root.string(5)}
    subgraphs = root.tables(3)
    if not subgraphs:
        return out
    inputs, outputs = subgraphs[0].tables(2), subgraphs[0].tables(3)
    if inputs:
        for unit in inputs[0].tables(4):
            if unit.scalar(0, nt.Uint8Flags) == _PROCESS_UNIT_NORMALIZATION:
                norm = unit.table(1)
                out["mean"], out["std"] = norm.floats(0), norm.floats(1)
        content = inputs[0].table(3)
        if content and content.scalar(0, nt.Uint8Flags) == _CONTENT_IMAGE_PROPERTIES:
            size = content.table(1).table(1)
            if size:
                out["width"] = size.scalar(0, nt.Uint32Flags)
                out["height"] = size.scalar(1, nt.Uint32Flags)
    if outputs:
        out["label_files"] = [f.string(0) for f in outputs[0].tables(6)
                              if f.scalar(2, nt.Int8Flags) == _FILE_TENSOR_AXIS_LABELS]
        out["outputs"] = tuple(o.string(0) for o in outputs)
    return out


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read labels, input spec and description from a .tflite made by `hemalite convert`.

    Raises MetadataError (one clear line) when the file has no metadata or no labels:
    hemalite never guesses labels from a file name.
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
    fields = parse_metadata(meta)
    label_files = fields.get("label_files") or []
    try:
        archive = zipfile.ZipFile(io.BytesIO(model))
    except zipfile.BadZipFile:
        raise MetadataError(f"{path}: metadata names no packed files (labels missing)") from None
    with archive:
        names = set(archive.namelist())
        if not label_files or label_files[0] not in names:
            raise MetadataError(f"{path}: the label file named in the metadata is missing")
        labels = tuple(line.strip() for line in
                       archive.read(label_files[0]).decode("utf-8").splitlines() if line.strip())
        extra = json.loads(archive.read(SPEC_FILE)) if SPEC_FILE in names else {}
        files = {n: archive.read(n) for n in sorted(names - {LABEL_FILE, SPEC_FILE})}
    if not labels:
        raise MetadataError(f"{path}: the label file is empty")
    mean, std = fields.get("mean") or [NORM_MEAN], fields.get("std") or [NORM_STD]
    spec = InputSpec(height=int(fields.get("height") or extra.get("height", 224)),
                     width=int(fields.get("width") or extra.get("width", 224)),
                     resample=extra.get("resample", "bilinear"))
    keep = {k: v for k, v in extra.items()
            if k not in ("height", "width", "resample", "mean", "std", "labels", "version")}
    return ModelInfo(labels=labels, spec=spec, name=fields["name"],
                     description=fields["description"], version=fields["version"],
                     author=fields["author"], license=fields["license"],
                     mean=float(mean[0]), std=float(std[0]), extra=keep,
                     outputs=fields.get("outputs") or ("probability",), files=files)


def count_parameters(model: bytes) -> int:
    """Number of constant values (weights, biases) stored in a .tflite flatbuffer."""
    root = _root(model)
    buffers = root.tables(4)
    total = 0
    for subgraph in root.tables(2):
        for tensor in subgraph.tables(0):  # Tensor {shape, type, buffer, name, ...}
            index = tensor.scalar(2, nt.Uint32Flags)
            if index and index < len(buffers) and (
                    len(buffers[index].bytes_view(0)) or buffers[index].scalar(1, nt.Uint64Flags) > 1):
                o = tensor._off(0)
                shape = [tensor.t.Get(nt.Int32Flags, tensor.t.Vector(o) + 4 * i)
                         for i in range(tensor.t.VectorLen(o))] if o else []
                total += int(np.prod(shape)) if shape else 1
    return total

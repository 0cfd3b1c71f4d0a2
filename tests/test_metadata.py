"""TFLite metadata written and read with plain flatbuffers (no TensorFlow, no model)."""
from __future__ import annotations

import io
import zipfile

import pytest

from hemalite.contract import InputSpec
from hemalite.metadata import (MetadataError, ModelInfo, associated_files, build_metadata,
                               parse_metadata, read_model_info, zip_onto)

INFO = ModelInfo(labels=("Benign", "Early", "Pre", "Pro"), spec=InputSpec(160, 192),
                 name="test model", description="d", version="9.9", author="a", license="l")


def test_metadata_round_trip():
    meta = build_metadata(INFO)
    assert meta[4:8] == b"M001"
    fields = parse_metadata(meta)
    assert (fields["name"], fields["version"], fields["author"]) == ("test model", "9.9", "a")
    assert fields["mean"] == [127.5] * 3 and fields["std"] == [127.5] * 3
    assert (fields["width"], fields["height"]) == (192, 160)
    assert fields["label_files"] == ["labels.txt"]


def test_associated_files_are_zipped_onto_the_model():
    packed = zip_onto(b"flatbuffer bytes", associated_files(INFO))
    assert packed.startswith(b"flatbuffer bytes")
    archive = zipfile.ZipFile(io.BytesIO(packed))
    assert archive.read("labels.txt").decode().split() == list(INFO.labels)


def test_not_a_model_and_not_metadata_are_clear_errors(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"\x00" * 32)
    with pytest.raises(MetadataError, match="not a TFLite model"):
        read_model_info(tmp_path / "x.tflite")
    with pytest.raises(MetadataError, match="M001"):
        parse_metadata(b"\x00" * 16)

"""TFLite metadata written and read through the classes flatc generated from the official
metadata_schema.fbs (no TensorFlow, no model)."""
from __future__ import annotations

import io
import json
import zipfile

import flatbuffers
import pytest

from hemalite.contract import InputSpec
from hemalite.metadata import (MetadataError, ModelInfo, associated_files, build_metadata,
                               parse_metadata, read_model_info, zip_onto)
from hemalite.third_party import metadata_schema as schema
from tests.helpers import TINY_INT8

INFO = ModelInfo(labels=("Benign", "Early", "Pre", "Pro"), spec=InputSpec(160, 192),
                 name="test model", description="d", version="9.9", author="a", license="l",
                 outputs=("probability", "domain", "cam"), files={"domain.json": b"{}"})


def test_metadata_round_trip():
    meta = build_metadata(INFO)
    assert meta[4:8] == b"M001"
    fields = parse_metadata(meta)
    assert (fields["name"], fields["version"], fields["author"]) == ("test model", "9.9", "a")
    assert fields["mean"] == [127.5] * 3 and fields["std"] == [127.5] * 3
    assert (fields["width"], fields["height"]) == (192, 160)
    assert fields["label_files"] == ["labels.txt"]
    assert fields["outputs"] == ("probability", "domain", "cam")


def test_the_generated_reader_decodes_our_metadata_field_by_field():
    """What a TFLite Support / MediaPipe client reads, read with flatc's classes alone."""
    meta = build_metadata(INFO)
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(meta, 0)
    root = schema.ModelMetadata.GetRootAs(meta, 0)
    assert (root.Name(), root.Version(), root.Description()) == (b"test model", b"9.9", b"d")
    assert (root.Author(), root.License(), root.MinParserVersion()) == (b"a", b"l", b"1.0.0")
    assert root.SubgraphMetadataLength() == 1
    subgraph = root.SubgraphMetadata(0)
    assert subgraph.InputTensorMetadataLength() == 1
    image = subgraph.InputTensorMetadata(0)
    assert image.Name() == b"image"
    content = image.Content()
    assert content.ContentPropertiesType() == schema.ContentProperties.ImageProperties
    props = schema.ImageProperties()
    props.Init(content.ContentProperties().Bytes, content.ContentProperties().Pos)
    assert props.ColorSpace() == schema.ColorSpaceType.RGB
    assert (props.DefaultSize().Width(), props.DefaultSize().Height()) == (192, 160)
    assert image.ProcessUnitsLength() == 1
    unit = image.ProcessUnits(0)
    assert unit.OptionsType() == schema.ProcessUnitOptions.NormalizationOptions
    norm = schema.NormalizationOptions()
    norm.Init(unit.Options().Bytes, unit.Options().Pos)
    assert norm.MeanAsNumpy().tolist() == [127.5] * 3 and norm.StdAsNumpy().tolist() == [127.5] * 3
    assert (image.Stats().Max(0), image.Stats().Min(0)) == (255.0, 0.0)
    outputs = [subgraph.OutputTensorMetadata(i)
               for i in range(subgraph.OutputTensorMetadataLength())]
    assert [o.Name() for o in outputs] == [b"probability", b"domain", b"cam"]
    labels = outputs[0].AssociatedFiles(0)
    assert outputs[0].AssociatedFilesLength() == 1
    assert (labels.Name(), labels.Type()) == (b"labels.txt",
                                              schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    assert (outputs[0].Stats().Max(0), outputs[0].Stats().Min(0)) == (1.0, 0.0)
    assert [o.AssociatedFilesLength() for o in outputs[1:]] == [0, 0]
    assert all(o.Content().ContentPropertiesType() == schema.ContentProperties.FeatureProperties
               for o in outputs)
    packed = [root.AssociatedFiles(i) for i in range(root.AssociatedFilesLength())]
    assert [(f.Name(), f.Type()) for f in packed] == [
        (b"hemalite.json", schema.AssociatedFileType.DESCRIPTIONS),
        (b"domain.json", schema.AssociatedFileType.DESCRIPTIONS)]


def _without(drop) -> bytes:
    """Our metadata with one field removed through the object API."""
    meta = build_metadata(INFO)
    root = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(meta, 0))
    drop(root.subgraphMetadata[0])
    b = flatbuffers.Builder(1024)
    b.Finish(root.Pack(b), file_identifier=b"M001")
    return bytes(b.Output())


@pytest.mark.parametrize("drop, message", [
    (lambda s: setattr(s.inputTensorMetadata[0], "processUnits", None), "input normalisation"),
    (lambda s: setattr(s.inputTensorMetadata[0].content.contentProperties, "defaultSize", None),
     "input image size"),
    (lambda s: setattr(s.inputTensorMetadata[0], "content", None), "input image size"),
    (lambda s: setattr(s.outputTensorMetadata[0], "associatedFiles", None), "no labels file"),
    (lambda s: setattr(s, "outputTensorMetadata", None), "no output tensor metadata"),
    (lambda s: setattr(s, "inputTensorMetadata", None), "no input tensor metadata"),
])
def test_a_missing_field_is_an_error_that_names_it(drop, message):
    with pytest.raises(MetadataError, match=message):
        parse_metadata(_without(drop))


def _repacked(model: bytes, files: dict[str, bytes]) -> bytes:
    """The model's flatbuffer with other files zipped onto it."""
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        start = min(i.header_offset for i in archive.infolist())
    return zip_onto(model[:start], files)


def test_a_model_without_its_resize_filter_is_refused(tmp_path):
    model = TINY_INT8.read_bytes()
    archive = zipfile.ZipFile(io.BytesIO(model))
    files = {n: archive.read(n) for n in archive.namelist()}
    assert read_model_info(TINY_INT8).spec.resample == "bilinear"
    spec = json.loads(files["hemalite.json"])
    del spec["resample"]
    (tmp_path / "a.tflite").write_bytes(_repacked(model, {**files, "hemalite.json":
                                                          json.dumps(spec).encode()}))
    with pytest.raises(MetadataError, match="has no 'resample'"):
        read_model_info(tmp_path / "a.tflite")
    del files["hemalite.json"]
    (tmp_path / "b.tflite").write_bytes(_repacked(model, files))
    with pytest.raises(MetadataError, match="no hemalite.json packed"):
        read_model_info(tmp_path / "b.tflite")


def test_associated_files_are_zipped_onto_the_model():
    packed = zip_onto(b"flatbuffer bytes", associated_files(INFO))
    assert packed.startswith(b"flatbuffer bytes")
    archive = zipfile.ZipFile(io.BytesIO(packed))
    assert archive.read("labels.txt").decode().split() == list(INFO.labels)
    assert archive.read("domain.json") == b"{}"


def test_not_a_model_and_not_metadata_are_clear_errors(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"\x00" * 32)
    with pytest.raises(MetadataError, match="not a TFLite model"):
        read_model_info(tmp_path / "x.tflite")
    with pytest.raises(MetadataError, match="M001"):
        parse_metadata(b"\x00" * 16)


def test_a_model_rewritten_with_new_metadata_carries_only_the_new(tmp_path):
    """embed_metadata on a model that already has hemalite's metadata (what edge-calibrate
    does): the zoom, the colour step and the provenance are read back, the old entry is gone, the file still
    runs, and a second rewrite does not grow it."""
    import dataclasses

    from hemalite.edge.runtime import load_model
    from hemalite.metadata import embed_metadata
    from hemalite.metadata import tflite_schema

    info = read_model_info(TINY_INT8)
    new = dataclasses.replace(info, spec=dataclasses.replace(info.spec, zoom=1.4, hue=12.0,
                                                             saturation=1.3),
                              extra={**info.extra, "site_calibration": {"name": "lab 2"}})
    once = embed_metadata(TINY_INT8.read_bytes(), new)
    twice = embed_metadata(once, new)
    assert abs(len(twice) - len(once)) < 64  # replaced, not appended
    path = tmp_path / "rewritten.tflite"
    path.write_bytes(twice)
    read = read_model_info(path)
    assert read.spec.zoom == 1.4 and read.extra["site_calibration"] == {"name": "lab 2"}
    assert (read.spec.hue, read.spec.saturation) == (12.0, 1.3)  # the colour step too
    assert read.labels == info.labels and read.files == info.files
    root = tflite_schema().Model.GetRootAs(twice, 0)
    names = [root.Metadata(i).Name() for i in range(root.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1
    load_model(path).predict(__import__("numpy").zeros((32, 32, 3), "uint8"))

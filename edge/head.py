"""Read and rewrite the classifier head inside a .tflite, without TensorFlow.

hemalite's models end in one dense layer: pooled features (the `embedding` output) times a
(classes x features) weight matrix plus a bias, then a softmax (`probability`). The same
weights, with a bias of their own, make the class-activation maps (`cam`). A site
calibration (`edge-calibrate`) refits that layer and writes it back into the file, so the
calibrated answer is the model's first output, for hemalite and for any TFLite client
(MediaPipe included).

In an int8 model the weights are int8 per output channel (scale per class, zero point 0),
each bias int32 at the scale input x weight, and the logits int8 at a scale the calibration
set: new weights are requantised the same way, and the logits' (and the maps') ranges are
widened to hold the new head's values. Edited through the TFLite schema's object API
(LiteRT's generated module, as hemalite.metadata reads it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hemalite.errors import HemaliteError
from hemalite.metadata import tflite_schema


class HeadError(HemaliteError):
    """A model whose head hemalite cannot find or rewrite (not made by `hemalite convert`)."""


@dataclass
class Head:
    """The dense layer on the pooled features: logits = features @ weights.T + bias."""

    weights: np.ndarray  # (classes, features) float32
    bias: np.ndarray  # (classes,) float32

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights.T.astype(np.float64) + self.bias


def _op_name(model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    schema = tflite_schema()
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, str(builtin))


@dataclass
class _Graph:
    """The head's tensors in an unpacked model (indices into subgraph 0)."""

    model: object
    weights: int  # the (classes, features) weight tensor, shared by both dense layers
    prob_bias: int
    prob_input: int  # the pooled features
    logits: int  # the probability layer's output, the softmax's input
    cam_bias: int | None  # -1: no bias tensor (the converter drops an all-zero bias)
    cam_input: int | None
    cam_chain: list  # the maps' output tensor, and the tensors that carry it to the output


def _find(model) -> _Graph:
    graph = model.subgraphs[0]
    softmax = [op for op in graph.operators if _op_name(model, op) == "SOFTMAX"]
    if len(softmax) != 1:
        raise HeadError("the model has no single softmax: not a hemalite classifier")
    logits = softmax[0].inputs[0]
    dense = [op for op in graph.operators
             if _op_name(model, op) == "FULLY_CONNECTED" and logits in list(op.outputs)]
    if len(dense) != 1:
        raise HeadError("the softmax is not fed by one dense layer: not a hemalite head")
    prob = dense[0]
    weights = prob.inputs[1]
    cams = [op for op in graph.operators if op is not prob
            and _op_name(model, op) == "FULLY_CONNECTED" and op.inputs[1] == weights]
    chain, cam_bias, cam_input = [], None, None
    if cams:
        cam_bias, cam_input = cams[0].inputs[2], cams[0].inputs[0]
        chain = [cams[0].outputs[0]]
        while True:  # RESHAPE, QUANTIZE ... down to the graph's output
            nxt = [op for op in graph.operators if chain[-1] in list(op.inputs)
                   and _op_name(model, op) in ("RESHAPE", "QUANTIZE", "DEQUANTIZE")]
            if not nxt:
                break
            chain.append(nxt[0].outputs[0])
    return _Graph(model, weights, prob.inputs[2], prob.inputs[0], logits, cam_bias,
                  cam_input, chain)


def _tensor(g: _Graph, index: int):
    return g.model.subgraphs[0].tensors[index]


def _array(g: _Graph, index: int) -> np.ndarray:
    t = _tensor(g, index)
    dtype = {0: np.float32, 2: np.int32, 9: np.int8, 3: np.uint8}[t.type]
    data = g.model.buffers[t.buffer].data
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(t.shape)


def _set_array(g: _Graph, index: int, values: np.ndarray) -> None:
    g.model.buffers[_tensor(g, index).buffer].data = np.frombuffer(values.tobytes(), np.uint8)


def _scales(g: _Graph, index: int) -> tuple[np.ndarray, np.ndarray] | None:
    q = _tensor(g, index).quantization
    if q is None or q.scale is None or not len(q.scale):
        return None
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)


def _bias(g: _Graph, index: int, classes: int) -> np.ndarray:
    """A dense layer's bias values; zeros when the converter dropped an all-zero bias."""
    return np.zeros(classes) if index < 0 else _array(g, index).astype(np.float64)


def _ensure_bias(g: _Graph, op_input: str, like: int) -> int:
    """The bias tensor of the probability (op_input 'prob') or maps ('cam') layer, created
    when the converter dropped it (an all-zero bias): returns its tensor index."""
    index = g.prob_bias if op_input == "prob" else g.cam_bias
    if index is not None and index >= 0:
        return index
    schema = tflite_schema()
    graph = g.model.subgraphs[0]
    tensor = schema.TensorT()
    tensor.shape = [len(_array(g, like))]
    tensor.type = 2 if _scales(g, like) is not None else 0  # int32 beside int8, else float32
    tensor.name = f"hemalite/{op_input}_bias".encode()
    tensor.quantization = schema.QuantizationParametersT()
    g.model.buffers.append(schema.BufferT())
    tensor.buffer = len(g.model.buffers) - 1
    graph.tensors.append(tensor)
    index = len(graph.tensors) - 1
    for op in graph.operators:  # point the layer at it
        if _op_name(g.model, op) == "FULLY_CONNECTED" and op.inputs[1] == g.weights and (
                (op_input == "prob" and g.logits in list(op.outputs))
                or (op_input == "cam" and g.logits not in list(op.outputs))):
            op.inputs[2] = index
    if op_input == "prob":
        g.prob_bias = index
    else:
        g.cam_bias = index
    return index


def read_head(model_bytes: bytes) -> Head:
    """The head's float weights and bias (dequantised in an int8 model)."""
    g = _find(tflite_schema().ModelT.InitFromPackedBuf(bytearray(model_bytes), 0))
    w = _array(g, g.weights).astype(np.float64)
    b = _bias(g, g.prob_bias, len(w))
    wq = _scales(g, g.weights)
    if wq is not None:  # int8: per-class scales; the bias at input x weight scale
        scale = wq[0].reshape(-1, 1) if wq[0].size > 1 else wq[0]
        w = (w - wq[1].reshape(-1, 1)) * scale
        b = b * _scales(g, g.prob_input)[0][0] * np.ravel(wq[0])
    return Head(w.astype(np.float32), b.astype(np.float32))


def _requantise(g: _Graph, index: int, low: float, high: float) -> None:
    """Give an int8 (or uint8) activation tensor the range [low, high] (0 kept inside)."""
    t = _tensor(g, index)
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0
    qmin = -128 if t.type == 9 else 0
    t.quantization.scale = [float(scale)]
    t.quantization.zeroPoint = [int(np.clip(round(qmin - low / scale), qmin, qmin + 255))]


def _range(g: _Graph, index: int) -> tuple[float, float]:
    scale, zero = _scales(g, index)
    qmin = -128 if _tensor(g, index).type == 9 else 0
    return float((qmin - zero[0]) * scale[0]), float((qmin + 255 - zero[0]) * scale[0])


def write_head(model_bytes: bytes, head: Head, logits_seen: np.ndarray) -> bytes:
    """The model with `head` as its dense layer (probability and maps alike).

    `logits_seen`: the new head's logits on real images (the site's), so that an int8
    model's logits tensor can hold them: its range becomes the old one widened to cover
    them with a 25 % margin, and the maps' range grows in the same proportion.
    """
    import flatbuffers

    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    g = _find(model)
    old_w = _array(g, g.weights)
    if head.weights.shape != old_w.shape:
        raise HeadError(f"new head {head.weights.shape} does not fit the model's "
                        f"{old_w.shape}")
    wq = _scales(g, g.weights)
    _ensure_bias(g, "prob", g.weights)
    if g.cam_input is not None:
        _ensure_bias(g, "cam", g.weights)
    if wq is None:  # float model
        _set_array(g, g.weights, head.weights.astype(np.float32))
        _set_array(g, g.prob_bias, head.bias.astype(np.float32))
        if g.cam_bias is not None:
            _set_array(g, g.cam_bias, head.bias.astype(np.float32))
    else:
        w_scale = np.maximum(np.abs(head.weights).max(axis=1), 1e-8) / 127.0
        q = np.clip(np.round(head.weights / w_scale[:, None]), -127, 127).astype(np.int8)
        _set_array(g, g.weights, q)
        _tensor(g, g.weights).quantization.scale = [float(s) for s in w_scale]
        _tensor(g, g.weights).quantization.zeroPoint = [0] * len(w_scale)
        for bias, source in ((g.prob_bias, g.prob_input), (g.cam_bias, g.cam_input)):
            if bias is None:
                continue
            scale = _scales(g, source)[0][0] * w_scale
            _set_array(g, bias, np.round(head.bias / scale).astype(np.int32))
            _tensor(g, bias).quantization.scale = [float(s) for s in scale]
            _tensor(g, bias).quantization.zeroPoint = [0] * len(scale)
        old_low, old_high = _range(g, g.logits)
        seen = np.asarray(logits_seen, np.float64)
        margin = 0.25 * (seen.max() - seen.min()) if seen.size else 0.0
        low = min(old_low, float(seen.min()) - margin) if seen.size else old_low
        high = max(old_high, float(seen.max()) + margin) if seen.size else old_high
        _requantise(g, g.logits, low, high)
        grow = (high - low) / (old_high - old_low)
        for index in g.cam_chain:
            cam_low, cam_high = _range(g, index)
            _requantise(g, index, cam_low * grow, cam_high * grow)
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())

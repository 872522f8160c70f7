#!/usr/bin/env python3
"""Writes window-classifier.onnx: the model the `window-classify` job ships inside it.

A two-layer perceptron over a window of 16 sensor samples (input `window`, f32 [1, 16])
that scores three classes (output `scores`, f32 [1, 3], softmax): steady, rising,
falling. Its weights are set, not trained, so that what it answers is known exactly and
the tests can check it:

* layer 1 (MatMul + Add + Relu) computes the least-squares slope s of the window in
  units per sample, split into relu(s) and relu(-s);
* layer 2 (MatMul + Add + Softmax) scores steady = 10 - 200 |s|, rising = 200 relu(s),
  falling = 200 relu(-s). So |s| < 0.025 units per sample is steady.

Run it from this directory with the `onnx` Python package installed
(`pip install onnx numpy`); the committed file is what it writes. Opset 13, IR 8:
what every ONNX Runtime since 1.10 loads.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WINDOW = 16
GAIN = 200.0
STEADY_BIAS = 10.0

centred = np.arange(WINDOW, dtype=np.float64) - (WINDOW - 1) / 2.0
slope = centred / np.sum(centred * centred)
w1 = np.stack([slope, -slope], axis=1).astype(np.float32)  # [16, 2]
b1 = np.zeros(2, dtype=np.float32)
w2 = np.array([[-GAIN, GAIN, 0.0], [-GAIN, 0.0, GAIN]], dtype=np.float32)  # [2, 3]
b2 = np.array([STEADY_BIAS, 0.0, 0.0], dtype=np.float32)

nodes = [
    helper.make_node("MatMul", ["window", "w1"], ["h_lin"]),
    helper.make_node("Add", ["h_lin", "b1"], ["h_pre"]),
    helper.make_node("Relu", ["h_pre"], ["h"]),
    helper.make_node("MatMul", ["h", "w2"], ["logits_lin"]),
    helper.make_node("Add", ["logits_lin", "b2"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
]
graph = helper.make_graph(
    nodes,
    "window-classifier",
    [helper.make_tensor_value_info("window", TensorProto.FLOAT, [1, WINDOW])],
    [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
    initializer=[
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ],
)
model = helper.make_model(
    graph,
    producer_name="fleet",
    opset_imports=[helper.make_opsetid("", 13)],
    ir_version=8,
)
onnx.checker.check_model(model)
onnx.save(model, "window-classifier.onnx")
print(f"window-classifier.onnx: {len(model.SerializeToString())} bytes")

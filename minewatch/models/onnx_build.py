"""A small ONNX graph builder: nodes and float32 initializers with unique names.

Why not a converter library: the importer only needs a handful of operators, and writing them with
``onnx.helper`` keeps inference and conversion free of TensorFlow and PyTorch. Shapes are tracked
by the caller (all graphs built here have static spatial sizes and a symbolic batch dimension).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
"""ONNX opset of built graphs: old enough for every ONNX Runtime >= 1.14, new enough for Clip(min, max) inputs."""


class GraphBuilder:
    """Accumulates nodes/initializers; ``finish`` returns a checked ``onnx.ModelProto``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}
        self._used: set[str] = set()

    def fresh(self, prefix: str) -> str:
        """A unique tensor/node name starting with ``prefix``."""
        n = self._count.get(prefix, 0)
        name = prefix if n == 0 else f"{prefix}__{n}"
        while name in self._used:
            n += 1
            name = f"{prefix}__{n}"
        self._count[prefix] = n + 1
        self._used.add(name)
        return name

    def const(self, prefix: str, value: Any, dtype: Any = np.float32) -> str:
        """Add an initializer; returns its name."""
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype=dtype)), name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, output: str | None = None, **attrs: Any) -> str:
        """Add one node with one output; returns the output name."""
        out = output or self.fresh(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.fresh(f"node_{out}"), **attrs))
        return out

    def finish(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="minewatch")
        model.ir_version = 8  # readable by ONNX Runtime >= 1.14
        if doc:
            model.doc_string = doc
        onnx.checker.check_model(model)
        return model


def float_input(name: str, shape: list[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

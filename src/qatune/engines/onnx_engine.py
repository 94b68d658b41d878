"""The ONNX Runtime engine: a graph written by `qatune export --format onnx`, on the CPU.

onnxruntime is imported here only, and only when this engine is used
(`pip install "qatune[onnx]"` installs it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qatune.engines.base import OUTPUT_NAMES, Engine, UnreadableGraph, check_inputs
from qatune.errors import ModelError, first_line

MODEL_FILE = "model.onnx"
INSTALL_HINT = 'install the ONNX extras with `pip install "qatune[onnx]"`'


class OnnxEngine(Engine):
    """An ONNX Runtime session over an exported graph (float32, or int8 weights).

        >>> engine = load_onnx("./qatune-onnx")                                  # doctest: +SKIP
        >>> engine.logits({"input_ids": ids, "attention_mask": mask})[0].shape   # doctest: +SKIP
        (1, 12)
    """

    name = "onnx"

    def __init__(self, session, file: Path, precision: str = "float32") -> None:
        self.session = session
        self.file = file
        self.precision = precision
        self._input_names = tuple(node.name for node in session.get_inputs())

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    def logits(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        feeds = check_inputs(self, inputs, str(self.file))
        start, end = self.session.run(list(OUTPUT_NAMES), feeds)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


def load_onnx(path: str | Path, *, precision: str = "float32", threads: int | None = None) -> OnnxEngine:
    """An engine over `path` (a folder with model.onnx, or the file itself).

    threads=None uses every core this process may run on.
    """
    file = Path(path) / MODEL_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ModelError(
            f"{file}: expected an ONNX model file, found none; export one with "
            f"`qatune export MODEL --format onnx -o DIR` and pass DIR"
        )
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            f"answering with an ONNX model needs onnxruntime, which is not installed; {INSTALL_HINT}"
        ) from None

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1  # one graph at a time: the threads go to its operators
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise UnreadableGraph(file, "ONNX Runtime", first_line(error), "onnx") from None
    return OnnxEngine(session, file, precision)


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1

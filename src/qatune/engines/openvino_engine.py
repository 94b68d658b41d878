"""The OpenVINO engine: the CPU engine `auto` picks (packs weights once, fuses attention).

OpenVINO is used through its own API (`openvino.convert_model`, `Core.compile_model`):
it converts a transformers model in memory in about 3 s (all-MiniLM-L6-v2, 2 cores), with no
ONNX step and no extra package. Measured on dev windows (Intel Xeon with AMX, 2 cores,
200 windows of ~200 tokens, batch 16), against PyTorch eager on the same run:

    PyTorch float32 48.8 windows/s, bf16 autocast 117.1; OpenVINO float32 59.0, bf16 164.3;
    one window at a time, p50: PyTorch float32 17.7 ms, OpenVINO bf16 9.6 ms.

float32 compiles with `INFERENCE_PRECISION_HINT=f32`: OpenVINO's own default on CPUs with
bf16 units is bf16, which would change answers without saying so.

openvino is imported here only, and only when this engine is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qatune.engines.base import BF16_RECHECK_MARGIN, OUTPUT_NAMES, Engine, UnreadableGraph, check_inputs

MODEL_FILE = "model.xml"  # with its weights in model.bin beside it
FLOAT32_FOLDER = "float32"  # an int8 export's float32 graph, for re-checking close calls
_HINTS = {"float32": "f32", "bf16": "bf16"}


def bf16_is_native() -> bool:
    """Whether OpenVINO computes in bf16 by default on this CPU (it does where bf16 units pay)."""
    import openvino

    return str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")) in ("bf16", "<Type: 'bfloat16'>")


class OpenVinoEngine(Engine):
    """An OpenVINO model compiled for the CPU at one precision.

    model: an `openvino.Model`, or the path of a model.xml. precision: "float32" or "bf16" for a
    float model (bf16 answers are re-checked in float32 where close); "int8" for a quantized
    one, whose other operations run in float32 and whose close calls `float32_model` (a path
    or model) re-checks when given: in bf16 where bf16 is native (and bf16's own close calls in
    float32), else in float32; `recheck_bf16` True or False asks for bf16 or float32 there.

        >>> engine = OpenVinoEngine("./qatune-openvino/model.xml", precision="float32")  # doctest: +SKIP
        >>> engine.logits({"input_ids": ids, "attention_mask": mask})[0].dtype              # doctest: +SKIP
        dtype('float32')
    """

    name = "openvino"
    # Measured, float32 and bf16 (the 6-layer default model, 300 SQuAD windows, 60 random batches
    # of 2-32 windows padded to the longest, against each window alone): not one bit differs.
    # PyTorch's float32 differs by up to 3e-5 in half the windows (tests/test_engines.py).
    batch_invariant = True

    def __init__(
        self,
        model,
        *,
        precision: str = "float32",
        where: str = "the OpenVINO model",
        threads: int | None = None,
        float32_model=None,
        recheck_margin: float = 0.0,
        recheck_bf16: bool | None = None,
    ) -> None:
        import openvino

        graph = read_graph(Path(model)) if isinstance(model, (str, Path)) else model
        # kept for the float32 twin: compiled from the same graph, it shares the weights OpenVINO
        # maps from model.bin (reading the file again for it took 90 MB more for all-MiniLM)
        self.source = graph
        self.precision = precision
        self.recheck_margin = BF16_RECHECK_MARGIN if precision == "bf16" else 0.0
        # int8: its float32 graph (written beside it by the export) re-answers close calls
        self.float32_model = float32_model
        if precision == "int8" and float32_model is not None:
            self.recheck_margin = recheck_margin
            # in bf16 first where bf16 is native (its own close calls go on to float32): int8
            # re-checks about 40% of the questions, and bf16 answers them 2x to 3x as fast
            in_bf16 = bf16_is_native() if recheck_bf16 is None else recheck_bf16
            self.recheck_in = "bf16" if in_bf16 else "float32"
        self._rechecker: OpenVinoEngine | None = None
        self.where = where
        self.threads = threads
        self.head = _split_head(graph) if precision == "bf16" else None
        if precision == "bf16" and self.head is None:  # no head found to keep in float32: stay exact
            self.precision, self.recheck_margin = "float32", 0.0
        config = {
            "INFERENCE_PRECISION_HINT": _HINTS.get(self.precision, "f32"),
            "PERFORMANCE_HINT": "LATENCY",  # one stream with every core: one batch at a time
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = openvino.Core().compile_model(graph if self.head is None else self.head.encoder, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._input_names = tuple(port.any_name for port in self.compiled.inputs)
        self._float32: OpenVinoEngine | None = self if self.precision == "float32" else None

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    def float32(self) -> "OpenVinoEngine | None":
        if self._float32 is None and self.precision != "float32":
            exact = self.float32_model if self.precision == "int8" else self.source
            if exact is not None:
                self._float32 = OpenVinoEngine(exact, precision="float32", where=self.where, threads=self.threads)
        return self._float32

    def rechecker(self) -> "Engine | None":
        if self.recheck_margin <= 0 or self.recheck_in == "float32":
            return super().rechecker()
        if self._rechecker is None:
            self._rechecker = OpenVinoEngine(self.float32_model, precision="bf16", where=self.where, threads=self.threads)
            self.recheck_in = self._rechecker.precision  # float32 where no head could be kept in float32
        return self._rechecker

    def logits(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        feeds = check_inputs(self, inputs, self.where)
        results = self.request.infer(feeds)
        if self.head is not None:
            logits = self.head.apply(results[self.compiled.output(0)])
            return np.ascontiguousarray(logits[..., 0]), np.ascontiguousarray(logits[..., 1])
        start, end = (results[self.compiled.output(name)] for name in OUTPUT_NAMES)
        # the request reuses its output buffers on the next call: copy them out
        return np.array(start, dtype=np.float32), np.array(end, dtype=np.float32)


def read_graph(file: Path):
    """The `openvino.Model` in model.xml (weights in model.bin), or UnreadableGraph."""
    import openvino

    try:
        return openvino.Core().read_model(str(file))
    except RuntimeError as error:  # openvino's one error for a missing, cut short or garbled file
        raise UnreadableGraph(file, "OpenVINO", _last_line(error), "openvino") from None


def _last_line(error: BaseException) -> str:
    """OpenVINO's message ends with what went wrong, after lines naming its own source files."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else type(error).__name__


class _Head:
    """The QA head (hidden size -> 2 logits) taken out of the graph, computed in float32 by numpy.

    OpenVINO's bf16 mode computes every matrix product in bf16 and rounds the logits to 8 bits
    of mantissa (steps of 1/16 near 10): enough to swap close answers beyond the re-check
    margin. Per-node precision marks are not honoured by its CPU plugin (2026.4), so the graph
    ends at the head's input and the head, a sliver of the work, runs here.
    """

    def __init__(self, encoder, weight: np.ndarray, bias: np.ndarray | None) -> None:
        self.encoder, self.weight, self.bias = encoder, weight, bias

    def apply(self, hidden: np.ndarray) -> np.ndarray:
        logits = np.asarray(hidden, dtype=np.float32) @ self.weight.T
        return logits if self.bias is None else logits + self.bias


def _split_head(model) -> _Head | None:
    """The graph up to the QA head's input, with the head's weights; None when the model does
    not end in a linear layer to two logits (then it answers in float32)."""
    import openvino

    matmuls = [op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    if not matmuls:
        return None
    head = matmuls[-1]
    weight = _constant(head.input_value(1).get_node())
    if weight is None or 2 not in weight.shape or weight.ndim != 2:
        return None
    transpose_b = head.get_attributes().get("transpose_b", False)
    weight = weight if transpose_b else weight.T  # now (2, hidden)
    if weight.shape[0] != 2:
        return None
    bias = None
    users = [target.get_node() for target in head.output(0).get_target_inputs()]
    if len(users) == 1 and users[0].get_type_name() == "Add":
        add = users[0]
        other = add.input_value(1) if add.input_value(0).get_node() is head else add.input_value(0)
        values = _constant(other.get_node())
        if values is not None and values.size == 2:
            bias = values.reshape(2)
    encoder = openvino.Model([head.input_value(0)], model.get_parameters(), "encoder")
    return _Head(encoder, weight.astype(np.float32), None if bias is None else bias.astype(np.float32))


def _constant(node) -> np.ndarray | None:
    """The values of a Const node (through a Convert, as float16-compressed graphs have), else None."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    if node.get_type_name() != "Constant":
        return None
    return np.array(node.get_data(), dtype=np.float32)


def save_model(model, folder: Path) -> Path:
    """Write model.xml/model.bin into `folder`, weights as they are (no float16 compression,
    which would change float32 answers)."""
    import openvino

    file = folder / MODEL_FILE
    openvino.save_model(model, str(file), compress_to_fp16=False)
    return file


def convert_torch_model(model, tokenizer):
    """An OpenVINO model of a transformers question-answering model (in memory), taking the
    inputs the tokenizer makes, any batch size and length, returning start/end logits."""
    import openvino
    import torch

    from qatune.engines.torch_engine import forward_inputs, logits_module

    names = [name for name in tokenizer.model_input_names if name in forward_inputs(model)]
    # Two pairs of different lengths: the traced graph then has padding and a mask to apply,
    # and neither axis is taken for a constant
    sample = tokenizer(
        ["What is it?", "Who?"], ["It is an example context.", "Nobody."], padding=True, return_tensors="pt"
    )
    example = {name: sample[name] for name in names}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet_tracing():
            converted = openvino.convert_model(logits_module(model), example_input=example)
    finally:
        model.train(was_training)
    # the converter names the inputs after forward's arguments and leaves every axis dynamic
    missing = set(names) - {name for port in converted.inputs for name in port.get_names()}
    if missing:
        raise ValueError(f"the converted model lacks the inputs {sorted(missing)}")
    for port, name in zip(converted.outputs, OUTPUT_NAMES):
        port.get_tensor().set_names({name})
    return converted


def _quiet_tracing():
    import contextlib
    import logging
    import warnings

    @contextlib.contextmanager
    def quiet():
        with warnings.catch_warnings():
            # the tracer warns about Python branches in transformers' code; they are fixed by
            # the padded example and nothing a user can act on
            warnings.simplefilter("ignore")
            previous = logging.getLogger("transformers").level
            logging.getLogger("transformers").setLevel(logging.ERROR)
            try:
                yield
            finally:
                logging.getLogger("transformers").setLevel(previous)

    return quiet()

"""Exporting a model to ONNX, and answering questions with an exported model.

`export_onnx` writes a folder that `QAModel.from_pretrained` loads like any model folder:
`model.onnx` (float32, or int8 weights with `quantize="int8"`), the tokenizer files,
`config.json` and `qatune.json` (the same windowing and decoding settings, plus an `onnx`
entry saying how the graph was made). The graph takes `input_ids`, `attention_mask` (and
`token_type_ids` where the tokenizer makes them), any batch size and sequence length, and
returns `start_logits` and `end_logits`.

    >>> export_onnx("./qatune-model", "./qatune-onnx", quantize="int8")  # doctest: +SKIP
    PosixPath('qatune-onnx/model.onnx')
    >>> model = QAModel.from_pretrained("./qatune-onnx")  # doctest: +SKIP
    >>> model.ask("When did it open?", "The bridge opened in 1932.")  # doctest: +SKIP
    [Answer(text='1932', start=21, end=25, score=0.91)]

int8 weights can change answers. `compare_with_float32` answers dev questions with both
models, records what it measured in the export's `qatune.json` (`onnx.check`) and says, with
`ExportCheck.warning()`, when the export loses more than MIN_AGREEMENT / MAX_F1_LOSS allow.

onnx, onnxscript and onnxruntime are imported only here and only when used, so that the
rest of qatune works without them (`pip install "qatune[onnx]"` installs them).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from qatune.data import Example
from qatune.errors import ModelError, SettingsError, first_line
from qatune.metrics import exact_of
from qatune.settings import read_model_card, read_settings, write_model_card

QUANTIZE_CHOICES = ("int8",)
MIN_OPSET = 18  # the oldest opset torch's ONNX exporter writes correctly
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")
# Above this many bytes of weights, they go to `model.onnx.data` beside the graph: one ONNX
# (protobuf) file cannot hold more than 2 GB.
EXTERNAL_DATA_BYTES = 1_800_000_000
INSTALL_HINT = 'install the ONNX extras with `pip install "qatune[onnx]"`'
# An export that answers fewer dev questions the same as float32, or loses more F1, is warned about.
MIN_AGREEMENT = 97.0  # percent of questions with the same answer (text, or no answer) as float32
MAX_F1_LOSS = 0.5  # F1 points below float32


def export_onnx(
    model_dir: str | Path, output_dir: str | Path, *, quantize: str | None = None, opset: int | None = None
) -> Path:
    """Export a model folder to `output_dir/model.onnx` (with its tokenizer and settings).

    quantize=None keeps float32 weights; "int8" quantizes the weights of the matrix
    multiplications to int8 (dynamic quantization: activations are quantized on the fly).
    opset=None uses the exporter's default opset (at least 18). Returns the path of model.onnx.

        >>> export_onnx("./qatune-model", "./qatune-onnx")  # doctest: +SKIP
        PosixPath('qatune-onnx/model.onnx')
    """
    source, target = _check_folders(model_dir, output_dir)
    _check_quantize(quantize)
    _check_opset(opset)
    _require("onnx", "onnxscript", *(("onnxruntime",) if quantize else ()), purpose="exporting to ONNX")
    from qatune.inference import ONNX_FILE
    from qatune.modeling import load_qa_model, load_tokenizer

    tokenizer = load_tokenizer(source)
    model = load_qa_model(source).float().eval()
    input_names = [name for name in INPUT_NAMES if name in tokenizer.model_input_names]
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target) as scratch:
        exported = Path(scratch) / "float32" / ONNX_FILE
        _export_graph(model, tokenizer, input_names, exported, source, opset)
        if quantize == "int8":
            exported = _quantize_int8(exported, Path(scratch) / "int8" / ONNX_FILE)
        opset_used = _opset_of(exported)
        _write_companions(source, target, tokenizer, {"quantize": quantize, "opset": opset_used})
        # the graph comes last, so that a folder with model.onnx is always complete
        _move_graph(exported, target / ONNX_FILE)
    return target / ONNX_FILE


@dataclass
class ExportCheck:
    """How an exported model answered dev questions, next to the float32 torch model it came from.

    agreement: percent of questions with the same answer (same text, or both no answer);
    exact and f1 are the SQuAD EM and F1 (percent) of the export, *_float32 those of the source.
    """

    data: str | None
    questions: int
    same_answers: int
    agreement: float
    exact: float
    exact_float32: float
    f1: float
    f1_float32: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str | None:
        """What the export loses, when past MIN_AGREEMENT or MAX_F1_LOSS, with the advice; else None.

            >>> ExportCheck("dev.json", 26, 22, 84.6, 66.7, 83.3, 70.0, 85.0).warning()  # doctest: +ELLIPSIS
            'on dev.json the export answers 4 of 26 questions differently from float32 (84.6% agree, ...'
        """
        losses = []
        if self.agreement < MIN_AGREEMENT:
            losses.append(
                f"answers {self.questions - self.same_answers} of {self.questions} questions differently "
                f"from float32 ({self.agreement:.1f}% agree, the limit is {MIN_AGREEMENT:g}%)"
            )
        if self.f1_float32 - self.f1 > MAX_F1_LOSS:
            losses.append(
                f"loses {self.f1_float32 - self.f1:.1f} F1 points ({self.f1:.1f} against {self.f1_float32:.1f} "
                f"for float32, the limit is {MAX_F1_LOSS:g})"
            )
        if not losses:
            return None
        return (
            f"on {self.data or 'the dev data'} the export {' and '.join(losses)}; keep float32 (export without "
            f"--quantize), or keep int8 only where its speed is worth this loss"
        )


def compare_with_float32(
    model_dir: str | Path,
    onnx_dir: str | Path,
    examples: Sequence[Example],
    *,
    data: str | Path | None = None,
    progress: bool = False,
) -> ExportCheck:
    """Answer `examples` with the float32 torch model in `model_dir` and with its export in
    `onnx_dir`, record the comparison in onnx_dir's qatune.json (`onnx.check`) and return it.

    `data` names the examples' file in the record and the warning.

        >>> check = compare_with_float32("./qatune-model", "./qatune-onnx", dev, data="dev.json")  # doctest: +SKIP
        >>> check.agreement, check.f1, check.f1_float32, check.warning()  # doctest: +SKIP
        (100.0, 81.2, 81.4, None)
    """
    from qatune.inference import ONNX_FILE, QAModel

    target = Path(onnx_dir)
    if not (target / ONNX_FILE).is_file():
        raise ModelError(
            f"{target}: expected a folder with model.onnx, found none; export the model first "
            f"with `qatune export MODEL --onnx -o DIR` and pass DIR"
        )
    examples = list(examples)
    if not examples:
        raise SettingsError(f"{data or 'examples'}: expected questions to check the export on, found none")
    float32 = QAModel.from_pretrained(model_dir, bf16=False).evaluate(examples, progress=progress)
    exported = QAModel.from_pretrained(target).evaluate(examples, progress=progress)
    same = sum(answer == float32.predictions[qid] for qid, answer in exported.predictions.items())
    check = ExportCheck(
        data=None if data is None else str(data),
        questions=len(exported.predictions),
        same_answers=same,
        agreement=100.0 * same / len(exported.predictions),
        exact=exact_of(exported.metrics),
        exact_float32=exact_of(float32.metrics),
        f1=exported.metrics["f1"],
        f1_float32=float32.metrics["f1"],
    )
    _record_check(target, check)
    return check


def load_onnx_model(path: str | Path, *, threads: int | None = None) -> "OnnxQAModel":
    """An ONNX Runtime session over `path` (a folder with model.onnx, or the file itself)
    that `qatune.inference.window_logits` calls like a torch model, on the CPU.

    threads=None uses every core this process may run on.

        >>> model = load_onnx_model("./qatune-onnx")  # doctest: +SKIP
        >>> model(input_ids=ids, attention_mask=mask).start_logits.shape  # doctest: +SKIP
        torch.Size([1, 12])
    """
    from qatune.inference import ONNX_FILE

    file = Path(path) / ONNX_FILE if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ModelError(
            f"{file}: expected an ONNX model file, found none; export one with "
            f"`qatune export MODEL --onnx -o DIR` and pass DIR"
        )
    _require("onnxruntime", purpose="running an ONNX model")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or _available_cores()
    options.inter_op_num_threads = 1  # one graph at a time: the threads go to its operators
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(
            f"{file}: ONNX Runtime cannot load this file ({first_line(error)}); export the model "
            f"again with `qatune export MODEL --onnx -o DIR`"
        ) from None
    return OnnxQAModel(session, file)


@dataclass
class QAOutput:
    """What a question-answering model returns: logits of shape (batch, sequence), float32."""

    start_logits: Any
    end_logits: Any


class OnnxQAModel:
    """An ONNX Runtime session that answers like a torch question-answering model.

    It has what `window_logits` uses: `parameters()` (one empty CPU tensor, for the device),
    `training` (always False), `eval()`, `train(False)`, and a call with torch tensors that
    returns `.start_logits` and `.end_logits` as float32 torch tensors.
    """

    training = False

    def __init__(self, session, file: Path) -> None:
        import torch

        self.session = session
        self.file = file
        self.input_names = [node.name for node in session.get_inputs()]
        self._device_marker = torch.empty(0)

    def parameters(self) -> Iterator:
        yield self._device_marker

    def eval(self) -> "OnnxQAModel":
        return self

    def train(self, mode: bool = True) -> "OnnxQAModel":
        if mode:
            raise ModelError(f"{self.file}: an ONNX model can only answer questions; train the torch model instead")
        return self

    def __call__(self, **inputs) -> QAOutput:
        import numpy as np
        import torch

        self._check_inputs(inputs)
        feeds = {name: np.asarray(inputs[name].detach().cpu().numpy(), dtype=np.int64) for name in self.input_names}
        start, end = self.session.run(list(OUTPUT_NAMES), feeds)
        return QAOutput(torch.from_numpy(start.astype(np.float32)), torch.from_numpy(end.astype(np.float32)))

    def _check_inputs(self, inputs: dict) -> None:
        # A tokenizer that does not match the graph would otherwise fail deep inside ONNX Runtime
        if set(inputs) != set(self.input_names):
            raise ModelError(
                f"{self.file}: the graph takes {sorted(self.input_names)}, but the tokenizer gave "
                f"{sorted(inputs)}; use the tokenizer saved next to model.onnx"
            )


def _check_folders(model_dir: str | Path, output_dir: str | Path) -> tuple[Path, Path]:
    source, target = Path(model_dir), Path(output_dir)
    if not source.is_dir():
        found = "a file" if source.exists() else "nothing"
        raise ModelError(
            f"{source}: expected a model folder (config.json, model.safetensors, tokenizer files), "
            f"found {found}; pass the folder that `qatune train` wrote"
        )
    if not any(source.glob("*.safetensors")) and (source / "model.onnx").is_file():
        raise ModelError(
            f"{source}: this folder is already an ONNX export (model.onnx, no safetensors weights); "
            f"export from the folder with model.safetensors that `qatune train` wrote"
        )
    if target.exists() and not target.is_dir():
        raise SettingsError(
            f"{target}: expected a folder to write the ONNX model into, found a file; choose another -o/--output"
        )
    if target.resolve() == source.resolve():
        raise SettingsError(
            f"{target}: the output folder is the model folder itself; a model.onnx there would replace "
            f"the torch model when loading it: choose another -o/--output"
        )
    return source, target


def _check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise SettingsError(
            f"quantize must be one of {', '.join(QUANTIZE_CHOICES)} (or None for float32 weights), got {quantize!r}"
        )


def _check_opset(opset: int | None) -> None:
    if opset is None:
        return
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < MIN_OPSET:
        raise SettingsError(
            f"opset must be a whole number of at least {MIN_OPSET} (older opsets cannot express the "
            f"exported graph), got {opset!r}; leave it out to use the exporter's default"
        )


def _require(*modules: str, purpose: str) -> None:
    missing = [name for name in modules if not _importable(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ModelError(f"{purpose} needs {' and '.join(missing)}, which {verb} not installed; {INSTALL_HINT}")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _logits_module(model):
    """The model as a module of plain tensors returning (start_logits, end_logits): what ONNX needs."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra, return_dict=True)
            return output.start_logits, output.end_logits

    return Logits().eval()


def _export_graph(model, tokenizer, input_names: list[str], file: Path, source: Path, opset: int | None) -> None:
    import torch

    # Two padded pairs: a batch of 2 and a longer sequence, so that neither axis is taken
    # for a constant 1 when torch traces the model
    sample = tokenizer(
        ["What is it?", "Who?"], ["It is an example context.", "Nobody."], padding=True, return_tensors="pt"
    )
    inputs = {name: sample[name] for name in input_names}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    file.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        # the exporter warns about its own internals; nothing a user can act on
        warnings.filterwarnings("ignore", message=r".*(axis name|treespec|LeafSpec).*")
        try:
            torch.onnx.export(
                _logits_module(model),
                (),
                str(file),
                kwargs=inputs,
                input_names=input_names,
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
                opset_version=opset,
                dynamo=True,
                external_data=_parameter_bytes(model) > EXTERNAL_DATA_BYTES,
                verbose=False,
            )
        except torch.onnx.OnnxExporterError as error:
            raise ModelError(
                f"{source}: torch could not export this model ({type(model).__name__}) to ONNX: "
                f"{first_line(error)}; the model's code must run under torch.export"
            ) from None


def _parameter_bytes(model) -> int:
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def _quantize_int8(exported: Path, output: Path) -> Path:
    """Dynamic quantization: int8 weights for the matrix multiplications, activations quantized on the fly.

    One scale per output column (per_channel) keeps the logits much closer to float32 than
    one scale per matrix (on all-MiniLM-L6-v2: correlation 0.986 instead of 0.946). Weights
    use 7 of their 8 bits (reduce_range): CPUs without VNNI instructions can overflow
    intermediate sums with full-range weights, and the graph may run on any CPU.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output.parent.mkdir(parents=True)
    with _quiet_root_logger():
        quantize_dynamic(
            exported,
            output,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            use_external_data_format=(exported.parent / f"{exported.name}.data").exists(),
        )
    return output


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantizer logs advice through the root logger; keep it out of the user's output."""
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(level)


def _opset_of(file: Path) -> int:
    import onnx

    graph = onnx.load(str(file), load_external_data=False)
    return next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))


def _write_companions(source: Path, target: Path, tokenizer, onnx_entry: dict) -> None:
    """Tokenizer files, config.json and qatune.json: what loading the folder needs besides the graph."""
    tokenizer.save_pretrained(target)
    shutil.copyfile(source / "config.json", target / "config.json")
    _write_card(source, target, onnx_entry)


def _record_check(target: Path, check: ExportCheck) -> None:
    _write_card(target, target, {**read_model_card(target).get("onnx", {}), "check": check.to_dict()})


def _write_card(source: Path, target: Path, onnx_entry: dict) -> None:
    """target/qatune.json: the card of `source` (settings, training record) with this `onnx` entry."""
    card = read_model_card(source)
    extra = {key: value for key, value in card.items() if key not in ("settings", "qatune_version", "onnx")}
    write_model_card(target, read_settings(source), **extra, onnx=onnx_entry)


def _move_graph(exported: Path, destination: Path) -> None:
    """Move model.onnx (and model.onnx.data when the weights live beside it) into place."""
    data = exported.parent / f"{exported.name}.data"
    stale = destination.parent / f"{destination.name}.data"
    if data.exists():
        os.replace(data, stale)
    elif stale.exists():
        stale.unlink()  # from an earlier, larger export into the same folder
    os.replace(exported, destination)


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


__all__ = [
    "export_onnx", "compare_with_float32", "ExportCheck", "load_onnx_model", "OnnxQAModel", "QAOutput",
    "QUANTIZE_CHOICES", "MIN_AGREEMENT", "MAX_F1_LOSS",
]

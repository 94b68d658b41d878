"""Exporting a model folder for the ONNX Runtime or OpenVINO engine, in float32 or int8.

`export_model` writes a folder that `QAModel.from_pretrained` loads like any model folder
(and answers with the export's own engine): the graph (`model.onnx`, or `model.xml` with
`model.bin`), the tokenizer files, `config.json` and `qatune.json` (the same windowing and
decoding settings, plus an `engine` entry: its name, precision, how it was quantized and,
after `compare_with_float32`, how it answered next to float32). The graph takes
`input_ids`, `attention_mask` (and `token_type_ids` where the tokenizer makes them), any
batch size and sequence length, and returns `start_logits` and `end_logits`.

    >>> export_model("./qatune-model", "./qatune-int8", format="openvino", quantize="int8",
    ...              calibration=load_examples("train.json"))  # doctest: +SKIP
    PosixPath('qatune-int8/model.xml')
    >>> QAModel.from_pretrained("./qatune-int8").ask("When did it open?", "The bridge opened in 1932.")  # doctest: +SKIP
    [Answer(text='1932', start=21, end=25, score=0.91)]

A plain model folder needs no export to be answered fast: the `auto` engine converts it at
load (`qatune.engines`). Export for int8, or to ship a folder that needs no torch weights.

int8 can change answers. `compare_with_float32` answers dev questions with both models,
records what it measured and says, with `ExportCheck.warning()`, when the export loses more
than MIN_AGREEMENT / MAX_F1_LOSS allow.

onnx, onnxscript, onnxruntime, openvino and nncf are imported only when used.
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
from qatune.engines import OPENVINO_HINT
from qatune.engines.base import BF16_RECHECK_MARGIN, OUTPUT_NAMES
from qatune.engines.onnx_engine import INSTALL_HINT
from qatune.engines.onnx_engine import MODEL_FILE as ONNX_FILE
from qatune.errors import ModelError, SettingsError, first_line
from qatune.files import check_folder_to_replace, check_output_folder, check_path_argument, replacing_contents
from qatune.metrics import exact_of
from qatune.modelcard import write_readme
from qatune.modeling import check_not_an_export
from qatune.settings import read_model_card, read_settings, write_model_card
from qatune.wording import counted

FORMATS = ("onnx", "openvino")
QUANTIZE_CHOICES = ("int8",)
MIN_OPSET = 18  # the oldest opset torch's ONNX exporter writes correctly
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Above this many bytes of weights, they go to `model.onnx.data` beside the graph: one ONNX
# (protobuf) file cannot hold more than 2 GB.
EXTERNAL_DATA_BYTES = 1_800_000_000
# An export that answers fewer dev questions the same as float32, or loses more F1, is warned about.
MIN_AGREEMENT = 97.0  # percent of questions with the same answer (text, or no answer) as float32
MAX_F1_LOSS = 0.5  # F1 points below float32
# int8's re-check margin is measured on this many calibration questions (answered in int8 and float32)
MARGIN_QUESTIONS = 500
# Fewer calibration questions than this are warned about: the margin measured on them is unreliable
ADVISED_CALIBRATION_QUESTIONS = 100
logger = logging.getLogger("qatune")


def export_model(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    calibration: Sequence[Example] | None = None,
    opset: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a model folder for the `format` engine ("onnx" or "openvino") into `output_dir`,
    with its tokenizer and settings. Returns the path of the graph (model.onnx or model.xml).
    `output_dir` is a new or empty folder, or, with overwrite=True, one holding an earlier model,
    which the export replaces whole once it is complete.

    quantize=None keeps float32 weights; "int8" quantizes the matrix multiplications, by static
    calibration on `calibration` (the user's own questions; `qatune.quantize` says what stays in
    float and why), or, for ONNX without calibration data, dynamically.
    opset (ONNX only): None uses the exporter's default opset (at least 18).

        >>> export_model("./qatune-model", "./qatune-openvino", format="openvino")  # doctest: +SKIP
        PosixPath('qatune-openvino/model.xml')
    """
    check_path_argument("model_dir", model_dir)
    check_path_argument("output_dir", output_dir)
    check_export_request(model_dir, format, quantize, calibration=bool(calibration), opset=opset)
    source, target = _check_folders(model_dir, output_dir)
    check_output_folder("output_dir", target)
    check_folder_to_replace("output_dir", target, overwrite=overwrite, source=source, overwrite_name="overwrite=True")
    with replacing_contents(target) as scratch:  # an earlier model stays until the export is complete
        name = _export_into(source, scratch, format, quantize, calibration, opset)
    return target / name


def _export_into(
    source: Path, target: Path, format: str, quantize: str | None, calibration: Sequence[Example] | None, opset: int | None
) -> str:
    """Write the export into the empty folder `target`; the graph's file name."""
    from qatune.modeling import load_qa_model, load_tokenizer

    tokenizer = load_tokenizer(source)
    model = load_qa_model(source).float().eval()
    with tempfile.TemporaryDirectory(prefix=".export-", dir=target) as scratch:
        if format == "onnx":
            graph, entry = _export_onnx(model, tokenizer, Path(scratch), source, quantize, calibration, opset)
        else:
            graph, entry = _export_openvino(model, tokenizer, Path(scratch), source, quantize, calibration)
        _write_companions(source, target, tokenizer, entry)
        _move_float32_graph(Path(scratch), target)
        # the graph comes last, so that a folder with model.onnx / model.xml is always complete
        _move_graph(graph, target / graph.name)
    return graph.name


def check_export_request(
    model_dir: str | Path, format: str, quantize: str | None, *, calibration: bool, opset: int | None
) -> None:
    """Refuse an export that cannot be made as asked (no model folder, format, int8, calibration
    data, opset, the packages it needs) before any work: `qatune export` calls it first of all."""
    _check_source(model_dir)
    _check_format(format)
    _check_quantize(quantize)
    _check_opset(opset)
    if format == "onnx":
        _require("onnx", "onnxscript", *(("onnxruntime",) if quantize else ()), purpose="exporting to ONNX")
    else:
        _require("openvino", purpose="exporting to OpenVINO", hint=OPENVINO_HINT)
    if calibration and format == "onnx":
        raise SettingsError(
            "--calibration: ONNX int8 is dynamic (ONNX Runtime's static int8 kept fewer answers); "
            "calibration is for --format openvino"
        )
    if opset is not None and format != "onnx":
        raise SettingsError(
            f"--opset: an opset is the version of an ONNX graph (model.onnx), for --format onnx; an OpenVINO "
            f"export has none: leave --opset out with --format {format}"
        )
    if quantize and format == "openvino" and not calibration:
        raise SettingsError(
            "--quantize int8 --format openvino: expected calibration questions (--calibration DATA: a few "
            "hundred of your own, e.g. the training file), found none"
        )


def export_onnx(
    model_dir: str | Path, output_dir: str | Path, *, quantize: str | None = None, opset: int | None = None,
    overwrite: bool = False,
) -> Path:
    """`export_model(..., format="onnx")`: model.onnx with float32, or dynamic int8, weights."""
    return export_model(model_dir, output_dir, format="onnx", quantize=quantize, opset=opset, overwrite=overwrite)


def _export_onnx(model, tokenizer, scratch: Path, source: Path, quantize, calibration, opset) -> tuple[Path, dict]:
    from qatune.engines.torch_engine import forward_inputs

    input_names = [name for name in INPUT_NAMES if name in tokenizer.model_input_names and name in forward_inputs(model)]
    graph = scratch / "graph" / ONNX_FILE  # not "float32/": that name is the int8 OpenVINO export's float32 graph
    _export_graph(model, tokenizer, input_names, graph, source, opset)
    entry: dict[str, Any] = {"name": "onnx", "precision": "int8" if quantize else "float32"}
    if quantize == "int8":
        graph, entry["quantization"] = _quantize_onnx(graph, scratch / "int8" / ONNX_FILE, tokenizer, source, calibration)
    entry["opset"] = _opset_of(graph)
    return graph, entry


def _export_openvino(model, tokenizer, scratch: Path, source: Path, quantize, calibration) -> tuple[Path, dict]:
    from qatune.engines import convert_for_openvino
    from qatune.engines.openvino_engine import FLOAT32_FOLDER, save_model

    converted = convert_for_openvino(model, tokenizer, str(source))
    entry: dict[str, Any] = {"name": "openvino", "precision": "int8" if quantize else "float32"}
    if quantize != "int8":
        return save_model(converted, scratch), entry
    quantized, entry["quantization"] = _quantize_openvino(converted, tokenizer, source, calibration)
    # the float32 graph goes with it: close calls are answered again in float32
    (scratch / FLOAT32_FOLDER).mkdir()
    save_model(converted, scratch / FLOAT32_FOLDER)
    return save_model(quantized, scratch), entry


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
    export_dir: str | Path,
    examples: Sequence[Example],
    *,
    data: str | Path | None = None,
    progress: bool = False,
) -> ExportCheck:
    """Answer `examples` with the float32 torch model in `model_dir` and with its export in
    `export_dir`, record the comparison in the export's qatune.json (`engine.check`) and return it.

    `data` names the examples' file in the record and the warning.

        >>> check = compare_with_float32("./qatune-model", "./qatune-onnx", dev, data="dev.json")  # doctest: +SKIP
        >>> check.agreement, check.f1, check.f1_float32, check.warning()  # doctest: +SKIP
        (100.0, 81.2, 81.4, None)
    """
    from qatune.engines import folder_engine
    from qatune.inference import QAModel

    target = Path(export_dir)
    if folder_engine(target) == "torch":
        raise ModelError(
            f"{target}: expected an exported folder (model.onnx or model.xml), found none; export the model "
            f"first with `qatune export MODEL --format onnx|openvino -o DIR` and pass DIR"
        )
    examples = list(examples)
    if not examples:
        raise SettingsError(f"{data or 'examples'}: expected questions to check the export on, found none")
    float32 = QAModel.from_pretrained(model_dir, engine="torch", bf16=False).evaluate(examples, progress=progress)
    exported = QAModel.from_pretrained(target, bf16=False).evaluate(examples, progress=progress)
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


def _check_source(model_dir: str | Path) -> Path:
    source = Path(model_dir)
    if not source.is_dir():
        found = "a file" if source.exists() else "nothing"
        raise ModelError(
            f"{source}: expected a model folder (config.json, model.safetensors, tokenizer files), "
            f"found {found}; pass the folder that `qatune train` wrote"
        )
    check_not_an_export(source, "export from the folder with model.safetensors that `qatune train` wrote")
    return source


def _check_folders(model_dir: str | Path, output_dir: str | Path) -> tuple[Path, Path]:
    source, target = _check_source(model_dir), Path(output_dir)
    if target.exists() and not target.is_dir():
        raise SettingsError(
            f"{target}: expected a folder to write the exported model into, found a file; choose another -o/--output"
        )
    if target.resolve() == source.resolve():
        raise SettingsError(
            f"{target}: the output folder is the model folder itself; an exported graph there would "
            f"replace the torch model when loading it: choose another -o/--output"
        )
    return source, target


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise SettingsError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


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
            f"--opset: expected a whole number of at least {MIN_OPSET} (older opsets cannot express the "
            f"exported graph), found {opset!r}; leave it out to use the exporter's default"
        )


def _require(*modules: str, purpose: str, hint: str = INSTALL_HINT) -> None:
    missing = [name for name in modules if not _importable(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ModelError(f"{purpose} needs {' and '.join(missing)}, which {verb} not installed; {hint}")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _export_graph(model, tokenizer, input_names: list[str], file: Path, source: Path, opset: int | None) -> None:
    import torch

    from qatune.engines.torch_engine import logits_module

    # Two padded pairs: a batch of 2 and a longer sequence, so that neither axis is taken
    # for a constant 1 when torch traces the model
    sample = tokenizer(
        ["What is it?", "Who?"], ["It is an example context.", "Nobody."], padding=True, return_tensors="pt"
    )
    inputs = {name: sample[name] for name in input_names}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    file.parent.mkdir(parents=True)
    # the exporter logs each torchvision operator it skips when torchvision is not installed:
    # nothing this export uses, and nothing a user can act on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # the exporter warns about its own internals; nothing a user can act on
        warnings.filterwarnings("ignore", message=r".*(axis name|treespec|LeafSpec).*")
        try:
            torch.onnx.export(
                logits_module(model),
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


def _quantize_onnx(graph: Path, output: Path, tokenizer, source: Path, calibration) -> tuple[Path, dict]:
    """int8 ONNX, dynamic: ONNX Runtime's static int8 kept fewer answers (51% of all-MiniLM's dev
    answers the same as float32, 82% with the head and feed-forward outputs kept float, against
    84% for dynamic; `qatune.quantize`), so calibration data is not used here."""
    return _quantize_int8(graph, output), {"method": "dynamic"}


def _quantize_openvino(model, tokenizer, source: Path, calibration) -> tuple[Any, dict]:
    """int8 OpenVINO by static calibration (NNCF, the QA head kept float), and the margin under
    which its answers are re-checked in float32, measured on the calibration questions."""
    _require("nncf", purpose="int8 quantization for OpenVINO", hint='install it with `pip install "qatune[int8]"`')
    from qatune import quantize
    from qatune.engines.openvino_engine import OpenVinoEngine
    from qatune.inference import QAModel

    settings = read_settings(source)
    batches = quantize.calibration_batches(calibration, tokenizer, settings)
    with _quiet_root_logger():
        quantized = quantize.quantize_openvino(model, batches)
    questions = list(calibration)[:MARGIN_QUESTIONS]
    answers = [
        QAModel(OpenVinoEngine(graph, precision=precision), tokenizer, settings).predict(questions, top_k=2)
        for graph, precision in ((quantized, "int8"), (model, "float32"))
    ]
    # kept on the logits' own scale: scores divided by the temperature moved by 1/T of it, and
    # answering divides the margin by the temperature again
    measured = quantize.recheck_margin(*answers, null_threshold=settings.null_threshold) * settings.temperature
    # Never below bf16's margin (also on the logits' scale): int8 moves logits at least as much as
    # bf16 rounding does, and a few calibration questions can show no change at all (all-MiniLM
    # calibrated on one question measured 0.0: no re-check, 83% of 72 answers the same as float32;
    # 92% with this floor)
    margin = max(measured, BF16_RECHECK_MARGIN)
    _warn_if_few(len(questions))
    record = {
        "method": "static", "kept_float": ["qa_outputs", "embeddings", "layer norms", "softmax", "GELU"],
        **_calibration_record(calibration, batches), "margin_questions": len(questions),
        "measured_recheck_margin": measured, "recheck_margin": margin,
    }
    return quantized, record


def _warn_if_few(questions: int) -> None:
    if questions < ADVISED_CALIBRATION_QUESTIONS:
        logger.warning(
            "--calibration: %s, fewer than the %d advised; int8's re-check margin measured on so few may miss "
            "answers int8 changes (it is kept at least bf16's, %g): calibrate on a few hundred of your own "
            "questions (the training file does)",
            counted(questions, "question"), ADVISED_CALIBRATION_QUESTIONS, BF16_RECHECK_MARGIN,
        )


def _calibration_record(calibration, batches) -> dict:
    return {
        "calibration_questions": len(calibration),
        "calibration_windows": sum(len(batch["input_ids"]) for batch in batches),
    }


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


def _write_companions(source: Path, target: Path, tokenizer, engine_entry: dict) -> None:
    """Tokenizer files, config.json and qatune.json: what loading the folder needs besides the graph."""
    tokenizer.save_pretrained(target)
    shutil.copyfile(source / "config.json", target / "config.json")
    _write_card(source, target, engine_entry)


def _record_check(target: Path, check: ExportCheck) -> None:
    _write_card(target, target, {**read_model_card(target).get("engine", {}), "check": check.to_dict()})


def _write_card(source: Path, target: Path, engine_entry: dict) -> None:
    """target/qatune.json: the card of `source` (settings, training record) with this `engine`
    entry (name, precision, how it was quantized, how it compared with float32)."""
    card = read_model_card(source)
    extra = {key: value for key, value in card.items() if key not in ("settings", "qatune_version", "onnx", "engine")}
    write_model_card(target, read_settings(source), **extra, engine=engine_entry)
    write_readme(target)


def _move_float32_graph(scratch: Path, target: Path) -> None:
    """An int8 OpenVINO export's float32 graph (for re-checks) into place; a stale one out."""
    from qatune.engines.openvino_engine import FLOAT32_FOLDER

    if (target / FLOAT32_FOLDER).is_dir():
        shutil.rmtree(target / FLOAT32_FOLDER)
    if (scratch / FLOAT32_FOLDER).is_dir():
        os.replace(scratch / FLOAT32_FOLDER, target / FLOAT32_FOLDER)


def _move_graph(exported: Path, destination: Path) -> None:
    """Move the graph into place with its weights file (model.bin beside model.xml; model.onnx.data
    where ONNX keeps large weights apart), the graph last."""
    def weights(graph: Path) -> Path:
        return graph.with_suffix(".bin") if graph.suffix == ".xml" else graph.parent / f"{graph.name}.data"

    if weights(exported).exists():
        os.replace(weights(exported), weights(destination))
    elif weights(destination).exists():
        weights(destination).unlink()  # from an earlier, larger export into the same folder
    os.replace(exported, destination)


__all__ = [
    "export_model", "export_onnx", "compare_with_float32", "ExportCheck", "FORMATS", "QUANTIZE_CHOICES",
    "MIN_AGREEMENT", "MAX_F1_LOSS",
]

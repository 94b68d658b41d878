"""Answering engines: PyTorch, ONNX Runtime and OpenVINO behind one interface (`Engine`).

`load_engine` gives the engine that answers with a model folder:

- `engine="auto"` (the default everywhere) picks, on a CPU, OpenVINO for a folder that
  `qatune train` wrote (its weights converted at the first load and cached by content,
  `qatune.engines.cache`), computing in bf16 where the CPU has bf16 units and re-checking
  close calls in float32, else in float32; the folder's own engine for an export
  (`qatune export --format onnx|openvino`); PyTorch on a GPU, or where openvino is missing
  or cannot convert the model (it says so).
- `engine="torch" | "onnx" | "openvino"` asks for one; a torch folder is converted for onnx
  (needs `qatune[onnx]`) and openvino, cached like auto's conversion.

Each engine lives in a module of its own, imported only when used, so that a user without
onnxruntime or openvino never imports them.

    >>> engine = load_engine("./qatune-model", tokenizer)  # doctest: +SKIP
    >>> engine.describe()                                   # doctest: +SKIP
    'openvino bf16, close calls re-checked in float32'
"""

from __future__ import annotations

import importlib.util
import logging
import re
import tempfile
from pathlib import Path

from qatune.engines import cache
from qatune.engines.base import PRECISIONS, Engine
from qatune.engines.onnx_engine import MODEL_FILE as ONNX_FILE  # numpy only: onnxruntime loads when used
from qatune.engines.openvino_engine import MODEL_FILE as OPENVINO_FILE  # likewise for openvino
from qatune.errors import ModelError, SettingsError, first_line
from qatune.wording import with_article

ENGINES = ("torch", "onnx", "openvino")
ENGINE_CHOICES = ("auto", *ENGINES)
OPENVINO_HINT = "install it with `pip install openvino` (qatune's own install brings it)"
logger = logging.getLogger("qatune")


def folder_engine(folder: str | Path) -> str:
    """The engine a model folder's weights are for: "openvino" (model.xml, an export),
    "onnx" (model.onnx, an export) or "torch" (safetensors weights, or a hub id)."""
    path = Path(folder)
    for kind, graph in EXPORT_GRAPHS.items():
        if (path / graph).is_file():
            return kind
    recorded = _recorded_engine(path)
    if recorded in EXPORT_GRAPHS:  # an export that lost its graph: not a folder of torch weights
        raise ModelError(
            f"{path}: its qatune.json records {with_article(recorded)} export, but the folder has no "
            f"{EXPORT_GRAPHS[recorded]}; copy the whole export folder again, or export the model again (`qatune export`)"
        )
    return "torch"


EXPORT_GRAPHS = {"openvino": OPENVINO_FILE, "onnx": ONNX_FILE}


def _recorded_engine(folder: Path) -> str | None:
    """The engine a folder's qatune.json says its export is for (None: no export recorded)."""
    from qatune.settings import read_model_card

    engine = read_model_card(folder).get("engine") if folder.is_dir() else None
    return engine.get("name") if isinstance(engine, dict) else None


def check_engine_name(engine: str) -> str:
    if engine not in ENGINE_CHOICES:
        raise SettingsError(f"engine must be one of {', '.join(ENGINE_CHOICES)}, got {engine!r}")
    return engine


def check_bf16(bf16: object) -> None:
    """bf16 is None, True or False: a string such as "no" is truthy and would turn bf16 on."""
    if bf16 is not None and not isinstance(bf16, bool):
        raise SettingsError(
            f"bf16 must be None (bf16 where the hardware has fast bf16 units), True or False, got {bf16!r}"
        )


def check_answering_options(engine: str, device: str | None, bf16: object) -> None:
    """The engine, device and bf16 a caller asked for, checked before any loading."""
    check_engine_name(engine)
    check_bf16(bf16)
    _device_type(device)


def load_engine(
    source: str | Path,
    tokenizer,
    *,
    engine: str = "auto",
    device: str | None = None,
    bf16: bool | None = None,
    trust_remote_code: bool = False,
) -> Engine:
    """The engine that answers with the model at `source` (a folder, or a hub id for torch).

    bf16=None computes in bf16 where the device has fast bf16 units (close calls re-checked in
    float32), False in float32, True in bf16; an int8 export re-checks its close calls alike (False:
    directly in float32). `device` (cpu, cuda, cuda:N) is for torch; the other engines run on the CPU.
    """
    check_engine_name(engine)
    check_bf16(bf16)
    device_type = _device_type(device)  # before any loading: a bad value fails at once
    kind = folder_engine(source)
    requested = engine
    if device is None and (kind != "torch" or engine in ("onnx", "openvino")):
        device_type = "cpu"  # no device asked for: these engines answer on the CPU
    if engine == "auto":
        engine = kind
        if kind == "torch" and device_type == "cpu" and _installed("openvino"):
            engine = "openvino"
    if engine != "torch" and device_type != "cpu":
        raise SettingsError(
            f"--device {device}: the {engine} engine runs on the CPU; answer on a GPU with --engine torch "
            f"(from the folder `qatune train` wrote)"
        )
    if kind != "torch" and engine != kind:
        raise ModelError(
            f"{source}: this folder is {with_article(kind)} export, which only the {kind} engine answers; pass "
            f"--engine {kind} (or auto), or the folder `qatune train` wrote for the {engine} engine"
        )
    if kind == "openvino":
        return _exported_openvino(Path(source), bf16)
    if kind == "onnx":
        from qatune.engines.onnx_engine import load_onnx

        return load_onnx(source, precision=_exported_precision(Path(source)))
    if engine == "openvino":
        try:
            return _converted_openvino(source, tokenizer, bf16, trust_remote_code)
        except ConversionFailed as error:
            if requested != "auto":
                raise
            logger.warning("%s; answering with PyTorch instead", first_line(error))
    if engine == "onnx":
        return _converted_onnx(source, tokenizer)
    return _torch_engine(source, device, bf16, trust_remote_code)


def _device_type(device: str | None) -> str:
    """"cpu" or "cuda" for `--device`. torch is imported only where a GPU may be there: the other
    engines answer without it (about 200 MB less memory)."""
    if device == "cpu" or (device is None and not _cuda_possible()):
        return "cpu"
    from qatune.engines.torch_engine import resolve_device

    return resolve_device(device).type


def _cuda_possible() -> bool:
    """Whether torch could see a CUDA GPU here, without importing torch where it is not imported yet:
    torch must be a CUDA build and the NVIDIA driver loaded."""
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:  # a CPU build says `cuda: Optional[str] = None` (older ones `cuda = None`)
        cuda_build = re.search(r"^cuda(: Optional\[str\])? = None", version_file.read_text(), re.MULTILINE) is None
    except OSError:
        cuda_build = True  # cannot tell: ask torch
    return cuda_build and (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists())


def engine_for_model(model, tokenizer, *, bf16: bool | None = None) -> Engine:
    """The engine `auto` would pick for this in-memory torch model once saved: what training
    evaluates with, so that its dev scores are those `qatune evaluate` gives."""
    from qatune.engines.torch_engine import TorchEngine, bf16_supported

    device = next(model.parameters()).device
    if device.type == "cpu" and _installed("openvino"):
        try:
            return _openvino_engine(convert_for_openvino(model, tokenizer, "the model in training"), bf16, "the model in training")
        except ConversionFailed as error:
            logger.warning("%s; evaluating with PyTorch instead", first_line(error))
    return TorchEngine(model, bf16=bf16_supported(device) if bf16 is None else bf16)


def _torch_engine(source, device: str | None, bf16: bool | None, trust_remote_code: bool) -> Engine:
    from qatune.engines.torch_engine import TorchEngine, bf16_supported, resolve_device
    from qatune.modeling import load_qa_model

    target = resolve_device(device)
    model = load_qa_model(source, trust_remote_code=trust_remote_code).to(target).eval()
    return TorchEngine(model, bf16=bf16_supported(target) if bf16 is None else bf16)


def _openvino_engine(model, bf16: bool | None, where: str) -> Engine:
    from qatune.engines.openvino_engine import OpenVinoEngine, bf16_is_native

    precision = "bf16" if (bf16_is_native() if bf16 is None else bf16) else "float32"
    return OpenVinoEngine(model, precision=precision, where=where)


def _exported_openvino(folder: Path, bf16: bool | None) -> Engine:
    if not _installed("openvino"):
        raise ModelError(
            f"{folder}: answering with an OpenVINO export needs openvino, which is not installed; {OPENVINO_HINT}"
        )
    from qatune.engines.openvino_engine import MODEL_FILE, OpenVinoEngine

    if _exported_precision(folder) != "int8":
        return _openvino_engine(folder / MODEL_FILE, bf16, str(folder))
    margin, exact = _int8_recheck(folder)
    return OpenVinoEngine(
        folder / MODEL_FILE, precision="int8", where=str(folder), float32_model=exact, recheck_margin=margin,
        recheck_bf16=bf16,
    )


def _int8_recheck(folder: Path) -> tuple[float, Path | None]:
    """The re-check margin an int8 export's qatune.json records, and the float32 graph that
    answers its close calls again (None where there is none and nothing to re-check)."""
    from qatune.engines.openvino_engine import FLOAT32_FOLDER, MODEL_FILE
    from qatune.settings import read_model_card

    quantization = (read_model_card(folder).get("engine") or {}).get("quantization") or {}
    margin = float(quantization.get("recheck_margin", 0.0))
    exact = folder / FLOAT32_FOLDER / MODEL_FILE
    if exact.is_file():
        return margin, exact
    if margin > 0:  # answering without it would give other answers than those the export measured
        raise ModelError(
            f"{exact}: expected the float32 graph that re-checks this int8 export's close calls (its qatune.json "
            f"records recheck_margin {margin:.3g}), found none; copy the whole export folder, {FLOAT32_FOLDER}/ "
            f"included, or export the model again with `qatune export MODEL --format openvino --quantize int8 "
            f"--calibration DATA -o DIR`"
        )
    return margin, None


def _converted_openvino(source, tokenizer, bf16: bool | None, trust_remote_code: bool) -> Engine:
    if not _installed("openvino"):
        raise ModelError(f"{source}: the openvino engine needs openvino, which is not installed; {OPENVINO_HINT}")
    import openvino

    from qatune.engines.openvino_engine import MODEL_FILE, save_model
    from qatune.modeling import load_qa_model

    converted = []  # converted once: for the cache entry, and to answer with where the cache cannot keep it

    def convert():
        if not converted:
            model = load_qa_model(source, trust_remote_code=trust_remote_code)
            converted.append(convert_for_openvino(model, tokenizer, str(source)))
        return converted[0]

    if not Path(source).is_dir():  # a hub id: nothing on disk to key a cache entry by
        return _openvino_engine(convert(), bf16, str(source))
    try:
        return _cached_engine(
            source, tokenizer, "openvino", openvino.__version__,
            complete=lambda folder: (folder / MODEL_FILE).is_file() and (folder / "model.bin").is_file(),
            write=lambda folder: save_model(convert(), folder),
            load=lambda entry: _openvino_engine(entry / MODEL_FILE, bf16, str(source)),
        )
    except cache.CacheNotWritable as error:
        _warn_answering_without_cache(error, "converted in memory")
        return _openvino_engine(convert(), bf16, str(source))


def _cached_engine(source, tokenizer, engine: str, converter: str, *, complete, write, load) -> Engine:
    """The engine `load` makes of the cache entry for this model, tokenizer inputs and converter
    (`qatune.engines.cache`), written by `write` where it is not there yet."""
    from qatune import __version__
    from qatune.features import default_cache_dir

    inputs = ",".join(tokenizer.model_input_names)  # the graph takes these: another tokenizer, another graph
    key = cache.content_key(Path(source), engine, converter, __version__, inputs)
    return cache.load_entry(default_cache_dir() / engine, key, complete=complete, write=write, load=load)


def _warn_answering_without_cache(error: cache.CacheNotWritable, instead: str) -> None:
    logger.warning(
        "%s; answering with the model %s, converted again at every load: set $QATUNE_CACHE to a writable folder",
        error, instead,
    )


class ConversionFailed(ModelError):
    """OpenVINO could not convert a model that PyTorch loads: `auto` answers with PyTorch then."""


def convert_for_openvino(model, tokenizer, where: str):
    """An OpenVINO model of a torch QA model, or ConversionFailed naming `where`."""
    from qatune.engines.openvino_engine import convert_torch_model

    try:
        return convert_torch_model(model, tokenizer)
    except Exception as error:  # the converter raises many kinds of errors for models it cannot trace
        raise ConversionFailed(
            f"{where}: OpenVINO cannot convert this model ({type(model).__name__}): {first_line(error)}"
        ) from None


def _converted_onnx(source, tokenizer) -> Engine:
    from qatune.engines.onnx_engine import load_onnx
    from qatune.export import export_onnx

    if not Path(source).is_dir():
        raise ModelError(f"{source}: the onnx engine answers a model folder; download the model into a folder first")
    try:
        return _cached_engine(
            source, tokenizer, "onnx", _versions("torch", "onnxscript", "onnx"),
            complete=lambda folder: (folder / ONNX_FILE).is_file(),
            write=lambda folder: export_onnx(source, folder),
            load=load_onnx,
        )
    except cache.CacheNotWritable as error:
        _warn_answering_without_cache(error, "exported into a temporary folder")
        return _onnx_from_a_temporary_folder(source, error.root)


def _onnx_from_a_temporary_folder(source, cache_root: Path) -> Engine:
    from qatune.engines.onnx_engine import load_onnx
    from qatune.export import export_onnx

    try:
        with tempfile.TemporaryDirectory(prefix="qatune-onnx-") as folder:
            export_onnx(source, folder)
            return load_onnx(folder)  # ONNX Runtime holds the graph in memory: the folder can go
    except OSError as error:
        raise ModelError(
            f"{source}: the onnx engine converts the model into the engine cache {cache_root} or a temporary "
            f"folder, and neither can be written ({first_line(error)}); set $QATUNE_CACHE to a writable folder"
        ) from None


def _versions(*packages: str) -> str:
    """The installed versions of `packages`, e.g. "torch 2.9.0, onnx 1.19.1" (without importing them)."""
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "none"

    return ", ".join(f"{package} {version(package)}" for package in packages)


def _exported_precision(folder: Path) -> str:
    """The precision an export's qatune.json records (float32 when it says nothing)."""
    from qatune.settings import read_model_card

    card = read_model_card(folder)
    entry = card.get("engine") or {}
    if not entry and card.get("onnx", {}).get("quantize") == "int8":  # written before `engine` existed
        return "int8"
    precision = entry.get("precision", "float32")
    return precision if precision in PRECISIONS else "float32"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


__all__ = [
    "Engine", "ENGINES", "ENGINE_CHOICES", "load_engine", "engine_for_model", "folder_engine", "check_engine_name",
]

"""int8 answering: static post-training quantization calibrated on the user's own data, and
the float32 re-check of close calls that keeps int8 answers those of float32.

    >>> batches = calibration_batches(train, tokenizer, settings)           # doctest: +SKIP
    >>> int8 = quantize_openvino(ov_model, batches)                          # doctest: +SKIP
    >>> margin = recheck_margin(int8_train_decoded, float32_train_decoded)   # doctest: +SKIP

What was measured (all-MiniLM-L6-v2 QA model trained by qatune on 1,007 SQuAD questions,
F1 40.0 in float32; calibration on its 1,007 training questions; agreement with float32 and
F1 on 477 held-out dev questions; speed on 2 shared Xeon cores with AMX, so only ratios
within one run mean something).

int8 alone does not keep the answers of this model. Its answers are close calls (F1 40; half
the dev questions have a runner-up within a log-ratio of 0.5), and even bf16 changes 2.5% of
them. What each int8 variant kept (windows/s of f32 and bf16 OpenVINO measured in the same run):

    method (calibrated on 300 training windows)      kept float            agree   F1 (f32 40.04)
    OpenVINO bf16 (no int8, for scale)                -                     97.5%   40.54
    NNCF static, MIXED, SmoothQuant default           nothing               87.6%   41.12
    NNCF static, same                                 QA head               87.6%   41.12
    NNCF static, same                                 QA head, L5 FFN out   88.1%   41.02
    ONNX Runtime dynamic, per channel, reduce range   -                     83.7%   40.58
    ONNX Runtime static QDQ, per channel, MinMax      nothing               51.2%   34.01
    ONNX Runtime static QDQ, same                     QA head, all FFN out  82.4%   40.28
    NNCF static (QA head float) + float32 re-check    QA head               98.3%   39.61
      of the 32.5% of questions with margin < 0.30 (picked on training data, catch=0.9)

Embeddings, layer norms, softmax and GELU stay float in every variant (NNCF's transformer
preset quantizes only the MatMul inputs). Keeping the QA head float costs nothing measurable
and keeps the logits from int8 steps, so it is the default; keeping the last FFN output
float gained 0.4 points of agreement for a third less speed, so it is not. Speed on 2 shared
cores with AMX: NNCF int8 ran 39 windows/s against 18 for OpenVINO f32 and 55 for bf16, so
int8 + re-check (about 23 windows/s) beats float32 only by ~1.3x, and bf16 (with the
float32 re-check `QAModel.predict` already does) is both faster and closer on CPUs with AMX.
ONNX Runtime int8 was slower than ONNX Runtime float32 here and kept fewer answers.
On an AMD EPYC without AMX (AVX-512 bf16 and VNNI) the int8 engine is 1.5x the bf16 one, but
int8 re-checks 46% of the dev questions; answered again in bf16 (whose own close calls go on
to float32) instead of float32, the same answers come 1.3x sooner, still behind bf16 alone.
"""

from __future__ import annotations

import io
import logging
import math
from contextlib import contextmanager, redirect_stdout
from typing import Iterable, Iterator, Sequence

import numpy as np

from qatune.batching import pad_windows
from qatune.decoding import Decoded, best_answer, close_call_margin
from qatune.errors import ModelError, SettingsError
from qatune.features import make_windows

INSTALL_HINT = 'install the int8 extras with `pip install "qatune[int8]"` (nncf and openvino)'
# The QA head (hidden size -> 2 logits) is kept float: it is a sliver of the work, and int8
# steps in the logits themselves would move every close answer.
QA_HEAD = "qa_outputs"


def calibration_batches(
    examples: Sequence, tokenizer, settings, *, limit: int = 300, batch_size: int = 16
) -> list[dict[str, np.ndarray]]:
    """Padded batches of at most `limit` windows of `examples`, for calibrating int8 ranges.

    The windows are picked evenly spaced over all the examples' windows (the same examples
    give the same batches), then batched by length, as answering batches them, so that the
    calibration sees lengths and padding like those answering sees.

        >>> batches = calibration_batches(train, tokenizer, settings, limit=300)  # doctest: +SKIP
        >>> len(batches), sorted(batches[0])                                      # doctest: +SKIP
        (19, ['attention_mask', 'input_ids', 'token_type_ids'])
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SettingsError(f"limit must be a whole number of at least 1 (calibration windows), got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    examples = list(examples)
    if not examples:
        raise SettingsError("calibration: expected examples to calibrate int8 ranges on, found none; pass training data")
    windows = make_windows(examples, tokenizer, settings)
    count = len(windows)
    picked = np.unique(np.linspace(0, count - 1, num=min(limit, count)).round().astype(np.int64))
    picked = picked[np.argsort(windows.lengths[picked], kind="stable")]
    pad = tokenizer.pad_token_id or 0
    return [pad_windows(windows, picked[i : i + batch_size], pad) for i in range(0, len(picked), batch_size)]


def quantize_openvino(
    model,
    calibration: Iterable[dict[str, np.ndarray]],
    *,
    keep_float: Sequence[str] = (QA_HEAD,),
    smooth_quant_alpha: float | None = None,
):
    """An int8 copy of an OpenVINO model (`openvino.Model`), calibrated on `calibration` batches
    with NNCF's post-training static quantization (transformer preset: int8 weights, one
    scale per output channel; int8 activations with ranges measured on the batches).

    `keep_float`: module names (parts of the node names, e.g. "qa_outputs",
    "encoder.layer.5.output.dense") whose matrix multiplications stay float.
    `smooth_quant_alpha`: NNCF's SmoothQuant strength for MatMuls (None: NNCF's default,
    -1 turns it off). The model given is not changed.

        >>> int8 = quantize_openvino(ov.convert_model(...), calibration_batches(train, tok, settings))  # doctest: +SKIP
    """
    nncf = _import_nncf()
    batches = [dict(batch) for batch in calibration]
    if not batches:
        raise SettingsError("calibration: expected at least one batch of windows, found none")
    names = [name for name in _matmul_names(model) if any(_module_path(part) in name for part in keep_float)]
    missing = [part for part in keep_float if not any(_module_path(part) in name for name in names)]
    if missing:
        raise SettingsError(
            f"keep_float: no matrix multiplication of the model belongs to {', '.join(map(repr, missing))}; "
            f"name modules as in the torch model (e.g. 'qa_outputs', 'encoder.layer.5.output.dense')"
        )
    inputs = [parameter.get_any_name() for parameter in model.inputs]
    dataset = nncf.Dataset([{name: batch[name] for name in inputs} for batch in batches])
    advanced = {}
    if smooth_quant_alpha is not None:
        advanced["advanced_parameters"] = nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=smooth_quant_alpha)
        )
    with _quiet():
        return nncf.quantize(
            model.clone(),
            dataset,
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(batches),
            ignored_scope=nncf.IgnoredScope(names=names) if names else None,
            **advanced,
        )


def recheck_margin(
    quantized: Sequence[Decoded],
    reference: Sequence[Decoded],
    *,
    catch: float = 0.9,
    null_threshold: float = 1.0,
) -> float:
    """The smallest margin that, on calibration questions, sends to a float32 re-check at least
    `catch` of the questions whose int8 answer differs from float32.

    `quantized` and `reference` decode the same questions (top_k >= 2) with the int8 and the
    float32 model. Answer later with int8 and re-answer in float32 every question whose
    `close_call_margin` is below the returned margin. 0.0 when int8 changed no answer.

        >>> recheck_margin(int8_train_decoded, float32_train_decoded)  # doctest: +SKIP
        0.303

    catch=0.9 because a model is surer of its own training data than of new questions: int8
    changed 6% of the training answers but 12% of the held-out ones, so the margin that
    catches 90% of the training flips (0.30) caught all but 1.7% of the held-out ones.
    """
    if len(quantized) != len(reference):
        raise SettingsError(
            f"recheck_margin: expected the same questions decoded twice, got {len(quantized)} int8 "
            f"and {len(reference)} float32 results"
        )
    if not 0.0 < catch <= 1.0:
        raise SettingsError(f"catch must be a fraction in (0, 1] (of changed answers to re-check), got {catch!r}")
    flipped = [
        close_call_margin(q, null_threshold)
        for q, r in zip(quantized, reference)
        if _answer_text(q, null_threshold) != _answer_text(r, null_threshold)
    ]
    if not flipped:
        return 0.0
    kth = np.sort(np.asarray(flipped, dtype=np.float64))[math.ceil(catch * len(flipped)) - 1]
    return float(np.nextafter(kth, np.inf))  # strictly above: "below the margin" re-checks it


def _answer_text(decoded: Decoded, null_threshold: float) -> str:
    answer = best_answer(decoded, null_threshold)
    return "" if answer is None else answer.text


def _module_path(name: str) -> str:
    """A torch module name as it appears in OpenVINO node names converted from torch."""
    return f".{name.strip('.')}/"


def _matmul_names(model) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"]


@contextmanager
def _quiet() -> Iterator[None]:
    """NNCF logs through its `nncf` logger and draws progress bars on stdout; the library prints nothing."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _import_nncf():
    try:
        import nncf
    except ImportError:
        raise ModelError(f"int8 quantization needs nncf, which is not installed; {INSTALL_HINT}") from None
    return nncf

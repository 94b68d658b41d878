"""A smaller student from a model: keep K of its transformer layers, evenly spaced.

DistilBERT began this way: a student built from one layer in two of its teacher, then trained
(with distillation: `train(..., teacher=...)`). The first and the last layer are always kept and
the others spread evenly between them (12 -> 6 keeps 0, 2, 4, 7, 9, 11); embeddings, the
question-answering head and the tokenizer are the teacher's. The result is a plain model
folder, with the teacher's `qatune.json` settings.

    >>> shrink_model("my-model", "my-model-3", layers=3)        # doctest: +SKIP
    ShrinkResult(kept_layers=[0, 2, 5], parameters_before=22713602, parameters_after=..., ...)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qatune.errors import ModelError, SettingsError

# Where encoders keep their layers (a ModuleList) and how their configs count them.
LAYER_LISTS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "num_layers")


@dataclass(frozen=True)
class ShrinkResult:
    output_dir: Path
    kept_layers: list[int]
    layers_before: int
    parameters_before: int
    parameters_after: int


def kept_layers(total: int, keep: int) -> list[int]:
    """K of `total` layer indices, evenly spaced, the first and the last included.

        >>> kept_layers(12, 6), kept_layers(6, 3), kept_layers(6, 1)
        ([0, 2, 4, 7, 9, 11], [0, 2, 5], [5])
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= total:
        raise SettingsError(f"layers must be a whole number from 1 to the model's {total} layers, got {keep!r}")
    if keep == 1:
        return [total - 1]
    return [int(index) for index in np.round(np.linspace(0, total - 1, keep))]


def shrink_model(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    layers: int,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> ShrinkResult:
    """Write a student of `model_dir` with `layers` of its layers to `output_dir`: a new or empty
    folder, or, with overwrite=True, one holding an earlier model, which the student replaces
    whole once it is complete."""
    from qatune.files import check_folder_to_replace, check_output_folder, check_path_argument, replacing_contents
    from qatune.modeling import locate_model

    check_path_argument("model_dir", model_dir)
    check_path_argument("output_dir", output_dir)
    source = locate_model(model_dir)
    output = Path(output_dir)
    if output.resolve() == Path(source).resolve():
        raise SettingsError(f"the student would overwrite its teacher: pass another output folder than {source}")
    check_output_folder("output_dir", output)
    check_folder_to_replace("output_dir", output, overwrite=overwrite, source=source, overwrite_name="overwrite=True")
    with replacing_contents(output) as scratch:  # an earlier model stays until the student is complete
        result = _write_student(source, scratch, layers, trust_remote_code)
    return dataclasses.replace(result, output_dir=output)


def _write_student(source: str | Path, output: Path, layers: int, trust_remote_code: bool) -> ShrinkResult:
    import torch

    from qatune.files import with_default_permissions
    from qatune.modelcard import write_readme
    from qatune.modeling import load_qa_model, load_tokenizer
    from qatune.settings import QASettings, read_model_card, read_settings, write_model_card

    model = load_qa_model(source, trust_remote_code=trust_remote_code)
    before = sum(parameter.numel() for parameter in model.parameters())
    name, layer_list = _layer_list(model)
    total = len(layer_list)
    kept = kept_layers(total, layers)
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], torch.nn.ModuleList(layer_list[i] for i in kept))
    for key in LAYER_COUNT_KEYS:
        if hasattr(model.config, key):
            setattr(model.config, key, len(kept))
    _renumber_attention_layers(model)
    after = sum(parameter.numel() for parameter in model.parameters())

    model.save_pretrained(output, safe_serialization=True)
    with_default_permissions(*output.glob("*.safetensors"))
    load_tokenizer(source, trust_remote_code=trust_remote_code).save_pretrained(output)
    card = read_model_card(source) if Path(source).is_dir() else {}
    extra = {key: value for key, value in card.items() if key in ("base_model",)}
    # the windows stay; the threshold and temperature were the teacher's: the student's come from its own training
    settings = dataclasses.replace(read_settings(source) if Path(source).is_dir() else QASettings(), null_threshold=1.0, temperature=1.0)
    write_model_card(
        output,
        settings,
        **extra,
        shrunk_from={"model": str(source), "layers": total, "kept_layers": kept, "parameters": before},
    )
    write_readme(output)
    return ShrinkResult(output, kept, total, before, after)


def _layer_list(model):
    """The encoder's list of layers (its name and the ModuleList), found where encoders keep it."""
    import torch

    count = next((getattr(model.config, key) for key in LAYER_COUNT_KEYS if hasattr(model.config, key)), None)
    base = getattr(model, model.base_model_prefix, model)
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    for path in LAYER_LISTS:
        try:
            found = base.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, torch.nn.ModuleList) and (count is None or len(found) == count):
            return prefix + path, found
    raise ModelError(
        f"cannot find the layers of this {type(model).__name__}: expected a list of {count} layers at one of "
        f"{', '.join(LAYER_LISTS)} under its encoder; qatune shrink handles BERT-family encoders"
    )


def _renumber_attention_layers(model) -> None:
    """Layers that know their own index (for caches) are told their new one."""
    for number, layer in enumerate(_layer_list(model)[1]):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = number


__all__ = ["ShrinkResult", "kept_layers", "shrink_model"]

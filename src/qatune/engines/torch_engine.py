"""The PyTorch engine: a transformers question-answering model, float32 or bf16 autocast.

It answers on any device torch has (the only engine for CUDA) and is what training
evaluates with where no other engine is installed. On a CPU, the engines made for inference
(OpenVINO) pack the weights once and fuse attention, layer norm and GELU; PyTorch eager
does neither, which is why `auto` prefers them there (BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import torch

from qatune.engines.base import BF16_RECHECK_MARGIN, Engine
from qatune.errors import SettingsError


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on fast bf16 units of this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


DEVICE_CHOICES = "cpu, cuda or cuda:N (N: a GPU number, from 0)"


def resolve_device(device: str | None) -> torch.device:
    """The torch device for `--device` (None: cuda where available, else cpu), checked here so
    that a bad value is a SettingsError, not torch's error at the first tensor moved.

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    value = str(device)
    kind, _, number = value.partition(":")
    if not (value in ("cpu", "cuda") or (kind == "cuda" and number.isascii() and number.isdecimal())):
        raise SettingsError(f"--device: expected {DEVICE_CHOICES}, got {value!r}")
    problem = None if kind == "cpu" else _cuda_problem(int(number or 0))
    if problem:
        raise SettingsError(f"--device: expected {DEVICE_CHOICES}, got {value!r}, but {problem}")
    return torch.device(value)


def _cuda_problem(index: int) -> str | None:
    """Why CUDA device `index` cannot be used here, or None when it can."""
    if not torch.cuda.is_available():
        reason = "this PyTorch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        return f"CUDA is not available here ({reason}); use --device cpu"
    count = torch.cuda.device_count()
    if index >= count:
        names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''} ({names})"
    return None



class TorchEngine(Engine):
    """Logits from a torch model (kept as it is: training mode and all are restored after a call).

        >>> engine = TorchEngine(model, bf16=False)                         # doctest: +SKIP
        >>> engine.logits({"input_ids": ids, "attention_mask": mask})[0].shape  # doctest: +SKIP
        (2, 12)
    """

    name = "torch"

    def __init__(self, model, *, bf16: bool = False) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.precision = "bf16" if bf16 else "float32"
        self.recheck_margin = BF16_RECHECK_MARGIN if bf16 else 0.0
        self._input_names = forward_inputs(model)
        self._float32: TorchEngine | None = None if bf16 else self

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._input_names

    def float32(self) -> "TorchEngine":
        if self._float32 is None:
            self._float32 = TorchEngine(self.model, bf16=False)
        return self._float32

    @torch.inference_mode()
    def logits(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        bf16 = self.precision == "bf16"
        was_training = self.model.training
        self.model.eval()
        head_hook = _float32_qa_head(self.model) if bf16 else None
        try:
            tensors = {
                name: torch.from_numpy(array).to(self.device)
                for name, array in inputs.items()
                if name in self._input_names
            }
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                output = self.model(**tensors)
            return output.start_logits.float().cpu().numpy(), output.end_logits.float().cpu().numpy()
        finally:
            self.model.train(was_training)
            if head_hook is not None:
                head_hook.remove()


def forward_inputs(model) -> tuple[str, ...]:
    """The token inputs the model's forward takes (DistilBERT has no token_type_ids)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a LoRA-wrapped model's own
    parameters = inspect.signature(base.forward).parameters
    return tuple(name for name in ("input_ids", "attention_mask", "token_type_ids") if name in parameters)


def _float32_qa_head(model):
    """Compute the QA head (hidden size -> 2 logits) in float32 under bf16 autocast.

    The encoder's last layer norm gives float32 hidden states; a bf16 head would round the
    logits to 8 bits of mantissa (steps of 1/64 near 3) and flip close answers. The head is
    a sliver of the work. Returns the hook's handle, or None for a model without `qa_outputs`.
    """
    head = getattr(model, "qa_outputs", None)
    if not isinstance(head, torch.nn.Linear):
        return None

    def float32_output(module, inputs, output):
        bias = None if module.bias is None else module.bias.float()
        with torch.autocast(output.device.type, enabled=False):
            return torch.nn.functional.linear(inputs[0].float(), module.weight.float(), bias)

    return head.register_forward_hook(float32_output)


def logits_module(model) -> torch.nn.Module:
    """The model as a module of plain tensors returning (start_logits, end_logits): what the
    ONNX exporter and OpenVINO's converter take."""

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra, return_dict=True)
            return output.start_logits, output.end_logits

    return LogitsOnly().eval()

#!/usr/bin/env bash
# Create (or reuse) the virtual environment that runs the inference reference:
# transformers 4.x, whose `pipeline("question-answering")` transformers 5 no longer has.
# torch comes from the system site-packages, so the reference runs the same torch build
# as qatune. Safe to run again: an environment that already works is left as it is.
#
#     bash benchmarks/setup_reference_env.sh          # prints the environment's python
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${QATUNE_REFERENCE_VENV:-$here/.venv-tf4}"
python_bin="${PYTHON:-python}"
requirement='transformers>=4.57,<5'

check() {
    # Imports torch and the 4.x pipeline, then answers one question on the CPU with a
    # tiny randomly initialised model, so a broken install is caught here, not mid-benchmark.
    "$venv/bin/python" - <<'PY'
import tempfile

import torch
import transformers
from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast, pipeline

major = int(transformers.__version__.split(".")[0])
if major != 4:
    raise SystemExit(f"expected transformers 4.x in the reference environment, found {transformers.__version__}")
with tempfile.TemporaryDirectory() as folder:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "who", "wrote", "it", "ada", "?", "."]
    with open(f"{folder}/vocab.txt", "w") as handle:
        handle.write("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=f"{folder}/vocab.txt")
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)
    model = BertForQuestionAnswering(config)
    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1)
    answer = qa(question="who wrote it?", context="ada wrote it.")
print(f"reference environment ok: transformers {transformers.__version__}, torch {torch.__version__}, answer keys {sorted(answer)}")
PY
}

if [[ -x "$venv/bin/python" ]] && check >/dev/null 2>&1; then
    echo "reference environment already set up: $venv" >&2
else
    "$python_bin" -m venv --system-site-packages "$venv"
    # pip's constraint files (if any) apply here too; torch is not reinstalled.
    "$venv/bin/python" -m pip install --quiet "$requirement"
    check >&2
fi
echo "$venv/bin/python"

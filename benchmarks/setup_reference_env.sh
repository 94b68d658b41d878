#!/usr/bin/env bash
# Create (or reuse) the virtual environment that runs the inference reference:
# transformers 4.x, whose `pipeline("question-answering")` transformers 5 no longer has.
#
# torch is shared with the environment that runs this script (the one qatune is installed
# in), so that the reference runs the same torch build as qatune. The reference environment
# is a plain virtual environment (no --system-site-packages: from inside a venv that option
# reaches the *base* interpreter's packages, not the venv's, and there may be no torch there).
# transformers 4.x and its dependencies are installed into it first; then a `.pth` file in its
# site-packages appends the invoking interpreter's site-packages directories to sys.path.
# The reference environment's own packages come first on sys.path, so its transformers 4.x
# shadows the invoking environment's transformers 5, while torch (not installed here) is found
# in the invoking environment. Safe to run again: an environment that works is reused (its
# `.pth` is rewritten if it pointed at another environment's site-packages).
#
#     bash benchmarks/setup_reference_env.sh                  # prints the environment's python
#     PYTHON=/path/to/venv/bin/python bash benchmarks/setup_reference_env.sh
#
# PYTHON: the interpreter whose torch to share (default: `python` on PATH; run.py passes its own).
# QATUNE_REFERENCE_VENV: where the environment goes (default: benchmarks/.venv-tf4).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${QATUNE_REFERENCE_VENV:-$here/.venv-tf4}"
python_bin="${PYTHON:-python}"
requirement='transformers>=4.57,<5'
pth_name='qatune-shared-site-packages.pth'

if ! torch_version="$("$python_bin" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
    echo "error: $python_bin ($(command -v "$python_bin" || echo 'not found')) cannot import torch;" \
         "run this script with the python of the environment qatune is installed in" \
         "(PYTHON=/path/to/venv/bin/python)" >&2
    exit 1
fi
python_exe="$("$python_bin" -c 'import sys; print(sys.executable)')"

# The invoking interpreter's site-packages: its own (purelib, platlib), those it reaches (a venv
# made with --system-site-packages reaches its base's) and the user's site-packages if enabled.
shared_dirs="$("$python_bin" - "$venv" <<'PY'
import os
import site
import sys
import sysconfig

venv = os.path.realpath(sys.argv[1])
paths = sysconfig.get_paths()
candidates = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
if site.ENABLE_USER_SITE:
    candidates.append(site.getusersitepackages())
kept = []
for folder in candidates:
    folder = os.path.realpath(folder)
    if os.path.isdir(folder) and folder not in kept and not folder.startswith(venv + os.sep):
        kept.append(folder)
print("\n".join(kept))
PY
)"

write_pth() {
    # One directory a line: `site` appends each to sys.path after the environment's own
    # site-packages. Rewritten only when it differs, so that a working environment is untouched.
    local site_packages
    site_packages="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    local wanted="# written by benchmarks/setup_reference_env.sh: share torch with $python_exe"$'\n'"$shared_dirs"
    if [[ ! -f "$site_packages/$pth_name" ]] || [[ "$(cat "$site_packages/$pth_name")" != "$wanted" ]]; then
        printf '%s\n' "$wanted" > "$site_packages/$pth_name"
    fi
}

check() {
    # Imports torch (the invoking environment's build) and the 4.x pipeline, then answers one
    # question on the CPU with a tiny randomly initialised model, so a broken install is caught
    # here, not mid-benchmark.
    EXPECTED_TORCH="$torch_version" "$venv/bin/python" - <<'PY'
import os
import tempfile

import torch
import transformers
from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast, pipeline

major = int(transformers.__version__.split(".")[0])
if major != 4:
    raise SystemExit(f"expected transformers 4.x in the reference environment, found {transformers.__version__}")
if torch.__version__ != os.environ["EXPECTED_TORCH"]:
    raise SystemExit(f"expected the invoking environment's torch {os.environ['EXPECTED_TORCH']}, "
                     f"found torch {torch.__version__} at {torch.__file__}")
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
print(f"reference environment ok: transformers {transformers.__version__}, torch {torch.__version__} "
      f"({os.path.dirname(os.path.dirname(torch.__file__))}), answer keys {sorted(answer)}")
PY
}

if [[ -x "$venv/bin/python" ]] && write_pth && check >/dev/null 2>&1; then
    echo "reference environment already set up: $venv (torch $torch_version shared with $python_exe)" >&2
else
    if [[ -e "$venv" && ! -f "$venv/pyvenv.cfg" ]] && [[ -n "$(ls -A "$venv")" ]]; then
        echo "error: $venv exists and is not a virtual environment; set QATUNE_REFERENCE_VENV to a new folder" >&2
        exit 1
    fi
    # A fresh environment without the invoking one's packages, so that pip installs
    # transformers 4.x with all of its dependencies here (and never touches the invoking
    # environment); the `.pth` that shares torch is written after the install.
    "$python_bin" -m venv --clear "$venv"
    # pip's constraint files (if any) apply here too; torch is not installed here.
    "$venv/bin/python" -m pip install --quiet "$requirement"
    write_pth
    check >&2
fi
echo "$venv/bin/python"

"""Where the commands write: every output path is checked before any slow work, and a model
folder that holds something is replaced only with --overwrite, and only once the new model is complete.

The rule: an output file must go into a folder that exists (qatune creates none for it); an output
folder (a model, `evaluate --output`) is created with its parents.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import TINY_QA
from qatune.cli import main
from test_cli_model import qatune

# The model and the data do not exist: had either been read first, the error would be about it.
BAD_OUTPUTS = [
    pytest.param(["predict", "{no_model}", "{no_data}", "-o", "{missing}/p.json"],
     "-o/--output: folder {missing} does not exist; create it or choose another path", id="predict -o, missing folder"),
    pytest.param(["predict", "{no_model}", "{no_data}", "-o", "{tmp}"],
     "-o/--output: {tmp} is a folder; give the path of a file to write (inside it or elsewhere)", id="predict -o, a folder"),
    pytest.param(["predict", "{no_model}", "{no_data}", "-o", "{tmp}/p.json", "--na-probs", "{missing}/na.json"],
     "--na-probs: folder {missing} does not exist; create it or choose another path", id="predict --na-probs"),
    pytest.param(["predict", "{no_model}", "{no_data}", "-o", "{tmp}/p.json", "--details", "{file}/d.json"],
     "--details: cannot write {file}/d.json: {file} is a file, not a folder; choose another path", id="predict --details, under a file"),
    pytest.param(["evaluate", "{no_model}", "{no_data}", "--report", "{missing}/r.html"],
     "--report: folder {missing} does not exist; create it or choose another path", id="evaluate --report"),
    pytest.param(["evaluate", "{no_model}", "{no_data}", "--output", "{file}/eval"],
     "--output: cannot create {file}/eval: {file} is a file, not a folder; choose another path", id="evaluate --output, under a file"),
    pytest.param(["report", "{no_model}", "--data", "{no_data}", "-o", "{missing}/r.html"],
     "-o/--output: folder {missing} does not exist; create it or choose another path", id="report -o"),
    pytest.param(["train", "{no_data}", "--model", "{no_model}", "--output", "{file}"],
     "--output: {file} is a file, not a folder; choose another path", id="train --output, a file"),
    pytest.param(["train", "{no_data}", "--model", "{no_model}", "--output", "{tmp}/m", "--report", "{missing}/r.html"],
     "--report: folder {missing} does not exist; create it or choose another path", id="train --report"),
    pytest.param(["export", "{no_model}", "--format", "onnx", "-o", "{file}/onnx", "--dev", "{no_data}"],
     "-o/--output: cannot create {file}/onnx: {file} is a file, not a folder; choose another path", id="export -o, under a file"),
    pytest.param(["shrink", "{no_model}", "--layers", "1", "-o", "{file}/student"],
     "-o/--output: cannot create {file}/student: {file} is a file, not a folder; choose another path", id="shrink -o, under a file"),
    # an output that would replace the data read, or another output of the same command
    pytest.param(["predict", "{no_model}", "{file}", "-o", "{file}"],
     "-o/--output: {file} is the data file itself, which this would replace; write to another file", id="predict -o DATA"),
    pytest.param(["predict", "{no_model}", "{no_data}", "-o", "{tmp}/same.json", "--na-probs", "{tmp}/./same.json"],
     "--na-probs: {tmp}/./same.json is also the -o/--output file; give each output a file of its own", id="predict -o X --na-probs X"),
    pytest.param(["predict", "{no_model}", "{file}", "-o", "{tmp}/p.json", "--details", "{link}"],
     "--details: {link} is the data file itself, which this would replace; write to another file", id="predict --details, a link to DATA"),
    pytest.param(["evaluate", "{no_model}", "{file}", "--report", "{file}"],
     "--report: {file} is the data file itself, which this would replace; write to another file", id="evaluate --report DATA"),
    pytest.param(["evaluate", "{no_model}", "{tmp}/eval/predictions.json", "--output", "{tmp}/eval"],
     "--output: {tmp}/eval/predictions.json is the data file itself, which this would replace; write to another file",
     id="evaluate --output, the data inside"),
    pytest.param(["evaluate", "{no_model}", "{no_data}", "--output", "{tmp}", "--report", "{tmp}/na_probs.json"],
     "--report: {tmp}/na_probs.json is also the --output file; give each output a file of its own", id="evaluate --report in --output"),
    pytest.param(["report", "{no_model}", "--data", "{file}", "-o", "{file}"],
     "-o/--output: {file} is the --data file itself, which this would replace; write to another file", id="report -o DATA"),
    pytest.param(["train", "{no_data}", "--dev", "{file}", "--model", "{no_model}", "--output", "{tmp}/m", "--report", "{file}"],
     "--report: {file} is the --dev file itself, which this would replace; write to another file", id="train --report DEV"),
    pytest.param(["train", "{file}", "--model", "{no_model}", "--output", "{tmp}/m", "--report", "{link}"],
     "--report: {link} is the training data file itself, which this would replace; write to another file", id="train --report TRAIN"),
    # a report would replace a file that is no HTML page (a data file named by mistake)
    pytest.param(["report", "{no_model}", "-o", "{file}"],
     "-o/--output: {file} exists and is not an HTML page, and the report would replace it; give the report a name "
     "of its own (ending in .html), or move that file away first", id="report -o, over another file"),
    pytest.param(["evaluate", "{no_model}", "{no_data}", "--report", "{link}"],
     "--report: {link} exists and is not an HTML page, and the report would replace it; give the report a name "
     "of its own (ending in .html), or move that file away first", id="evaluate --report, over another file"),
    pytest.param(["train", "--output", "{tmp}/m", "--report", "{file}"],
     "--report: {file} exists and is not an HTML page, and the report would replace it; give the report a name "
     "of its own (ending in .html), or move that file away first", id="train --report, over another file"),
    # a folder that holds files but no earlier run: the user's own
    pytest.param(["train", "{no_data}", "--model", "{no_model}", "--output", "{tmp}"],
     "{tmp} is not empty (it holds a-file, a-link) and holds no earlier training run: pass --overwrite to write the "
     "model there (files of the same names are replaced), or choose another --output", id="train --output, a full folder"),
    pytest.param(["train", "{no_data}", "--model", "{no_model}", "--output", "{tmp}", "--overwrite"],
     "{tmp} holds files but no model (no config.json or qatune.json), and --overwrite replaces only an earlier model "
     "or run; empty the folder yourself or choose another --output", id="train --output --overwrite, a folder without a model"),
    pytest.param(["validate", "{no_data}", "--write-fixed", "{missing}/fixed.json"],
     "--write-fixed: folder {missing} does not exist; create it or choose another path", id="validate --write-fixed"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_OUTPUTS)
def test_a_bad_output_path_is_refused_before_any_work(arguments, message, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-link").symlink_to(tmp_path / "a-file")
    place = {"tmp": tmp_path, "missing": tmp_path / "missing", "file": tmp_path / "a-file", "link": tmp_path / "a-link",
             "no_model": tmp_path / "no-model", "no_data": tmp_path / "no-data.json"}
    before = sorted(tmp_path.rglob("*"))

    result = qatune(*(argument.format(**place) for argument in arguments), check=False)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {message.format(**place)}\n"  # names the option and the path; no traceback
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no folder made
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_folder_without_write_permission_is_refused(tmp_path, monkeypatch, capsys):
    # os.access, so that the check holds for root too (who may write anywhere, and would pass a chmod test)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(locked) and real_access(path, mode))

    code = main(["predict", str(tmp_path / "no-model"), str(TINY_QA), "-o", str(locked / "p.json")])

    assert code == 2
    assert capsys.readouterr().err == (
        f"error: -o/--output: cannot write in folder {locked} (no write permission); "
        "choose another path or change its permissions\n"
    )


# --- export and shrink into a folder that holds something ---------------------------------------


def earlier_model(folder, tiny_bert):
    """A folder holding an earlier model, with a file of the user's beside it."""
    shutil.copytree(tiny_bert, folder)
    (folder / "notes.txt").write_text("mine")
    return folder


def snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


EXPORT = ["export", "{model}", "--format", "onnx", "-o", "{out}"]
SHRINK = ["shrink", "{model}", "--layers", "1", "-o", "{out}", "--no-speed"]


@pytest.mark.parametrize("command", [EXPORT, SHRINK], ids=["export", "shrink"])
def test_a_folder_that_is_not_empty_is_refused_without_overwrite(command, tiny_bert, tmp_path):
    out = earlier_model(tmp_path / "out", tiny_bert)
    before = snapshot(out)

    result = qatune(*(a.format(model=tiny_bert, out=out) for a in command), check=False)

    names = sorted(path.name for path in out.iterdir())
    assert result.returncode == 2
    assert result.stderr == (
        f"error: -o/--output: {out} is not empty (it holds {', '.join(names[:3])} and {len(names) - 3} more): "
        f"pass --overwrite to replace what it holds, or choose another -o/--output\n"
    )
    assert snapshot(out) == before


@pytest.mark.parametrize("command", [EXPORT, SHRINK], ids=["export", "shrink"])
@pytest.mark.parametrize("case", ["the model itself", "a folder holding the model", "no model"])
def test_overwrite_never_replaces_the_model_or_what_is_no_model(command, case, tiny_bert, tmp_path):
    if case == "no model":
        out, model = tmp_path / "mine", tiny_bert
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        message = (
            f"{out} holds files but no model (no config.json or qatune.json), and --overwrite replaces only an "
            f"earlier model; empty the folder yourself or choose another -o/--output"
        )
    else:
        out = tmp_path / "out"
        model = earlier_model(out / "model" if case == "a folder holding the model" else out, tiny_bert)
        what = "is the model folder itself" if model == out else f"holds the model {model}"
        message = f"{out} {what}, which the new files would replace; choose another -o/--output"
    before = snapshot(out)

    result = qatune(*(a.format(model=model, out=out) for a in command), "--overwrite", check=False)

    assert result.returncode == 2
    assert result.stderr == f"error: -o/--output: {message}\n"
    assert snapshot(out) == before


def test_shrink_overwrite_replaces_the_earlier_model_only_once_the_new_one_is_written(tiny_bert, tmp_path):
    out = earlier_model(tmp_path / "student", tiny_bert)
    before = snapshot(out)

    failed = qatune("shrink", tiny_bert, "--layers", "5", "-o", out, "--no-speed", "--overwrite", check=False)
    assert failed.returncode == 2 and "error: --layers must be a whole number from 1 to the model's 2 layers" in failed.stderr
    assert snapshot(out) == before  # the earlier model is as it was
    assert not [path for path in out.iterdir() if path.name.startswith(".")]  # no scratch folder left

    done = qatune("shrink", tiny_bert, "--layers", "1", "-o", out, "--no-speed", "--overwrite")
    assert f"written to {out}" in done.stdout
    assert not (out / "notes.txt").exists()  # the earlier folder's contents were replaced, not written over
    assert not [path for path in out.iterdir() if path.name.startswith(".")]  # no scratch folder left
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((out / "qatune.json").read_text())["shrunk_from"]["kept_layers"] == [1]
    card = (out / "README.md").read_text(encoding="utf-8")  # the card names the folder, not where it was written
    assert f"# {out.name}\n" in card and f'from_pretrained("{out.name}")' in card and ".qatune-" not in card


def test_a_failed_shrink_into_a_new_folder_leaves_no_folder(tiny_bert, tmp_path):
    out = tmp_path / "new" / "student"
    failed = qatune("shrink", tiny_bert, "--layers", "5", "-o", out, "--no-speed", check=False)
    assert failed.returncode == 2
    assert not (tmp_path / "new").exists()


def test_export_overwrite_leaves_no_file_of_the_earlier_export(tiny_bert, tmp_path):
    from qatune.engines import folder_engine

    out = earlier_model(tmp_path / "exported", tiny_bert)
    (out / "model.xml").write_text("<net/>")  # an earlier OpenVINO export: it would win over a new model.onnx

    done = qatune("export", tiny_bert, "--format", "onnx", "-o", out, "--overwrite")

    assert done.stdout.startswith(f"wrote {out / 'model.onnx'} (onnx, float32 weights")
    assert not (out / "model.xml").exists() and not (out / "notes.txt").exists()
    assert folder_engine(out) == "onnx"
    assert json.loads((out / "qatune.json").read_text())["engine"]["name"] == "onnx"


@pytest.mark.parametrize("teacher", [False, True])
def test_train_never_writes_over_the_model_it_starts_from(tiny_bert, tmp_path, teacher):
    model = tmp_path / "base"
    shutil.copytree(tiny_bert, model)
    before = {path.name: path.read_bytes() for path in model.iterdir()}
    sources = ["--model", tiny_bert, "--teacher", model] if teacher else ["--model", model]
    result = qatune("train", TINY_QA, *sources, "--output", model, "--overwrite", check=False)
    assert result.returncode == 2
    assert result.stderr == f"error: --output: {model} is the model folder itself, which the new files would replace; choose another --output\n"
    assert {path.name: path.read_bytes() for path in model.iterdir()} == before

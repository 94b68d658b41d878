"""Several processes (torchrun or accelerate launch, gloo on the CPU): training equals one process with the same
effective batch; batch answering writes the same predictions; a resumed run goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from qatune.parallel import Processes, answered_share

from conftest import TINY_QA
from serving_helpers import free_port
from test_cli_model import WINDOW_FLAGS, qatune

# float32, no dropout, no warm-up: the two runs differ only in how each batch is dealt out
TRAIN_FLAGS = ("--no-bf16", "--hidden-dropout", "0", "--lr", "3e-3", "--warmup-ratio", "0", "--quiet", "--json", *WINDOW_FLAGS)
# the QA head's bias has an exact gradient of 0 (a softmax does not change when every logit
# moves alike), so AdamW turns rounding noise into steps of about the learning rate: it is
# compared through the probabilities it cannot change, not as a weight
SHIFT_INVARIANT = {"qa_outputs.bias"}
# windows of unlike lengths (one per question, 30 to 40 tokens): a batch's shares would be padded
# to 32 on one process and to 64 on the other if each were padded to its own longest window
WIDE_WINDOWS = ("--max-seq-length", "128", "--doc-stride", "32", "--max-question-length", "24")


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    # --multi_gpu is accelerate's name for "several processes through torch's launcher": it
    # starts them on a machine without a GPU too (gloo); `--cpu` would start one
    "accelerate launch": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
}


def on_two_processes(*arguments, launcher: str = "torchrun", program=("-m", "qatune"), check: bool = True) -> subprocess.CompletedProcess:
    # accelerate's rendezvous port is fixed (29500) unless given: a free one, as torchrun --standalone picks
    port = ["--main_process_port", str(free_port())] if launcher == "accelerate launch" else []
    command = [sys.executable, *LAUNCHERS[launcher], *port, *map(str, program), *map(str, arguments)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def step_losses(folder) -> list[float]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if record["type"] == "step"]


def test_each_process_gets_a_share_weighted_to_the_whole_batch_mean():
    rng = np.random.default_rng(2)
    for size in (1, 2, 5, 8):
        batch, losses = np.arange(size), rng.normal(size=size)
        shares = [Processes(2, rank).share(batch) for rank in (0, 1)]
        counted = [items for items, weight in shares if weight > 0]
        assert sorted(np.concatenate(counted).tolist()) == batch.tolist()
        # DDP averages the processes' gradients: (w0 * mean0 + w1 * mean1) / 2 is the batch mean
        averaged = sum(weight * losses[items].mean() for items, weight in shares) / 2
        assert averaged == pytest.approx(losses.mean())


def test_the_answered_shares_cover_the_questions_in_order(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    ranges = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        ranges.append(answered_share(10))
    assert ranges == [(0, 4), (4, 7), (7, 10)]



def test_a_joined_group_is_left_before_python_tears_down(tmp_path):
    # gloo's threads outliving the interpreter abort a finished process (exit -6) now and then:
    # the group must be destroyed by an exit hook, which runs before those registered earlier
    script = (
        "import atexit, torch.distributed as distributed\n"
        "atexit.register(lambda: print('still joined at exit:', distributed.is_initialized()))\n"
        "from qatune.parallel import _init_process_group\n"
        "_init_process_group()\n"
        "print('joined:', distributed.is_initialized())\n"
    )
    environment = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["joined: True", "still joined at exit: False"]

def probabilities(folder, examples):
    from qatune.inference import QAModel, window_logits
    from qatune.features import make_windows

    model = QAModel.from_pretrained(folder, engine="torch", bf16=False)
    windows = make_windows(examples, model.tokenizer, model.settings)
    starts, ends = window_logits(model.engine, windows, pad_token_id=0, max_length=model.settings.max_seq_length)
    softmax = lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum()  # noqa: E731
    return np.concatenate([softmax(x) for x in starts + ends])


def without_first_and_last(folder):
    """The tiny questions but the first and the last (10): with WIDE_WINDOWS, batches of 4 whose
    halves have unlike longest windows."""
    data = json.loads(TINY_QA.read_text())
    data["data"][0]["paragraphs"][0]["qas"].pop(0)
    data["data"][-1]["paragraphs"][-1]["qas"].pop()
    path = folder / "ten.json"
    path.write_text(json.dumps(data))
    return path


def assert_same_training(one, two, examples) -> None:
    """The weights (but the shift-invariant ones) within rounding, and the probabilities too."""
    weights_one, weights_two = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for name, value in weights_one.items():
        if name not in SHIFT_INVARIANT:
            np.testing.assert_allclose(weights_two[name], value, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(probabilities(two, examples), probabilities(one, examples), atol=1e-4)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_train_as_one_with_the_same_effective_batch(launcher, tiny_bert, tmp_path):
    from qatune.data import load_examples

    one, two, ten = tmp_path / "one", tmp_path / "two", without_first_and_last(tmp_path)
    single = json.loads(qatune("train", ten, "--dev", TINY_QA, "--model", tiny_bert, "--output", one,
                               "--epochs", "3", "--batch-size", "4", *TRAIN_FLAGS, *WIDE_WINDOWS).stdout)
    launched = on_two_processes("train", ten, "--dev", TINY_QA, "--model", tiny_bert, "--output", two,
                                "--epochs", "3", "--batch-size", "2", *TRAIN_FLAGS, *WIDE_WINDOWS, launcher=launcher)
    double = json.loads(launched.stdout)  # one summary: only the main process speaks
    assert (single["processes"], double["processes"]) == (1, 2)
    assert single["effective_batch_size"] == double["effective_batch_size"] == 4
    assert "effective batch: 4 items (batch 2 x 2 processes x 1 accumulation step)" in launched.stderr
    assert launched.stderr.count("effective batch:") == 1
    assert double["dev"] == pytest.approx(single["dev"], rel=1e-5)  # thresholds sit between probabilities
    assert_same_training(one, two, load_examples(TINY_QA))
    # the log has the whole batch's loss, not the main process's share's; the weights differ by
    # rounding alone (above), which moves a loss far less than this
    np.testing.assert_allclose(step_losses(two), step_losses(one), rtol=1e-4)
    card = json.loads((two / "qatune.json").read_text())
    assert card["training_arguments"]["processes"] == 2 and card["training_arguments"]["effective_batch_size"] == 4
    assert not (two / "checkpoints").exists()


def test_two_processes_share_the_teachers_logits_and_distill_as_one(tiny_bert, tmp_path):
    from qatune.data import load_examples

    one, two, student = tmp_path / "one", tmp_path / "two", tmp_path / "student"
    qatune("shrink", tiny_bert, "--layers", "1", "-o", student, "--no-speed")
    # with the hidden states' term too, whose mean over a share's tokens is weighted by its tokens
    flags = ("--model", student, "--teacher", tiny_bert, "--distill-hidden", "5", "--epochs", "2", "--save-every", "0",
             *TRAIN_FLAGS, *WIDE_WINDOWS)
    qatune("train", TINY_QA, "--output", one, "--batch-size", "4", *flags)
    launched = on_two_processes("train", TINY_QA, "--output", two, "--batch-size", "2", *flags)
    said = [line for line in launched.stderr.splitlines() if line.startswith(f"distilling from {tiny_bert}")]
    assert len(said) == 1 and "(openvino float32, shared by 2 processes)" in said[0]
    # each window's logits come from one process or the other: OpenVINO gives a window the same
    # logits in any batch, so both runs learn from the same targets
    assert_same_training(one, two, load_examples(TINY_QA))


def test_two_processes_resume_a_run_as_one_process_does(tiny_bert, tmp_path):
    from qatune.data import load_examples

    one, two = tmp_path / "one", tmp_path / "two"
    for folder, batch, run in ((one, "4", qatune), (two, "2", on_two_processes)):
        flags = ("--model", tiny_bert, "--output", folder, "--batch-size", batch, "--save-every", "1", *TRAIN_FLAGS)
        run("train", TINY_QA, "--epochs", "2", "--keep-checkpoints", *flags)
        resumed = run("train", TINY_QA, "--epochs", "3", "--resume", *flags)  # two epochs more: a longer schedule
        assert "resumed from the checkpoint after epoch 2; training to epoch 3" in resumed.stderr
    assert_same_training(one, two, load_examples(TINY_QA))


# Runs qatune but stops dead right after the checkpoint of epoch 1 is written (a crash).
CRASH_AFTER_FIRST_CHECKPOINT = """
import os, sys
from qatune import checkpoints
from qatune.cli import main
written = checkpoints.save
def save_then_crash(*args, **kwargs):
    written(*args, **kwargs)
    os._exit(3)
checkpoints.save = save_then_crash
sys.exit(main())
"""


def test_two_processes_with_dropout_resume_exactly(tiny_bert, tmp_path):
    # each process draws its own dropout masks: a resume must give each its own random state back
    script = tmp_path / "crash.py"
    script.write_text(CRASH_AFTER_FIRST_CHECKPOINT)
    # 11 questions: the last batch of an epoch gives the processes 2 and 1 windows, so they draw
    # unlike numbers of dropout masks and their random states part
    data = json.loads(TINY_QA.read_text())
    data["data"][-1]["paragraphs"][-1]["qas"].pop()
    eleven = tmp_path / "eleven.json"
    eleven.write_text(json.dumps(data))
    flags = [*TRAIN_FLAGS, "--hidden-dropout", "0.1"]  # the later flag wins over TRAIN_FLAGS' 0
    common = ("--model", tiny_bert, "--epochs", "2", "--batch-size", "2", "--save-every", "1", *flags)
    on_two_processes("train", eleven, "--output", tmp_path / "whole", *common)
    crashed = on_two_processes("train", eleven, "--output", tmp_path / "resumed", *common, program=[script], check=False)
    assert crashed.returncode != 0 and (tmp_path / "resumed" / "checkpoints" / "epoch-0001").is_dir()
    on_two_processes("train", eleven, "--output", tmp_path / "resumed", "--resume", *common)
    whole, resumed = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for name, value in whole.items():  # the same operations on the same numbers: equal, not close
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


# Runs qatune with torch's default wait in an exchange cut to 3 s and a dev evaluation that takes
# 8 s longer: only the main process evaluates, so the others wait that long for it.
SLOW_EVALUATION_SHORT_DEFAULT_WAIT = """
import sys, time
from datetime import timedelta
import torch.distributed.distributed_c10d as c10d
c10d.default_pg_timeout = timedelta(seconds=3)
from qatune import training
from qatune.cli import main
evaluate = training._evaluate
def slow_evaluate(*args, **kwargs):
    time.sleep(8)
    return evaluate(*args, **kwargs)
training._evaluate = slow_evaluate
sys.exit(main())
"""


def test_the_other_processes_wait_out_a_long_evaluation(tiny_bert, tmp_path):
    # torch's own limit (30 minutes on gloo, 10 on NCCL) would end a run whose dev data takes
    # longer to evaluate than that; here the limit is cut to 3 s and the evaluation takes 8 s
    script = tmp_path / "slow.py"
    script.write_text(SLOW_EVALUATION_SHORT_DEFAULT_WAIT)
    on_two_processes("train", TINY_QA, "--dev", TINY_QA, "--model", tiny_bert, "--output", tmp_path / "run",
                     "--epochs", "1", "--batch-size", "2", "--save-every", "0", *TRAIN_FLAGS, program=[script])
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_write_the_predictions_of_one(launcher, tiny_bert, tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    qatune("predict", tiny_bert, TINY_QA, "-o", one, "--na-probs", tmp_path / "na1.json", "--no-bf16")
    launched = on_two_processes("predict", tiny_bert, TINY_QA, "-o", two, "--na-probs", tmp_path / "na2.json", "--no-bf16",
                                launcher=launcher)
    assert launched.stderr.count("wrote 12 predictions") == 1
    assert json.loads(two.read_text()) == json.loads(one.read_text())
    assert list(json.loads(two.read_text())) == list(json.loads(one.read_text()))  # the same order
    assert json.loads((tmp_path / "na2.json").read_text()) == json.loads((tmp_path / "na1.json").read_text())
    scored_one = json.loads(qatune("evaluate", tiny_bert, TINY_QA, "--json", "--no-bf16").stdout)
    scored_two = json.loads(on_two_processes("evaluate", tiny_bert, TINY_QA, "--json", "--no-bf16", launcher=launcher).stdout)
    assert scored_two == scored_one

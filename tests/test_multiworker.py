"""Multi-worker training for real: two `hemalite train --distribute multiworker` processes.

Each test starts two worker processes on 127.0.0.1 (ports from the OS, one TF_CONFIG each,
MultiWorkerMirroredStrategy over gRPC on loopback), waits for them with a deadline and kills
whatever it started that is still running when it ends, pass or fail.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hemalite.cli import main
from hemalite.contract import InputSpec
from tests.helpers import NEEDS_TENSORFLOW, TINY_SIZE, make_dataset

keras = pytest.importorskip("keras", reason=NEEDS_TENSORFLOW)  # its imports need it too
from hemalite.edge.cli import classify_command  # noqa: E402
from hemalite.train import data, multiworker  # noqa: E402

pytestmark = pytest.mark.tensorflow

WORKERS = 2
GLOBAL_BATCH = 8
DEADLINE = 300  # s for one launch; the longest took 160 s here, sharing 2 cores with a training

# A worker is the real CLI, with test instruments switched on by environment:
# HEMALITE_TEST_BATCHES records each training step's per-replica batch (its size and each
# image's pixel sum), HEMALITE_TEST_PROBS saves the test-split probabilities behind
# metrics.json, HEMALITE_TEST_KILL=epoch,batch SIGKILLs the worker at that point.
WORKER = """
import os, signal, sys
import keras
import numpy as np
import tensorflow as tf
from hemalite.train import fit

record = os.environ.get("HEMALITE_TEST_BATCHES")
if record:
    step = keras.Model.train_step

    def train_step(self, data):
        x = data[0]
        tf.print(tf.shape(x)[0], tf.cast(tf.reduce_sum(x, axis=[1, 2, 3]), tf.int64),
                 summarize=-1, output_stream="file://" + record)
        return step(self, data)
    keras.Model.train_step = train_step

probs = os.environ.get("HEMALITE_TEST_PROBS")
if probs:
    metrics = fit.classification_metrics

    def classification_metrics(y, p, labels):
        np.save(probs, p)
        return metrics(y, p, labels)
    fit.classification_metrics = classification_metrics

kill = os.environ.get("HEMALITE_TEST_KILL")
if kill:
    at = tuple(map(int, kill.split(",")))

    class Kill(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == at:
                os.kill(os.getpid(), signal.SIGKILL)
    train = fit.train
    fit.train = lambda cfg, extra_callbacks=(): train(cfg, extra_callbacks=[Kill()])

from hemalite.cli import main
main(sys.argv[1:], prog_name="hemalite")
"""


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports, chosen by the OS."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


@contextlib.contextmanager
def cluster(commands: list[list[str]], logs: Path, env: dict[int, dict] | None = None):
    """Start one process of `hemalite COMMAND` per worker; kill any still running at the end."""
    ports, procs = free_ports(len(commands)), []
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for i, args in enumerate(commands):
            worker_env = {**os.environ, "TF_CONFIG": tf_config(ports, i),
                          "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {}).get(i, {})}
            with open(logs / f"worker{i}.log", "w") as log:
                procs.append(subprocess.Popen([sys.executable, "-c", WORKER, *args],
                                              env=worker_env, stdout=log,
                                              stderr=subprocess.STDOUT))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def wait(procs, logs: Path, deadline: float = DEADLINE) -> tuple[list[int], list[float]]:
    """Exit codes of all workers and when each ended (s after the call); fail past deadline."""
    start, ended = time.monotonic(), [None] * len(procs)
    while None in ended:
        for i, p in enumerate(procs):
            if ended[i] is None and p.poll() is not None:
                ended[i] = time.monotonic() - start
        if time.monotonic() - start > deadline:
            late = [i for i, t in enumerate(ended) if t is None]
            pytest.fail(f"workers {late} still running after {deadline} s (killed):\n"
                        + "\n".join(tail(logs, i) for i in late))
        time.sleep(0.2)
    return [p.returncode for p in procs], ended


def tail(logs: Path, i: int, chars: int = 3000) -> str:
    return (logs / f"worker{i}.log").read_text(errors="replace")[-chars:]


def train_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(data_dir), "--out", str(out), "--weights", "none", "--alpha", "0.35",
            "--image-size", str(TINY_SIZE), "--batch-size", str(GLOBAL_BATCH),
            "--no-ground", "--no-acquisition", "--no-augment",  # colour squares, not smears
            "--no-progress", "--verbose", "--distribute", "multiworker", *extra]


def read_batches(path: Path) -> list[tuple[int, list[int]]]:
    """(per-replica batch size, pixel sums) of each step, as the worker's tf.print wrote them."""
    steps = []
    for line in path.read_text().splitlines():
        size, sums = line.split(" ", 1)
        steps.append((int(size), [int(v) for v in sums.strip("[]").split()]))
    return steps


@pytest.mark.slow
def test_two_workers_train_and_only_the_chief_writes_the_run(tmp_path):
    # 13 images a class split 33 / 3 / 3: one training image past the last full batch of
    # 8, which would leave the second worker an empty batch.
    images = make_dataset(tmp_path / "data", per_class=13)
    out, logs = tmp_path / "runs" / "mw", tmp_path / "logs"
    instruments = {i: {"HEMALITE_TEST_BATCHES": str(logs / f"batches{i}.txt"),
                       "HEMALITE_TEST_PROBS": str(logs / f"probs{i}.npy")} for i in range(2)}
    args = train_args(images, out, "--epochs", "1")
    with cluster([args] * WORKERS, logs, instruments) as procs:
        codes, _ = wait(procs, logs)
    assert codes == [0, 0], f"{codes}\n{tail(logs, 0)}\n{tail(logs, 1)}"

    # Only the chief wrote the run; the other worker wrote a temporary twin, then removed it.
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"model.keras", "config.json", "labels.txt", "history.json", "metrics.json",
                     "confusion_matrix.png", "splits/train.csv", "splits/val.csv",
                     "splits/test.csv"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["mw"]  # no workertemp_1 left
    twin = out.parent / "workertemp_1" / "mw"
    assert f"writes to {twin}" in tail(logs, 1, 10**6)
    assert f"the chief writes {out}" in tail(logs, 1)
    assert f"wrote {out}" in tail(logs, 0)
    assert json.loads((out / "config.json").read_text())["distribute"] == "multiworker"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["replicas"] == WORKERS
    assert len(json.loads((out / "history.json").read_text())["train"]["loss"]) == 1

    # The global batch is split: each step, each worker gets half of one global batch; over
    # the epoch the workers together see every training image once, but the one past the
    # last full batch (a different one each epoch) that would have left a worker empty.
    labels = (out / "labels.txt").read_text().split()
    samples = data.read_manifest(out / "splits" / "train.csv", labels)
    assert len(samples) == 33
    x, _, _ = data.load_pixels(images, samples, InputSpec(TINY_SIZE, TINY_SIZE), False)
    steps = [read_batches(logs / f"batches{i}.txt") for i in range(WORKERS)]
    assert [len(s) for s in steps] == [len(samples) // GLOBAL_BATCH] * WORKERS
    assert all(size == GLOBAL_BATCH // WORKERS for s in steps for size, _ in s)
    seen = Counter(v for s in steps for _, sums in s for v in sums)
    every = Counter(x.reshape(len(x), -1).astype(np.int64).sum(1).tolist())
    assert not seen - every and sum((every - seen).values()) == 1

    # The chief's metrics are those of the model it saved: the workers' models did not
    # drift apart (part of each test batch is predicted by the other worker). Compared as
    # probabilities: a one-epoch model's are nearly equal across images, so its AUC moves
    # with float noise (1e-7); unsynchronised BatchNorm statistics moved them by 0.02.
    test = data.read_manifest(out / "splits" / "test.csv", labels)
    xt, _, _ = data.load_pixels(images, test, InputSpec(TINY_SIZE, TINY_SIZE), False)
    saved = keras.saving.load_model(out / "model.keras").predict(xt.astype("float32"), verbose=0)
    np.testing.assert_allclose(np.load(logs / "probs0.npy"), saved, atol=1e-5)
    np.testing.assert_allclose(np.load(logs / "probs1.npy"), saved, atol=1e-5)
    result = CliRunner().invoke(main, ["convert", str(out), "--float32"])
    assert result.exit_code == 0, result.output
    tflite = out / "tflite" / "model_float32.tflite"
    result = CliRunner().invoke(classify_command, [
        "--model", str(tflite), "--manifest", str(out / "splits" / "test.csv"),
        "--data-root", str(images), "--no-domain-check", "--min-confidence", "0"])
    assert result.exit_code == 0, result.output
    n_test = metrics["test"]["n"]
    assert f"{n_test} inputs: {n_test} classified, 0 failed" in result.output


@pytest.mark.slow
def test_killed_worker_resumes_from_the_backup_when_both_restart(tiny_data, tmp_path):
    out, logs = tmp_path / "runs" / "cnn", tmp_path / "logs"
    args = train_args(tiny_data, out, "--arch", "cnn", "--epochs", "4", "--patience", "10")
    with cluster([args] * WORKERS, logs / "killed", {1: {"HEMALITE_TEST_KILL": "2,1"}}) as procs:
        codes, ended = wait(procs, logs / "killed")
    assert codes[1] == -9  # SIGKILL in the middle of epoch 3 (zero-based 2)
    assert codes[0] != 0, tail(logs / "killed", 0)  # the chief fails on its own, no hang
    backup = out / "checkpoints" / "backup" / "training_metadata.json"
    assert json.loads(backup.read_text())["epoch"] == 2  # two epochs done and backed up
    assert not (out / "model.keras").exists()

    with cluster([args] * WORKERS, logs / "restarted") as procs:  # the same command on both
        codes, _ = wait(procs, logs / "restarted")
    assert codes == [0, 0], f"{tail(logs / 'restarted', 0)}\n{tail(logs / 'restarted', 1)}"
    history = json.loads((out / "history.json").read_text())["train"]
    assert history["epoch"] == [0.0, 1.0, 2.0, 3.0]  # two before the kill, two after
    assert (out / "model.keras").is_file() and not (out / "checkpoints").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cnn"]  # no workertemp_1 left
    assert ended[0] - ended[1] < 120  # a heartbeat timeout: measured 11.6 s here


@pytest.mark.slow
def test_workers_that_would_resume_from_different_states_refuse_together(tiny_data, tmp_path):
    """--out not on shared storage: the chief sees an interrupted run, the other worker none."""
    chief_out, other_out, logs = tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "logs"
    backup = chief_out / "checkpoints" / "backup"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (chief_out / "config.json").write_text(json.dumps({"data_dir": str(tiny_data)}))
    commands = [train_args(tiny_data, out, "--epochs", "4") for out in (chief_out, other_out)]
    with cluster(commands, logs) as procs:
        codes, _ = wait(procs, logs)
    assert codes == [2, 2], f"{codes}\n{tail(logs, 0)}\n{tail(logs, 1)}"
    for i in range(WORKERS):
        assert "error: the workers would resume from different states" in tail(logs, i)
        assert "Traceback" not in tail(logs, i, 10**6)
    assert not (chief_out / "model.keras").exists() and not (other_out / "model.keras").exists()


def test_multiworker_without_tf_config_is_a_clear_error(monkeypatch):
    from hemalite.train.fit import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(data.TrainError, match="TF_CONFIG"):
        make_strategy("multiworker")


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_empty_replica_rule_is_tensorflows_split(replicas):
    """The rule against the split tf.distribute applies to DATA-sharded batches."""
    import tensorflow as tf
    from tensorflow.python.data.experimental.ops import distribute  # what input_lib uses

    for batch in range(1, 13):
        pieces = distribute._LegacyRebatchDataset(tf.data.Dataset.range(batch).batch(batch),
                                                  replicas)
        sizes = [len(piece) for piece in pieces.as_numpy_iterator()]
        assert sum(sizes) == batch and len(sizes) == replicas
        assert (0 in sizes) == multiworker.leaves_replica_empty(batch, replicas), (batch, sizes)


def test_eval_batch_size_leaves_no_replica_empty():
    assert multiworker.eval_batch_size(261, 32, 1) == 32  # one replica: as configured
    assert multiworker.eval_batch_size(259, 32, 2) == 32  # remainder 3: 2 + 1, kept
    assert multiworker.eval_batch_size(9, 4, 2) == 3  # 9 = 4 + 4 + 1 would leave one empty
    for replicas in (2, 3, 4):
        for n in range(1, 60):
            def fits(size):
                return not (multiworker.leaves_replica_empty(size, replicas)
                            or multiworker.leaves_replica_empty(n % size, replicas))
            if any(fits(size) for size in range(1, n + 1)):
                assert fits(multiworker.eval_batch_size(n, 8, replicas))
            else:  # 1 image over 2 replicas, 4 over 3: no batch size avoids an empty one
                with pytest.raises(data.TrainError, match="cannot be split"):
                    multiworker.eval_batch_size(n, 8, replicas)

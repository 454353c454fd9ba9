"""The seed classifier, ours against Keras 3 on the same data with the same settings:
Conv2D(32, 3x3, ReLU) -> MaxPool 2x2 -> Flatten -> Dense(128, ReLU) -> Dense(10, softmax), Adam, categorical
cross-entropy, 10 epochs, batch 32. Keras runs on its torch backend (in this process) and on TensorFlow, the origin's
framework (in a child process of an interpreter that has it: --keras-python). The frameworks train in turn on one
machine; prints a table and writes bench/results/classifier.json (classifier_2epochs.json for --epochs 2, ...).

    python bench/classifier.py [--datasets fashion-mnist mnist-5k] [--frameworks imagegen keras keras-tf] [--epochs 10]
    python bench/classifier.py --datasets fashion-mnist --epochs 2 --keras-python /work/tfvenv/bin/python
    python bench/classifier.py --datasets mnist-5k --seeds 0 1 2 3   # mean and spread over seeds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table

GOALS = {"fashion-mnist": 0.91, "mnist-5k": 0.97}
FRAMEWORKS = ("imagegen", "keras", "keras-tf")


def run_imagegen(dataset: str, epochs: int, seed: int) -> dict:
    from imagegen.config import ClassifyConfig, DataConfig, FitConfig
    from imagegen.train.classify import train_seed_classifier

    cfg = ClassifyConfig(data=DataConfig(dataset=dataset), fit=FitConfig(epochs=epochs), seed=seed, device="cpu")
    r = train_seed_classifier(cfg, show_progress=False, log=lambda s: print("  imagegen", s, flush=True))
    import torch

    return {"accuracy": r["accuracy"], "loss": r["loss"], "seconds_per_epoch": r["seconds_per_epoch"],
            "epoch_seconds": r["epoch_seconds"], "images_per_s": r["n_train"] / r["seconds_per_epoch"],
            "version": f"imagegen, torch {torch.__version__}, {torch.get_num_threads()} threads"}


def run_keras(dataset: str, epochs: int, seed: int) -> dict:
    """Keras 3 on its torch backend, in this process."""
    from imagegen.data import load_dataset

    os.environ.setdefault("KERAS_BACKEND", "torch")
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    return keras_fit((train.images, train.labels), (test.images, test.labels), epochs, seed, "keras")


def run_keras_tf(dataset: str, epochs: int, seed: int, python: str) -> dict:
    """Keras 3 on TensorFlow, in a child process of `python` (it needs neither torch nor imagegen): the same
    uint8 images travel in an .npz file, the result comes back as the child's last line of output (JSON)."""
    from imagegen.data import load_dataset

    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        np.savez(data, x=train.images, y=train.labels, xt=test.images, yt=test.labels)
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [python, __file__, "--keras-worker", data, "--epochs", str(epochs), "--seed", str(seed)]
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    lines = out.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


def keras_fit(train, test, epochs: int, seed: int, name: str) -> dict:
    """The seed network in Keras on uint8 (N, C, H, W) images and int labels, with the Keras example's
    preprocessing (NHWC floats in [0, 1]); seconds per epoch from a callback, test loss and accuracy."""
    import keras

    keras.utils.set_random_seed(seed)

    def prep(images, labels):
        return np.asarray(images).transpose(0, 2, 3, 1).astype("float32") / 255.0, np.asarray(labels)

    (x, y), (xt, yt) = prep(*train), prep(*test)
    model = keras.Sequential([
        keras.Input(x.shape[1:]), keras.layers.Conv2D(32, (3, 3), activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    # sparse_categorical_crossentropy on integer labels is categorical cross-entropy on one-hot labels
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)
            print(f"  {name} epoch {epoch + 1}/{epochs} - {times[-1]:.1f}s - accuracy {logs['accuracy']:.4f}",
                  flush=True)

    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[Timer()])
    loss, acc = model.evaluate(xt, yt, verbose=0)
    return {"accuracy": float(acc), "loss": float(loss), "seconds_per_epoch": float(np.mean(times)),
            "epoch_seconds": times, "images_per_s": len(x) / float(np.mean(times)),
            "version": f"keras {keras.__version__}, {keras.backend.backend()} {backend_version()}"}


def backend_version() -> str:
    import keras

    return __import__(keras.backend.backend()).__version__


def keras_worker(data: str, epochs: int, seed: int) -> None:
    """The child process of run_keras_tf: fit, then the result as one JSON line."""
    d = np.load(data)
    print(json.dumps(keras_fit((d["x"], d["y"]), (d["xt"], d["yt"]), epochs, seed, "keras-tf")), flush=True)


def default_keras_python() -> str | None:
    """This interpreter when it can import tensorflow, else None (keras-tf is skipped)."""
    return sys.executable if importlib.util.find_spec("tensorflow") else None


def run(fw: str, dataset: str, epochs: int, seed: int, keras_python: str | None) -> dict:
    if fw == "imagegen":
        return run_imagegen(dataset, epochs, seed)
    if fw == "keras":
        return run_keras(dataset, epochs, seed)
    return run_keras_tf(dataset, epochs, seed, keras_python)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["fashion-mnist", "mnist-5k"])
    p.add_argument("--frameworks", nargs="+", default=["imagegen", "keras", "keras-tf"], choices=FRAMEWORKS)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="several seeds: one row per framework with mean, min and max accuracy (classifier_seeds.json)")
    p.add_argument("--keras-python", default=None,
                   help="a Python with tensorflow and keras for keras-tf (default: this one, if it has tensorflow)")
    p.add_argument("--keras-worker", default=None, help=argparse.SUPPRESS)  # the keras-tf child process
    args = p.parse_args()
    if args.keras_worker:
        keras_worker(args.keras_worker, args.epochs, args.seed)
        return
    args.keras_python = args.keras_python or default_keras_python()
    if "keras-tf" in args.frameworks and not args.keras_python:
        print("keras-tf skipped: this Python cannot import tensorflow; pass --keras-python PATH "
              "(e.g. a venv with: pip install tensorflow-cpu keras)", flush=True)
        args.frameworks = [fw for fw in args.frameworks if fw != "keras-tf"]
    if "keras" in args.frameworks and not importlib.util.find_spec("keras"):
        print("keras (torch backend) skipped: this Python cannot import keras (pip install -e '.[bench]')", flush=True)
        args.frameworks = [fw for fw in args.frameworks if fw != "keras"]
    if args.seeds:
        over_seeds(args)
        return
    rows = []
    for dataset in args.datasets:
        for fw in args.frameworks:
            print(f"{fw} on {dataset} ...", flush=True)
            r = run(fw, dataset, args.epochs, args.seed, args.keras_python)
            rows.append({"dataset": dataset, "framework": fw, "epochs": args.epochs, **r,
                         "goal_accuracy": GOALS.get(dataset)})
    for dataset in args.datasets:
        ours = next((r for r in rows if r["dataset"] == dataset and r["framework"] == "imagegen"), None)
        for fw, key in (("keras", "speedup_vs_keras"), ("keras-tf", "speedup_vs_keras_tf")):
            other = next((r for r in rows if r["dataset"] == dataset and r["framework"] == fw), None)
            if ours and other:
                ours[key] = other["seconds_per_epoch"] / ours["seconds_per_epoch"]
    print(table(rows, ["dataset", "framework", "epochs", "accuracy", "loss", "seconds_per_epoch", "images_per_s",
                       "goal_accuracy", "speedup_vs_keras", "speedup_vs_keras_tf"]))
    name = "classifier" if args.epochs == 10 else f"classifier_{args.epochs}epochs"
    print("written to", save(name, rows, settings=f"seed network, Adam, batch 32, {args.epochs} epochs, "
                                                  f"frameworks in turn on one machine",
                             versions={r["framework"]: r.get("version") for r in rows}))


def over_seeds(args) -> None:
    rows = []
    for dataset in args.datasets:
        for fw in args.frameworks:
            runs = []
            for seed in args.seeds:
                print(f"{fw} on {dataset}, seed {seed} ...", flush=True)
                runs.append(run(fw, dataset, args.epochs, seed, args.keras_python))
            acc = np.array([r["accuracy"] for r in runs])
            rows.append({"dataset": dataset, "framework": fw, "seeds": args.seeds, "accuracies": acc.tolist(),
                         "mean_accuracy": float(acc.mean()), "min_accuracy": float(acc.min()),
                         "max_accuracy": float(acc.max()), "reached_goal": int((acc >= GOALS[dataset]).sum()),
                         "seconds_per_epoch": float(np.mean([r["seconds_per_epoch"] for r in runs]))})
    print(table(rows, ["dataset", "framework", "mean_accuracy", "min_accuracy", "max_accuracy", "reached_goal",
                       "seconds_per_epoch"]))
    print("written to", save("classifier_seeds", rows, settings="seed network, Adam, batch 32, 10 epochs, per seed"))


if __name__ == "__main__":
    main()

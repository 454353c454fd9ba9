"""The seed classifier, ours against Keras 3 (torch backend) on the same data with the same settings:
Conv2D(32, 3x3, ReLU) -> MaxPool 2x2 -> Flatten -> Dense(128, ReLU) -> Dense(10, softmax), Adam, categorical
cross-entropy, 10 epochs, batch 32. Prints a table and writes bench/results/classifier.json.

    python bench/classifier.py [--datasets fashion-mnist mnist-5k] [--frameworks imagegen keras] [--epochs 10]
    python bench/classifier.py --datasets mnist-5k --seeds 0 1 2 3   # mean and spread over seeds
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table

GOALS = {"fashion-mnist": 0.91, "mnist-5k": 0.97}


def run_imagegen(dataset: str, epochs: int, seed: int) -> dict:
    from imagegen.config import ClassifyConfig, DataConfig, FitConfig
    from imagegen.train.classify import train_seed_classifier

    cfg = ClassifyConfig(data=DataConfig(dataset=dataset), fit=FitConfig(epochs=epochs), seed=seed, device="cpu")
    r = train_seed_classifier(cfg, show_progress=False, log=lambda s: print("  imagegen", s, flush=True))
    return {"accuracy": r["accuracy"], "loss": r["loss"], "seconds_per_epoch": r["seconds_per_epoch"]}


def run_keras(dataset: str, epochs: int, seed: int) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    from imagegen.data import load_dataset

    keras.utils.set_random_seed(seed)
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")

    def prep(ds):  # the Keras example's preprocessing: NHWC floats in [0, 1]
        return ds.images.transpose(0, 2, 3, 1).astype("float32") / 255.0, ds.labels

    (x, y), (xt, yt) = prep(train), prep(test)
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
            print(f"  keras epoch {epoch + 1}/{epochs} - {times[-1]:.1f}s - accuracy {logs['accuracy']:.4f}",
                  flush=True)

    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0,
              callbacks=[Timer()])
    loss, acc = model.evaluate(xt, yt, verbose=0)
    return {"accuracy": float(acc), "loss": float(loss), "seconds_per_epoch": float(np.mean(times))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["fashion-mnist", "mnist-5k"])
    p.add_argument("--frameworks", nargs="+", default=["imagegen", "keras"], choices=["imagegen", "keras"])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="several seeds: one row per framework with mean, min and max accuracy (classifier_seeds.json)")
    args = p.parse_args()
    if args.seeds:
        over_seeds(args)
        return
    rows = []
    for dataset in args.datasets:
        for fw in args.frameworks:
            print(f"{fw} on {dataset} ...", flush=True)
            r = (run_imagegen if fw == "imagegen" else run_keras)(dataset, args.epochs, args.seed)
            rows.append({"dataset": dataset, "framework": fw, "epochs": args.epochs, **r,
                         "goal_accuracy": GOALS.get(dataset)})
    for dataset in args.datasets:
        ours = next((r for r in rows if r["dataset"] == dataset and r["framework"] == "imagegen"), None)
        keras_row = next((r for r in rows if r["dataset"] == dataset and r["framework"] == "keras"), None)
        if ours and keras_row:
            ours["speedup_vs_keras"] = keras_row["seconds_per_epoch"] / ours["seconds_per_epoch"]
    print(table(rows, ["dataset", "framework", "accuracy", "loss", "seconds_per_epoch", "goal_accuracy",
                       "speedup_vs_keras"]))
    print("written to", save("classifier", rows, settings="seed network, Adam, batch 32, 10 epochs, 2 threads"))


def over_seeds(args) -> None:
    rows = []
    for dataset in args.datasets:
        for fw in args.frameworks:
            runs = []
            for seed in args.seeds:
                print(f"{fw} on {dataset}, seed {seed} ...", flush=True)
                runs.append((run_imagegen if fw == "imagegen" else run_keras)(dataset, args.epochs, seed))
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

"""The real Fashion-MNIST files, as Debian's dataset-fashion-mnist installs them (`make test` and .ci/run
install the package when they run as root)."""

import numpy as np

from imagegen.data import load_dataset


def test_fashion_mnist_from_debian_package():
    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28) and np.bincount(test.labels).tolist() == [1000] * 10
    assert test.classes[9] == "Ankle boot" and 0 < test.images.mean() < 128

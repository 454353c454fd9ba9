"""Training on 2 processes (gloo on 127.0.0.1, a free port, torchrun's environment variables) is the single run,
split: the same weights as one process with the same global batch, the same EMA on both processes, a 2-process
run resumed on 1 reaches the weights of an uninterrupted 2-process run, and the processes draw different noise.
A process killed in the middle of a run stops the other with one clear line, not a hang, and the last
checkpoint resumes. Every wait is bounded."""

import json
import multiprocessing
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imagegen.cli import main
from imagegen.methods.noise import SliceNoise, randn
from imagegen.train import loop

from . import distributed_worker
from .test_train import TINY, tiny_config

QUIET = {"show_progress": False, "log": lambda s: None}
WAIT = 120  # seconds: the most any launch of 2 processes may take on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(rank: int, port: int, cache: Path, log: Path, what: str, *args, timeout: float = 20.0):
    """Process `rank` of 2, forked with the environment torchrun gives its workers (tests/distributed_worker.py)."""
    proc = multiprocessing.get_context("fork").Process(target=distributed_worker.child,
                                                       args=(rank, port, cache, timeout, log, what, *args))
    proc.start()
    return proc


def finish(procs: list, timeout: float = WAIT) -> list[int]:
    """The processes' exit codes; any still running after `timeout` seconds is killed (and its code is -9)."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    return [p.exitcode for p in procs]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The runs of tests/distributed_worker.py on 2 processes, after one step of a single process (OUT/alone,
    the whole batch of 32 in one pass), which also imports what the forked processes need."""
    out = tmp_path_factory.mktemp("two")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("IMAGEGEN_CACHE", str(out / "cache"))
        m.setattr(loop, "run_evaluator", lambda *args, **kwargs: None)
        loop.train(tiny_config(images=32), out / "alone", **QUIET)
    port = free_port()
    procs = [launch(r, port, out / "cache", out / f"log{r}.txt", "runs", out) for r in range(2)]
    codes = finish(procs)
    assert codes == [0, 0], [(out / f"log{r}.txt").read_text()[-2000:] for r in range(2)]
    return out


def weights(path: Path, prefix: str = "net.") -> dict:
    return {k: v for k, v in load_file(path).items() if k.startswith(prefix)}


def close(a: dict, b: dict, tol: float = 1e-5) -> bool:
    assert a.keys() == b.keys() and a
    return all(torch.allclose(a[k].float(), b[k].float(), atol=tol, rtol=tol) for k in a)


@pytest.fixture(autouse=True)
def _no_evaluator(monkeypatch):
    """No evaluator: computing its reference features would take longer than these runs."""
    monkeypatch.setattr(loop, "run_evaluator", lambda *args, **kwargs: None)


def test_one_step_on_two_processes_gives_the_weights_of_one_process_with_the_same_global_batch(two):
    alone, split = weights(two / "alone" / "state.safetensors"), weights(two / "one" / "state.safetensors")
    assert close(alone, split)
    assert not close(alone, weights(two / "full" / "state.safetensors"))  # trained further: the check can fail


def test_the_processes_draw_different_noise_that_together_is_the_single_process_noise(two):
    draws = [json.loads((two / f"draws-rank{r}.json").read_text()) for r in range(2)]
    step0 = [[d for d in ds if d["key"] == [0, 0, 0]] for ds in draws]
    # the starting noise of flow matching: the first image-shaped draw of each pass (16 per process, passes of 8)
    images = [[d for d in ds if len(torch.tensor(d["values"]).shape) == 4] for ds in step0]
    assert [d["offset"] for d in images[0]] == [0, 8] and [d["offset"] for d in images[1]] == [16, 24]
    mine = [torch.cat([torch.tensor(d["values"]) for d in ds]) for ds in images]
    assert mine[0].shape == (16, 1, 8, 8) and not torch.allclose(mine[0], mine[1])
    whole = SliceNoise(0, 0, 32, 0, "cpu")  # a single process's step draws the batch of 32 whole
    whole.calls = images[0][0]["call"]  # at the same draw of the step
    assert torch.equal(torch.cat(mine), randn(whole, (32, 1, 8, 8), "cpu"))


def test_several_steps_leave_the_same_ema_on_both_processes(two):
    ema = [weights(two / f"full-rank{r}.safetensors", "ema.") for r in range(2)]
    assert all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])
    net = {k.replace("net.", "ema.", 1): v for k, v in weights(two / "full-rank0.safetensors").items()}
    assert not close(ema[0], net, 1e-7)  # an average, not a copy of the network


def same_but_for_rounding(a: dict, b: dict, lr: float, tol: float = 1e-5) -> bool:
    """Whether two runs took the same steps, up to the order of float sums: one process sums a step's gradient over
    4 passes where 2 processes sum 2 each and then add, a difference of an ulp that Adam, which divides a gradient
    by its own size, turns into a whole step of +-lr for the few weights whose gradient is nearly 0 (seen: 180 of
    48,753 weights, by at most 1.7e-4, on a 2-core AMD EPYC with AVX-512 BF16; none on earlier hosts). So: all
    but 1% of the weights within `tol`, and none off by more than the peak learning rate. A resume that lost the
    optimiser's state, the step count or the noise moves most weights."""
    assert a.keys() == b.keys() and a
    off = sum(int((~torch.isclose(a[k].float(), b[k].float(), atol=tol, rtol=tol)).sum()) for k in a)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return off <= 0.01 * sum(v.numel() for v in a.values()) and worst <= lr


def test_a_two_process_run_resumed_on_one_reaches_the_uninterrupted_weights(two, tmp_path):
    parts = [json.loads((two / f"part-rank{r}.json").read_text()) for r in range(2)]
    assert all(p["interrupted"] and p["images"] == 64 for p in parts)  # the stop on process 1 stopped both
    resumed = loop.train(None, two / "part", resume=True, **QUIET)
    assert resumed["images"] == 128
    full, part, lr = two / "full" / "state.safetensors", two / "part" / "state.safetensors", tiny_config().train.lr
    assert same_but_for_rounding(weights(full), weights(part), lr)
    assert same_but_for_rounding(weights(full, "ema."), weights(part, "ema."), lr)
    # the network at the stop, 2 steps short (its keys without the checkpoint's "net."): the check can fail
    stopped = {f"net.{k}": v for k, v in weights(two / "part-rank0.safetensors").items()}
    assert not same_but_for_rounding(weights(full), stopped, lr)


def test_a_killed_process_stops_the_other_with_one_line_and_the_checkpoint_resumes(tmp_path):
    run, port = tmp_path / "run", free_port()
    sets = [a for s in [*TINY, "train.checkpoint_images=32", "train.grid_minutes=1000"] for a in ("--set", s)]
    args = ["train", "--dataset", "digits", "--images", "100000", "--batch-size", "32", "--out", str(run),
            "--no-progress", *sets]
    logs = [tmp_path / f"log{r}.txt" for r in range(2)]
    procs = [launch(r, port, tmp_path / "cache", logs[r], "cli", *args, timeout=15.0) for r in range(2)]
    try:
        deadline = time.monotonic() + WAIT
        while not (run / "state.safetensors").is_file():  # a checkpoint every step: wait for the first
            assert time.monotonic() < deadline and all(p.is_alive() for p in procs), logs[0].read_text()
            time.sleep(0.2)
        time.sleep(0.5)
        procs[1].kill()
        t0 = time.monotonic()
        assert finish(procs[:1], timeout=60) == [1]
        assert time.monotonic() - t0 < 45  # the group's timeout is 15 s; a dead peer is usually seen at once
    finally:
        finish(procs, timeout=10)
    lines = [line for line in logs[0].read_text().splitlines() if line.strip() and not line.startswith("[W")]
    assert lines[-1].startswith("imagegen: error: stopped") and "--resume" in lines[-1], lines
    assert not any("Traceback" in line for line in lines)
    saved = json.loads((run / "state.json").read_text())["progress"]["images"]
    resumed = loop.train(None, run, resume=True, budget={"images": saved + 64}, **QUIET)
    assert not resumed["interrupted"] and resumed["images"] == saved + 64


def test_a_sweep_under_torchrun_trains_every_trial_on_both_processes(tmp_path):
    from .test_sweep import TINY_FLOW, trials_of

    space, out, port = tmp_path / "space.toml", tmp_path / "sweep", free_port()
    space.write_text(TINY_FLOW)
    args = ["sweep", str(space), "--out", str(out), "--budget-trials", "2", "--no-progress"]
    logs = [tmp_path / f"log{r}.txt" for r in range(2)]
    # process 1 waits while process 0 alone draws the study's pictures: a generous timeout on a busy machine
    procs = [launch(r, port, tmp_path / "cache", logs[r], "cli-evaluator", *args, timeout=120.0) for r in range(2)]
    assert finish(procs) == [0, 0], [log.read_text()[-2000:] for log in logs]
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 and all(t.value > 0 for t in trials)
    assert all(list(t.intermediate_values) == [64, 128] for t in trials)  # process 0's reports to the pruner
    trained = [out / t.user_attrs["run"] for t in trials]
    trained += list((out / "retrain").iterdir())  # the best one, trained again with its full budget
    assert all(json.loads((run / "results.json").read_text())["processes"] == 2 for run in trained)
    assert "best: trial" in logs[0].read_text() and "best: trial" not in logs[1].read_text()  # one summary
    port = free_port()
    again = [launch(r, port, tmp_path / "cache", logs[r], "cli", *args, "--workers", "2") for r in range(2)]
    assert finish(again) == [2, 2] and "use one or the other" in logs[0].read_text()


def test_a_distributed_environment_without_its_address_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert main(["train", "--dataset", "digits", "--images", "32", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MASTER_ADDR is not set" in err[0]
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert main(["train", "--dataset", "digits", "--images", "32", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "WORLD_SIZE must be a whole number" in capsys.readouterr().err

"""One process of the 2-process runs of tests/test_distributed.py: `child` is forked by the test (a fork starts
in milliseconds where a new interpreter imports torch for seconds), takes the environment torchrun gives its
workers (RANK, WORLD_SIZE, MASTER_ADDR, ...) and runs without an evaluator (its reference features would take
longer than the runs): `imagegen ARGS` (`cli`; `cli-evaluator` with the evaluator), or `runs`, which trains in one
process group

- OUT/one: one step of a global batch of 32 (16 per process, in passes of 8), recording the noise it drew;
- OUT/full: four steps, uninterrupted;
- OUT/part: the same four steps, stopped by a stop request on process 1 alone after two;

and writes each process's networks after each run to OUT/RUN-rankR.safetensors."""

import json
import os
import sys
import traceback
from pathlib import Path

from safetensors.torch import save_file

from imagegen import cli
from imagegen.methods import noise
from imagegen.train import dist, loop, scoring

from .test_train import StopAfter, tiny_config


def recording_draws(log: list):
    real = noise.SliceNoise.draw

    def draw(self, fn, shape, **kwargs):
        out = real(self, fn, shape, **kwargs)
        log.append({"key": list(self.key), "offset": self.offset, "call": self.calls - 1, "values": out.tolist()})
        return out

    noise.SliceNoise.draw = draw


def run(out: Path, name: str, cfg, stop=None) -> dict:
    task = loop.GeneratorTask(cfg, None, False, lambda line: None)
    result = loop.run_loop(task, out / name, show_progress=False, log=lambda line: None, stop=stop)
    nets = {f"net.{k}": v for k, v in task.net.state_dict().items()}
    nets.update({f"ema.{k}": v for k, v in task.ema.state_dict().items()})
    save_file({k: v.contiguous() for k, v in nets.items()}, str(out / f"{name}-rank{dist.rank()}.safetensors"))
    return result


def runs(out: Path) -> None:
    with dist.session():
        draws: list = []
        recording_draws(draws)
        run(out, "one", tiny_config(images=32, **{"train.micro_batch": 8}))
        (out / f"draws-rank{dist.rank()}.json").write_text(json.dumps(draws))
        run(out, "full", tiny_config(images=128))
        stop = StopAfter(1) if dist.rank() == 1 else None  # Ctrl-C on one process, after its second step
        part = run(out, "part", tiny_config(images=128), stop=stop)
        (out / f"part-rank{dist.rank()}.json").write_text(json.dumps(part))


def child(rank: int, port: int, cache: Path, timeout: float, log: Path, what: str, *args) -> None:
    """Process `rank` of 2: its environment, its output into `log`, then `what` ("runs" or "cli"); it exits with
    the exit code (3 for an exception) without returning into the test's process it was forked from."""
    code = 3
    try:
        sys.stdout = sys.stderr = open(log, "w", buffering=1)  # noqa: SIM115 (open until os._exit)
        os.dup2(sys.stdout.fileno(), 1)  # and what C++ writes (gloo's warnings)
        os.dup2(sys.stdout.fileno(), 2)
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "IMAGEGEN_CACHE": str(cache),
                           "IMAGEGEN_DIST_TIMEOUT": str(timeout), "IMAGEGEN_PROGRESS": "0"})
        # no evaluator (its reference features would take longer than these runs), unless asked for: the real one
        # then, whatever the test that forked this process had patched
        loop.run_evaluator = scoring.run_evaluator if what == "cli-evaluator" else lambda *a, **k: None
        code = cli.main(list(args)) if what.startswith("cli") else runs(Path(args[0])) or 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

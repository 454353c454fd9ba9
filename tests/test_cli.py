import json

import numpy as np
import pytest
from PIL import Image

from imagegen.cli import build_parser, main
from imagegen.cli.data import next_step_lines, next_steps


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands_and_defaults(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and all(c in out for c in ("classify", "evaluator", "eval", "data", "demo"))
    code, out, _ = run(capsys, "classify", "train", "--help")
    assert code == 0 and "(default: relu)" in out and "(default: 32)" in out and "--device" in out


def test_bad_usage_exits_2(capsys):
    code, _, err = run(capsys, "classify", "train", "--activation", "gelu")
    assert code == 2 and "invalid choice" in err
    code, _, err = run(capsys, "classify", "train", "--dataset", "digits", "--set", "fit.nope=1")
    assert code == 2 and err.startswith("imagegen: error: unknown config key 'fit.nope'; known keys: augment, ")
    assert err.count("\n") == 1
    code, _, err = run(capsys, "classify", "train", "--dataset", "digits", "--set", "fit.epochs=0")
    assert code == 2 and err == "imagegen: error: config key fit.epochs must be >= 1; got 0\n"
    code, _, err = run(capsys, "classify", "train", "--dataset", "digits", "--epochs", "0")
    assert code == 2 and err == ("imagegen: error: --epochs must be >= 1, got 0 "
                                 "(see: imagegen classify train --help)\n")


def test_user_mistakes_are_one_line_without_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "classify", "train", "--dataset", "cifar10")
    assert code == 1 and err.count("\n") == 1 and "unknown dataset 'cifar10'" in err and "Traceback" not in err
    code, _, err = run(capsys, "data", "--dataset", f"folder:{tmp_path / 'missing'}")
    assert code == 1 and "does not exist" in err


def test_classify_train_predict_round_trip(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "classify", "train", "--dataset", "digits", "--epochs", "2", "--out", str(out),
                            "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["accuracy"] > 0.8 and result["loss"] > 0 and result["seconds_per_epoch"] > 0
    assert "epoch 2/2" in err and "test accuracy" in err
    for name in ("model.json", "model.safetensors", "curves.png", "predictions.png", "metrics.json"):
        assert (out / name).is_file()
    # an existing run directory is refused unless --overwrite
    code, _, err = run(capsys, "classify", "train", "--dataset", "digits", "--epochs", "1", "--out", str(out))
    assert code == 1 and "--overwrite" in err and (out / "model.json").is_file()
    # predict labels a user's images
    from imagegen.data import load_dataset

    test = load_dataset("digits", "test")
    files = []
    for i in range(6):
        Image.fromarray(test.images[i, 0]).resize((32, 32)).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    code, stdout, _ = run(capsys, "classify", "predict", str(out), *files, "--json")
    preds = json.loads(stdout)["predictions"]
    right = sum(p["class"] == t for p, t in zip(preds, test.labels[:6], strict=True))
    assert code == 0 and len(preds) == 6 and right >= 4
    code, _, err = run(capsys, "classify", "predict", str(tmp_path / "0.png"), files[0])
    assert code == 1 and "not an imagegen checkpoint" in err


def test_config_file_and_flags(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 3\n[model]\nactivation = "tanh"\n[fit]\nepochs = 1\nlr = 0.002\n'
                   '[data]\ndataset = "digits"\n')
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "classify", "train", "--config", str(cfg), "--pooling", "avg",
                            "--set", "fit.batch_size=64", "--out", str(out), "--json", "--no-progress")
    assert code == 0, err
    assert err.splitlines()[0] == ("seed classifier on digits: 32 filters, 128 hidden units, tanh, avg pooling; "
                                   f"1 epoch of batch 64, adam lr 0.002; full config: {out}/metrics.json")
    assert json.loads(stdout)["epochs"] == 1
    saved = json.loads((out / "metrics.json").read_text())["config"]
    assert saved["seed"] == 3 and saved["device"] == "auto"  # the file's seed stands: --seed was not given
    assert (saved["model"]["activation"], saved["model"]["pooling"], saved["fit"]["batch_size"]) == ("tanh", "avg", 64)


def test_eval_rejects_bad_samples(capsys, tmp_path):
    np.savez(tmp_path / "s.npz", images=np.zeros((3, 1, 8, 8), np.int32))
    code, _, err = run(capsys, "eval", str(tmp_path / "s.npz"), "--dataset", "digits")
    assert code == 1 and "must be uint8" in err


@pytest.mark.parametrize("argv", [["--version"], ["classify", "--help"]])
def test_informational_commands(capsys, argv):
    assert run(capsys, *argv)[0] == 0


def test_demo_loads_the_pinned_evaluator_then_trains_a_generator_and_scores_it(capsys, tmp_path):
    argv = ["demo", "--dataset", "digits", "--minutes", "0.05", "--eval-samples", "50", "--out", str(tmp_path / "d"),
            "--no-progress"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert (tmp_path / "d" / "grid.png").is_file() and (tmp_path / "d" / "model.json").is_file()
    assert "[1/2] evaluator for digits: pinned digits-v1" in out and "training it once" not in out
    assert "computing reference features for digits-v1 once" in out
    assert "class grid" in out and "real floor" in out and "evaluator digits-v1 (sha256" in out
    page = (tmp_path / "d" / "report.html").read_text()
    assert "report.html" in out and "Evaluation" in page and "<figcaption>trajectory</figcaption>" in page
    assert "what it measures" in page and "verdict: FID" in page
    steps = next_steps(str(tmp_path / "d"), tmp_path / "d" / "report.html")
    assert out.strip().splitlines()[-4:] == ["next:", *next_step_lines(steps)]
    the_next_steps_run(capsys, steps, tmp_path / "d")
    assert "evaluator digits-v1 (sha256" in page
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "pinned digits-v1" in out and "computing reference features" not in out


def the_next_steps_run(capsys, steps, d):
    """The demo's three last lines are commands that work: each imagegen one parses (a renamed flag fails here),
    the sample command runs twice (--overwrite), the resume runs with a budget a test affords."""
    (_, sample), (_, resume), (_, browse) = steps
    args = build_parser().parse_args(sample[1:])
    assert args.func.__name__ == "run_sample" and args.class_index == 0 and args.n == 100
    args = build_parser().parse_args(resume[1:])
    assert args.func.__name__ == "run_train" and args.resume == str(d) and args.minutes == 15
    for _ in range(2):
        code, _, err = run(capsys, *sample[1:], "--no-progress")
        assert code == 0, err
    assert (d / "class-0" / "grid.png").is_file()
    code, _, err = run(capsys, *resume[1:-1], "0.06", "--no-progress")  # 15 minutes, as 0.06
    assert code == 0, err
    assert browse[1:] == ["-m", "webbrowser", (d / "report.html").resolve().as_uri()]


def test_eval_end_to_end_with_memorisation(capsys, tmp_path):
    from imagegen.data import load_dataset
    from imagegen.metrics import save_samples

    assert run(capsys, "evaluator", "train", "--dataset", "digits", "--epochs", "2", "--no-progress")[0] == 0
    train = load_dataset("digits", "train")
    save_samples(tmp_path / "s.npz", train.images[:200], train.labels[:200])
    code, out, err = run(capsys, "eval", str(tmp_path / "s.npz"), "--dataset", "digits", "--evaluator", "local",
                         "--pairs", str(tmp_path / "pairs.png"), "--no-progress")
    assert code == 0, err
    assert out.startswith("evaluator local-digits-") and ", local: comparable only with" in out
    assert "real floor" in out and "memorised fraction" in out and "biased" in err
    assert (tmp_path / "pairs.png").is_file()
    np.savez(tmp_path / "big.npz", images=np.zeros((5, 1, 28, 28), np.uint8))
    code, _, err = run(capsys, "eval", str(tmp_path / "big.npz"), "--dataset", "digits")
    assert code == 1 and "needs (N, 1, 8, 8)" in err


def test_train_and_sample_help_show_defaults(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--resume RUN_DIR" in out and "(default: flow)" in out and "(default: 5.0)" in out
    code, out, _ = run(capsys, "sample", "--help")
    assert code == 0 and "dpmpp-2m" in out and "(default: 100)" in out


def test_distill_reads_a_config_file_then_flags_then_set(capsys, tmp_path, monkeypatch):
    import imagegen.train.distill

    seen = {}
    monkeypatch.setattr(imagegen.train.distill, "distill",
                        lambda teacher, out, cfg, **kw: seen.update(cfg=cfg, out=out) or {})
    (tmp_path / "d.toml").write_text('method = "reflow"\nsteps = 2\nseed = 5\npairs = 500\n[train]\nlr = 1e-4\n')
    argv = ["distill", str(tmp_path / "teacher"), "--config", str(tmp_path / "d.toml"), "--steps", "1"]
    assert run(capsys, *argv, "--set", "train.lr=2e-4")[0] == 0
    cfg = seen["cfg"]
    assert (cfg.method, cfg.steps, cfg.train.lr, cfg.seed, cfg.pairs) == ("reflow", 1, 2e-4, 5, 500)
    assert cfg.train.warmup_images == 1_000  # distillation's own defaults for the settings a file does not give
    assert seen["out"] == f"{tmp_path / 'teacher'}-reflow-1"
    (tmp_path / "bad.toml").write_text('teacher_sampler = "rk4"\n')
    code, _, err = run(capsys, "distill", str(tmp_path / "teacher"), "--config", str(tmp_path / "bad.toml"))
    assert code == 2 and err == ("imagegen: error: config key teacher_sampler must be one of euler, heun, dpmpp-2m, "
                                 "ddim; got 'rk4'\n")

"""`imagegen sweep SPACE.toml`: choose settings by experiment (an optuna study). Parse, call the library, format."""

from __future__ import annotations

from pathlib import Path

from .shared import MAX_MINUTES, check_output, common_flags, count, log_for, positive

MAX_TRIALS = 100_000
MAX_WORKERS = 256


def register(sub, common, data, fmt) -> None:
    p = sub.add_parser("sweep", parents=[common_flags(seed=False, device=False)], formatter_class=fmt,
                       help="choose settings by experiment: an optuna study of short runs, pruned as they train")
    p.add_argument("space", help="a space file: what to train, the settings to search, the objective "
                   "(see configs/sweeps/)")
    p.add_argument("--out", default=None, help="the sweep directory (default: sweeps/SPACE_NAME); run the same "
                   "command again to continue a stopped sweep")
    p.add_argument("--budget-minutes", type=positive(MAX_MINUTES), default=None,
                   help="start no trial after this many minutes of sweeping (earlier starts count)")
    p.add_argument("--budget-trials", type=count(MAX_TRIALS), default=None,
                   help="this many trials in all (completed, pruned or failed; an interrupted one runs again)")
    p.add_argument("--storage", default=None,
                   help="the study's database: a SQLAlchemy URL (postgresql://... for several machines), a journal "
                        "file PATH.journal, or 'journal' for OUT/study.journal (several processes on one machine); "
                        "default: SQLite in OUT/study.db")
    p.add_argument("--workers", type=count(MAX_WORKERS), default=1,
                   help="trials at once on this machine, each with its share of the cores")
    p.set_defaults(func=run_sweep)


def run_sweep(args):
    from ..sweep import sweep

    out = Path(args.out) if args.out else Path("sweeps") / Path(args.space).stem
    check_output(out, folder=True)
    result = sweep(args.space, out, minutes=args.budget_minutes, trials=args.budget_trials, storage=args.storage,
                   workers=args.workers, log=log_for(args))
    return None if "process" in result else result  # under torchrun: one summary, process 0's

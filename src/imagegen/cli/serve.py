"""`imagegen serve`: the studio (a web page and HTTP API over --runs) under uvicorn. Parse, check, start."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import ImagegenError, UsageError
from .shared import MAX_INDEX, common_flags, count, whole

LOCAL = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "IMAGEGEN_TOKEN"


def register(sub, common, data, fmt) -> None:
    p = sub.add_parser("serve", parents=[common_flags(seed=False)], formatter_class=fmt,
                       help="the studio: a web page and HTTP API over your runs (needs imagegen[serve])")
    p.add_argument("--runs", default="runs", help="the folder of runs to serve (job history in RUNS/.studio)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; any but 127.0.0.1/localhost needs --token")
    p.add_argument("--port", type=whole(0, 65535), default=8000)
    p.add_argument("--token", default=None,
                   help=f"a secret every API request must carry (default: ${TOKEN_ENV}; none on 127.0.0.1)")
    p.add_argument("--cors-origin", default=None, metavar="ORIGIN",
                   help="allow this web origin (e.g. http://localhost:3000) to call the API (default: none)")
    p.add_argument("--threads", type=count(MAX_INDEX), default=None,
                   help="torch threads of the generation worker (default: half the cores; training gets the rest)")
    p.set_defaults(func=run_serve)


def run_serve(args):
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.host not in LOCAL and not token:
        raise UsageError(f"--host {args.host} lets other machines in: give --token TOKEN (or set {TOKEN_ENV})")
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImagegenError(f"imagegen serve needs {' and '.join(missing)}: pip install 'imagegen[serve]'")
    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        raise ImagegenError(f"--runs {runs} is a file; give the folder that holds your runs")
    import uvicorn

    from ..serve import create_app

    app = create_app(runs, token=token, cors_origin=args.cors_origin, device=args.device, threads=args.threads)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"imagegen studio: open http://{host}:{args.port}/{'?token=' + token if token else ''} "
          f"(runs: {runs.resolve()}; API docs at /docs; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


"""`pyramidal serve`: a local web page for restoring photographs (pip install -e .[web])."""

from __future__ import annotations

import argparse
import sys

from pyramidal.cli.common import add_device, add_precision
from pyramidal.errors import PyramidalError
from pyramidal.options import RestoreOptions

HELP = "a local web page to restore photos: upload or paste, pick the task, paint masks, compare, download"

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to NAME (a name this computer has on the network); "
                             "requests for any other name are refused, so that no other site's page can use this "
                             "one (repeatable; localhost, 127.0.0.1, ::1 and --host are always answered)")
    parser.add_argument("--weights", action="append", default=[], metavar="FILE",
                        help="a trained .safetensors file the page may choose, besides the built-in weights "
                             "(repeatable)")
    parser.add_argument("--weights-dir", action="append", default=[], metavar="DIR",
                        help="offer every .safetensors file (with its .json sidecar) under DIR (repeatable)")
    add_device(parser)
    add_precision(parser)
    parser.add_argument("--max-megapixels", type=float, default=50.0,
                        help="largest image accepted, in megapixels (default 50)")
    parser.add_argument("--max-upload-mb", type=float, default=100.0,
                        help="largest request accepted, in MB (default 100)")
    parser.add_argument("--queue", type=int, default=4,
                        help="restores that may wait while one runs; more are answered 'busy, retry' (default 4)")
    parser.add_argument("--tile", type=int, default=RestoreOptions.tile,
                        help=f"default tile size in px (default {RestoreOptions.tile})")
    parser.add_argument("--slow-baselines", action="store_true",
                        help="also score samples with the slow classical methods (BM3D: tens of seconds)")


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def served_hosts(host: str, allowed: list[str]) -> tuple[str, ...]:
    """The Host header names the server answers: this computer's own (localhost, 127.0.0.1, ::1), --host, the
    --allow-host names, and on a wildcard --host (every interface) this computer's name and addresses."""
    import socket

    from pyramidal.web.settings import LOCAL_HOSTS  # lazy: web/ loads torch, only when serving

    names = [*LOCAL_HOSTS, host, *allowed]
    if host in WILDCARD_HOSTS:
        name = socket.gethostname()
        names += [name, socket.getfqdn()]
        try:
            names += [info[4][0] for info in socket.getaddrinfo(name, None)]
        except OSError:  # a name that does not resolve: --allow-host is the way
            pass
    return tuple(dict.fromkeys(n for n in names if n not in WILDCARD_HOSTS))


def run(args: argparse.Namespace) -> int:
    import socket

    try:
        import uvicorn

        from pyramidal.web.app import create_app  # lazy: the web extra, and torch
        from pyramidal.web.settings import TILE_RANGE, ServeConfig
    except ModuleNotFoundError as exc:
        raise PyramidalError(f"pyramidal serve needs the web extra ({exc.name} is missing): "
                             "pip install -e .[web]") from None
    from pyramidal.web import engine  # lazy: loads torch

    if not 1 <= args.port <= 65535:
        raise PyramidalError(f"--port {args.port}: choose a port from 1 to 65535")
    if args.max_megapixels <= 0 or args.max_upload_mb <= 0:
        raise PyramidalError("--max-megapixels and --max-upload-mb must be positive")
    if args.queue < 1:
        raise PyramidalError("--queue must be at least 1")
    if not TILE_RANGE[0] <= args.tile <= TILE_RANGE[1]:
        raise PyramidalError(f"--tile {args.tile}: choose a size from {TILE_RANGE[0]} to {TILE_RANGE[1]} px")
    weights = engine.weights_choices(args.weights, args.weights_dir)
    rt = engine.runtime(args.device, args.precision)  # resolves --device now, so a bad one fails here
    options = RestoreOptions(tile=args.tile, device=args.device, precision=args.precision)
    config = ServeConfig(weights=weights, options=options,
                         max_pixels=int(args.max_megapixels * 1e6), max_upload_bytes=int(args.max_upload_mb * 2**20),
                         queue_size=args.queue, slow_baselines=args.slow_baselines,
                         hosts=served_hosts(args.host, args.allow_host))
    app = create_app(config)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:  # a clear one-line error for a taken port, before uvicorn logs its own
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as exc:
        raise PyramidalError(f"--host {args.host} --port {args.port}: cannot listen there ({exc.strerror})") from None

    if args.host not in LOCAL_HOSTS:
        print(f"pyramidal serve: warning: listening on {args.host}, so other computers can reach this page; "
              "it has no login. Use the default --host 127.0.0.1 to keep it to this computer.", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"pyramidal serve: models run on {rt.device} ({rt.precision}); {len(weights) - 1} trained weights file(s) "
          f"besides the built-in ones", flush=True)
    print(f"pyramidal serve: open http://{shown}:{args.port}/ in a browser (Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                limit_concurrency=64, timeout_keep_alive=5)
    return 0

"""`cosface serve --model M [--db G.sqlite]`: the REST API and web page under uvicorn."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from cosface.commands import device

API_KEY_ENV = "COSFACE_API_KEY"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve verification, embedding and identification over HTTP, with a web page",
        description="Run the cosface HTTP API (POST /v1/verify, /v1/embed, /v1/detect, /v1/identify; subjects under "
        "/v1/subjects; GET /healthz; OpenAPI docs at /docs) and its web page at /. The model is loaded once; "
        "concurrent requests share forward passes. Binds 127.0.0.1 unless told otherwise; another address "
        f"needs an API key (--api-key or ${API_KEY_ENV}) or an explicit --insecure.",
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="checkpoint, ONNX or TorchScript export")
    p.add_argument("--db", metavar="G.sqlite", help="gallery file for /v1/identify and /v1/subjects (created if new)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", metavar="KEY",
                   help=f"require this key on every request but /healthz and the page (default: ${API_KEY_ENV}); "
                   "a key given here shows in the process list, the variable does not")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--max-upload-mb", type=float, default=10.0, metavar="MB", help="request body limit (default 10)")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="largest decoded image, in pixels (default 40,000,000)")
    p.add_argument("--scoring", choices=("max", "mean"), default="max", help="gallery subject score (default max)")
    p.add_argument("--index", choices=("auto", "exact", "faiss"), default="auto", help="gallery search (default auto)")
    p.add_argument("--device", default="auto", type=device, help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_can_listen(host: str, port: int) -> None:
    """Bind --host:--port as uvicorn will (SO_REUSEADDR) and let go: a port in use or an address this
    machine does not have is one line, exit 2."""
    import socket

    from cosface.errors import CosfaceError
    from cosface.fsio import os_reason

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise CosfaceError(f"cannot listen on {host}:{port}: {os_reason(e)}") from None


def run(args: argparse.Namespace) -> int:
    from cosface.errors import CosfaceError
    from cosface.optional import check

    check("fastapi", "uvicorn", "multipart", purpose="cosface serve")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and len(api_key) < 8:
        raise CosfaceError("the API key must be at least 8 characters")
    if not is_loopback(args.host) and api_key is None and not args.insecure:
        raise CosfaceError(f"--host {args.host} is reachable from other machines: set an API key (--api-key or "
                           f"${API_KEY_ENV}), or pass --insecure to serve without one")
    if not 0 < args.port < 65536:
        raise CosfaceError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise CosfaceError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    check_can_listen(args.host, args.port)     # before the model loads; uvicorn would exit 3 with its log

    import uvicorn

    from cosface.gallery import MAX_PIXELS, open_gallery
    from cosface.inference import Embedder
    from cosface.serve import ServeSettings, Service, create_app

    embedder = Embedder(args.model, device=args.device, quiet=True)
    gallery = open_gallery(args.db, embedder, index=args.index, scoring=args.scoring) if args.db else None
    settings = ServeSettings(api_key=api_key, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                             max_pixels=args.max_pixels or MAX_PIXELS)
    service = Service(embedder, gallery, settings)
    app = create_app(service)
    where = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}"
    print(f"cosface serve: {embedder.path} ({embedder.info.backbone}, threshold {service.threshold:.4f}); "
          f"gallery {args.db or 'none'}; API key {'required' if api_key else 'off'}; page {where}/ ; docs {where}/docs",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, server_header=False)
    service.batcher.close()
    return 0

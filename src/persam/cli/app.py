"""``persam app``: the web app (Gradio) around one model loaded once."""

from __future__ import annotations

import argparse
import re

from persam.cli.common import add_model_options, load_model
from persam.errors import OptionsError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="web app: personalize from clicks, segment photos, follow objects in a video",
        description="Serve the web app on HOST:PORT (default 127.0.0.1:7860: this machine only). One model is "
        "loaded once; requests wait in one queue. Needs the app extra: pip install 'persam[app]'.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--max-file-size",
        type=file_size,
        default="200mb",
        metavar="SIZE",
        help="largest upload, e.g. 50mb, 1gb (default 200mb: 200 MiB); a larger file is refused with a message",
    )
    p.add_argument("--queue-size", type=int, default=64, metavar="N", help="requests waiting at most (default 64)")
    add_model_options(p)
    p.set_defaults(func=run)


#: Bytes per unit of ``--max-file-size`` (binary multiples, as Gradio counts them).
SIZE_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


def file_size(text: str) -> int:
    """``--max-file-size``: ``"200mb"`` -> bytes (a whole number and a unit b, kb, mb, gb or tb; above 0)."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]+)\s*", text.lower())
    if match is None or match[2] not in SIZE_UNITS or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"--max-file-size takes a size above 0 with a unit (b, kb, mb, gb, tb), e.g. 50mb; got {text!r}"
        )
    return int(match[1]) * SIZE_UNITS[match[2]]


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise OptionsError("the web app needs Gradio; install it with: pip install 'persam[app]'") from None
    from persam.app.ui import build

    if not 0 < args.port < 65536:
        raise OptionsError(f"--port must be 1..65535, got {args.port}")
    if args.queue_size < 1:
        raise OptionsError(f"--queue-size must be at least 1, got {args.queue_size}")
    model = load_model(args)
    demo = build(model)
    demo.queue(default_concurrency_limit=1, max_size=args.queue_size)
    print(
        f"persam app: {model.backend.name} on {model.backend.device}; open http://{args.host}:{args.port}", flush=True
    )
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=args.max_file_size,
        share=False,
        ssr_mode=False,
        mcp_server=False,
        show_error=False,
        quiet=True,
    )
    return 0

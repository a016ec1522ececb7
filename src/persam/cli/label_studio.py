"""``persam label-studio annotate`` and ``persam label-studio serve``: persam inside Label Studio.

``annotate`` pre-annotates a project through Label Studio's API (``persam.labelstudio.annotate``);
``serve`` is the ML backend a project connects to (``persam.labelstudio.server``). Both segment on the job
engine; URL and key also come from ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY``. Needs
``persam[labelstudio]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from persam.cli.common import add_model_options, add_quiet_option, model_spec, progress, refuse, summary, warn
from persam.engine.spec import MethodSpec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "label-studio",
        help="pre-annotate a Label Studio project, or serve as its ML backend",
        description="persam inside Label Studio: learn each label from the submitted annotations and "
        "pre-annotate the other tasks (annotate), or answer Label Studio as an ML backend (serve).",
    )
    commands = p.add_subparsers(dest="label_studio_command", required=True, metavar="COMMAND")
    a = commands.add_parser("annotate", help="write predictions of each label into a project's other tasks")
    a.add_argument("--project", type=int, required=True, metavar="ID", help="the project's id")
    a.add_argument(
        "--label", action="append", default=[], metavar="NAME", help="pre-annotate this label (repeatable; default all)"
    )
    a.add_argument(
        "--overwrite", action="store_true", help="replace predictions of the same concept (default: skip those tasks)"
    )
    add_common(a)
    add_quiet_option(a)
    a.set_defaults(func=run_annotate)
    s = commands.add_parser("serve", help="the ML backend a Label Studio project connects to")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    add_common(s)
    s.set_defaults(func=run_serve)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="Label Studio's URL (default: LABEL_STUDIO_URL)")
    p.add_argument("--api-key", help="a Label Studio API key or access token (default: LABEL_STUDIO_API_KEY)")
    p.add_argument(
        "--concepts",
        metavar="DIR",
        help="where concepts are kept, one .persam per project and label (default: WORK/concepts)",
    )
    p.add_argument(
        "--work", metavar="DIR", help="photos, embeddings and masks (default: label-studio in persam's cache)"
    )
    p.add_argument("--finetune", action="store_true", help="PerSAM-F: fit the two mask-scale weights")
    p.add_argument(
        "--prior",
        choices=["similarity", "part-aware"],
        default="similarity",
        help="where the object is looked for: PerSAM's similarity (default) or P2SAM's part-aware prior (the "
        "matcher prior is not offered here: it needs each photo's pixels for DINOv2, and the photos are "
        "segmented from their stored SAM embeddings)",
    )
    p.add_argument("--detect-absent", action="store_true", help="no region where the object is not in the photo")
    p.add_argument("--max-instances", type=int, default=1, metavar="N", help="up to N regions per photo")
    add_model_options(p)


def _setup(args: argparse.Namespace):
    """(model spec, method, workspace, concept store, URL, key), checked before the model loads."""
    from persam.engine.checks import check_method
    from persam.labelstudio.annotate import default_work_folder
    from persam.labelstudio.client import require_sdk
    from persam.labelstudio.project import ConceptStore, Workspace

    require_sdk()
    given = [f"--{n}" for n in ("precision", "runtime") if getattr(args, n, None) not in (None, "fp32", "torch")]
    refuse(given, "with label-studio (photos are encoded with PyTorch in fp32 into the album index)")
    method = check_method(
        MethodSpec(
            finetune=args.finetune,
            prior=args.prior,
            max_instances=args.max_instances,
            detect_absent=args.detect_absent,
        ),
        learning=True,
    )
    spec = model_spec(args)
    work = Path(args.work) if args.work else default_work_folder()
    concepts = ConceptStore(Path(args.concepts).resolve() if args.concepts else work.resolve() / "concepts")
    url = args.url or os.environ.get("LABEL_STUDIO_URL")
    key = args.api_key or os.environ.get("LABEL_STUDIO_API_KEY")
    return spec, method, lambda model: Workspace(work, model, spec), concepts, url, key


def run_annotate(args: argparse.Namespace) -> int:
    from persam.labelstudio.annotate import AnnotateOptions, annotate
    from persam.labelstudio.client import Client

    spec, method, workspace, concepts, url, key = _setup(args)
    from persam.labelstudio.config import parse_config

    client = Client(url, key)
    parse_config(client.label_config(args.project)).output()  # the server, key, project and config before the model
    options = AnnotateOptions(args.project, tuple(args.label), method, args.overwrite)
    result = annotate(client, workspace(spec.load()), concepts, options, warn=warn, progress=progress)
    summary(args, result.summary())
    return result.status


def run_serve(args: argparse.Namespace) -> int:
    from persam.labelstudio.backend import Backend
    from persam.labelstudio.client import check_url
    from persam.labelstudio.server import serve

    spec, method, workspace, concepts, url, key = _setup(args)
    if url:
        check_url(url)
    backend = Backend(workspace(spec.load()), concepts, method, url, key)
    serve(
        backend,
        args.host,
        args.port,
        on_ready=lambda where: print(
            f"persam label-studio serve: the ML backend at {where} (concepts in {concepts.folder})", flush=True
        ),
    )
    return 0

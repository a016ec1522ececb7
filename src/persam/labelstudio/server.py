"""``persam label-studio serve``: the HTTP side of the ML backend Label Studio connects to (Starlette,
served by uvicorn; both come with ``persam[labelstudio]``).

Routes: ``GET /health`` (and ``/``), ``POST /setup``, ``POST /predict``, ``POST /webhook``
(``persam.labelstudio.backend`` does the work, one request at a time). A request the requester can fix
(malformed JSON, an unknown project or label, a photo that cannot be fetched or read, a config without
an image) is answered ``400 {"status": "error", "error": "<one line>"}``, and the server goes on serving;
any other exception is a bug: ``500`` with "internal error", its traceback logged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

from persam.errors import PersamError

log = logging.getLogger("persam.labelstudio")


def create_app(backend):
    """The Starlette application serving ``backend`` (``persam.labelstudio.backend.Backend``)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, line: str) -> JSONResponse:
        return JSONResponse({"status": "error", "error": line}, status_code=status)

    def handler(work: Callable[[object], dict]):
        async def endpoint(request):
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return error(400, f"the request body is not JSON ({exc})")
            try:
                return JSONResponse(await run_in_threadpool(work, body))
            except PersamError as exc:
                log.warning("%s: %s", request.url.path, exc)
                return error(400, str(exc))
            except Exception as exc:  # a bug in persam: said so, with the traceback in the log
                log.exception("internal error on %s", request.url.path)
                return error(500, f"internal error (a bug in persam): {type(exc).__name__}: {exc}")

        return endpoint

    async def health(request):
        return JSONResponse({"status": "UP", "model_class": "persam", "model": backend.workspace.spec.model})

    async def versions(request):
        return JSONResponse({"versions": ["persam"]})

    routes = [
        Route("/", health, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/setup", handler(backend.setup), methods=["POST"]),
        Route("/predict", handler(backend.predict), methods=["POST"]),
        Route("/webhook", handler(backend.webhook), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def serve(backend, host: str, port: int, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``backend`` on ``host``:``port`` until stopped (Ctrl-C, SIGTERM)."""
    import uvicorn

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="persam: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request to Label Studio otherwise
    config = uvicorn.Config(create_app(backend), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(f"http://{host}:{port}")
    server.run()

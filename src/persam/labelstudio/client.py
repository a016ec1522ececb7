"""Label Studio's API, through the official SDK (``label_studio_sdk.LabelStudio``): a project's labeling
config and tasks, its photos, and the predictions persam writes.

Tasks, annotations and predictions are handed on as plain JSON dicts (the SDK's models dumped), so the
readers (``persam.labelstudio.regions``) see the same data whether it came from the API or in a request
Label Studio sent the ML backend. The SDK's errors become one-line ``PersamError``s: a key that is not
accepted, a project that does not exist, a server that cannot be reached.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlparse

from persam.errors import InputError, MissingExtraError, OptionsError

#: seconds a request to Label Studio may take
TIMEOUT = 60.0
#: the largest photo fetched (bytes)
MAX_PHOTO_BYTES = 256 * 1024 * 1024


def require_sdk() -> None:
    """``MissingExtraError`` naming the extra when ``label_studio_sdk`` is not installed."""
    import importlib.util

    if importlib.util.find_spec("label_studio_sdk") is None:
        raise MissingExtraError(
            "Label Studio support needs the label-studio-sdk package; pip install 'persam[labelstudio]'"
        )


def check_url(url: str | None) -> str:
    """``url`` as Label Studio's base URL (http or https, no trailing slash)."""
    if not url:
        raise OptionsError("no Label Studio URL; pass --url or set LABEL_STUDIO_URL", field="url")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise OptionsError(f"{url!r} is not an http(s) URL of a Label Studio server", field="url")
    return url.rstrip("/")


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """The SDK's and httpx's errors while doing ``what`` as one-line ``PersamError``s."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as exc:
        status = exc.status_code
        if status in (401, 403):
            raise OptionsError(f"{what}: Label Studio refused the API key (HTTP {status})", field="api_key") from None
        if status == 404:
            raise InputError(f"{what}: not found in Label Studio (HTTP 404)", field="project") from None
        detail = exc.body.get("detail", "") if isinstance(exc.body, dict) else ""
        raise InputError(f"{what}: Label Studio answered HTTP {status} {detail}".strip()) from None
    except httpx.HTTPError as exc:
        raise InputError(f"{what}: Label Studio cannot be reached ({type(exc).__name__}: {exc})", field="url") from None


def _plain(model) -> dict:
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else dict(model)


class Client:
    """A connection to one Label Studio server with one API key (legacy token or personal access token)."""

    def __init__(self, url: str | None, api_key: str | None) -> None:
        require_sdk()
        from label_studio_sdk import LabelStudio

        self.url = check_url(url)
        if not api_key:
            raise OptionsError("no Label Studio API key; pass --api-key or set LABEL_STUDIO_API_KEY", field="api_key")
        self.api_key = api_key
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=TIMEOUT)
        self._auth: str | None = None

    def authorization(self) -> str:
        """The ``Authorization`` header of a file download: ``Token KEY``, or for a personal access token (a
        JWT refresh token) ``Bearer`` with an access token the server gives for it."""
        if self._auth is None:
            if self.api_key.count(".") == 2:
                with api_errors("exchanging the personal access token"):
                    self._auth = f"Bearer {self.sdk.tokens.refresh(refresh=self.api_key).access}"
            else:
                self._auth = f"Token {self.api_key}"
        return self._auth

    def label_config(self, project: int) -> str:
        """The project's labeling config (XML)."""
        with api_errors(f"project {project}"):
            return self.sdk.projects.get(id=project).label_config or ""

    def tasks(self, project: int) -> list[dict]:
        """Every task of the project with its annotations and predictions, in id order."""
        with api_errors(f"the tasks of project {project}"):
            found = [_plain(t) for t in self.sdk.tasks.list(project=project, fields="all", page_size=100)]
        return sorted(found, key=lambda t: t["id"])

    def tasks_by_id(self, ids: list[int]) -> list[dict]:
        """These tasks, with annotations and predictions, in the order given."""
        out = []
        for task_id in ids:
            with api_errors(f"task {task_id}"):
                out.append(_plain(self.sdk.tasks.get(id=str(task_id))))
        return out

    def predictions(self, task: int) -> list[dict]:
        """The task's predictions."""
        with api_errors(f"the predictions of task {task}"):
            return [_plain(p) for p in self.sdk.predictions.list(task=task)]

    def create_prediction(self, task: int, result: list[dict], score: float, version: str) -> int:
        """Write a prediction; returns its id."""
        with api_errors(f"writing a prediction of task {task}"):
            return self.sdk.predictions.create(task=task, result=result, score=score, model_version=version).id

    def delete_prediction(self, prediction: int) -> None:
        with api_errors(f"deleting prediction {prediction}"):
            self.sdk.predictions.delete(id=prediction)

    def fetch(self, url: str, into: Path) -> Path:
        """Download a task's photo (an upload ``/data/upload/...``, a local-files storage URL
        ``/data/local-files/?d=...``, or any http(s) URL) into the file ``into``; the key is sent to the
        Label Studio server only."""
        import httpx

        if not isinstance(url, str) or not url:
            raise InputError("the task has no photo URL in its data", field="task")
        full = urljoin(self.url + "/", url)
        if urlparse(full).scheme not in ("http", "https"):
            raise InputError(f"{url}: photos are fetched over http(s) only; import the photo into Label Studio")
        ours = urlparse(full).netloc == urlparse(self.url).netloc
        headers = {"Authorization": self.authorization()} if ours else {}
        into.parent.mkdir(parents=True, exist_ok=True)
        part = into.with_name(into.name + ".part")
        try:
            with httpx.stream("GET", full, headers=headers, timeout=TIMEOUT, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise InputError(f"{url}: the photo cannot be fetched (HTTP {response.status_code})", path=url)
                size = 0
                with open(part, "wb") as out:
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > MAX_PHOTO_BYTES:
                            raise InputError(f"{url}: the photo is over {MAX_PHOTO_BYTES} bytes", path=url)
                        out.write(chunk)
            os.replace(part, into)
        except httpx.HTTPError as exc:
            raise InputError(f"{url}: the photo cannot be fetched ({type(exc).__name__}: {exc})", path=url) from None
        finally:
            part.unlink(missing_ok=True)
        return into

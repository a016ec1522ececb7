"""The ML backend's work, apart from HTTP: Label Studio's ``/setup``, ``/predict`` and ``/webhook`` bodies
in, their answers out (``persam.labelstudio.server`` serves them).

- ``setup``: remembers the project's labeling config and how to reach Label Studio (``hostname`` and
  ``access_token`` of the body, else the URL and key the server was started with).
- ``predict`` without interactive context: every label of the config with a concept (its ``.persam``
  file; a label without one is learned first from the project's submitted annotations, fetched through
  the API) is found in the tasks on the job engine; one prediction per task, in order.
- ``predict`` with ``params.context.result`` (a click or box drawn with a ``smart`` tool): SAM's own mask
  for those prompts on that photo's stored embedding (decoder only), as one brush region.
- ``webhook`` ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``: the concept of each label of the
  annotation is learned again from the project's submitted annotations and saved.

Anything the requester can fix raises a ``PersamError`` (its one line is the error response).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from persam.engine.spec import MethodSpec
from persam.errors import InputError, OptionsError
from persam.labelstudio.config import LabelingConfig, parse_config
from persam.labelstudio.project import ConceptStore, Workspace, model_version, task_id
from persam.labelstudio.regions import mask_results, read_regions

#: webhook actions that re-learn a label
RELEARN = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
#: the most tasks one /predict may ask for
MAX_TASKS = 10_000


def project_id(value: object) -> int:
    """Label Studio's project reference: ``7``, ``"7"`` or ``"7.1712345678"`` (id and timestamp) -> 7."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isascii() and head.isdigit() and 0 < int(head) < 2**63:
            return int(head)
    raise InputError(f"the request names no project id (got {str(value)[:40]!r})", field="project")


@dataclass
class Setup:
    """What ``/setup`` told about one project."""

    config: LabelingConfig
    url: str | None = None
    api_key: str | None = None


@dataclass
class Backend:
    """The ML backend's state: the model's workspace, the concepts on disk, what each project set up.

    Attributes:
        workspace: photos, embeddings and the job engine's folders.
        concepts: one ``.persam`` file per project and label.
        method: how concepts are learned and segment.
        url, api_key: Label Studio's URL and key when ``/setup`` gives none (``LABEL_STUDIO_URL`` / ``_API_KEY``).
    """

    workspace: Workspace
    concepts: ConceptStore
    method: MethodSpec = field(default_factory=MethodSpec)
    url: str | None = None
    api_key: str | None = None
    projects: dict[int, Setup] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, project: int):
        """A client of Label Studio for ``project``, or None when no URL and key are known."""
        from persam.labelstudio.client import Client

        setup = self.projects.get(project)
        url = (setup.url if setup else None) or self.url
        key = (setup.api_key if setup else None) or self.api_key
        return Client(url, key) if url and key else None

    def setup(self, body: object) -> dict:
        """``POST /setup``: the project's config (``schema``) and how to reach Label Studio."""
        if not isinstance(body, dict):
            raise InputError("the setup request is not a JSON object", field="body")
        project = project_id(body.get("project"))
        config = parse_config(body.get("schema"))
        url = body.get("hostname") if isinstance(body.get("hostname"), str) and body.get("hostname") else None
        key = body.get("access_token") if isinstance(body.get("access_token"), str) else None
        with self.lock:
            self.projects[project] = Setup(config, url or None, key or None)
        return {"model_version": self.version(project, config)}

    def version(self, project: int, config: LabelingConfig) -> str:
        """The model version of a project's saved concepts (``persam`` when none is saved yet)."""
        found = [p.read_bytes() for label in config.labels if (p := self.concepts.path(project, label)).is_file()]
        if not found:
            return "persam"
        return f"persam-{hashlib.sha256(b''.join(found)).hexdigest()[:16]}"

    def config_of(self, project: int, body: dict) -> LabelingConfig:
        text = body.get("label_config")
        if isinstance(text, str) and text.strip():
            return parse_config(text)
        if project in self.projects:
            return self.projects[project].config
        raise InputError(f"project {project} is not set up with this backend; connect it in Label Studio first")

    def predict(self, body: object) -> dict:
        """``POST /predict``: ``{"results": [{"result", "score", "model_version"}, ...]}``, one per task."""
        if not isinstance(body, dict):
            raise InputError("the predict request is not a JSON object", field="body")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks or len(tasks) > MAX_TASKS:
            raise InputError(f"the predict request has no tasks (a list of 1 to {MAX_TASKS})", field="tasks")
        if not all(isinstance(t, dict) for t in tasks):
            raise InputError("a task of the predict request is not a JSON object", field="tasks")
        for task in tasks:
            task_id(task)
        project = project_id(body.get("project") or tasks[0].get("project"))
        config = self.config_of(project, body)
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        context = params.get("context") if isinstance(params.get("context"), dict) else None
        with self.lock:
            if context and context.get("result"):
                return {"results": [self.interactive(project, config, tasks[0], context["result"])]}
            return {"results": self.batch(project, config, tasks)}

    def concept(self, project: int, config: LabelingConfig, label: str, client):
        """The label's concept: its file, or learned from the project's submitted annotations (and saved)."""
        from persam.engine.concept import learned_as

        concept = self.concepts.load(project, label, self.workspace.model)
        if concept is not None and not learned_as(concept, self.method):
            concept = None  # learned with other options (--finetune, --prior) by an earlier run: learned again
        if concept is not None or client is None:
            return concept
        return self.learn(project, config, label, client.tasks(project), client)

    def learn(self, project: int, config: LabelingConfig, label: str, tasks: list[dict], client):
        concept, _ = self.workspace.learn(client, project, config, tasks, label, self.method)
        if concept is not None:
            self.concepts.save(project, label, concept)
        return concept

    def batch(self, project: int, config: LabelingConfig, tasks: list[dict]) -> list[dict]:
        client = self.client(project)
        concepts = {label: c for label in config.labels if (c := self.concept(project, config, label, client))}
        if not concepts:
            raise InputError(
                f"project {project} has no concept yet: submit an annotation of one of {list(config.labels)}"
                + ("" if client else ", and give the backend Label Studio's URL and API key")
            )
        paths = self.workspace.photos(client, project, tasks, config)
        results = {task_id(t): [] for t in tasks}
        scores: dict[int, list[float]] = {task_id(t): [] for t in tasks}
        for label, concept in concepts.items():
            found = self.workspace.segment(project, config, label, concept, paths, self.method)
            for tid, got in found.items():
                if isinstance(got, str):
                    raise InputError(f"task {tid}: {got}")
                results[tid] += got[0]
                scores[tid].append(got[1])
        version = "+".join(model_version(c) for c in concepts.values())
        return [
            {"result": results[task_id(t)], "score": max(scores[task_id(t)], default=0.0), "model_version": version}
            for t in tasks
        ]

    def interactive(self, project: int, config: LabelingConfig, task: dict, context: object) -> dict:
        """SAM's mask for the clicks (keypoints; ``is_positive: false`` = background) and box of ``context``."""
        import numpy as np

        regions = read_regions(context)
        points = [r for r in regions if r.kind == "keypoint"]
        boxes = [r for r in regions if r.kind == "rectangle"]
        if not points and not boxes:
            raise InputError("the interactive request has no keypoint or rectangle", field="context")
        label = (points or boxes)[0].label
        if label not in config.labels and label not in {lab for c in config.controls for lab in c.labels}:
            raise OptionsError(f"label {label!r} is not in project {project}'s labeling config", field="label")
        path = self.workspace.photos(self.client(project), project, [task], config)[task_id(task)]
        encoded = self.workspace.encoded(path)
        if any(r.shape != encoded.geometry.original_hw for r in regions):
            raise InputError("the interactive request's original_width / original_height are not the photo's")
        result = self.workspace.model.mask_from_prompts(
            encoded,
            points_xy=np.array([r.point for r in points]) if points else None,
            point_labels=np.array([1 if r.positive else 0 for r in points]) if points else None,
            box_xyxy=boxes[-1].box if boxes else None,
        )
        control = next((c for c in config.controls if c.kind == "brush" and label in c.labels), None)
        control = control or config.output()
        regions_out = mask_results(result.mask, label, float(result.score), control, config)
        return {"result": regions_out, "score": float(result.score), "model_version": "persam-sam"}

    def webhook(self, body: object) -> dict:
        """``POST /webhook``: re-learn the labels of a created or updated annotation."""
        if not isinstance(body, dict):
            raise InputError("the webhook request is not a JSON object", field="body")
        action = body.get("action")
        if action not in RELEARN:
            return {"status": "ignored", "action": str(action)[:40]}
        project = project_id(body.get("project"))
        annotation = body.get("annotation") if isinstance(body.get("annotation"), dict) else {}
        labels = list(dict.fromkeys(r.label for r in read_regions(annotation.get("result") or [])))
        client = self.client(project)
        if client is None:
            raise InputError(f"project {project}: no Label Studio URL and API key to fetch its annotations with")
        with self.lock:
            config = parse_config(client.label_config(project))
            tasks = client.tasks(project)
            learned = {}
            for label in labels:
                if label in config.labels:
                    concept = self.learn(project, config, label, tasks, client)
                    learned[label] = model_version(concept) if concept is not None else None
        return {"status": "ok", "learned": learned}

"""Reading a Label Studio labeling config: the image, and the region tools with their labels.

A config is XML (``<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">
<Label value="cat"/></BrushLabels></View>``). persam reads the first ``Image`` and every ``BrushLabels``,
``PolygonLabels``, ``RectangleLabels`` and ``KeyPointLabels`` control that points at it (``toName``).
Anything else in the config (text, choices, other objects) is left alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from persam.errors import InputError

Kind = Literal["brush", "polygon", "rectangle", "keypoint"]
#: control tag (lower case) -> region kind; the region's ``type`` is the tag in lower case
CONTROLS: dict[str, Kind] = {
    "brushlabels": "brush",
    "polygonlabels": "polygon",
    "rectanglelabels": "rectangle",
    "keypointlabels": "keypoint",
}
#: the largest config read (characters)
MAX_CONFIG = 1_000_000


@dataclass(frozen=True)
class Control:
    """One region tool of the config.

    Attributes:
        name: its ``name`` (a region's ``from_name``).
        kind: "brush", "polygon", "rectangle" or "keypoint".
        labels: its label values, in config order.
        smart: the tool sends interactive requests (``smart="true"``).
    """

    name: str
    kind: Kind
    labels: tuple[str, ...]
    smart: bool = False

    @property
    def type(self) -> str:
        """The region ``type`` of this tool (``brushlabels``...)."""
        return {v: k for k, v in CONTROLS.items()}[self.kind]


@dataclass(frozen=True)
class LabelingConfig:
    """What persam uses of a labeling config.

    Attributes:
        image: the ``Image`` tag's name (a region's ``to_name``).
        value: the task data key holding the photo's URL (``$image`` -> ``image``).
        controls: the region tools pointing at the image.
    """

    image: str
    value: str
    controls: tuple[Control, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label of the mask-making tools (brush, polygon, rectangle), each once, in config order."""
        found = [label for c in self.controls if c.kind != "keypoint" for label in c.labels]
        return tuple(dict.fromkeys(found))

    def output(self) -> Control:
        """The tool predictions are written with: brush when there is one, else polygon, else rectangle."""
        for kind in ("brush", "polygon", "rectangle"):
            for control in self.controls:
                if control.kind == kind:
                    return control
        raise InputError(
            "the labeling config has no BrushLabels, PolygonLabels or RectangleLabels on its image; add one",
            field="label_config",
        )

    def output_for(self, label: str) -> Control:
        """The tool that predictions of ``label`` are written with (the output kind holding the label)."""
        for kind in ("brush", "polygon", "rectangle"):
            for control in self.controls:
                if control.kind == kind and label in control.labels:
                    return control
        raise InputError(f"label {label!r} is not in the labeling config; labels: {list(self.labels)}", field="label")


def parse_config(text: object) -> LabelingConfig:
    """The image and region tools of a labeling config (XML text).

    Raises:
        InputError: not a string, not XML, no ``Image`` tag, or no region tool pointing at it.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("the labeling config is empty; paste one with an Image and BrushLabels", field="label_config")
    if len(text) > MAX_CONFIG:
        raise InputError(f"the labeling config is over {MAX_CONFIG} characters", field="label_config")
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError) as exc:  # expat's errors, and its refusal of huge entity expansions
        raise InputError(f"the labeling config is not valid XML ({exc})", field="label_config") from None
    images = [e for e in root.iter() if isinstance(e.tag, str) and e.tag.lower() == "image"]
    if not images or not images[0].get("name") or not images[0].get("value", "").startswith("$"):
        raise InputError(
            'the labeling config has no image (<Image name="image" value="$image"/>); add one', field="label_config"
        )
    image = images[0]
    controls = []
    for e in root.iter():
        kind = CONTROLS.get(e.tag.lower()) if isinstance(e.tag, str) else None
        if kind is None or e.get("toName") != image.get("name") or not e.get("name"):
            continue
        labels = tuple(dict.fromkeys(lab.get("value") for lab in e if lab.get("value")))
        smart = (e.get("smart") or "").lower() == "true"
        controls.append(Control(e.get("name"), kind, labels, smart))
    if not controls:
        raise InputError(
            f"the labeling config has no BrushLabels, PolygonLabels, RectangleLabels or KeyPointLabels on "
            f"the image {image.get('name')!r}; add one",
            field="label_config",
        )
    return LabelingConfig(image.get("name"), image.get("value")[1:], tuple(controls))

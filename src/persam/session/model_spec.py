"""The model options as a value: what ``persam.load`` is called with, here or in a Ray actor elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """The model options (``persam.load``'s arguments).

    Field metadata ``resume=False`` marks what the job engine's resume key leaves out: the checkpoint
    enters it by its SHA-256 (the loaded backend's), the device does not change the masks beyond the
    documented tolerance.
    """

    model: str
    checkpoint: str | None = field(default=None, metadata={"resume": False, "reason": "keyed by its SHA-256"})
    device: str | None = field(default=None, metadata={"resume": False, "reason": "masks agree across devices"})
    precision: str = "fp32"
    random_weights: bool = False
    runtime: str = "torch"

    def load(self, image_encoder: bool = True):
        """The session model (random weights seeded with 0, as ``persam`` commands do); ``image_encoder``
        False for a run that encodes no photo (``persam.session.photo.load``). PyTorch and the model
        package are imported, and the model built, with the cycle collector paused (``collector_paused``)."""
        from persam.backends.imports import collector_paused

        with collector_paused():
            from persam.session.photo import load

            if self.random_weights:
                import torch

                torch.manual_seed(0)
            return load(
                self.model,
                self.checkpoint,
                device=self.device,
                precision=self.precision,
                random_weights=self.random_weights,
                runtime=self.runtime,
                image_encoder=image_encoder,
            )

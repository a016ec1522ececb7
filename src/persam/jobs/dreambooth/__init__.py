"""PerSAM-assisted DreamBooth: foreground-only fine-tuning data and loss.

* ``persam.jobs.dreambooth.prepare``: segment the subject in the training photos
  (``datasets`` imagefolder layout with masks and ``metadata.jsonl``).
* ``persam.jobs.dreambooth.loss``: the masked diffusion loss (torch only).
* ``persam.jobs.dreambooth.train``: a DreamBooth loop on ``diffusers`` and
  ``accelerate`` (``pip install "persam[dreambooth]"``).
"""

from persam.jobs.dreambooth.loss import dreambooth_loss, latent_mask, masked_diffusion_loss

__all__ = ["dreambooth_loss", "latent_mask", "masked_diffusion_loss"]

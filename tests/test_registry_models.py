"""The model table is the one place a model is described: an entry added there is listed, offered,
built, downloaded and verified, and its checkpoint recognised, with nothing else edited."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from persam.backends import models
from persam.backends.models import KeySignature, ModelEntry

NAME = "sam_tiny_deep"


def build_deeper(entry: ModelEntry):
    """A tiny SAM of another size than ``sam_tiny`` (2 ViT blocks of width 64), from the official classes."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, size = 32, entry.input_size
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=16, embed_dim=64, depth=2, num_heads=2, out_chans=dim, use_rel_pos=False
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(size // 16, size // 16), input_image_size=(size, size), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    )
    return model.image_encoder, model.prompt_encoder, model.mask_decoder, model


ENTRY = ModelEntry(
    NAME,
    "a deeper tiny SAM, added in one place",
    family="sam",
    signature=KeySignature("vit", 2, 64),
    label="the deeper test SAM",
    builder=f"{__name__}:build_deeper",
    input_size=256,
)


@pytest.fixture
def added(monkeypatch, tmp_path) -> ModelEntry:
    """``ENTRY`` added to the table (and nothing else), with the cache in ``tmp_path``."""
    monkeypatch.setenv("PERSAM_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(models.MODELS, NAME, ENTRY)
    return ENTRY


def test_every_entry_has_what_its_family_needs() -> None:
    for entry in models.entries():
        assert entry.name and entry.description and entry.label
        if entry.family == "sam":
            assert entry.builder and ":" in entry.builder and not entry.overrides, entry.name
        else:
            assert entry.builder is None and entry.config and entry.config.endswith(".yaml"), entry.name
        assert entry.sha256 is None or (entry.url and len(entry.sha256) == 64), entry.name
        assert not (entry.bundled_checkpoint and entry.url), entry.name
    signatures = [e.signature for e in models.entries()]
    assert len(set(signatures)) == len(signatures)  # every checkpoint names one model


def test_an_added_entry_is_listed_and_offered(added) -> None:
    from persam.backends.registry import get_spec, list_backends, offered_names
    from persam.cli.main import build_parser

    assert NAME in [spec.name for spec in list_backends()]
    assert NAME in offered_names() and get_spec(NAME) is added
    assert build_parser().parse_args(["index", "x.jpg", "-o", "a.idx", "--model", NAME]).model == NAME


def test_an_added_entry_is_built_and_encodes(added) -> None:
    from persam.backends.registry import create_backend

    backend = create_backend(NAME, random_weights=True, device="cpu")
    image = np.zeros((90, 120, 3), dtype=np.uint8)
    assert backend.name == NAME and backend.family == "sam"
    assert tuple(backend.encode(image).embedding.shape) == (1, 32, 16, 16)


def test_an_added_entrys_checkpoint_is_recognised_and_cached(added, tmp_path) -> None:
    from persam.backends.builders import write_random_checkpoint
    from persam.backends.checkpoint_cache import add_checkpoint
    from persam.backends.checkpoints import cached_checkpoint, file_sha256, load_state_dict
    from persam.backends.families import identify_checkpoint, mismatch_message
    from persam.backends.registry import create_backend

    path = write_random_checkpoint(NAME, tmp_path / "deep.pt", seed=1)
    state = load_state_dict(path)
    found = identify_checkpoint(state)
    assert (found.model_type, found.label) == (NAME, "the deeper test SAM (2 blocks of width 64)")
    tiny = write_random_checkpoint("sam_tiny", tmp_path / "tiny.pt")
    assert f"pass --model {NAME}" in mismatch_message("sam_tiny", state, load_state_dict(tiny))

    result = add_checkpoint(path)
    assert (result.model, result.verified, result.sha256) == (NAME, "key signature", file_sha256(path))
    assert cached_checkpoint(NAME) == Path(result.path)
    backend = create_backend(NAME, device="cpu")  # no checkpoint given: the added one is found
    assert backend.checkpoint_sha256 == file_sha256(path)
    torch.testing.assert_close(
        backend.mask_decoder.state_dict()["iou_token.weight"], state["mask_decoder.iou_token.weight"]
    )


def test_an_added_entrys_url_and_sha256_are_used(added, monkeypatch, tmp_path) -> None:
    from persam.backends import checkpoints
    from persam.backends.builders import write_random_checkpoint
    from persam.backends.checkpoints import CheckpointError, resolve_checkpoint

    (tmp_path / "published").mkdir()
    path = write_random_checkpoint(NAME, tmp_path / "published" / "deep_v1.pt", seed=2)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    published = dataclasses.replace(added, url=path.as_uri(), sha256=digest)
    monkeypatch.setitem(models.MODELS, NAME, published)
    assert checkpoints.KNOWN_CHECKPOINTS[NAME].filename == "deep_v1.pt"  # read from the table on access
    cached = resolve_checkpoint(NAME, None, progress=False)  # downloaded from the entry's URL, hash verified
    assert cached == tmp_path / "home" / "checkpoints" / "deep_v1.pt" and cached.read_bytes() == path.read_bytes()
    cached.unlink()
    monkeypatch.setitem(models.MODELS, NAME, dataclasses.replace(published, sha256="0" * 64))
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        resolve_checkpoint(NAME, None, progress=False)
    assert not cached.exists()

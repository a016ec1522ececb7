"""The concept of a run, from its spec: the one place every front end's references become a concept.

Reference photos with masks or with prompts (a box, clicks) are learned with every method option of the
spec (method, components, prior and part counts), so no option is dropped on one path; a concept file
is loaded. Folders of reference photos are paired with folders of masks by file name.
"""

from __future__ import annotations

from pathlib import Path

from persam.engine.spec import ConceptFile, GivenConcept, MethodSpec, References
from persam.errors import MissingInputError, OptionsError


def reference_pairs(refs: References) -> tuple[list[Path], list[Path]]:
    """The reference photos and their masks, folders expanded (paired by path relative to the folder)."""
    from persam.io import find_images

    images, masks = [], []
    for ref, mask in zip(refs.photos, refs.masks):
        ref_p, mask_p = Path(ref), Path(mask)
        if not ref_p.is_dir():
            images.append(ref_p)
            masks.append(mask_p)
            continue
        by_stem = {stem.as_posix(): p for p, stem in find_images([mask_p])} if mask_p.is_dir() else {}
        for img, stem in find_images([ref_p]):
            if stem.as_posix() not in by_stem:
                raise MissingInputError(
                    f"{img}: no mask named {stem}.* in {mask_p}; put each photo's mask there under the same name",
                    path=img,
                    field="masks",
                )
            images.append(img)
            masks.append(by_stem[stem.as_posix()])
    if not images:
        raise OptionsError(f"no reference photo found in {', '.join(refs.photos)}", field="references")
    return images, masks


def personalize_options(method: MethodSpec) -> dict:
    """``PersamModel.personalize`` keywords of ``method``'s options (method, components, prior, parts)."""
    from persam.session.options import method_settings

    return {
        "finetune": method.finetune,
        "settings": method_settings(method.without),
        "prior": method.prior,
        "parts": method.parts,
    }


def learned_as(concept, method: MethodSpec) -> bool:
    """Whether ``concept`` was learned with ``method``'s learning options (PerSAM or PerSAM-F, its components,
    its prior): a front end keeping concepts on disk learns again when they differ."""
    options = personalize_options(method)
    finetuned = concept.weights is not None
    return (
        finetuned == options["finetune"]
        and concept.prior == options["prior"]
        and concept.settings == options["settings"]
    )


def learn_masks(model, photos: list, masks: list, method: MethodSpec, names: list[str] | None = None):
    """The concept learned from reference photos (pixels, files or encoded images) and their (H, W) masks,
    nonzero = object, with ``method``'s options: for a front end that holds its references in memory
    (Label Studio's annotations); ``names``: what messages call each reference (the front end's words)."""
    return model.personalize(list(photos), list(masks), names=names, **personalize_options(method))


def learn(model, refs: References, method: MethodSpec):
    """The concept learned from ``refs`` with ``method``'s options (``PersamModel.personalize``)."""
    options = personalize_options(method)
    if refs.prompted:
        points = list(refs.points) or None
        concept = model.personalize(
            refs.photos[0],
            box=refs.box,
            points=points,
            point_labels=list(refs.point_labels) if points else None,
            **options,
        )
    else:
        images, masks = reference_pairs(refs)
        concept = model.personalize(images, masks, label=refs.label, **options)
    return concept


def build_concept(source: References | ConceptFile | GivenConcept, method: MethodSpec, model, given=None):
    """The run's concept: learned, loaded from its file, or ``given`` (for ``GivenConcept``); the spec's
    presence threshold, when set, replaces the calibrated one."""
    if isinstance(source, References):
        concept = learn(model, source, method)
    elif isinstance(source, ConceptFile):
        from persam.session.concept_file import load_concept

        concept = load_concept(source.path, model)
    else:
        if given is None:
            raise TypeError("a GivenConcept spec runs with the concept passed to run_job(concept=...)")
        concept = given
    if method.presence_threshold is not None:
        concept.presence_threshold = method.presence_threshold
    return concept

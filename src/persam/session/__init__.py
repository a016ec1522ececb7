"""The session API: photos and masks in (paths, PIL, numpy), typed results out.

``photo`` (model, concepts, results), ``video`` (a first-frame label map,
then every frame), ``tracker`` (SAM 2's video predictor seeded by masks or
concepts, frames streamed by ``streamed_frames``), ``concept_file`` (.persam
files), ``album`` (the index of encoded photos).
"""

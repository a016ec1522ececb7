"""The session API: photos and masks in (paths, PIL, numpy), typed results out.

``photo`` (model, concepts, results), ``video`` (a first-frame label map,
then every frame), ``concept_file`` (.persam files), ``album`` (the index
of encoded photos).
"""

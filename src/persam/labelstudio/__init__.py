"""persam inside Label Studio: batch pre-annotation through its API and the ML backend it connects to.

``persam label-studio annotate`` (``persam.labelstudio.annotate``) learns each label's concept from a
project's submitted annotations and writes predictions back; ``persam label-studio serve``
(``persam.labelstudio.server``) answers Label Studio's ML backend requests. Both run their photos on the
job engine (``persam.engine.runner.run_job``), as the web app's batch does. Needs ``persam[labelstudio]``
(``label-studio-sdk``, imported on first use).
"""

"""The web app (``persam app``): personalize from clicks, segment many photos, follow objects in a video.

``files`` (uploads read safely), ``clicks`` (prompts on one photo and their
drawing), ``workspace`` (one visitor's references and concept), ``batch`` (a
folder's worth of photos to a zip), ``video`` (a clip to an overlay video and
label maps) hold the logic as plain functions on numpy arrays and paths;
``ui`` wires them to Gradio and turns user errors into messages in the page.
"""

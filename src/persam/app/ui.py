"""The page: three tabs wired to the plain functions of ``persam.app`` (Gradio only here).

User errors (``ValueError`` and the like) become a message in the page
(``gr.Error``), never a traceback; the server keeps serving.
"""

import functools
import tempfile
from pathlib import Path

from persam.app import batch, video, workspace
from persam.app.clicks import MODES
from persam.errors import OptionsError
from persam.session.photo import PersamModel

METHODS = {"PerSAM (training-free)": False, "PerSAM-F (fits 2 weights, about a second)": True}
PRIORS = {
    "Similarity (PerSAM's one point)": "similarity",
    "Part-aware (P2SAM: a point per part, best part count by optimal transport)": "part-aware",
    "Matcher (DINOv2 patch matching, many SAM masks scored and merged; slower)": "matcher",
}
INTRO = """# persam: personalize Segment Anything
**Personalize**: upload a reference photo and click the object (green = object, red = background; for a box,
choose *box* and click two opposite corners: the image has no drag-box), or upload its mask. Keep one or more
references, then learn the concept. **Segment**: upload photos (or a zip) and download the masks.
**Video**: pick objects on the first frame of a clip."""


def guarded(fn):
    """Run a callback; user errors become a message in the page (``gr.Error``) instead of a traceback."""
    import gradio as gr

    from persam.errors import PersamError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PersamError as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise gr.Error(text, print_exception=False) from None

    return wrapper


def _steps(progress):
    """A ``batch.Progress`` / ``video.Progress`` that moves a Gradio progress bar."""

    def update(done: int, total: int | None, what: str) -> None:
        progress((done, total) if total else None, desc=what)

    return update


def build(model: PersamModel, workdir: Path | None = None):
    """The ``gr.Blocks`` app around one loaded model; outputs go under ``workdir`` (default: a temp folder)."""
    import gradio as gr

    from persam.session.options import COMPONENTS

    workdir = Path(workdir or tempfile.mkdtemp(prefix="persam-app-"))

    # -------------------------------------------------------------- personalize
    @guarded
    def on_photo(path, ws):
        ws = ws or workspace.Workspace()
        if path is None:
            return ws, None, "upload a reference photo"
        message = workspace.set_photo(ws, model, path)
        return ws, ws.view(), message

    @guarded
    def on_click(mode, ws, evt: gr.SelectData):
        if ws is None or ws.photo is None:
            raise OptionsError("no reference photo yet; upload one first")
        x, y = (int(v) for v in evt.index)
        message = workspace.click(ws, model, x, y, MODES[mode])
        return ws, ws.view(), message

    @guarded
    def on_undo(ws):
        ws = ws or workspace.Workspace()
        message = workspace.undo(ws, model)
        return ws, ws.view(), message

    @guarded
    def on_clear(ws):
        ws = ws or workspace.Workspace()
        return ws, ws.view(), workspace.clear(ws)

    @guarded
    def on_mask(path, ws):
        ws = ws or workspace.Workspace()
        if path is None:
            return ws, ws.view(), "mask removed" if ws.photo is not None else ""
        message = workspace.upload_mask(ws, path)
        return ws, ws.view(), message

    @guarded
    def on_keep(ws):
        ws = ws or workspace.Workspace()
        message = workspace.keep_reference(ws)
        return ws, ws.thumbnails(), message

    @guarded
    def on_learn(ws, method, without, threshold, prior, fewest, most):
        ws = ws or workspace.Workspace()
        threshold = None if threshold in (None, "") else float(threshold)
        parts = (
            (int(fewest), int(most)) if PRIORS[prior] == "part-aware" else None
        )  # the range shows with that prior only
        message = workspace.learn(
            ws,
            model,
            finetune=METHODS[method],
            without=list(without or []),
            presence_threshold=threshold,
            prior=PRIORS[prior],
            parts=parts,
        )
        return ws, message

    def on_prior(prior):
        return gr.update(visible=PRIORS[prior] == "part-aware")

    @guarded
    def on_save(ws):
        ws = ws or workspace.Workspace()
        return str(workspace.save(ws, workdir / "concepts")), "concept saved: download it below"

    @guarded
    def on_load(path, ws):
        ws = ws or workspace.Workspace()
        if path is None:
            return ws, ""
        return ws, workspace.load(ws, model, path)

    # ------------------------------------------------------------------ segment
    @guarded
    def on_segment(files, ws, detect_absent, max_instances, progress=gr.Progress()):  # noqa: B008 (Gradio injects the bar through this default)
        if ws is None or ws.concept is None:
            raise OptionsError("no concept yet; learn one on the Personalize tab (or load a .persam file)")
        paths = [f if isinstance(f, str) else f.name for f in (files or [])]
        options = batch.BatchOptions(detect_absent=bool(detect_absent), max_instances=int(max_instances))
        result = batch.segment_uploads(ws.concept, paths, options, workdir, _steps(progress))
        for line in result.skipped[:5]:
            gr.Warning(f"skipped {line}")
        first = result.gallery[0][0] if result.gallery else None
        return result.gallery, result, str(result.zip_path), first, result.summary

    def on_pick(result, evt: gr.SelectData):
        if result is None or evt.index is None or not 0 <= int(evt.index) < len(result.gallery):
            return None
        path, text = result.gallery[int(evt.index)]
        return gr.update(value=path, label=text)

    # -------------------------------------------------------------------- video
    @guarded
    def on_clip(path, vw):
        vw = vw or video.VideoWork()
        if path is None:
            return vw, None, "upload a clip"
        message = video.open_video(vw, model, path)
        return vw, vw.view(1), message

    @guarded
    def on_frame_click(oid, mode, vw, evt: gr.SelectData):
        if vw is None or vw.first is None:
            raise OptionsError("no video yet; upload a clip first")
        x, y = (int(v) for v in evt.index)
        message = video.click(vw, model, oid, x, y, MODES[mode])
        return vw, vw.view(int(oid)), message

    @guarded
    def on_forget(oid, vw):
        vw = vw or video.VideoWork()
        message = video.forget(vw, oid)
        return vw, vw.view(int(oid)), message

    @guarded
    def on_run_video(vw, method, detect_absent, progress=gr.Progress()):  # noqa: B008 (Gradio injects the bar through this default)
        if vw is None or vw.first is None:
            raise OptionsError("no video yet; upload a clip first")
        mp4, zip_path, summary = video.run(
            vw,
            model,
            finetune=METHODS[method],
            detect_absent=bool(detect_absent),
            workdir=workdir,
            progress=_steps(progress),
        )
        return str(mp4), str(zip_path), summary

    with gr.Blocks(title="persam", analytics_enabled=False) as demo:  # no calls home
        ws, vw, last_batch = gr.State(None), gr.State(None), gr.State(None)
        gr.Markdown(INTRO)
        with gr.Tab("Personalize"):
            with gr.Row():
                with gr.Column(scale=1):
                    photo = gr.File(label="Reference photo", type="filepath", elem_id="ref-photo")
                    mode = gr.Radio(list(MODES), value=next(iter(MODES)), label="A click adds", elem_id="click-mode")
                    with gr.Row():
                        undo_btn = gr.Button("Undo click")
                        clear_btn = gr.Button("Clear clicks")
                    mask_file = gr.File(
                        label="...or upload its mask (PNG, nonzero = object)", type="filepath", elem_id="ref-mask"
                    )
                    keep_btn = gr.Button("Keep as reference", elem_id="keep")
                    method = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="Method")
                    prior = gr.Radio(list(PRIORS), value=next(iter(PRIORS)), label="Location prior", elem_id="prior")
                    with gr.Row(visible=False) as parts_row:
                        fewest = gr.Slider(1, 10, value=1, step=1, label="Fewest parts", elem_id="parts-min")
                        most = gr.Slider(
                            1,
                            10,
                            value=5,
                            step=1,
                            label="Most parts (1..5 is the published setting)",
                            elem_id="parts-max",
                        )
                    with gr.Accordion("Advanced", open=False):
                        without = gr.CheckboxGroup(list(COMPONENTS), label="Switch off (ablation)")
                        detect_absent = gr.Checkbox(label="Detect absence (empty mask when the object is not there)")
                        threshold = gr.Number(
                            label="Presence threshold (empty = calibrated on the references)", value=None
                        )
                        max_instances = gr.Slider(1, 20, value=1, step=1, label="Max instances per photo")
                    learn_btn = gr.Button("Learn concept", variant="primary", elem_id="learn")
                with gr.Column(scale=2):
                    view = gr.Image(
                        label="Reference: click the object", type="numpy", interactive=False, elem_id="ref-view"
                    )
                    status = gr.Textbox(label="Status", interactive=False, elem_id="status")
                    refs = gr.Gallery(label="References kept", columns=4, height=160)
                    with gr.Row():
                        save_btn = gr.Button("Save concept (.persam)")
                        concept_out = gr.File(label="Concept file", interactive=False)
                        concept_in = gr.File(label="Load a concept (.persam)", type="filepath")
        with gr.Tab("Segment"):
            with gr.Row():
                with gr.Column(scale=1):
                    targets = gr.File(
                        label="Photos, or a zip of photos", file_count="multiple", type="filepath", elem_id="targets"
                    )
                    segment_btn = gr.Button("Segment", variant="primary", elem_id="segment")
                    seg_status = gr.Textbox(label="Status", interactive=False, elem_id="segment-status")
                    zip_out = gr.File(
                        label="Download everything (masks, overlays, manifest.json, COCO)",
                        interactive=False,
                        elem_id="zip",
                    )
                with gr.Column(scale=2):
                    gallery = gr.Gallery(
                        label="Overlays (score, present/absent)", columns=4, height=320, elem_id="results"
                    )
                    big = gr.Image(label="Selected", interactive=False, elem_id="big")
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column(scale=1):
                    clip = gr.File(label="Video clip (mp4, webm, mov, avi, mkv)", type="filepath", elem_id="clip")
                    oid = gr.Number(value=1, precision=0, minimum=1, maximum=255, label="Object id being clicked")
                    vmode = gr.Radio(list(MODES), value=next(iter(MODES)), label="A click adds")
                    forget_btn = gr.Button("Remove this object")
                    vmethod = gr.Radio(list(METHODS), value=next(iter(METHODS)), label="Method")
                    vdetect = gr.Checkbox(label="Detect absence per frame")
                    run_btn = gr.Button("Segment the video", variant="primary")
                    vstatus = gr.Textbox(label="Status", interactive=False)
                with gr.Column(scale=2):
                    frame_view = gr.Image(label="First frame: click the objects", type="numpy", interactive=False)
                    overlay_video = gr.Video(label="Overlay", interactive=False)
                    vzip = gr.File(label="Masks (zip of per-frame label maps)", interactive=False)

        photo.change(on_photo, [photo, ws], [ws, view, status])
        view.select(on_click, [mode, ws], [ws, view, status])
        undo_btn.click(on_undo, [ws], [ws, view, status])
        clear_btn.click(on_clear, [ws], [ws, view, status])
        mask_file.change(on_mask, [mask_file, ws], [ws, view, status])
        keep_btn.click(on_keep, [ws], [ws, refs, status])
        learn_btn.click(on_learn, [ws, method, without, threshold, prior, fewest, most], [ws, status])
        prior.change(on_prior, [prior], [parts_row])
        save_btn.click(on_save, [ws], [concept_out, status])
        concept_in.change(on_load, [concept_in, ws], [ws, status])
        segment_btn.click(
            on_segment, [targets, ws, detect_absent, max_instances], [gallery, last_batch, zip_out, big, seg_status]
        )
        gallery.select(on_pick, [last_batch], [big])
        clip.change(on_clip, [clip, vw], [vw, frame_view, vstatus])
        frame_view.select(on_frame_click, [oid, vmode, vw], [vw, frame_view, vstatus])
        forget_btn.click(on_forget, [oid, vw], [vw, frame_view, vstatus])
        run_btn.click(on_run_video, [vw, vmethod, vdetect], [overlay_video, vzip, vstatus])
    return demo

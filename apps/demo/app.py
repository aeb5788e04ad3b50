"""The demo's page (Gradio): inputs on the left, Figure 2's views, the result, timings and downloads on the right.

Everything the page shows comes from a DemoSession; this module only lays it out and wires the events.
Gradio is imported here, when the app is built, and never by the rest of the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

from deghost.runtime.directions import DEFAULT_ALPHA
from deghost.runtime.images import ImageError
from deghost.runtime.limits import MAX_ALPHA, MAX_UPLOAD_BYTES

from .session import (
    CHOOSABLE_MODES,
    DEFAULT_MODES,
    OVERLAYS,
    VIEW_MODES,
    VIEW_TITLES,
    DemoEdit,
    DemoSession,
    result_mode,
    server_failure,
    timings_text,
)

INSTALL_HINT = "the demo needs Gradio, an optional extra: pip install 'deghost[demo]'"
ABOUT = """\
# deghost: face-attribute editing with fast ghosting suppression
Upload a photo (or pick a sample), choose an attribute and its strength α, and press **Edit**.
The views follow the paper's Figure 2: the original face, the fused edit F_fused (with its ghosting
artifacts), and the suppressed results of EOGI, ours (MAResU-Net) and Poisson blending."""


class GradioMissing(ImportError):
    """Gradio is not installed; the message says how to install it."""


def import_gradio():
    """Gradio with its telemetry off (the demo runs offline), or GradioMissing naming the extra."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as error:
        raise GradioMissing(f"{INSTALL_HINT} ({error})") from None
    return gradio


def build_app(session: DemoSession):
    """The Blocks app over `session`; launch it with `launch(app, host, port)`."""
    gr = import_gradio()
    samples = [(path.name, str(path)) for path in session.samples]
    attributes = session.attributes
    with gr.Blocks(title="deghost demo", analytics_enabled=False) as app:
        gr.Markdown(ABOUT)
        gr.Markdown(f"### ⚠ {session.banner}", elem_id="untrained-banner", visible=session.banner is not None)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="photo (PNG, JPEG, WebP, BMP or TIFF)", type="filepath", elem_id="upload")
                sample = gr.Dropdown(samples, value=samples[0][1] if samples else None, elem_id="sample",
                                     label="or a sample photo (used when nothing is uploaded)")
                attribute = gr.Radio(session.attribute_choices, label="attribute", elem_id="attribute",
                                     value="smile" if "smile" in attributes else attributes[0])
                alpha = gr.Slider(-MAX_ALPHA, MAX_ALPHA, value=DEFAULT_ALPHA, step=1, elem_id="alpha",
                                  label="α: edit strength (negative: the opposite direction)")
                titles = dict(VIEW_MODES)
                modes = gr.CheckboxGroup([(titles[m], m) for m in CHOOSABLE_MODES], value=list(DEFAULT_MODES),
                                         label="suppress modes (the fused image is always shown)", elem_id="modes")
                overlays = gr.CheckboxGroup([(label, key) for key, label in OVERLAYS.items()], value=[],
                                            label="overlays on the views", elem_id="overlays")
                faces = gr.Radio([("every face", "all"), ("the largest face", "largest")], value="all",
                                 label="faces to edit", elem_id="faces", visible=session.finds_faces)
                run = gr.Button("Edit", variant="primary", elem_id="run")
            with gr.Column(scale=3):
                status = gr.Markdown(_faces_note(session), elem_id="status")
                with gr.Row():
                    views = [gr.Image(label=title, elem_id=f"view-{title.lower()}", interactive=False, format="png",
                                      min_width=120) for title in VIEW_TITLES]
                timings = gr.Markdown(elem_id="timings")
                result = gr.Image(label="result", elem_id="result", interactive=False, format="png", height=420)
                download = gr.File(label="download", file_count="multiple", interactive=False, elem_id="download")
        edited = gr.State()

        def on_run(upload_path, sample_path, attribute_name, alpha_value, chosen_modes, chosen_overlays, which_faces):
            path = upload_path or sample_path
            if not path:
                yield {status: _error("no photo: upload one or pick a sample")}
                return
            try:
                photo, warnings = session.read(path)
            except ImageError as error:
                yield {status: _error(str(error)), **{v: None for v in views}, result: None, timings: "",
                       download: None, edited: None}
                return
            # First view at once: the photo as read, while the stages run.
            yield {status: "editing… (the views appear when every chosen mode is done)", views[0]: photo,
                   **{v: None for v in views[1:]}, result: None, timings: "", download: None}
            try:
                view = session.edit(photo, attribute_name, alpha_value, chosen_modes, _stem(path), which_faces)
                view.warnings[:0] = warnings
                files = [str(p) for p in session.downloads(view)]
            except (ImageError, ValueError) as error:  # the photo's or the request's: the person can fix it
                yield {status: _error(str(error)), views[0]: photo, edited: None}
                return
            except Exception as error:  # the server's (a backend, memory, the disk): said on the page, serving on
                yield {status: _error(server_failure(error)), views[0]: photo, edited: None}
                return
            yield {status: _done(view), **_views(view, chosen_overlays), result: view.photos[result_mode(view)],
                   timings: timings_text(view), download: files, edited: view}

        def on_overlays(view: DemoEdit | None, chosen_overlays):
            if view is None:
                return {v: gr.skip() for v in views}
            try:
                return _views(view, chosen_overlays)
            except Exception as error:  # the face mask runs the face parser: a backend failure is the server's
                raise gr.Error(server_failure(error)) from None

        def _views(view: DemoEdit, chosen_overlays) -> dict:
            return {v: image for v, (_, image) in zip(views, session.panels(view, chosen_overlays), strict=True)}

        # One queue slot for both events: they share the one pipeline.
        run.click(on_run, [upload, sample, attribute, alpha, modes, overlays, faces],
                  [status, *views, result, timings, download, edited], concurrency_id="pipeline")
        overlays.change(on_overlays, [edited, overlays], views, concurrency_id="pipeline")
    app.queue(default_concurrency_limit=1)
    return app


def launch(app, host: str = "127.0.0.1", port: int | None = None, block: bool = True, tries: int = 3):
    """Serve `app` locally: no share link, no server-side rendering (that would need Node).

    Gradio gives its server 5 s to start and then reports the port as taken; on a busy machine that
    happens to a free port, so a failed start is retried (`tries` in all) before it is believed."""
    for attempt in range(1, tries + 1):
        try:
            app.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                       max_file_size=MAX_UPLOAD_BYTES, prevent_thread_lock=not block, quiet=False, show_error=True)
            return
        except OSError:
            if attempt == tries:
                raise


def _faces_note(session: DemoSession) -> str:
    if session.finds_faces:
        return "Faces are found and aligned in the photo; the views show the first face, the result has every face."
    return "This runtime edits aligned faces: the photo is center-cropped and resized, so use an FFHQ-aligned face."


def _error(message: str) -> str:
    return f"**⚠ {message}**"


def _done(view: DemoEdit) -> str:
    lines = [f"done: {view.label}" + (f" on {view.faces} face(s)" if view.faces is not None else "")]
    return "\n\n".join(lines + [f"note: {w}" for w in view.warnings])


def _stem(path: str) -> str:
    return Path(path).stem

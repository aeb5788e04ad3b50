"""`deghost demo`: a Gradio web app over the runtime's Pipeline (Gradio is the optional `demo` extra).

session.py holds everything that is not Gradio (the one shared pipeline, the photo-or-aligned edit,
the views, overlays and messages), app.py lays it out as a page, cli.py registers the command.
Only app.py imports Gradio, and only when the app is built, so the runtime stays importable without it.
"""

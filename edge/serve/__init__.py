"""`hemalite serve`: a page beside the microscope, a thin view over edge-classify's functions.

session.py  what the page serves, without a web framework: the uploads and the camera or
            video classified through `classify()` (so `assess()`, one decision for every
            face) on the contract's `load_image` / `preprocess`, the session's history
            (edge-classify's own ResultWriter), the model card line
app.py      the Flask application: routes, the access token, the upload limit
cli.py      the click command, registered lazily in `hemalite.cli` (only it imports click)
templates/, static/   the server-rendered page and its CSS and JS (no build step)

Importing this package imports neither Flask nor click: `hemalite --help` stays light.
"""

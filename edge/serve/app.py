"""The Flask application of `hemalite serve`: the page, the JSON API, the live stream.

Thin: every route hands its image to the Session (session.py), which classifies it with
edge-classify's functions. What is guarded here: the access token (on every request when
set; always set off loopback), the Host of a loopback server (DNS rebinding), the upload
size (MAX_CONTENT_LENGTH; a bad or oversized upload answers 400 with one line) and the
upload's bytes, kept in memory (Werkzeug spools parts over 500 kB to a temporary file).
"""
from __future__ import annotations

import hmac
import io
import time
from urllib.parse import urlencode, urlsplit

from flask import (Flask, Request, Response, abort, jsonify, redirect, render_template,
                   request)
from werkzeug.exceptions import RequestEntityTooLarge

from hemalite import DISCLAIMER, __version__
from hemalite.contract import IMAGE_EXTENSIONS
from hemalite.edge.serve.session import (ServeError, Session, calibration_status,
                                         case_folder, dataset_citation, is_loopback,
                                         model_card, under_folder, upload_name)

TOKEN_COOKIE = "hemalite_token"
BOUNDARY = "frame"
STREAM_GIVE_UP_S = 15.0  # a stream with no new frame for this long ends (the page retries)


class MemoryRequest(Request):
    """Uploaded files stay in memory, whatever their size (the default spools big parts to a
    temporary file on disk); MAX_CONTENT_LENGTH bounds them."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        return io.BytesIO()


def create_app(session: Session) -> Flask:
    """The application over one Session; `session.config` holds the token and limits."""
    config = session.config
    app = Flask(__name__)
    app.request_class = MemoryRequest
    app.config.update(MAX_CONTENT_LENGTH=int(config.max_upload_mb * 1_000_000),
                      TEMPLATES_AUTO_RELOAD=False)
    token = config.token
    if not (token or "").strip() and not is_loopback(config.host):
        raise ServeError(f"--host {config.host} is not loopback: it needs an access token "
                         "(leave out --token to have one generated)")
    loopback_only = is_loopback(config.host) and not token

    def one_line(message: str, status: int) -> Response:
        """A refusal: JSON for the API ({"error": ...}), one line of text elsewhere."""
        if request.path.startswith("/api/"):
            response = jsonify(error=message)
            response.status_code = status
            return response
        return Response(message + "\n", status, mimetype="text/plain")

    @app.before_request
    def guard():
        if loopback_only:
            host = urlsplit("//" + request.host).hostname or ""
            if not is_loopback(host):
                return one_line(f"this server listens on loopback and answers only to "
                                f"localhost addresses, not {host!r}", 403)
            return None
        if not token:
            return None
        given = request.args.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            if request.method == "GET" and not request.path.startswith(("/api/", "/stream")):
                rest = {k: v for k, v in request.args.items() if k != "token"}
                response = redirect(request.path + ("?" + urlencode(rest) if rest else ""))
            else:
                return None  # the token stands for this request; the cookie for the next
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return response
        header = request.headers.get("Authorization", "")
        offered = header[7:] if header.startswith("Bearer ") else request.cookies.get(
            TOKEN_COOKIE, "")
        if offered and hmac.compare_digest(offered.encode(), token.encode()):
            return None
        refused = one_line("401: this server needs its access token: open the address "
                           "printed at its start (…/?token=…) or send 'Authorization: "
                           "Bearer TOKEN'", 401)
        refused.headers["WWW-Authenticate"] = "Bearer"
        return refused

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.path.startswith("/static/"):  # results are not for caches
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_err):
        return one_line(f"upload larger than {config.max_upload_mb:g} MB (this server's "
                        "--max-upload-mb)", 400)

    @app.get("/")
    def page():
        return render_template(
            "index.html", session=session, entries=session.recent(), live=session.live,
            model_card=model_card(session.model, session.checks),
            calibration=calibration_status(session.model.info),
            citation=dataset_citation(session.model.info), disclaimer=DISCLAIMER,
            version=__version__, extensions=" ".join(IMAGE_EXTENSIONS),
            summary=session.summary_text(), max_upload_mb=config.max_upload_mb,
            cases=session.recent_cases())

    @app.post("/api/classify")
    def api_classify():
        files = request.files.getlist("image")
        if len(files) != 1:
            return one_line("send one image in the multipart form field 'image' "
                            f"(got {len(files)})", 400)
        entry = session.classify_upload(files[0].read(), files[0].filename)
        if entry.result.error:
            return one_line(entry.result.error, 400)
        return jsonify(entry.api)

    @app.post("/upload")
    def upload():
        """The page's upload: one image per request from its script (a result card back),
        or a whole form without script (back to the page)."""
        files = [f for f in request.files.getlist("image") if f.filename]
        if not files:
            return one_line("no image chosen (the form field 'image' is empty)", 400)
        entries = [session.classify_upload(f.read(), f.filename) for f in files]
        if request.args.get("fragment") != "1":  # a whole form, without the page's script
            names = [e.result.source for e in entries]
            folder = next((n.split("/")[0] for n in names if "/" in n), "")
            images, seen = under_folder(names, folder) if folder else ([], set())
            seen = seen if request.form.get("cases") else set()  # the box: --cases
            if seen:
                session.call_cases([(rel, entries[i]) for rel, i in images], folder, seen)
            return redirect("/#cases" if seen else "/#results", 303)
        html = render_template("_results.html", entries=entries)
        return html, 400 if any(e.result.error for e in entries) else 200

    @app.post("/cases")
    def call_cases():
        """The page's case view: one call per case of a folder upload whose images were
        classified one per request (entry numbers), from their results as they stand."""
        try:
            numbers = [int(n) for n in request.form.getlist("entry")]
        except ValueError:
            return one_line("entry numbers must be whole numbers", 400)
        entries = [e for e in map(session.entry, numbers) if e is not None]
        folder = case_folder(request.form.get("folder"))
        images, seen = under_folder([e.result.source for e in entries], folder)
        seen |= {upload_name(c, 0).split("/")[0] for c in request.form.getlist("case") if c}
        batch, _ = session.call_cases([(rel, entries[i]) for rel, i in images], folder, seen)
        if request.args.get("fragment") != "1":
            return redirect("/#cases", 303)
        return render_template("_cases.html", cases=batch)

    @app.post("/api/cases")
    def api_cases():
        """A folder of cases in one request: every `image` file named case/…/file.jpg
        (relative to the folder, whose name may come in the field `folder`); one call per
        case, as edge-classify --cases --case-jsonl writes it."""
        files = request.files.getlist("image")
        folder = case_folder(request.form.get("folder"))
        names = [upload_name(f.filename, i + 1) for i, f in enumerate(files)]
        images, seen = under_folder(names, "")
        if not seen:
            return one_line("no case: send the images of a folder whose sub-folders are the "
                            "cases, each in the field 'image' named case/…/file.jpg "
                            f"(got {len(files)} files, none in a sub-folder)", 400)
        fields = [(rel, session.classify_upload(
            files[i].read(), f"{folder}/{rel}" if folder else rel, rooted=bool(folder)))
            for rel, i in images]
        batch, loose = session.call_cases(fields, folder, seen)
        return jsonify(cases=[c.row for c in batch], rule=session.case_rule_text,
                       note=session.case_note, outside_cases=loose,
                       images=[{"source": e.result.source, "case": e.result.case,
                                "error": e.result.error, **e.api} for _, e in fields])

    @app.get("/heatmap/<int:number>.jpg")
    def heatmap(number: int):
        entry = session.entry(number)
        if entry is None or entry.heatmap is None:
            abort(404)
        return Response(entry.heatmap, mimetype="image/jpeg")

    @app.get("/history.csv")
    def history_csv():
        return _download(session.history("csv"), "text/csv", f"hemalite-{session.started}.csv")

    @app.get("/history.jsonl")
    def history_jsonl():
        return _download(session.history("jsonl"), "application/x-ndjson",
                         f"hemalite-{session.started}.jsonl")

    @app.get("/summary")
    def summary():
        return Response(session.summary_text() + "\n", mimetype="text/plain")

    @app.post("/history/clear")
    def clear():
        session.clear()
        return redirect("/#results", 303)

    @app.get("/api/model")
    def api_model():
        info = session.model.info
        return jsonify(name=info.name, version=info.version, labels=list(info.labels),
                       input=[info.spec.height, info.spec.width], runtime=session.model.runtime,
                       runtime_version=session.model.runtime_version,
                       min_confidence=session.checks.min_confidence,
                       domain_check=session.checks.domain_check and
                       session.model.domain is not None,
                       top_k=config.top_k, case_rule=session.case_rule_text,
                       card=model_card(session.model, session.checks),
                       calibration=calibration_status(info),
                       site_calibration=info.extra.get("site_calibration"),
                       citation=dataset_citation(info), disclaimer=DISCLAIMER)

    @app.get("/api/live")
    def api_live():
        if session.live is None:
            return one_line("no camera or video: start with --camera, --picamera or --video",
                            404)
        session.live.watch()
        return jsonify(session.live.status())

    @app.post("/live/keep")
    def keep():
        if session.live is None:
            abort(404)
        entry = session.live.keep()
        if entry is None:
            return one_line("no frame yet", 409)
        if request.args.get("fragment") != "1":
            return redirect("/#results", 303)
        return render_template("_results.html", entries=[entry])

    @app.get("/stream.mjpg")
    def stream():
        feed = session.live
        if feed is None:
            abort(404)
        heat = request.args.get("heatmap") == "1"

        def parts():
            version, sent = 0, time.monotonic()
            while not feed.stopped and time.monotonic() - sent < STREAM_GIVE_UP_S:
                feed.watch(heat)
                frame = feed.wait_newer(version, timeout=1.0)
                if frame is None:
                    continue
                version, sent = frame.version, time.monotonic()
                body = frame.heat_jpeg if heat and frame.heat_jpeg else frame.jpeg
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n").encode() + body + b"\r\n"

        return Response(parts(), mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    return app


def _download(data: bytes, mimetype: str, name: str) -> Response:
    return Response(data, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})

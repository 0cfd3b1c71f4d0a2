"""`hemalite serve`: the page beside the microscope (registered lazily in hemalite.cli).

Flask is imported only when the command runs, so `hemalite --help` never pays for it and an
edge install without the `serve` extra gets one line saying what to install.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket

import click

from hemalite import DISCLAIMER
from hemalite.cli import Command, setup_logging
from hemalite.edge import calibrate, classify, runtime
from hemalite.edge.cli import Confidence, _floor as resolve_floor  # edge-classify's own rule
from hemalite.edge.serve.session import ServeConfig, ServeError, Session, is_loopback

D = ServeConfig  # the defaults, written once


def make_session(config: ServeConfig, verbose: bool = False) -> Session:
    """Load the model and resolve the floor exactly as edge-classify does, then the session."""
    model = runtime.load_model(config.model or runtime.default_model_path(),
                               config.num_threads, config.runtime)
    if config.top_k > len(model.info.labels):
        raise click.BadParameter(f"{config.top_k} is more than the model's "
                                 f"{len(model.info.labels)} labels", param_hint="'--top-k'")
    checks = classify.Checks(resolve_floor(model, config.min_confidence, verbose),
                             config.domain_check)
    return Session(config, model, checks)


def make_server(config: ServeConfig, verbose: bool = False):
    """(server, session): Werkzeug's threaded server (a thread per connection, so long-lived
    streams never starve a pool) over the application, bound but not yet serving."""
    try:
        from werkzeug.serving import make_server as werkzeug_server

        from hemalite.edge.serve.app import create_app
    except ModuleNotFoundError as err:
        if err.name not in ("flask", "werkzeug"):
            raise
        raise ServeError("hemalite serve needs Flask: pip install 'hemalite[serve]' "
                         "(from a checkout: pip install '.[serve]')") from None
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.WARNING)
    session = make_session(config, verbose)
    try:
        server = werkzeug_server(config.host, config.port, create_app(session), threaded=True)
    except OSError as err:
        session.close()
        raise ServeError(f"cannot listen on {config.host}:{config.port}: "
                         f"{err.strerror or err}") from None
    except BaseException:
        session.close()
        raise
    return server, session


@click.command("serve", cls=Command, epilog=DISCLAIMER)
@click.option("--model", "model", default=D.model,
              help="A .tflite made by `hemalite convert`  [default: the bundled int8 model]")
@click.option("--camera", default=D.camera, is_flag=False, flag_value="0",
              help="Live view of a camera: an index (0) or a device such as /dev/video0.")
@click.option("--picamera", is_flag=True, default=D.picamera,
              help="Live view of the Raspberry Pi camera (Picamera2).")
@click.option("--video", type=click.Path(dir_okay=False, exists=True), default=D.video,
              help="Live view of a video file, played in a loop at its frame rate.")
@click.option("--host", default=D.host, show_default=True,
              help="Address to listen on. Anything but loopback (e.g. 0.0.0.0, the lab's "
                   "network) needs the access token on every request.")
@click.option("--port", type=click.IntRange(0, 65535), default=D.port, show_default=True,
              help="TCP port (0: a free one, printed at start).")
@click.option("--token", default=D.token,
              help="Access token  [default: generated and printed at start when --host is "
                   "not loopback]")
@click.option("--top-k", type=click.IntRange(min=1), default=D.top_k, show_default=True,
              help="Classes given per image (at most the model's number of labels).")
@click.option("--min-confidence", type=Confidence(), default=D.min_confidence,
              show_default=True,
              help="Below this top probability the result is REFER (low-confidence); 'auto' "
                   "uses the floor stored in the model, as edge-classify does.")
@click.option("--domain-check/--no-domain-check", default=D.domain_check, show_default=True,
              help="REFER images taken or looking unlike the training images (exposure, "
                   "magnification, focus, stain, out-of-domain), as edge-classify does.")
@click.option("--num-threads", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default=True, help="Interpreter threads.")
@click.option("--runtime", "runtime_name", type=click.Choice([r for r, _ in runtime.RUNTIMES]),
              default=D.runtime, help="Force a runtime  [default: first found]")
@click.option("--max-upload-mb", type=click.FloatRange(min=0.01), default=D.max_upload_mb,
              show_default=True, help="Largest upload accepted (one image per request).")
@click.option("--save-dir", type=click.Path(file_okay=False), default=D.save_dir,
              help="Keep every upload, its heatmap panel and results.csv / results.jsonl "
                   "here. Without it nothing of an image outlives the session: uploads are "
                   "held in memory only.")
@click.option("--case-min-fields", type=click.IntRange(min=1), default=D.case_min_fields,
              help="The case view's rule, as edge-classify's: accepted fields a case call "
                   "needs  [default: the rule stored in the model]")
@click.option("--case-max-discordance", type=click.FloatRange(min=0.0),
              default=D.case_max_discordance,
              help="The case view's rule, as edge-classify's: discordance above which a case "
                   "is REFER  [default: the rule stored in the model]")
@click.option("--verbose", is_flag=True, help="Log every request and the floor 'auto' resolves to.")
def serve_command(model, camera, picamera, video, host, port, token, top_k, min_confidence,
                  domain_check, num_threads, runtime_name, max_upload_mb, save_dir,
                  case_min_fields, case_max_discordance, verbose):
    """A page beside the microscope: the live camera with its label or REFER, uploads of
    images or folders with a label, heatmap and reason each, the session's history as CSV,
    and a JSON API (POST /api/classify) that answers as edge-classify does.

    \b
    Examples:
      hemalite serve                              # uploads only, http://127.0.0.1:8000/
      hemalite serve --camera 0                   # a USB microscope camera
      hemalite serve --picamera --host 0.0.0.0    # the lab's network: prints the token
    """
    setup_logging(verbose)
    sources_given = [n for n, on in (("--camera", camera is not None), ("--picamera", picamera),
                                     ("--video", video)) if on]
    if len(sources_given) > 1:
        raise click.UsageError(f"{' and '.join(sources_given)} given: choose one live source")
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(16)
    config = ServeConfig(model=model, camera=camera, picamera=picamera, video=video, host=host,
                         port=port, token=token, top_k=top_k,
                         min_confidence=str(min_confidence), domain_check=domain_check,
                         num_threads=num_threads, runtime=runtime_name,
                         max_upload_mb=max_upload_mb, save_dir=save_dir,
                         case_min_fields=case_min_fields,
                         case_max_discordance=case_max_discordance)
    server, session = make_server(config, verbose)
    actual = server.server_port
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    address = f"http://{'[' + shown + ']' if ':' in shown else shown}:{actual}/"
    click.echo(f"model {session.model.path} ({session.model.info.name}); runtime "
               f"{session.model.runtime} {session.model.runtime_version}; live: "
               f"{session.live.name if session.live else 'none (uploads only)'}")
    site = calibrate.status_line(session.model.info)  # as edge-classify prints it
    if site:
        click.echo(site, err=site.startswith("warning"))
    if session.case_note:  # as edge-classify --cases says it: the page's case view uses it
        click.echo(session.case_note, err=True)
    click.echo("nothing of an image is kept after this session" if not save_dir else
               f"saving uploads, heatmaps and results to {save_dir}")
    if token:
        click.echo(f"access token: {token}")
        click.echo(f"open {address}?token={token}")
    else:
        click.echo(f"open {address}")
    click.echo("Ctrl+C stops the server", err=True)
    try:
        server.serve_forever()  # returns on Ctrl+C (Werkzeug's catches KeyboardInterrupt)
        click.echo("stopped", err=True)
    finally:
        server.server_close()
        session.close()
        if session.summary.n:
            click.echo(session.summary.text())

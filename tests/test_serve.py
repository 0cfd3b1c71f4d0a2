"""`hemalite serve`: the real server on a loopback port with the bundled model and a real video
as its camera, asked through its JSON API and driven by a real headless Chromium; every answer
compared with edge-classify's for the same image (one decision, two faces)."""
from __future__ import annotations

import csv
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hemalite.edge import live
from hemalite.edge.classify import Result
from hemalite.edge.cli import classify_command
from hemalite.edge.serve import session as serving
from hemalite.edge.serve.cli import make_server
from hemalite.edge.serve.session import ServeConfig
from hemalite.metadata import ModelInfo
from tests.helpers import (CHROMEDRIVER, CHROMIUM, NEEDS_CHROMIUM, SHARED, SHARED_DATA,
                           TINY_INT8, chromium, real_images)

BCCD = SHARED / "data" / "other_labs" / "bccd" / "images"


# ----------------------------------------------------------------------------- helpers
def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, read: bool = True, timeout: float = 60):
    """(status, headers, body) of one request to 127.0.0.1:port; redirects not followed."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), (
            response.read() if read else response.read(64))
    finally:
        connection.close()


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict]:
    """A multipart/form-data body of (field, file name, bytes) parts (file name None: a
    plain form field), and its header."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"'.encode()
        + (f'; filename="{name}"\r\nContent-Type: application/octet-stream'.encode()
           if name is not None else b"") + b"\r\n\r\n"
        + data + b"\r\n" for field, name, data in parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def classify_api(port: int, data: bytes, name: str = "x.jpg", headers: dict | None = None):
    body, head = multipart(("image", name, data))
    status, _, answer = request(port, "POST", "/api/classify", body, {**head, **(headers or {})})
    return status, json.loads(answer)


def edge_classify(paths, tmp_path: Path, *options) -> dict[str, dict]:
    """edge-classify's JSONL line per path (the CLI face), through its click command."""
    out = tmp_path / f"cli-{uuid.uuid4().hex[:6]}.jsonl"
    result = CliRunner().invoke(classify_command, [*map(str, paths), "--jsonl", str(out),
                                                   "--quiet", *options])
    assert result.exit_code in (0, 1), result.output
    return {line["source"]: line for line in map(json.loads, out.read_text().splitlines())}


def write_video(path: Path, images: list[Path], repeat: int = 5, fps: int = 10) -> Path:
    """A real MJPG video of the images (each `repeat` frames), as a microscope camera."""
    import cv2

    size = (224, 224)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for image in images:
        rgb = np.asarray(Image.open(image).convert("RGB").resize(size))
        for _ in range(repeat):
            writer.write(np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
    writer.release()
    return path


class Served:
    """A server started by `hemalite serve`'s own make_server, in a thread of this process."""

    def __init__(self, config: ServeConfig):
        self.server, self.session = make_server(config)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.session.close()


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return real_images(per_class=2)  # 8 real smears (skips without ../shared/data/all4)


@pytest.fixture(scope="module")
def served(images, tmp_path_factory):
    """The bundled model, a real video of all4 smears as the camera, a 4 MB upload limit."""
    more = real_images(per_class=4)[2::4]  # other images than the uploads
    video = write_video(tmp_path_factory.mktemp("video") / "microscope.avi", more)
    server = Served(ServeConfig(video=str(video), port=0, max_upload_mb=4, idle_s=5))
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):  # CI installs them (make browser): never a silent skip there
            pytest.fail(NEEDS_CHROMIUM)
        pytest.skip(NEEDS_CHROMIUM)
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def refer_images(tmp_path: Path) -> list[Path]:
    """Images the model must refer: a blank slide (no leukocyte), another lab's smear."""
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (236, 226, 230)).save(blank)
    other = sorted(BCCD.glob("*.jpg"))[:1] if BCCD.is_dir() else []
    return [blank, *other]


# ----------------------------------------------------------------------------- the command
def test_hemalite_help_lists_serve_without_importing_flask(tmp_path):
    code = ("import sys; from click.testing import CliRunner; from hemalite.cli import main; "
            "out = CliRunner().invoke(main, ['--help']).output; "
            "print('serve' in out, 'flask' in sys.modules, 'hemalite.edge.serve.app' in "
            "sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)  # away from the checkout (its hemalite/ would shadow)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]


def test_a_non_loopback_server_never_starts_without_a_token():
    for token in (None, "", "   "):  # a token of blanks is no token
        with pytest.raises(serving.ServeError, match="needs an access token"):
            make_server(ServeConfig(host="0.0.0.0", port=0, token=token))


# ----------------------------------------------------------------------------- two faces
def test_api_answers_as_edge_classify_jsonl_for_the_same_images(served, images, tmp_path):
    big = tmp_path / "big.jpg"  # decoded in JPEG draft mode by both faces, or by neither
    Image.open(images[0]).convert("RGB").resize((1100, 1100)).save(big, quality=92)
    asked = [*images, big, *refer_images(tmp_path)]
    cli = edge_classify(asked, tmp_path)
    reasons = set()
    for path in asked:
        status, answer = classify_api(served.port, path.read_bytes(), path.name)
        assert status == 200, answer
        line = cli[str(path)]
        assert answer == {k: line[k] for k in serving.API_FIELDS}, path.name
        reasons.add(answer["reason"])
    assert None in reasons and "no-leukocyte" in reasons  # accepted and referred alike


def test_bad_uploads_answer_400_with_one_line_and_the_server_goes_on(served, images):
    good = images[0].read_bytes()
    bad = {"text": multipart(("image", "notes.jpg", b"not an image\n" * 20)),
           "empty": multipart(("image", "empty.jpg", b"")),
           "no field": multipart(("picture", "x.jpg", good)),
           "two images": multipart(("image", "a.jpg", good), ("image", "b.jpg", good)),
           "too large": multipart(("image", "huge.jpg", os.urandom(5_000_000)))}
    for what, (body, headers) in bad.items():
        status, _, answer = request(served.port, "POST", "/api/classify", body, headers)
        assert status == 400, what
        message = json.loads(answer)["error"]
        assert message and "\n" not in message, what
        assert classify_api(served.port, good)[0] == 200, f"after {what}"
    assert "empty" in request(served.port, "POST", "/api/classify",
                              *multipart(("image", "e.jpg", b"")))[2].decode()
    assert "4 MB" in json.loads(request(served.port, "POST", "/api/classify",
                                        *bad["too large"])[2])["error"]


def test_an_upload_larger_than_werkzeugs_spool_size_stays_in_memory(served, images,
                                                                    monkeypatch, tmp_path):
    import werkzeug.formparser
    import werkzeug.wrappers.request

    def spool(*args, **kwargs):
        raise AssertionError("an upload was about to be spooled to a temporary file")

    monkeypatch.setattr(werkzeug.formparser, "default_stream_factory", spool)
    monkeypatch.setattr(werkzeug.wrappers.request, "default_stream_factory", spool)
    big = tmp_path / "big.png"  # > 500 kB, Werkzeug's threshold for a temporary file
    Image.open(images[1]).convert("RGB").resize((1000, 1000)).save(big)
    assert big.stat().st_size > 600_000
    status, answer = classify_api(served.port, big.read_bytes(), "big.png")
    assert status == 200
    assert answer == {k: v for k, v in edge_classify([big], tmp_path)[str(big)].items()
                      if k in serving.API_FIELDS}


def test_a_loopback_server_answers_only_to_loopback_host_names(served):
    assert request(served.port, "GET", "/", headers={"Host": "localhost"})[0] == 200
    status, _, body = request(served.port, "GET", "/", headers={"Host": "attacker.example"})
    assert status == 403 and b"loopback" in body  # a DNS-rebound page cannot read results


def test_the_history_csv_has_edge_classify_columns_and_rows(served, images, tmp_path):
    for path in images[:3]:
        classify_api(served.port, path.read_bytes(), f"{path.parent.name}/{path.name}")
    status, headers, body = request(served.port, "GET", "/history.csv")
    assert status == 200 and "attachment" in headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    out = tmp_path / "cli.csv"
    CliRunner().invoke(classify_command, [*map(str, images[:3]), "--csv", str(out), "--quiet"])
    expected = list(csv.DictReader(out.open()))
    assert list(rows[0]) == list(expected[0])  # the same columns, in the same order
    for want in expected:
        name = f"{Path(want['source']).parent.name}/{Path(want['source']).name}"
        got = next(r for r in rows if r["source"] == name)
        same = ("label", "probability", "top_k", "error", "reason", "detail", "truth")
        assert {k: got[k] for k in same} == {k: want[k] for k in same}


# ----------------------------------------------------------------------------- cases
# Two cases of real smears: one of Early fields only (one in a deeper folder), one mixing
# Benign and Pro-B fields (a second disease in one patient cannot be: REFER discordant). Each
# field is accepted by LiteRT and tflite-runtime alike (Early-005 was not: tflite-runtime's
# domain score 3.21 > 3.19 referred it).
CASE_LAYOUT = {"P-0143": ["Early/WBC-Malignant-Early-001.jpg", "Early/WBC-Malignant-Early-002.jpg",
                          "Early/WBC-Malignant-Early-006.jpg@slide2"],
               "P-0144": ["Benign/WBC-Benign-009.jpg", "Benign/WBC-Benign-010.jpg",
                          "Pro/WBC-Malignant-Pro-001.jpg@slide2",
                          "Pro/WBC-Malignant-Pro-002.jpg@slide2"]}


def case_folder(root: Path) -> Path:
    """root/<case>/[slide2/]<image>: copies of ../shared's images in a tmp folder (never in
    the repository), and a file that is not an image (skipped by every face)."""
    for case, images in CASE_LAYOUT.items():
        for item in images:
            name, _, sub = item.partition("@")
            source = SHARED_DATA / name
            if not source.is_file():
                pytest.skip(f"{source} not present")
            target = root / case / sub / Path(name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    (root / "P-0143" / "notes.txt").write_text("not an image: skipped\n")
    return root


def edge_classify_cases(folder: Path, tmp_path: Path) -> tuple[list[dict], dict[str, dict]]:
    """(edge-classify --cases --case-jsonl rows, its --jsonl line per image) for a folder."""
    rows, lines = tmp_path / "cases.jsonl", tmp_path / "images.jsonl"
    result = CliRunner().invoke(classify_command, [str(folder), "--cases", "--case-jsonl",
                                                   str(rows), "--jsonl", str(lines), "--quiet"])
    assert result.exit_code == 0, result.output
    return ([json.loads(x) for x in rows.read_text().splitlines()],
            {Path(x["source"]).relative_to(folder).as_posix(): x
             for x in map(json.loads, lines.read_text().splitlines())})


def test_the_case_api_answers_as_edge_classify_case_jsonl(served, tmp_path):
    folder = case_folder(tmp_path / "patients")
    rows, lines = edge_classify_cases(folder, tmp_path)
    files = sorted(p for p in folder.rglob("*") if p.is_file())[::-1]  # any order will do
    body, headers = multipart(("folder", None, b"patients"), *(
        ("image", p.relative_to(folder).as_posix(), p.read_bytes()) for p in files))
    status, _, answer = request(served.port, "POST", "/api/cases", body, headers)
    assert status == 200, answer
    answer = json.loads(answer)
    assert answer["cases"] == [{**row, "folder": "patients"} for row in rows]
    assert [Path(row["folder"]).name for row in rows] == ["patients", "patients"]
    single, mixed = answer["cases"]
    assert (single["case"], single["label"], single["accepted_Early"]) == ("P-0143", "Early", 3)
    assert (mixed["case"], mixed["label"], mixed["reason"]) == ("P-0144", "REFER", "discordant")
    assert mixed["accepted_Benign"] == 2 and mixed["accepted_Pro"] == 2
    assert answer["rule"] == served.session.case_rule_text and answer["outside_cases"] == 0
    # every field as edge-classify's --jsonl line says it, with its case
    assert len(answer["images"]) == len(lines) == 7
    for image in answer["images"]:
        line = lines[image["source"].split("/", 1)[1]]
        assert {k: image[k] for k in (*serving.API_FIELDS, "case", "error")} == \
            {k: line[k] for k in (*serving.API_FIELDS, "case", "error")}


def test_the_case_api_refuses_uploads_in_no_case_folder(served, images):
    body, headers = multipart(("image", "loose.jpg", images[0].read_bytes()))
    status, _, answer = request(served.port, "POST", "/api/cases", body, headers)
    assert status == 400 and "case/" in json.loads(answer)["error"]


def test_case_uploads_are_ordered_and_grouped_as_edge_classify_walks_a_folder(tmp_path):
    from hemalite.edge import sources

    names = ["P1/b.jpg", "P1/a/z.jpg", "P1/a/c.png", "P1/B/y.jpg", "P2/x.jpg", "top.jpg",
             "P1/a/d/e.jpg"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    walked = [Path(p).relative_to(tmp_path).as_posix()
              for p, _ in sources.find_images([str(tmp_path)])]
    assert sorted(names, key=serving.walk_key) == walked
    groups, loose = serving.group_uploads([(n, n) for n in names], seen={"P3"})
    assert [name for name, _ in groups] == ["P1", "P2", "P3"] and loose == 1
    assert groups[0][1] == [w for w in walked if w.startswith("P1/")] and groups[2][1] == []
    assert serving.under_folder(["s/P1/a.jpg", "s/P2/notes.txt", "s/b.jpg", "t/c.jpg"], "s") \
        == ([("P1/a.jpg", 0), ("b.jpg", 2)], {"P1", "P2"})


def test_a_model_without_a_case_rule_gets_edge_classifys_defaults_and_note():
    server = Served(ServeConfig(model=str(TINY_INT8), port=0))
    try:
        session = server.session
        assert session.case_note.startswith("note: tiny_int8.tflite carries no case rule")
        assert session.case_rule_text == \
            "min fields 2, max discordance 0.70 (defaults, the model stores none)"
        status, _, page = request(server.port, "GET", "/")
        assert status == 200 and b"carries no case rule" in page
    finally:
        server.close()
    server = Served(ServeConfig(model=str(TINY_INT8), port=0, case_min_fields=3,
                                case_max_discordance=0.5))  # as edge-classify's flags
    try:
        assert server.session.case_rule_text == \
            "min fields 3, max discordance 0.50 (defaults, the model stores none, flags given)"
        assert server.session.case_note is None
    finally:
        server.close()


# ----------------------------------------------------------------------------- safe by default
def test_off_loopback_every_request_needs_the_token(images, tmp_path):
    """`hemalite serve --host 0.0.0.0` (the lab's network) as a user runs it; asked via
    127.0.0.1: 401 without the token, for the page, the API, the stream and the history."""
    video = write_video(tmp_path / "clip.avi", images[:2], repeat=3)
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hemalite.cli import main; main()", "serve", "--host",
         "0.0.0.0", "--port", "0", "--video", str(video)],
        cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        token = port = None
        deadline = time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            if line.startswith("access token: "):
                token = line.split(": ", 1)[1].strip()
            if line.startswith("open http://"):
                port = int(line.split(":")[2].split("/")[0])
        assert token and port and f"?token={token}" in line
        for method, path in (("GET", "/"), ("GET", "/stream.mjpg"), ("GET", "/api/live"),
                             ("GET", "/history.csv"), ("GET", "/static/serve.js"),
                             ("POST", "/api/classify"), ("GET", f"/?token={token}x")):
            status, headers, _ = request(port, method, path)
            assert status == 401, (method, path)
        assert classify_api(port, images[0].read_bytes())[0] == 401
        wrong = classify_api(port, images[0].read_bytes(), headers={
            "Authorization": f"Bearer {token[:-1]}"})
        assert wrong[0] == 401 and "token" in wrong[1]["error"]
        status, answer = classify_api(port, images[0].read_bytes(), headers={
            "Authorization": f"Bearer {token}"})
        assert status == 200 and answer["label"]
        # the address printed: the token once, then a cookie (and an address bar without it)
        status, headers, _ = request(port, "GET", f"/?token={token}")
        assert status == 302 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert request(port, "GET", "/", headers={"Cookie": cookie})[0] == 200
        status, headers, first = request(port, "GET", "/stream.mjpg", headers={"Cookie": cookie},
                                         read=False)
        assert status == 200 and headers["Content-Type"].startswith("multipart/x-mixed-replace")
        assert first.startswith(b"--frame")
        assert list(home.iterdir()) == []  # nothing written in its folder (no --save-dir)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped" in err and "1 input: 1 classified" in out  # the session's summary


def test_saving_writes_under_the_save_folder_only_with_names_made_there(images, tmp_path):
    saved = tmp_path / "kept"
    server = Served(ServeConfig(port=0, save_dir=str(saved)))
    try:
        body, headers = multipart(("image", "../../escape.jpg", images[0].read_bytes()))
        assert request(server.port, "POST", "/api/classify", body, headers)[0] == 200
    finally:
        server.close()
    assert not (tmp_path / "escape.jpg").exists()
    files = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file())
    assert files == ["heatmaps/00001-escape.jpg.heatmap.jpg", "results.config.json",
                     "results.csv", "results.jsonl", "uploads/00001-escape.jpg"]
    assert (saved / "uploads" / "00001-escape.jpg").read_bytes() == images[0].read_bytes()
    assert list(csv.DictReader((saved / "results.csv").open()))[0]["source"] == "escape.jpg"


# ----------------------------------------------------------------------------- pure parts
def test_upload_names_are_names_never_paths():
    assert serving.upload_name("../../etc/passwd", 1) == "etc/passwd"
    assert serving.upload_name("smears\\Pre\\a.jpg", 1) == "smears/Pre/a.jpg"
    assert serving.upload_name("", 7) == "upload 7"
    assert serving.upload_name("a\x00b.jpg", 1) == "a?b.jpg"
    labels = ("Benign", "Pre")
    assert serving.upload_truth("smears/Pre/deep/a.jpg", labels) == "Pre"
    assert serving.upload_truth("Pre/a.jpg", labels) == "Pre"  # the class folder chosen
    assert serving.upload_truth("a.jpg", labels) is None


def test_calibration_status_reads_the_models_site_calibration():
    plain = ModelInfo(labels=("a", "b"), spec=None)
    assert serving.calibration_status(plain) == "not calibrated to a site"
    cal = {"name": "Lab 3, Zeiss 100x", "date": "2027-01-12T10:00:00", "validated": True,
           "min_accuracy": 0.97, "images_per_class": {"a": 206, "b": 206},
           "adapted": ["zoom", "domain"],
           "cross_validation": {"folds": 5, "right": 0.991, "right_wilson95": [0.976, 0.997]}}
    site = ModelInfo(labels=("a", "b"), spec=None, extra={"site_calibration": cal})
    assert serving.calibration_status(site) == (
        "model: site calibration 'Lab 3, Zeiss 100x' (2027-01-12, 412 images; adapted: zoom, "
        "domain; 99.1% right in 5-fold cross-validation, 95 % lower bound 97.6%), validated")
    failed = ModelInfo(labels=("a", "b"), spec=None,
                       extra={"site_calibration": {**cal, "validated": False}})
    assert "NOT VALIDATED at its bar of 97%" in serving.calibration_status(failed)


def test_a_memory_file_has_a_path_and_is_gone_when_closed():
    with serving.MemoryFile(b"abc") as memory:
        assert Path(memory.path).read_bytes() == b"abc" and memory.read() == b"abc"
        fd = memory.fd
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_live_frame_is_drawn_with_edge_classifys_words():
    refer = Result("f", "REFER", 0.5, [("Pre", 0.5)], reason="low-confidence", detail="x")
    assert live.frame_text(refer) == "REFER low-confidence (Pre 0.50)"
    assert live.frame_text(Result("f", "Pre", 0.914, [("Pre", 0.914)])) == "Pre 0.91"
    blurred = Result("f", "REFER", 0.9, [("Pre", 0.9)], reason="out-of-focus",
                     detail="focus 0.30 of training's median (at least 0.42): refocus; hue")
    assert live.frame_text(blurred) == ("REFER out-of-focus (Pre 0.90)\n"
                                        "focus 0.30 of training's median (at least 0.42): refocus")


# ----------------------------------------------------------------------------- the browser
def wait(driver, condition, timeout: float = 60, what: str = ""):
    """Until condition(driver) is true; on timeout, an assertion that shows the page's state."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        state = driver.execute_script("""
            const text = id => (document.getElementById(id) || {}).textContent;
            return {progress: text('progress'), live: text('live-status'),
                    frame: text('live-frame'), stream: (document.getElementById('stream')
                    || {}).src, cards: [...document.querySelectorAll('#result-list li')]
                    .map(li => li.textContent.replace(/\\s+/g, ' ').trim().slice(0, 90))};""")
        raise AssertionError(f"{what} (after {timeout} s): {state}") from None


def cards(driver) -> dict[str, dict]:
    """The result cards on the page: {source: {label, probability, reason, heatmap_loaded}}."""
    return {c["source"]: c for c in driver.execute_script("""
        return [...document.querySelectorAll('#result-list li.result')].map(li => ({
            source: li.dataset.source || li.querySelector('.source').textContent,
            label: (li.querySelector('.verdict') || {}).textContent,
            probability: (li.querySelector('.probability') || {}).textContent,
            reason: (li.querySelector('.why') || {}).textContent || null,
            truth: (li.querySelector('.truth') || {}).textContent || null,
            heatmap: !!li.querySelector('figure.panel img') &&
                     li.querySelector('figure.panel img').complete &&
                     li.querySelector('figure.panel img').naturalWidth > 0}));""")}


def test_the_page_in_a_browser(served, browser, images, tmp_path):
    driver = browser
    driver.get(served.url + "/")
    timing = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].toJSON()")
    first_view_ms = {k: round(timing[k], 1) for k in ("responseEnd", "domContentLoadedEventEnd",
                                                        "loadEventEnd")}
    print(f"\nfirst view of the page (ms from navigation start): {first_view_ms}")
    assert first_view_ms["loadEventEnd"] < 1000, first_view_ms  # the bound
    text = driver.find_element("tag name", "body").text
    assert "labels Benign, Early, Pre, Pro" in text and "not calibrated to a site" in text
    assert "not a diagnosis" in text and "doi:10.34740/KAGGLE/DSV/2175623" in text

    # the live view: frames arrive, the FPS and the verdict show, the picture changes
    def frame_number(d):
        shown = d.find_element("id", "live-frame").text
        return int(shown) if shown.isdigit() else None

    first = wait(driver, frame_number, what="no live frame number")
    wait(driver, lambda d: (frame_number(d) or 0) > first + 3, what="the frame number stalls")
    assert float(driver.find_element("id", "live-fps").text) > 0
    assert driver.find_element("id", "live-status").text.split()[0] in (
        "Benign", "Early", "Pre", "Pro", "REFER")
    stream = driver.find_element("id", "stream")
    wait(driver, lambda d: d.execute_script("return arguments[0].naturalWidth", stream) > 0,
         what="the stream shows no picture")
    before = stream.screenshot_as_png
    wait(driver, lambda d: stream.screenshot_as_png != before, timeout=20,
         what="the streamed picture never changes")
    driver.find_element("id", "heatmap-toggle").click()
    wait(driver, lambda d: "heatmap=1" in stream.get_attribute("src"))
    wait(driver, lambda d: (served.session.live.latest().heat_jpeg is not None), timeout=20,
         what="no heatmap frame drawn")
    driver.find_element("id", "keep").click()
    wait(driver, lambda d: any("frame" in s for s in cards(d)), what="the kept frame is missing")

    # uploads: files, then a folder of class folders; a card per image as edge-classify says
    picked = images[4:8]
    driver.find_element("id", "files").send_keys("\n".join(str(p) for p in picked))
    driver.find_element("id", "classify").click()
    wait(driver, lambda d: all(p.name in cards(d) for p in picked), what="upload cards missing")
    done = f"{len(picked)} sent: {len(picked)} classified."
    wait(driver, lambda d: d.find_element("id", "progress").text == done, what="upload unfinished")
    folder = tmp_path / "smears"
    for path in images[:2] + images[6:7]:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not an image: a folder upload skips it\n")
    driver.find_element("id", "folder").send_keys(str(folder))
    driver.find_element("id", "classify").click()
    in_folder = [f"smears/{p.parent.name}/{p.name}" for p in images[:2] + images[6:7]]
    wait(driver, lambda d: all(s in cards(d) for s in in_folder), what="folder cards missing")
    wait(driver, lambda d: d.find_element("id", "progress").text.startswith("3 sent"),
         what="the folder's upload did not finish (or sent notes.txt)")
    assert not any("notes.txt" in s for s in cards(driver))
    def heatmaps_loaded(d) -> bool:  # lazy images load as they come into view: scroll on
        d.execute_script("""const waiting = [...document.querySelectorAll('figure.panel img')]
            .find(i => !(i.complete && i.naturalWidth > 0));
            if (waiting) waiting.scrollIntoView()""")
        return all(cards(d)[s]["heatmap"] for s in [p.name for p in picked] + in_folder)

    wait(driver, heatmaps_loaded, what="a heatmap did not load")
    asked = {**{p.name: p for p in picked},
             **{s: folder / s.split("/", 1)[1] for s in in_folder}}  # card source: file
    cli = edge_classify(asked.values(), tmp_path)
    shown = cards(driver)
    for source, path in asked.items():
        card, line = shown[source], cli[str(path)]
        assert card["label"] == line["label"], source
        assert card["probability"] == f"{line['probability']:.3f}", source
        assert card["reason"] == line["reason"], source
    assert shown[in_folder[0]]["truth"] == f"(folder: {images[0].parent.name})"
    wait(driver, lambda d: "accuracy" in d.find_element("id", "summary").text,
         what="the summary has no accuracy for the folder's class folders")

    # keyboard: Tab reaches every control; each input has a label
    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
    reached = set()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(30):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.add(driver.execute_script("return document.activeElement.id"))
    assert {"heatmap-toggle", "keep", "files", "folder", "classify", "download-csv"} <= reached
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input')].filter(i => !i.labels.length)"
        ".map(i => i.id)")
    assert unlabelled == []

    # a phone's width: one column, nothing wider than the screen
    driver.set_window_size(390, 844)
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    driver.set_window_size(1280, 1000)


def test_the_case_view_in_a_browser(served, browser, tmp_path):
    """A folder of case sub-folders, uploaded through the page with its box ticked: a card
    per case saying what edge-classify --cases says, its fields linked to their cards."""
    driver = browser
    driver.set_window_size(1280, 1000)
    driver.get(served.url + "/")
    folder = case_folder(tmp_path / "ward-3")
    rows, _ = edge_classify_cases(folder, tmp_path)
    before = len(driver.find_elements("css selector", "#case-list li.case"))  # the API's
    box = driver.find_element("id", "as-cases")
    box.click()
    assert box.is_selected()
    driver.find_element("id", "folder").send_keys(str(folder))
    driver.find_element("id", "classify").click()
    wait(driver, lambda d: d.find_element("id", "case-progress").text ==
         "2 cases of ward-3 called.", what="the cases were not called")
    assert len(driver.find_elements("css selector", "#case-list li.case")) == before + 2
    shown = driver.execute_script("""  // the newest upload's cases come first
        return [...document.querySelectorAll('#case-list li.case')].slice(0, 2).map(li => ({
            case: li.dataset.case, label: li.querySelector('.verdict').textContent,
            probability: li.querySelector('.probability').textContent,
            reason: (li.querySelector('.why') || {}).textContent || '',
            read: li.querySelector('.fields-read').textContent,
            accepted: li.querySelector('.fields-accepted').textContent,
            per_class: li.querySelector('.per-class').textContent,
            links: [...li.querySelectorAll('.fields a')].map(a => a.getAttribute('href'))}));""")
    assert [c["case"] for c in shown] == [r["case"] for r in rows] == ["P-0143", "P-0144"]
    for card, row in zip(shown, rows):
        assert card["label"] == row["label"] and card["reason"] == row["reason"], card
        assert card["probability"] == f"{row['probability']:.3f}"
        assert (card["read"], card["accepted"]) == (str(row["fields"]), str(row["accepted"]))
        assert card["per_class"] == ", ".join(f"{n} {row['accepted_' + n]}"
                                              for n in ("Benign", "Early", "Pre", "Pro"))
        assert len(card["links"]) == row["fields"]
        for href in card["links"]:  # each field's link leads to its per-image card
            assert driver.find_elements("css selector", f"#result-list li{href}")
    assert shown[1]["label"] == "REFER" and shown[1]["reason"] == "discordant"

    # keyboard: the box and the case cards' links are reached with Tab
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")
    reached = []
    for _ in range(40):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        reached.append(driver.execute_script(
            "const a = document.activeElement; return a.id || a.getAttribute('href')"))
    assert "as-cases" in reached and any(str(r).startswith("#result-") for r in reached)
    first_link = driver.find_element("css selector", "#case-list li.case .fields a")
    first_link.send_keys(Keys.ENTER)
    wait(driver, lambda d: d.execute_script("return location.hash") ==
         first_link.get_attribute("href").split("/")[-1].lstrip("/"), timeout=10,
         what="a field's link does not lead to its card")

    # a phone's width: nothing wider than the screen, the case cards included
    driver.set_window_size(390, 844)
    assert driver.execute_script(
        "return document.documentElement.scrollWidth <= window.innerWidth")
    driver.set_window_size(1280, 1000)

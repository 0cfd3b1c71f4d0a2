"""Small file helpers every stage uses: atomic writes, JSON, quieting native stderr."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Lines that TensorFlow and the TFLite runtime print straight to file descriptor 2 as they
# start, out of reach of Python logging (TF_CPP_MIN_LOG_LEVEL does not silence them all).
STARTUP_NOISE = ("All log messages before absl::InitializeLog() is called",
                 "oneDNN custom operations are on",
                 "This TensorFlow binary is optimized to use available CPU instructions",
                 "To enable the following instructions:",
                 "Created TensorFlow Lite XNNPACK delegate for CPU")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A crash mid-write leaves the old file (or nothing), never half a model. The temporary
    name keeps the suffix so writers that look at it (Keras' `.keras`) still work. The
    file gets the mode a plain write would give (the old file's, else 0666 less the umask),
    not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f"-{path.name}")
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (UTF-8)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically, indented and key-sorted so diffs stay readable."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@contextlib.contextmanager
def native_noise_filtered(noise: tuple[str, ...] = STARTUP_NOISE) -> Iterator[None]:
    """Hold back what native code writes to stderr (fd 2) in this block, then pass on
    every line except the known start-up noise: errors still reach the user."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not any(n in line for n in noise))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()

"""The one base class for errors a user causes: a bad file, a missing run, a model without
labels. Each stage names its own subclass (DatasetError, ConvertError, ImageError,
MetadataError, ModelError, ...). The click layer (`hemalite.cli.Command`) catches this base
alone, prints `error: <message>` as one line and exits with `exit_code`; anything else is a
bug and keeps its traceback."""
from __future__ import annotations


class HemaliteError(Exception):
    """A user error: one line that says what happened and what to do, no traceback."""

    exit_code = 2

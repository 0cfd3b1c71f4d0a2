"""Helpers shared by the test modules (test modules never import each other)."""
from __future__ import annotations

import dataclasses


def cli_defaults_differing(command, config_cls, skip=()) -> dict:
    """{option: (click default, config default)} where a command's default is not its
    config dataclass's: the defaults are written once, in the dataclass."""
    fields = {f.name: f.default for f in dataclasses.fields(config_cls)
              if f.default is not dataclasses.MISSING}
    return {p.name: (p.default, fields[p.name]) for p in command.params
            if p.name in fields and p.name not in skip and not getattr(p, "is_flag", False)
            and p.default != fields[p.name]}

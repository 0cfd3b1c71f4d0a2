"""The `hemalite` command group. Each stage's subcommand is imported only when it runs,
so `hemalite --help` and the edge commands never pay for importing TensorFlow."""
from __future__ import annotations

import importlib
import logging

import click

from hemalite import DISCLAIMER, __version__
from hemalite.errors import HemaliteError

SUBCOMMANDS = {
    "train": ("hemalite.train.cli", "train_command", "Train a classifier on a class-folder dataset."),
    "convert": ("hemalite.convert.cli", "convert_command", "Convert a trained run to .tflite variants."),
    "study": ("hemalite.convert.study", "study_command",
              "Where int8 loses accuracy: calibration and quantisation settings compared."),
    "bench": ("hemalite.benchmarks.cli", "bench_command", "Benchmark models: size, latency, accuracy."),
    "report": ("hemalite.benchmarks.cli", "report_group", "Work with benchmark reports (merge)."),
    "sweep": ("hemalite.benchmarks.cli", "sweep_command",
              "Train, convert and benchmark configurations; compare them on one front."),
    "serve": ("hemalite.edge.serve.cli", "serve_command",
              "A page beside the microscope: live view, uploads, history, JSON API."),
}


class _OneLine(click.ClickException):
    """How a HemaliteError leaves a command: `error: ...` on stderr and its exit code."""

    def __init__(self, error: HemaliteError):
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None):
        click.echo(f"error: {self.message}", err=True)


# The extra that brings a module the edge install lacks (setup.cfg's extras_require)
EXTRAS = {"tensorflow": "train", "keras": "train", "sklearn": "bench", "matplotlib": "bench",
          "skimage": "bench", "flask": "serve", "werkzeug": "serve"}


class Command(click.Command):
    """Every hemalite command (`hemalite ...`, `edge-classify`, `edge-bench`): the one place
    that turns a user error (HemaliteError) into one line and an exit code, and a stage run
    on an install without its extra (`hemalite train` on the edge install) into the line
    that says what to install."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HemaliteError as err:
            raise _OneLine(err) from err
        except ModuleNotFoundError as err:
            extra = EXTRAS.get((err.name or "").split(".")[0])
            if extra is None:
                raise
            raise _OneLine(HemaliteError(
                f"`{ctx.command_path}` needs {err.name}, which this install lacks: "
                f"pip install \".[{extra}]\" (from the checkout)")) from err


class Group(click.Group):
    """A command group whose commands are `Command`s."""

    command_class = Command


class LazyGroup(Group):
    """A click group whose subcommands live in other modules, imported on use."""

    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module, attr, _ = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):  # short help without importing every stage
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(message)s")


@click.group(cls=LazyGroup, epilog=DISCLAIMER)
@click.version_option(__version__, prog_name="hemalite")
def main() -> None:
    """hemalite: acute lymphoblastic leukaemia smear screening, from training to a Raspberry Pi.

    Pipeline: train -> convert -> bench (and `study`, the int8 study); on the device,
    `edge-classify`, `edge-bench` and `hemalite serve` (a page, pip install '.[serve]').
    """

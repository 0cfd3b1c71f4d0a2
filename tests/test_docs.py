"""The README and docs/ show only what exists: every option of every hemalite, edge-classify
and edge-bench command shown is one that command takes, every `make` target is in the
Makefile, and every relative link leads to a file (and heading) of the checkout."""
from __future__ import annotations

import re
import shlex

import click
import pytest

from tests.helpers import REPO

PAGES = [REPO / "README.md", REPO / "MODEL_CARD.md", *sorted((REPO / "docs").glob("*.md")),
         REPO / "benchmarks" / "reports" / "grounding_summary.md"]
COMMAND = re.compile(r"(?:^|[\s/(`])(hemalite|edge-classify|edge-bench)((?:\s+[^\s;&|#`'\"]+)*)")


def commands() -> dict[str, click.Command]:
    from hemalite.benchmarks.cli import edge_bench_command
    from hemalite.cli import main
    from hemalite.edge.cli import classify_command

    found = {"edge-classify": classify_command, "edge-bench": edge_bench_command}
    ctx = click.Context(main)
    for name in main.list_commands(ctx):  # the stages are imported on use: import them now
        command = main.get_command(ctx, name)
        found[f"hemalite {name}"] = command
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                found[f"hemalite {name} {sub}"] = command.get_command(ctx, sub)
    return found


def code(page) -> list[str]:
    """The page's code as logical lines: fenced blocks (backslash continuations joined) and
    inline code spans."""
    text = page.read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return lines + [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def shown_commands(page):
    for line in code(page):
        for program, rest in COMMAND.findall(line):
            words = rest.split()
            name = program
            if program == "hemalite" and words and not words[0].startswith("-"):
                name = f"hemalite {words.pop(0)}"
                if words and name == "hemalite report":
                    name = f"hemalite report {words.pop(0)}"
            yield name, words


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_shown_takes_the_options_shown(page):
    known = commands()
    for name, words in shown_commands(page):
        if name not in known:
            assert name.split()[-1] in ("RUN_DIR", "DATA_DIR") or name == "hemalite", \
                f"{page.name}: no command {name!r}"
            continue
        options = {opt for param in known[name].params
                   for opt in (*param.opts, *getattr(param, "secondary_opts", ()))}
        for word in words:
            option = word.split("=")[0]
            if option.startswith("--") and option != "--":
                assert option in options, f"{page.name}: {name} has no option {option}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_make_target_shown_is_in_the_makefile(page):
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z0-9-]+):", makefile, re.M))
    for line in code(page):
        for match in re.finditer(r"(?:^|\s|`)make ((?:[a-z0-9-]+\s*)+)", line):
            for word in shlex.split(match.group(1)):
                if "=" not in word:
                    assert word in targets, f"{page.name}: no make target {word!r}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} leads nowhere"
        if anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", linked.read_text(
                encoding="utf-8"), flags=re.S), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.name}: no #{anchor} there"

"""`egsde-rt --help` explains itself: every option and positional of every command has a help
text, every option with a default shows it, every command shows examples, and each example is a
command line the parser takes. The top level says what to run first, in plain text."""

import argparse
import re
import shlex

import pytest

from egsde_rt.cli import build_parser
from egsde_rt.method.presets import PRESETS
from egsde_rt.method.settings import DECLARATIONS

PARSER = build_parser()
COMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


def _squeezed(text: str) -> str:
    """``text`` without whitespace: what --help shows, whatever its line breaks."""
    return "".join(text.split())


def _shown_default(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _arguments(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_argument_has_help_and_shows_its_default(name):
    command = COMMANDS[name]
    shown = _squeezed(command.format_help())
    missing, hidden = [], []
    for action in _arguments(command):
        label = "/".join(action.option_strings) or action.dest
        if not action.help:
            missing.append(label)
            continue
        assert "%" not in action.help.replace("%%", ""), f"{name} {label}: a help text with a format field"
        flag = action.nargs == 0  # --resume, --no-student: set by their presence, nothing to show
        if action.option_strings and action.default not in (None, False) and not flag:
            expected = f"{action.help.replace('%%', '%')} (default: {_shown_default(action.default)})"
            if _squeezed(expected) not in shown:
                hidden.append(f"{label} (default {action.default!r})")
    assert not missing, f"egsde-rt {name}: no help text for {missing}"
    assert not hidden, f"egsde-rt {name} --help does not show the default of {hidden}"


def _example_lines(text: str) -> list[str]:
    """The egsde-rt command lines of an epilog (its indented lines), those inside ``$(...)`` included."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("  "):
            continue
        line = line.strip()
        lines += re.findall(r"\$\((egsde-rt [^)]*)\)", line)
        if line.startswith("egsde-rt "):
            lines.append(line)
    return lines


def test_every_command_shows_an_example_of_itself():
    for name, command in COMMANDS.items():
        assert command.epilog and command.epilog in command.format_help(), f"egsde-rt {name} has no example"
        assert any(line.split()[:2] == ["egsde-rt", name] for line in _example_lines(command.epilog)), \
            f"egsde-rt {name}'s examples do not run it"


def test_every_example_parses():
    texts = [PARSER.epilog, *(c.epilog for c in COMMANDS.values())]
    examples = [line for text in texts for line in _example_lines(text)]
    assert len(examples) > len(COMMANDS)
    for line in examples:
        try:
            args = PARSER.parse_args(shlex.split(line, comments=True)[1:])
        except SystemExit:
            pytest.fail(f"the example does not parse: {line}")
        assert callable(args.func)


def test_the_top_level_help_is_plain_and_says_what_to_run_first():
    text = PARSER.format_help()
    assert "``" not in text and ":the command line" not in text
    assert "egsde-rt demo" in text and "egsde-rt demo --engine-path" in text
    assert "docs/your-checkpoints.md" in text


def test_the_settings_flags_show_the_declarations_help():
    shown = _squeezed(COMMANDS["translate"].format_help())
    for name in ("solver", "M", "steps"):
        assert _squeezed(DECLARATIONS[name].help) in shown


def test_presets_are_choices():
    assert set(PRESETS) | {"demo"} == set(next(a for a in COMMANDS["bench"]._actions if a.dest == "preset").choices)
    for name in ("export", "reference"):
        assert set(PRESETS) == set(next(a for a in COMMANDS[name]._actions if a.dest == "preset").choices)
    with pytest.raises(SystemExit):
        PARSER.parse_args(["bench", "--preset", "cat2dgo"])


@pytest.mark.parametrize("spelling", ["--output-dir", "--out"])
def test_one_spelling_of_the_output_directory_and_its_alias(spelling):
    checkpoints = ["--score-ckpt", "s.pt", "--dse-ckpt", "d.pt"]
    for argv in (["export", *checkpoints], ["reference", "in.png", *checkpoints], ["translate", "engine", "in.png"],
                 ["distill", "engine", "--source", "procedural:source"], ["demo"]):
        assert PARSER.parse_args([*argv, spelling, "out"]).output_dir == "out"
    for name in ("export", "reference", "translate", "distill", "demo"):
        assert "--output-dir DIR, --out DIR" in COMMANDS[name].format_help()

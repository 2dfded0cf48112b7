"""The README is a front door and docs/ holds the rest: the README stays within 300 lines, every
relative link in the README and docs/*.md reaches an existing file (and, with `#anchor`, an
existing heading of it), and the README's index links every page of docs/. Markdown is parsed as
CommonMark (markdown-it-py), so links in code are not links; anchors are GitHub's heading slugs.

The pages scan (issue 38): every prose paragraph and list item is short, a heading comes every
screen, and every `egsde-rt` command of a fenced shell example parses with the CLI's own parser.
Each failure lists every offender of its page (page:line and the measure), so that
`python -m pytest -q tests/project/test_docs.py` shows a writer what is left; the `test_rule_*`
tests show each rule failing on a bad sample."""

import contextlib
import io
import re
import shlex
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

from conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 300
INDEX_HEADING = "Documentation"  # the README's index of docs/
PAGES = sorted(DOCS.glob("*.md"))


@cache
def _tokens(path: Path) -> list:
    return MarkdownIt("commonmark").enable("table").parse(path.read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    tokens, seen, anchors = _tokens(path), {}, set()
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            slug = _slug("".join(child.content for child in inline.children
                                 if child.type in ("text", "code_inline")))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return frozenset(anchors)


def _links(path: Path) -> list[str]:
    """Every link and image target in the file, in order."""
    found = []
    for token in _tokens(path):
        for child in token.children or ():
            if child.type == "link_open":
                found.append(child.attrGet("href"))
            elif child.type == "image":
                found.append(child.attrGet("src"))
    return found


def _section_links(path: Path, heading: str) -> list[str]:
    """The link targets under the level-2 heading `heading`, up to the next heading of its level."""
    tokens, inside, found = _tokens(path), False, []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open" and opening.tag == "h2":
            inside = inline.content == heading
        elif inside:
            found += [child.attrGet("href") for child in opening.children or () if child.type == "link_open"]
    return found


def test_readme_is_a_front_door():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, \
        f"README.md has {lines} lines, over {MAX_README_LINES}: move the detail to a page of docs/ and link it"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_a_heading(path):
    broken = []
    for target in _links(path):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            continue  # absolute URLs are not checked (no network)
        file = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif parts.fragment and file.suffix == ".md" and parts.fragment not in _anchors(file):
            broken.append(f"{target}: no heading #{parts.fragment} in {file.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)} links to what is not there:\n" + "\n".join(broken)


def test_readme_index_links_every_docs_page():
    assert PAGES, "docs/ has no pages"
    index = {(README.parent / urlsplit(target).path).resolve() for target in _section_links(README, INDEX_HEADING)}
    missing = [page.name for page in PAGES if page.resolve() not in index]
    assert not missing, f"README.md's '{INDEX_HEADING}' section does not link {missing}: add a row for each"


# --- the rules of pages that scan (issue 38 §4) ---

MAX_WORDS = 90  # per prose paragraph or list item; writers aim at 80
MAX_LINES_PER_HEADING = 60  # source lines between two headings: a screen
SHELL_INFOS = ("bash", "sh", "shell", "console")
_WRAPPERS = {"time", "env", "nohup", "exec", "command", "sudo", "do", "then", "else", "!"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"(.*/)?python(\d+(\.\d+)?)?")
_REDIRECT = re.compile(r"\d*(>>?|<|>&|&>)")  # alone: the target is the next word; with more after it: attached


def _rendered(inline) -> str:
    """The text a reader sees of an inline token: text, inline code and image descriptions, links as their text."""
    parts = []
    for child in inline.children or ():
        if child.type in ("text", "code_inline", "image"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


def long_paragraphs(path: Path, limit: int = MAX_WORDS) -> list[str]:
    """Every prose paragraph (outside lists) and every list item of more than `limit` words of rendered
    text, as 'page:line: N words'. A list item counts its own paragraphs (its nested items count on
    their own); tables, headings and code blocks are not prose."""
    found, items = [], []  # items: [start line, words] of the open list items, innermost last
    tokens = _tokens(path)
    for i, token in enumerate(tokens):
        if token.type == "list_item_open":
            items.append([token.map[0] + 1, 0])
        elif token.type == "list_item_close":
            line, words = items.pop()
            if words > limit:
                found.append(f"{path.name}:{line}: list item of {words} words")
        elif token.type == "paragraph_open":
            words = len(_rendered(tokens[i + 1]).split())
            if items:
                items[-1][1] += words
            elif words > limit:
                found.append(f"{path.name}:{token.map[0] + 1}: paragraph of {words} words")
    return found


def long_sections(path: Path, limit: int = MAX_LINES_PER_HEADING) -> list[str]:
    """Every stretch of more than `limit` source lines without a heading, as 'page:line: N lines'. The
    measure: the source lines strictly between two headings (or from the top of the page to the first,
    or from the last to the end), blank lines, fenced code and tables included: what a reader scrolls."""
    lines = len(path.read_text().splitlines())
    headings = [t.map for t in _tokens(path) if t.type == "heading_open"]
    bounds = [(0, 0), *headings, (lines, lines)]
    found = []
    for (_, after), (before, _) in zip(bounds, bounds[1:]):
        if before - after > limit:
            found.append(f"{path.name}:{after + 1}: {before - after} lines without a heading "
                         f"(lines {after + 1}-{before})")
    return found


def _find_close(text: str, start: int) -> int:
    """The index of the `)` that closes the `(` before `start` (quotes respected), or len(text)."""
    depth, quote = 1, None
    for j in range(start, len(text)):
        c = text[j]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def shell_commands(line: str) -> list[str]:
    """The simple commands of one logical shell line: split at unquoted `&&`, `||`, `;`, `|` and `&`,
    comments dropped; each `$( ... )` is a command of its own and stands as the placeholder `$SUBST`."""
    commands, subs, cur, quote, i = [], [], [], None, 0
    while i < len(line):
        c = line[i]
        if quote == "'":
            quote = None if c == "'" else quote
        elif c == "\\" and i + 1 < len(line):
            cur.append(line[i:i + 2])
            i += 2
            continue
        elif line.startswith("$(", i):
            end = _find_close(line, i + 2)
            subs += shell_commands(line[i + 2:end])
            cur.append("$SUBST")
            i = end + 1
            continue
        elif quote == '"':
            quote = None if c == '"' else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (not cur or cur[-1][-1].isspace()):
            break
        elif c in ";|&" and not (c == "&" and (line[i - 1:i] in ("<", ">") or line[i + 1:i + 2] == ">")):
            commands.append("".join(cur))
            cur = []
            i += 1
            while i < len(line) and line[i] in "&|":
                i += 1
            continue
        cur.append(c)
        i += 1
    commands.append("".join(cur))
    return [command for command in commands if command.strip()] + subs


def _shell_lines(content: str, info: str, first_line: int) -> list[tuple[int, str]]:
    """(line number, logical line) of a fenced shell block: continuations (`\\` at the end) joined, a
    leading `$ ` prompt dropped; in a `console` block only the prompted lines are commands."""
    found, pending, start = [], None, 0
    for number, raw in enumerate(content.splitlines(), first_line):
        if pending is None:
            prompted = raw.startswith("$ ")
            if info == "console" and not prompted:
                continue
            raw, start = raw[2:] if prompted else raw, number
        text = raw[:-1] if raw.endswith("\\") else raw
        pending = text if pending is None else pending + " " + text
        if not raw.endswith("\\"):
            found.append((start, pending))
            pending = None
    if pending is not None:
        found.append((start, pending))
    return found


def egsde_argv(words: list[str]) -> list[str] | None:
    """The arguments after `egsde-rt` or `python -m egsde_rt` in a command's words (assignments and
    wrappers such as `time` skipped, redirections dropped), or None for any other program."""
    while words and (words[0] in _WRAPPERS or _ASSIGNMENT.match(words[0])):
        words = words[1:]
    if words and (words[0] == "egsde-rt" or words[0].endswith("/egsde-rt")):
        argv = words[1:]
    elif len(words) >= 3 and _PYTHON.fullmatch(words[0]) and words[1] == "-m" and words[2] in ("egsde_rt",
                                                                                                "egsde_rt.cli"):
        argv = words[3:]
    else:
        return None
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif _is_placeholder(word):
            kept.append(word)
        elif _REDIRECT.fullmatch(word):
            skip = True
        elif not _REDIRECT.match(word):
            kept.append(word)
    return kept


def _is_placeholder(word: str) -> bool:
    """A shell variable or substitution ("$ENGINE", `$SUBST`), `<engine-dir>` or an upper-case name (ENGINE)."""
    return "$" in word or bool(re.fullmatch(r"<[^<>]+>|[A-Z][A-Z0-9_]*", word))


@cache
def _parser():
    from egsde_rt.cli import build_parser

    return build_parser()


def _option(parser, flag: str):
    """The action of `flag` in `parser`, abbreviations allowed as argparse allows them."""
    actions = parser._option_string_actions
    if flag in actions:
        return actions[flag]
    matches = {actions[name] for name in actions if name.startswith(flag)}
    return matches.pop() if len(matches) == 1 else None


def _sample(action, word: str) -> str:
    """A value `action` takes, for a placeholder `word`: its first choice, or a sample its type accepts."""
    if action.choices:
        return str(next(iter(action.choices)))
    if action.type in (None, str):
        return word
    for candidate in ("1", "auto", "cpu", "0.5"):
        try:
            action.type(candidate)
            return candidate
        except Exception:
            continue
    return word


def fill_placeholders(parser, argv: list[str]) -> list[str]:
    """argv with each placeholder value of an option that has choices or a type (`--backend "$BACKEND"`,
    `--threads N`) replaced by a value it takes; positionals and plain strings stay (no `type=` of the
    CLI reads the file system, so paths are never substituted)."""
    out, current, owner, left = [], parser, None, 0
    for word in argv:
        if word.startswith("-") and len(word) > 1 and not re.fullmatch(r"-[\d.]+(e-?\d+)?", word):
            flag, eq, value = word.partition("=")
            action = _option(current, flag)
            if eq:
                out.append(f"{flag}={_sample(action, value)}" if action and _is_placeholder(value) else word)
                owner, left = None, 0
                continue
            nargs = None if action is None else action.nargs
            owner, left = action, (0 if action is None or nargs == 0 else 1 if nargs in (None, "?")
                                   else 1 << 30 if nargs in ("*", "+") else nargs if isinstance(nargs, int) else 1)
            out.append(word)
        elif owner is not None and left > 0:
            out.append(_sample(owner, word) if _is_placeholder(word) else word)
            left -= 1
        else:
            subcommands = [a for a in current._actions if a.__class__.__name__ == "_SubParsersAction"]
            if subcommands and word in subcommands[0].choices:
                current = subcommands[0].choices[word]
            out.append(word)
    return out


def parse_error(argv: list[str]) -> str | None:
    """argparse's message when the CLI's parser refuses argv, else None (`--help` and `--version` pass)."""
    parser, err = _parser(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(fill_placeholders(parser, argv))
    except SystemExit as stop:
        if stop.code not in (0, None):
            lines = err.getvalue().strip().splitlines()
            return lines[-1] if lines else f"exit status {stop.code}"
    return None


def bad_shell_commands(path: Path) -> list[str]:
    """Every `egsde-rt ...` / `python -m egsde_rt ...` command of the page's fenced shell examples that the
    CLI's parser refuses, as 'page:line: command: argparse's message'."""
    found = []
    for token in _tokens(path):
        if token.type != "fence" or token.info.split()[:1] not in ([info] for info in SHELL_INFOS):
            continue
        for number, line in _shell_lines(token.content, token.info.split()[0], token.map[0] + 2):
            for command in shell_commands(line):
                try:
                    words = shlex.split(command)
                except ValueError as err:
                    if "egsde" in command:
                        found.append(f"{path.name}:{number}: {command.strip()}: cannot split it: {err}")
                    continue
                argv = egsde_argv(words)
                message = None if argv is None else parse_error(argv)
                if message:
                    found.append(f"{path.name}:{number}: {shlex.join(['egsde-rt', *argv])}: {message}")
    return found


PAGES_AND_README = [README, *PAGES]
_ids = lambda p: str(p.relative_to(ROOT))  # noqa: E731


@pytest.mark.parametrize("path", PAGES_AND_README, ids=_ids)
def test_paragraphs_are_short(path):
    found = long_paragraphs(path)
    assert not found, (f"{len(found)} paragraph(s) or list item(s) over {MAX_WORDS} words (aim at 80): split them, "
                       "or make a table or a list:\n" + "\n".join(found))


@pytest.mark.parametrize("path", PAGES_AND_README, ids=_ids)
def test_a_heading_every_screen(path):
    found = long_sections(path)
    assert not found, (f"{len(found)} stretch(es) over {MAX_LINES_PER_HEADING} lines without a heading: add "
                       "headings:\n" + "\n".join(found))


@pytest.mark.parametrize("path", PAGES_AND_README, ids=_ids)
def test_shell_examples_parse(path):
    found = bad_shell_commands(path)
    assert not found, (f"{len(found)} egsde-rt command(s) the CLI's parser refuses (a subcommand or flag that "
                       "does not exist, a bad value):\n" + "\n".join(found))


# --- each rule, failing on a bad sample ---

def _page(tmp_path, text: str, name: str = "sample.md") -> Path:
    path = tmp_path / name  # a new name for each page: pages are parsed once
    path.write_text(text)
    return path


def test_rule_long_paragraph_and_list_item_fail(tmp_path):
    long = " ".join(["word"] * 60) + " `two words` [a link text](x.md)"  # 60 + 2 + 3 rendered words
    page = _page(tmp_path, f"# T\n\n{long}\n{long}\n\n- {long}\n- short\n  - {long}\n\n| {long} |\n| --- |\n\n"
                           f"```\n{long}\n{long}\n```\n\nshort\n")
    assert long_paragraphs(page) == ["sample.md:3: paragraph of 130 words"]
    assert long_paragraphs(page, limit=64) == ["sample.md:3: paragraph of 130 words",
                                               "sample.md:6: list item of 65 words",
                                               "sample.md:8: list item of 65 words"]


def test_rule_long_section_fails(tmp_path):
    page = _page(tmp_path, "intro\n\n# A\n" + "text\n\n" * 31 + "## B\n```\n" + "code\n" * 70 + "```\n")
    assert long_sections(page) == ["sample.md:4: 62 lines without a heading (lines 4-65)",
                                   "sample.md:67: 72 lines without a heading (lines 67-138)"]
    assert long_sections(page, limit=72) == []


def test_rule_shell_commands_are_split_as_the_shell_does():
    assert shell_commands("a && b || c; d | e & f # g; h") == ["a ", " b ", " c", " d ", " e ", " f "]
    assert shell_commands('ENGINE=$(egsde-rt demo --engine-path) && egsde-rt info "$ENGINE" 2>&1') == [
        "ENGINE=$SUBST ", ' egsde-rt info "$ENGINE" 2>&1', "egsde-rt demo --engine-path"]
    assert egsde_argv(shlex.split("EGSDE_RT_THREADS=2 time python3 -m egsde_rt info x > out.txt 2>&1")) == ["info",
                                                                                                          "x"]
    assert egsde_argv(["curl", "-F", "image=@cat.png"]) is None
    assert _shell_lines("$ egsde-rt a \\\n  --b\noutput\n$ c", "console", 5) == [(5, "egsde-rt a    --b"), (8, "c")]


def test_rule_bad_shell_example_fails(tmp_path):
    page = _page(tmp_path, "# T\n\n```bash\negsde-rt translat x --output-dir y\n"
                           'egsde-rt translate "$ENGINE" in/ --output-dir out/ --backend "$BACKEND" --threads N \\\n'
                           "    --no-such-flag 3   # a comment\n"
                           "pip install . && curl -X POST localhost --bogus; python scripts/x.py --bogus\n"
                           "egsde-rt --version | python -m egsde_rt info $(python -m egsde_rt demo --bogus)\n```\n\n"
                           "```console\n$ egsde-rt info\nusage: egsde-rt info --bogus\n```\n\n"
                           "```python\negsde-rt --bogus\n```\n")
    found = bad_shell_commands(page)
    assert [line.split(": ")[0] for line in found] == ["sample.md:4", "sample.md:5", "sample.md:8", "sample.md:12"]
    assert "invalid choice: 'translat'" in found[0]
    assert "unrecognized arguments: --no-such-flag 3" in found[1]
    assert "egsde-rt demo --bogus" in found[2] and "unrecognized arguments: --bogus" in found[2]
    assert "the following arguments are required: engine_dir" in found[3].lower()
    good = _page(tmp_path, '# T\n\n```bash\negsde-rt translate "$ENGINE" in/ --output-dir out/ --backend "$BACKEND" '
                           "--threads N --seed 3 --ls 700\negsde-rt translate --help\n```\n", "good.md")
    assert bad_shell_commands(good) == []

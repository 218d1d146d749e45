"""The documentation names only what exists (issue 27): every relative link of README.md, doc/*.md and the
recipes' READMEs resolves (file and, where given, heading anchor), every ``make X`` named in code is a Makefile
target, and every ``python -m espnet_prune...`` module named imports and answers ``--help``."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "doc").glob("*.md"), *(ROOT / "egs2").glob("*/*/README.md"),
                *(ROOT / "egs2").glob("*/README.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`([^`]+)`")
MODULE = re.compile(r"python3? -m\s+(espnet_prune(?:\.[A-Za-z_][\w]*)*)")
LAUNCHED = re.compile(r"espnet_prune -m\s+((?:espnet2|espnet_prune)(?:\.\w+)+)")
MAKE = re.compile(r"(?:^|[\s;(&|])make ([a-z][\w-]*)")


def ids(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def relative_links(page: Path):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def code(page: Path) -> str:
    """The text of the page's fenced blocks and inline code spans, joined by newlines (lines keep their breaks, so a
    command wrapped inside a span is still found)."""
    text = page.read_text(encoding="utf-8")
    blocks = FENCE.findall(text)
    spans = CODE_SPAN.findall(FENCE.sub("", text))
    return "\n".join(blocks + spans)


def test_slug_matches_githubs_anchors():
    assert slug("The paper's claims (`--size paper`, `make paper`)") == "the-papers-claims---size-paper-make-paper"
    assert slug("The whole decode (`benchmark_decode`)") == "the-whole-decode-benchmark_decode"
    assert slug("Several GPUs (DDP)") == "several-gpus-ddp"


@pytest.mark.parametrize("page", PAGES, ids=ids)
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def test_the_link_check_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](https://example.org) [d](page.md#nope)\n"
                    "```\n[e](in_a_fence.md)\n```\n")
    assert relative_links(page) == ["missing.md", "#title", "page.md#nope"]
    assert anchors(page) == {"title"}


def test_make_targets_named_exist():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    named = {(ids(page), target) for page in PAGES for target in MAKE.findall(code(page))}
    assert {target for _, target in named} >= {"env", "test", "demo"}  # the pages do name some
    assert sorted(pair for pair in named if pair[1] not in targets) == []


def test_tools_run_through_the_launcher_exist():
    """``python -m espnet_prune -m espnet2.bin.X`` (and torchrun's ``-m espnet_prune -m ...``) names a module that
    exists (found without importing it)."""
    named = sorted({module for page in PAGES for module in LAUNCHED.findall(code(page))})
    assert "espnet2.bin.asr_train" in named
    assert [module for module in named if importlib.util.find_spec(module) is None] == []


def named_modules():
    return sorted({module for page in PAGES for module in MODULE.findall(code(page))})


HELP_PROBE = """
import contextlib, importlib, io, sys
failed = []
for name in sys.argv[1:]:
    target = name + ".__main__" if name == "espnet_prune" else name
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            importlib.import_module(target).main(["--help"])
        failed.append(f"{name}: --help returned instead of exiting")
    except SystemExit as exit:
        if exit.code not in (0, None) or "usage" not in out.getvalue().lower():
            failed.append(f"{name}: --help exited {exit.code!r}, printed {out.getvalue()[:200]!r}")
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_modules_named_import_and_answer_help():
    """One subprocess (ESPnet's tasks are imported once) calls every named module's ``main(["--help"])``."""
    modules = named_modules()
    assert {"espnet_prune", "espnet_prune.bin.export", "espnet_prune.bin.lm_prune"} <= set(modules)
    result = subprocess.run([sys.executable, "-c", HELP_PROBE, *modules], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]

"""The docs stay true to the repository: generated settings tables, links, a short README.

Fast and platform-free: no Ray, no database.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 150
# [text](target) and [text]: target, outside code; the target up to a space, ')' or '#'.
_INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>#]*)[^)]*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")


def _generator() -> ModuleType:
    path = REPO / "docs" / "gen_configuration.py"
    spec = importlib.util.spec_from_file_location("gen_configuration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _relative_links(page: Path) -> list[str]:
    """Link targets in prose (not in code) that name a file of the repository."""
    targets: list[str] = []
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in _INLINE_LINK.findall(_CODE_SPAN.sub("", line)):
            if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # no http:, mailto:
                targets.append(target)
    return targets


def test_configuration_page_matches_the_settings_classes() -> None:
    # Prepare
    generator = _generator()
    current = generator.PAGE.read_text(encoding="utf-8")

    # Execute
    fresh = generator.rendered_page(current)

    # Assert
    assert fresh == current, f"docs/configuration.md is stale: {generator.REGENERATE}"


def test_every_relative_link_of_readme_and_docs_names_a_file_that_exists() -> None:
    # Prepare
    pages = _pages()

    # Execute
    broken = [
        f"{page.relative_to(REPO)} -> {target}"
        for page in pages
        for target in _relative_links(page)
        if not (page.parent / target).exists()
    ]

    # Assert
    assert len(pages) > 5, "docs/*.md pages are missing"
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_readme_is_a_front_door_of_at_most_150_lines() -> None:
    # Prepare
    readme = (REPO / "README.md").read_text(encoding="utf-8")

    # Execute
    lines = len(readme.splitlines())

    # Assert
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into a docs/ page "
        "and link it"
    )


def test_readme_states_the_test_command_ci_runs() -> None:
    # Prepare
    readme = (REPO / "README.md").read_text(encoding="utf-8")

    # Execute
    states_it = "make test" in readme

    # Assert
    assert states_it, "README.md must keep `make test`, the command CI runs"

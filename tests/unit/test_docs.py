"""The documentation stays true to the code: the reference tables are generated and fresh,
the README stays a short front page with the two commands, and the tutorial shows files
the tests run. (`mkdocs build --strict` in scripts/test catches broken links and
includes.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def test_the_generated_reference_tables_are_fresh() -> None:
    """A renamed setting, CRD field, metric, flag or exit code changes what
    scripts/docs-reference.py writes; the committed tables must be what it writes now."""
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "docs-reference.py"),
                          "--check"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_every_generated_table_is_included_in_a_reference_page() -> None:
    included = "".join(page.read_text() for page in (DOCS / "reference").glob("*.md"))
    for table in (DOCS / "reference" / "generated").glob("*.md"):
        assert f'--8<-- "docs/reference/generated/{table.name}"' in included, table.name


def test_the_readme_is_a_short_front_page_with_the_two_commands_first() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_screen = "\n".join(readme.splitlines()[:20])
    assert re.search(r"^scripts/quickstart\b", first_screen, re.MULTILINE), first_screen
    assert re.search(r"^scripts/test\b", first_screen, re.MULTILINE), first_screen
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec scripts/test\n" in ci  # CI runs the README's test command


def test_every_page_is_in_the_navigation() -> None:
    config = (REPO / "mkdocs.yml").read_text()
    nav = set(re.findall(r"([\w./-]+\.md)\s*$", config, re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")
             if "generated" not in p.parts}
    assert pages == nav


def test_the_tutorial_shows_files_the_tests_use() -> None:
    """Every file the tutorial includes is one a test runs or applies."""
    tests = "".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    included = [path for page in (DOCS / "tutorial").glob("*.md")
                for path in re.findall(r'--8<-- "([^"]+)"', page.read_text())]
    assert len(included) >= 5
    for path in included:
        assert (REPO / path).is_file(), path
        assert Path(path).stem in tests or Path(path).name in tests, \
            f"{path} is shown in the tutorial but no test uses it"



def test_the_package_and_the_chart_link_to_the_docs_site() -> None:
    """PyPI's Documentation link, Artifact Hub's and the chart README's all lead to the
    site mkdocs.yml publishes (its site_url), not to the old long README."""
    site = re.search(r"^site_url: (\S+)", (REPO / "mkdocs.yml").read_text(), re.M)
    assert site is not None
    url = site.group(1)
    assert f'Documentation = "{url}"' in (REPO / "pyproject.toml").read_text()
    chart = REPO / "charts" / "chunkwise"
    assert f"- name: Documentation\n      url: {url}\n" in (chart / "Chart.yaml").read_text()
    assert url in (chart / "README.md").read_text()

"""The documentation stays true to the code: the reference tables are generated and fresh,
the README stays a short front page with the two commands, and the tutorial shows files
the tests run. (`mkdocs build --strict` in scripts/test catches broken links and
includes.)"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

import chunkwise

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


def _path_of(node: ast.expr, constants: dict[str, str | None]) -> str | None:
    """The repository path a Path expression spells: ``REPO / "scripts" / "quickstart"``,
    or a constant that is one, then more parts (``EXAMPLES / "customer-status.yaml"``)."""
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant) and isinstance(node.right.value, str)):
        base = _path_of(node.left, constants)
        return None if base is None else f"{base}/{node.right.value}".lstrip("/")
    return None


def _module_constants(tree: ast.Module, known: dict[str, str | None]) -> dict[str, str | None]:
    """``known`` (REPO, and other modules' path constants it may import), shadowed by this
    module's own top-level assignments (REPO stays the root: each module computes it)."""
    own = dict(known)
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name) and target.id != "REPO":
                    own[target.id] = _path_of(statement.value, own)
    return own


def test_the_tutorial_shows_files_the_tests_use() -> None:
    """Every file the tutorial includes is one a test runs or applies, named by its full
    path in a string or a Path expression (this file, which names them all, does not
    count). A Django migration counts when one test module names its project's directory
    and the migration's full name."""
    modules = [ast.parse(path.read_text()) for path in (REPO / "tests").rglob("*.py")
               if path != Path(__file__).resolve()]
    known: dict[str, str | None] = {"REPO": ""}
    for _ in range(2):  # a constant built from an imported one: SHOP = REPO / "examples" / ...
        for tree in modules:
            for name, value in _module_constants(tree, known).items():
                if value is not None:
                    known.setdefault(name, value)
    named: list[set[str]] = []
    for tree in modules:
        constants = _module_constants(tree, known)
        named.append({text for node in ast.walk(tree) for text in (
            [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str)
            else [_path_of(node, constants) or ""] if isinstance(node, ast.BinOp) else [])
            if text})
    included = [path for page in (DOCS / "tutorial").glob("*.md")
                for path in re.findall(r'--8<-- "([^"]+)"', page.read_text())]
    assert len(included) >= 5
    for path in included:
        assert (REPO / path).is_file(), path
        migration = re.fullmatch(r"(.+)/\w+/migrations/(\w+)\.py", path)

        def names_it(texts: set[str], path: str = path,
                     migration: re.Match[str] | None = migration) -> bool:
            if any(path in text for text in texts):
                return True
            return migration is not None and \
                any(t == migration[1] or t.startswith(migration[1] + "/") for t in texts) and \
                any(migration[2] in t for t in texts)

        assert any(names_it(texts) for texts in named), \
            f"{path} is shown in the tutorial but no test names it"


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


def _markdown_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md")) + [REPO / "README.md", REPO / "CONTRIBUTING.md"]


def test_no_page_has_an_empty_fenced_block() -> None:
    """A doubled fence (``` then ``` again) renders as an empty code block, and the code
    meant for it as a paragraph."""
    for page in _markdown_pages():
        opened: tuple[int, str] | None = None  # the opening fence's line and its marker
        body: list[str] = []
        for number, line in enumerate(page.read_text().splitlines(), 1):
            fence = re.match(r"\s*(`{3,}|~{3,})(.*)$", line)
            if opened is None:
                if fence:
                    opened, body = (number, fence[1]), []
            elif fence and fence[1].startswith(opened[1]) and not fence[2].strip():
                assert any(text.strip() for text in body), \
                    f"{page.relative_to(REPO)}:{opened[0]}: an empty fenced block"
                opened = None
            else:
                body.append(line)
        assert opened is None, f"{page.relative_to(REPO)}:{opened[0]}: a fence never closed"


def test_the_counts_of_a_tests_cases_the_docs_give_are_that_tests() -> None:
    """"40 cases in `tests/e2e/test_validation.py`": the length of that module's CASES."""
    found = 0
    for page in _markdown_pages():
        for count, path in re.findall(r"(\d+) cases in\s+`(tests/[\w/]+\.py)`",
                                      page.read_text()):
            tree = ast.parse((REPO / path).read_text())
            (cases,) = [s.value for s in tree.body if isinstance(s, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "CASES" for t in s.targets)]
            assert isinstance(cases, ast.List), path
            assert int(count) == len(cases.elts), \
                f"{page.relative_to(REPO)} says {count} cases in {path}; CASES has " \
                f"{len(cases.elts)}"
            found += 1
    assert found >= 2


def test_the_tests_the_docs_name_exist() -> None:
    """A test named in the docs (`test_kill_9_at_50_random_moments...`, whose name says
    what it does) is a test module or function of the suite: renamed, the doc goes stale."""
    names = {path.stem for path in (REPO / "tests").rglob("test_*.py")}
    for path in (REPO / "tests").rglob("*.py"):
        names |= {node.name for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    for page in _markdown_pages():
        for name, cut in re.findall(r"\b(test_\w+?)(\.\.\.)?(?![\w.])", page.read_text()):
            assert (any(n.startswith(name) for n in names) if cut else name in names), \
                f"{page.relative_to(REPO)} names {name}{cut}, which no test is"


def test_the_readmes_links_work_on_pypi() -> None:
    """README.md is also PyPI's long description (pyproject.toml's readme), where a
    relative link 404s: every link and image is absolute, and one into this repository
    names a file that exists."""
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert len(targets) >= 10
    ours = re.compile(r"https://(?:github\.com/chunkwise/chunkwise/(?:blob|tree)/main|"
                      r"raw\.githubusercontent\.com/chunkwise/chunkwise/main)/([^#]+)")
    for target in targets:
        assert target.startswith("https://"), f"README.md links to {target}: relative"
        found = ours.match(target)
        if found:
            assert (REPO / found[1]).exists(), f"README.md links to {target}: no such path"


def test_a_table_included_by_line_number_is_still_there() -> None:
    """install-chart.md includes the chart README's values table (scripts/chart-readme.py
    writes it) from its header line to the end: a line more above it in that README would
    cut the header off or pull prose in."""
    found = 0
    for page in _markdown_pages():
        for path, first in re.findall(r'--8<-- "([^":]+):(\d+):"', page.read_text()):
            lines = (REPO / path).read_text().splitlines()
            table = lines[int(first) - 1:]
            where = f"{page.relative_to(REPO)} includes {path} from line {first}"
            assert table[0].startswith("| ") and not lines[int(first) - 2].strip(), \
                f"{where}, which does not start a table"
            assert len(table) > 2 and all(line.startswith("|") for line in table), \
                f"{where}, which is not a table to the end of the file"
            found += 1
    assert found >= 1


def test_the_install_lines_name_this_version_and_this_repository() -> None:
    """Beside `pip install 'chunkwise[postgres]'`, a page gives the route that works before
    the release is on PyPI: its git tag (a PEP 508 URL requirement pip accepts, into the
    repository pyproject.toml calls Source) and its wheel where scripts/release writes it.
    Each names chunkwise.__version__, as the chart's --version does: a release that bumps
    the version and not these lines fails here."""
    version = chunkwise.__version__
    source = re.search(r'^Source = "(\S+)"$', (REPO / "pyproject.toml").read_text(), re.M)
    assert source is not None
    assert "DIST=dist/$VERSION\n" in (REPO / "scripts" / "release").read_text()
    wheel = f"chunkwise-{version}-py3-none-any.whl"  # pure Python: no platform tag
    given = 0
    for page in _markdown_pages():
        text, where = page.read_text(), page.relative_to(REPO)
        for line in re.findall(r"pip install '(chunkwise[^']* @ [^']+)'", text):
            requirement = Requirement(line)
            assert requirement.name == "chunkwise" and requirement.url is not None, line
            assert requirement.url == f"git+{source[1]}@v{version}", f"{where}: {line}"
            given += 1
        for named in re.findall(r"chunkwise-(\d[^-\s]*)-py3-none-any\.whl", text):
            assert named == version, f"{where} names the wheel of {named}, not {wheel}"
        for named in re.findall(r"\bdist/(\d[^/\s`]*)/", text):
            assert named == version, f"{where} names dist/{named}/, not dist/{version}/"
        for named in re.findall(r"oci://\S+/charts/chunkwise --version (\d\S*)", text):
            assert named == version, f"{where} installs chart {named}, not {version}"
        if "pip install 'chunkwise[postgres]'" in text:
            assert f"@v{version}'" in text and wheel in text, \
                f"{where} gives no install route without an index (git tag, wheel)"
    assert given >= 3


def _crd_objects(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every object of the DataMigration that declares its fields, an
    array's items as ``path[]``, parents first."""
    if schema.get("properties"):
        yield path, schema
        for name, child in schema["properties"].items():
            yield from _crd_objects(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _crd_objects(schema["items"], f"{path}[]")


def _datamigration_sections() -> dict[str, str]:
    """The generated fields reference, by the path each part describes: a heading's text
    up to its first field (``spec.batch``), a field's item (``spec.batch.size``)."""
    page = (DOCS / "reference" / "generated" / "datamigration.md").read_text()
    sections: dict[str, str] = {}
    block = path = ""
    for line in page.split("\n## `kubectl get dmig` columns")[0].splitlines():
        heading = re.match(r"#{2,3} `([^`]+)`", line)
        item = re.match(r"- \*\*`([^`]+)`\*\*", line)
        if heading:
            block = path = heading[1]
        elif item:
            path = f"{block}.{item[1]}"
        if path:
            sections[path] = sections.get(path, "") + line + "\n"
    return sections


def test_the_datamigration_reference_has_a_block_per_object() -> None:
    """As the Kubernetes API reference: each object of the DataMigration (spec, spec.batch,
    status.verification, an array's items) under its own heading, its fields beneath it
    as a list, so the page reads at a normal width. A five-column table was wider than
    the page (field names broke mid-word, descriptions scrolled off)."""
    crd = yaml.safe_load((REPO / "crds" / "datamigration.yaml").read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    sections = _datamigration_sections()
    page = (DOCS / "reference" / "generated" / "datamigration.md").read_text()
    fields_part = page.split("\n## `kubectl get dmig` columns")[0]
    assert not [line for line in fields_part.splitlines() if line.startswith("|")], \
        "the DataMigration's fields are laid out as a table"
    objects = [o for part in ("spec", "status")
               for o in _crd_objects(root["properties"][part], part)]
    assert len(objects) >= 15
    for path, schema in objects:
        assert path in sections, f"{path} has no heading of its own"
        for name in schema["properties"]:
            assert f"{path}.{name}" in sections, f"{path}.{name} is not listed under {path}"


def test_a_cel_rule_that_names_its_field_is_listed_on_that_field() -> None:
    """A rule on an ancestor with a fieldPath (spec.image cannot change while Running,
    template.spec's env belongs on the worker container) is told where the field is."""
    crd = yaml.safe_load((REPO / "crds" / "datamigration.yaml").read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    sections = _datamigration_sections()

    def rules(schema: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
        for rule in schema.get("x-kubernetes-validations") or []:
            if "fieldPath" in rule:
                yield (path + rule["fieldPath"]).lstrip("."), " ".join(rule["message"].split())
        for name, child in (schema.get("properties") or {}).items():
            yield from rules(child, f"{path}.{name}")
        if isinstance(schema.get("items"), dict):
            yield from rules(schema["items"], f"{path}[]")

    found = list(rules(root, ""))
    assert len(found) >= 10
    for path, message in found:
        assert message in " ".join(sections.get(path, "").split()), \
            f"{path}: its rule '{message}' is not listed on it"

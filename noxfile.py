"""The test matrix: the unit, engine and Django tests on each Django release users run,
against the throwaway PostgreSQL server the fixtures start.

    .venv/bin/nox                                  # both legs
    .venv/bin/nox -s django-6.1 -- -k retry -x     # one leg; arguments after -- go to pytest

- django-5.2: Django 5.2 LTS on Python 3.11, in `.venv` (scripts/setup makes it; scripts/test
  runs the whole suite there: this leg's tests, then operator, e2e, chart, image, bench);
- django-6.1: Django 6.1 on CPython 3.13, built from Debian's source package by
  scripts/build-python.sh (scripts/setup builds it once and caches it), in `.nox/django-6-1`,
  kept between runs and reinstalled only when pyproject.toml or this file changes.

Both legs run pytest with the same options (pyproject.toml's), so chunkwise's own
DeprecationWarning and PendingDeprecationWarning (RemovedInDjangoXXWarning among them) fail
a test on either.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import nox

REPO = Path(__file__).resolve().parent
# what each leg runs: tests/unit holds the engine's tests too (tests/unit/test_engine_*.py,
# test_pacing_budget_errors.py, ...); operator, e2e, chart, image and bench tests run once,
# on the main leg, from scripts/test
LEG_TESTS = ("tests/unit", "tests/django")
#: the MariaDB tests run in full on the main leg; on the others only those marked
#: `every_leg` (what Django's own MySQL backend does for chunkwise), to keep CI's time
OTHER_LEGS = ("-m", "not mariadb or every_leg")

nox.options.sessions = ["django-5.2", "django-6.1"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"
# no registry serves interpreters here: a missing one is an error, never a download or a skip
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True


def python313() -> str:
    """The interpreter scripts/build-python.sh builds (its path, built or not yet)."""
    return subprocess.run([str(REPO / "scripts" / "build-python.sh"), "--path"], check=True,
                          capture_output=True, text=True).stdout.strip()


def leg_arguments(posargs: list[str]) -> list[str] | None:
    """pytest's arguments for a leg: its test folders and posargs, or, when posargs name
    paths, those of them within the leg's folders; None when every path named lies outside
    (scripts/test passes the same arguments to both legs, and an e2e test is not this leg's)."""
    def is_path(arg: str) -> bool:
        return not arg.startswith("-") and (REPO / arg.split("::")[0]).exists()

    def in_leg(arg: str) -> bool:
        where = (REPO / arg.split("::")[0]).resolve()
        return any(where.is_relative_to(REPO / folder) for folder in LEG_TESTS)

    paths = [arg for arg in posargs if is_path(arg)]
    if not paths:
        return [*LEG_TESTS, *posargs]
    kept = [arg for arg in posargs if not is_path(arg) or in_leg(arg)]
    return kept if any(is_path(arg) for arg in kept) else None


def run_leg(session: nox.Session, python: str, django: str, *options: str) -> None:
    arguments = leg_arguments(list(session.posargs))
    if arguments is None:
        session.skip(f"no test named is in {' or '.join(LEG_TESTS)}")
    found = session.run(python, "-c", "import django, sys; "
                        "print(django.get_version(), '%d.%d' % sys.version_info[:2])",
                        silent=True, external=True)
    django_version, python_version = str(found).split()
    if not django_version.startswith(django + ".") and django_version != django:
        session.error(f"this leg is Django {django}, the environment has {django_version}")
    session.log(f"Django {django_version} on Python {python_version}")
    session.run(python, "-m", "pytest", *options, *arguments, external=True)


@nox.session(name="django-5.2", venv_backend="none")
def django_52(session: nox.Session) -> None:
    """Django 5.2 LTS on Python 3.11: the unit, engine and Django tests in .venv."""
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        session.error("no .venv: run scripts/setup")
    run_leg(session, str(python), "5.2")


@nox.session(name="django-6.1", python=python313())
def django_61(session: nox.Session) -> None:
    """Django 6.1 on Python 3.13: the unit, engine and Django tests."""
    stamp = Path(session.virtualenv.location) / ".chunkwise-installed"
    sources = [REPO / "pyproject.toml", Path(__file__)]
    if not stamp.exists() or any(s.stat().st_mtime > stamp.stat().st_mtime for s in sources):
        # the same install as .venv's (scripts/setup), with Django 6.1 instead of 5.2
        session.install("-e", ".[operator]", "--group", "test", "Django>=6.1,<6.2")
        stamp.touch()
    run_leg(session, str(Path(session.bin) / "python"), "6.1", *OTHER_LEGS)

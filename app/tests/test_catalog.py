"""The Simplified Chinese catalog: complete for the code as it is, and compiled as committed.

The compiled django.mo is committed (see `make messages`), so these tests are
what keeps it from falling behind the .po, and the .po behind the code.
They need GNU gettext (the Makefile's HOST_PACKAGES).
"""

import gettext
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chatstack"
CATALOG = Path("locale/zh_Hans/LC_MESSAGES")
MSGATTRIB = shutil.which("msgattrib") or "/usr/bin/msgattrib"
MSGFMT = shutil.which("msgfmt") or "/usr/bin/msgfmt"


def catalog_of(mo: Path) -> dict:
    with mo.open("rb") as file:
        return gettext.GNUTranslations(file)._catalog


def msgids(po: Path, *filters: str) -> list[str]:
    """The msgids of the .po's entries that msgattrib's `filters` select (not the header's)."""
    result = subprocess.run(
        [MSGATTRIB, "--no-obsolete", "--no-wrap", *filters, str(po)],
        check=True,
        capture_output=True,
        text=True,
    )
    return [
        line
        for line in result.stdout.splitlines()
        if line.startswith('msgid "') and line != 'msgid ""'
    ]


def test_the_committed_mo_is_the_po_compiled(tmp_path):
    """A translation edited in the .po but not recompiled would never reach a reader."""
    compiled = tmp_path / "django.mo"
    # --check also refuses a translation whose %(name)d placeholders differ from the msgid's.
    subprocess.run(
        [MSGFMT, "--check", "-o", str(compiled), str(PACKAGE / CATALOG / "django.po")],
        check=True,
    )
    assert catalog_of(PACKAGE / CATALOG / "django.mo") == catalog_of(compiled), (
        "django.mo is out of date: run `make messages` and commit it"
    )


def test_every_string_the_code_uses_is_translated(tmp_path):
    """A string added or changed in code or templates without a translation shows up in English."""
    copy = tmp_path / "chatstack"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    # Without settings, makemessages reads only the package's own locale directory.
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}
    subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "--locale", "zh_Hans"],
        cwd=copy,
        env=env,
        check=True,
        capture_output=True,
    )
    merged = copy / CATALOG / "django.po"
    untranslated = msgids(merged, "--untranslated") + msgids(merged, "--only-fuzzy")
    assert untranslated == [], "run `make messages` and translate these in django.po"

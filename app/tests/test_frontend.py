"""Static checks of the browser side: CSP-compatible templates and valid JavaScript."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHAT_DIR = Path(__file__).resolve().parent.parent / "chatstack" / "chat"
TEMPLATES = sorted((CHAT_DIR / "templates").rglob("*.html"))
SCRIPTS = sorted((CHAT_DIR / "static").rglob("*.js"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_templates_work_under_a_strict_csp(template):
    html = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script>"
    assert not re.search(r"\sstyle=|<style", html), "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def test_scripts_never_parse_text_as_html():
    for script in SCRIPTS:
        assert not re.search(
            r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script.read_text()
        )


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_scripts_are_valid_javascript(script):
    subprocess.run([NODE, "--check", str(script)], check=True)

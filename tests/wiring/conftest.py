"""Fixtures the wiring tests share."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def readme_examples() -> dict[str, list]:
    """Each role's README example play (under "## Example Playbook"), parsed; None if missing."""
    examples = {}
    for readme in sorted(ROOT.glob("roles/*/README.md")):
        found = re.search(
            r"^## Example Playbook\n+```yaml\n(.*?)^```", readme.read_text(), flags=re.M | re.S
        )
        examples[readme.parent.name] = yaml.safe_load(found.group(1)) if found else None
    return examples

"""Each role's README says truly what else it needs, and shows a play that works.

meta/main.yml lists no dependencies (a role listed there runs again wherever it
is named), so the contract lives in the lines of meta/argument_specs.yml's
description that `make docs` lifts into the README's "Requires" section. Someone
using one role alone learns there which roles must run in the same play, which
of their variables it reads, and which of their handlers it notifies.
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(path.parent.parent.name for path in ROOT.glob("roles/*/meta/main.yml"))
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}."
# The description lines docs/aar-doc/README.md.j2 puts under "Requires".
CONTRACT = ("Requires", "Includes", "Notifies", "Its handler", "Names")


def contract(role: str) -> str:
    """The role's contract lines, joined."""
    main = yaml.safe_load((ROOT / "roles" / role / "meta/argument_specs.yml").read_text())
    lines = main["argument_specs"]["main"].get("description", [])
    return " ".join(line for line in lines if line.startswith(CONTRACT))


def role_files(role: str, *dirs: str) -> list[Path]:
    return sorted(
        path for d in dirs for path in (ROOT / "roles" / role / d).rglob("*") if path.is_file()
    )


def tasks(role: str) -> list[dict]:
    """Every task of the role's task files, blocks unfolded."""
    found, todo = [], []
    for path in role_files(role, "tasks"):
        todo += yaml.safe_load(path.read_text()) or []
    while todo:
        task = todo.pop()
        found.append(task)
        todo += task.get("block", []) + task.get("rescue", []) + task.get("always", [])
    return found


def code(role: str) -> str:
    """The role's tasks, templates, defaults and handlers, without comments."""
    text = "\n".join(
        path.read_text() for path in role_files(role, "tasks", "templates", "defaults", "handlers")
    )
    return re.sub(r"(?s:\{#.*?#\})|^\s*#.*$", "", text, flags=re.M)


def defaults(role: str) -> set[str]:
    path = ROOT / "roles" / role / "defaults/main.yml"
    return set(yaml.safe_load(path.read_text()) or {}) if path.exists() else set()


def included_roles(role: str) -> set[str]:
    names = set()
    for task in tasks(role):
        for action in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
            if action in task:
                names.add(task[action]["name"].removeprefix(FQCN))
    return names - {role}


@pytest.mark.parametrize("role", ROLES)
def test_the_roles_it_includes_are_named(role):
    """A role run alone that pulls in another one surprises whoever copied only it."""
    said = contract(role)
    for other in included_roles(role):
        assert f"C({other})" in said and "Includes" in said, f"{role} includes {other} unsaid"


@pytest.mark.parametrize("role", ROLES)
def test_the_other_roles_variables_it_reads_are_named(role):
    """A role that silently reads another's settings breaks when used without that role."""
    words = set(re.findall(r"\b[a-z][a-z0-9_]+\b", code(role)))
    said = contract(role)
    for other in set(ROLES) - {role} - included_roles(role):
        for name in sorted(words & defaults(other)):
            assert f"I({name})" in said, f"{role} reads {other}'s {name} unsaid"


@pytest.mark.parametrize("role", ROLES)
def test_the_handlers_it_notifies_elsewhere_are_named(role):
    """A notified handler that no role of the play defines stops the run when a task changes."""
    handlers = (
        yaml.safe_load((ROOT / "roles" / role / "handlers/main.yml").read_text())
        if (ROOT / "roles" / role / "handlers/main.yml").exists()
        else []
    )
    own = {h["name"] for h in handlers or []} | {h.get("listen") for h in handlers or []}
    said = contract(role)
    for task in tasks(role):
        notified = task.get("notify", [])
        for name in [notified] if isinstance(notified, str) else notified:
            if "{{" not in name and name not in own:
                assert f"Notifies C({name})" in said, f"{role} notifies {name!r} unsaid"


def roles_named(plays: list) -> list[str]:
    names = []
    for play in plays:
        for entry in play.get("roles", []):
            names.append(entry if isinstance(entry, str) else entry.get("role", entry.get("name")))
        for task in play.get("pre_tasks", []) + play.get("tasks", []) + play.get("post_tasks", []):
            for action in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                if action in task:
                    names.append(task[action]["name"])
    return names


@pytest.mark.parametrize("role", ROLES)
def test_the_readmes_example_is_a_play_of_this_collections_roles(role, readme_examples):
    """Someone pasting a role's example into a playbook gets a play, not a YAML error."""
    plays = readme_examples[role]
    assert isinstance(plays, list) and all("hosts" in play for play in plays), plays
    named = roles_named(plays)
    assert f"{FQCN}{role}" in named, f"{role}'s example does not use it"
    for name in named:
        assert name.startswith(FQCN) and name.removeprefix(FQCN) in ROLES, f"no role {name}"

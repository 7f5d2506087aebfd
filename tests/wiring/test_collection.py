"""The roles work from the built collection, in a project that is not this repository.

Another project installs chatstack.chatstack from the tarball `ansible-galaxy
collection build` makes and names the roles by FQCN. This repository's roles
path is hidden, so a role the collection leaves out, or one that only finds
its files through this checkout, fails here instead of in that project's run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
ROLES = sorted(path.parent.parent.name for path in ROOT.glob("roles/*/meta/main.yml"))


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A project directory with the collection installed and no sight of this repository."""
    project = tmp_path_factory.mktemp("elsewhere")
    (project / "roles").mkdir()
    # No roles_path, no callbacks: only what a fresh project would have.
    (project / "ansible.cfg").write_text("[defaults]\n")
    build = ansible(project, "ansible-galaxy", "collection", "build", "--output-path", ".", ROOT)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = project / f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    print(f"{tarball.name}: {tarball.stat().st_size} bytes")
    # Offline: the collections it depends on are the controller's, no Galaxy server is asked.
    install = ansible(
        project,
        "ansible-galaxy",
        "collection",
        "install",
        "--offline",
        "--no-deps",
        "-p",
        "collections",
        tarball,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return project


def ansible(project: Path, tool: str, *args) -> subprocess.CompletedProcess:
    """Runs an Ansible tool in `project`, which sees only its own roles and collections."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(project / "roles"),
        "ANSIBLE_COLLECTIONS_PATH": str(project / "collections"),
    }
    return subprocess.run(
        [BIN / tool, *args], cwd=project, env=env, capture_output=True, text=True, check=False
    )


def play(project: Path, name: str, plays: list[dict], *args: str) -> subprocess.CompletedProcess:
    """ansible-playbook over `plays` on localhost only, connected locally."""
    (project / name).write_text(yaml.safe_dump(plays))
    return ansible(project, "ansible-playbook", "-i", "localhost,", "-c", "local", name, *args)


def test_every_role_is_reachable_by_its_fqcn(elsewhere):
    """A project using chatstack.chatstack.<role> would fail to load a role the collection lacks."""
    roles = [f"{FQCN}.{role}" for role in ROLES]
    result = play(
        elsewhere,
        "fqcn.yml",
        [{"name": "All roles", "hosts": "all", "roles": roles}],
        "--syntax-check",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_this_repositorys_roles_path_is_not_seen(elsewhere):
    """Were the short names found, the FQCN test above would not prove the collection works."""
    result = play(
        elsewhere,
        "short.yml",
        [{"name": "Short", "hosts": "all", "roles": ["app"]}],
        "--syntax-check",
    )
    assert result.returncode != 0
    assert "the role 'app' was not found" in result.stdout + result.stderr


def test_every_roles_readme_example_loads_from_the_collection(elsewhere, readme_examples):
    """A role README's example that Ansible refuses would stop whoever starts from it."""
    plays = [each for example in readme_examples.values() for each in example or []]
    assert len(plays) >= len(ROLES), "a role README lacks its example play"
    result = play(elsewhere, "examples.yml", plays, "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr


def source_check(project: Path, **app_vars) -> subprocess.CompletedProcess:
    """The app role's check that it can build the app from source on the controller."""
    task = {
        "name": "Check the app's source",
        "ansible.builtin.include_role": {"name": f"{FQCN}.app", "tasks_from": "source"},
    }
    plays = [
        {"name": "Source", "hosts": "all", "gather_facts": False, "vars": app_vars, "tasks": [task]}
    ]
    return play(project, "source.yml", plays)


def test_the_app_role_builds_from_the_source_inside_the_collection(elsewhere):
    """Without app/ in the collection, every deploy from it would stop: no source to build."""
    result = source_check(elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_app_role_names_a_missing_source_before_any_change(elsewhere):
    """An operator pointing app_source_dir nowhere is told which setting, not a pip traceback."""
    result = source_check(elsewhere, app_source_dir=str(elsewhere / "nowhere"))
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert f"app_source_dir ({elsewhere / 'nowhere'}, which needs pyproject.toml)" in said, said


def test_the_readmes_site_playbook_loads_from_the_collection(elsewhere):
    """The README's example for other projects must at least load, or its first reader is stuck."""
    section = (ROOT / "README.md").read_text().split("## Using the roles from another project")[1]
    blocks = [yaml.safe_load(block.split("```")[0]) for block in section.split("```yaml\n")[1:]]
    plays = next(block for block in blocks if isinstance(block, list))
    result = play(elsewhere, "site.yml", plays, "--syntax-check")
    assert result.returncode == 0, result.stdout + result.stderr

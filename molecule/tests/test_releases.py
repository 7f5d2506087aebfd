"""deploy.yml and rollback.yml against the converged host, with real app changes.

A release is built from a copy of app/ with one visible change, so every step
can be seen from outside: which code answers /accounts/login/.
"""

import json

import pytest
from playbook import ROOT, app_copy, mark_login_page, recap, run_playbook

# Release mechanics do not depend on the Debian release.
pytestmark = pytest.mark.usefixtures("debian12_container")


def deploy(container, tmp_path, source, *args):
    extra = {
        "app_source_dir": str(source),
        "app_lock_file": str(ROOT / "app/requirements.lock"),
        # Its own wheelhouse, so this test never rebuilds the shared one.
        "app_wheelhouse_dir": str(tmp_path / f"wheelhouse-{source.name}"),
    }
    run_dir = tmp_path / f"run-deploy-{source.name}{''.join(args)}"
    run_dir.mkdir()
    return run_playbook(container, run_dir, "-e", json.dumps(extra), *args, playbook="deploy.yml")[
        0
    ]


def rollback(container, tmp_path):
    run_dir = tmp_path / "run-rollback"
    run_dir.mkdir()
    return run_playbook(container, run_dir, playbook="rollback.yml")[0]


def current_release(host):
    return host.check_output("readlink /srv/chatstack/current")


def test_deploy_rollback_and_redeploy(host, container, site, tmp_path):
    original = current_release(host)
    marked_copy = app_copy(tmp_path, "marked", mark_login_page("release-under-test"))
    # What an operator runs first: check mode shows the switch and changes nothing.
    result = deploy(container, tmp_path, marked_copy, "--check")
    assert result.returncode == 0, result.stdout
    assert recap(result.stdout, container)["changed"] > 0, result.stdout
    assert current_release(host) == original
    result = deploy(container, tmp_path, marked_copy)
    assert result.returncode == 0, result.stdout
    marked = current_release(host)
    assert marked != original
    assert host.check_output("readlink /srv/chatstack/previous") == original
    assert "release-under-test" in site.session().request("/accounts/login/")[2]

    result = rollback(container, tmp_path)
    assert result.returncode == 0, result.stdout
    assert current_release(host) == original
    assert "release-under-test" not in site.session().request("/accounts/login/")[2]

    # The code that is live again deploys as no change at all.
    result = deploy(container, tmp_path, app_copy(tmp_path, "unchanged", lambda source: None))
    assert result.returncode == 0, result.stdout
    assert recap(result.stdout, container)["changed"] == 0, result.stdout
    assert current_release(host) == original


def test_release_failing_its_health_check_is_not_switched_to(host, container, site, tmp_path):
    def break_asgi(source):
        asgi = source / "chatstack/asgi.py"
        asgi.write_text(asgi.read_text() + '\nraise RuntimeError("broken release")\n')

    original = current_release(host)
    result = deploy(container, tmp_path, app_copy(tmp_path, "broken", break_asgi))
    assert result.returncode != 0
    assert "healthz" in result.stdout
    assert current_release(host) == original
    status, _, body = site.session().request("/healthz")
    assert status == 200, body


def test_release_files_are_roots_and_read_only_to_the_app(host):
    """If the app's user could rewrite its release, a hole in the app would become
    JavaScript served to every browser."""
    release = current_release(host)
    not_roots = host.check_output(f"find {release}/ ! -user root -printf '%u %p\\n' | head -5")
    assert not_roots == "", not_roots
    writable = host.check_output(
        f"find {release}/ -perm /022 ! -type l -printf '%m %p\\n' | head -5"
    )
    assert writable == "", writable
    assert host.file(f"{release}/static/staticfiles.json").user == "root"

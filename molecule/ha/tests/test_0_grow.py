"""Today's site of one host per group grows into pairs, as the README tells an
operator: add hosts to lb, app, redis and db, give the Redis hosts one shard,
rerun site.yml. What the site stored before is kept, and each pair works.

First of the scenario (pytest takes modules by name): the tests after it run
against the grown site, and rerun site.yml with its inventory.
"""

import shutil
import uuid

import testinfra
import yaml
from chatclient import manage_shell, stored_messages
from conftest import (
    APP,
    CONVERGED,
    DB_HOSTS,
    GROWTH,
    INVENTORY,
    REDIS_HOSTS,
    SHARD,
    SITE_HOSTS,
    following,
    holder,
    master_of,
    primary_of,
    psql,
    rerun_site,
    wait_replicating,
)
from waiting import wait_until

MESSAGES = 20


def store_messages(host, room: str) -> None:
    """A new account's messages in `room`, stored with the operator's command."""
    name = f"g{uuid.uuid4().hex[:12]}"
    manage_shell(
        host,
        "import json; from django.contrib.auth import get_user_model; "
        "from chatstack.chat.models import Message; "
        f"author = get_user_model().objects.create_user({name!r}); "
        f"[Message.objects.create(room={room!r}, author=author, text=f'before {{n}}')"
        f" for n in range({MESSAGES})]; print(json.dumps(None))",
    )


def write_grown_inventory() -> None:
    """Molecule's inventory with GROWTH's hosts in their groups and both Redis hosts in
    one shard: what an operator's hosts.yml says after the edit."""
    shutil.rmtree(INVENTORY, ignore_errors=True)
    INVENTORY.mkdir()
    for linked in ("group_vars", "host_vars"):
        (INVENTORY / linked).symlink_to((CONVERGED / linked).resolve())
    inventory = yaml.safe_load((CONVERGED / "ansible_inventory.yml").read_text())
    for group, hosts in GROWTH.items():
        members = inventory[group]["hosts"]
        members.update({host: None for host in hosts if host not in members})
    for host in REDIS_HOSTS:
        inventory["all"]["hosts"][host]["redis_shard"] = SHARD
    (INVENTORY / "ansible_inventory.yml").write_text(yaml.safe_dump(inventory))


def test_a_site_grown_into_pairs_keeps_its_data(request, tmp_path):
    """Otherwise growing a running site loses its messages, or leaves a pair that would not
    survive the loss of its first host."""
    app = testinfra.get_host(f"podman://{APP}")
    room = f"grow{uuid.uuid4().hex[:8]}"
    store_messages(app, room)
    before = stored_messages(app, room)
    assert len(before) == MESSAGES

    write_grown_inventory()
    counts, _ = rerun_site(tmp_path, "growing", SITE_HOSTS)
    print(f"changed by growing: {counts}")

    assert stored_messages(app, room) == before, "the messages stored before did not survive"
    assert primary_of() == DB_HOSTS[0], "the database that held the data is not the primary"
    wait_until(lambda: following(DB_HOSTS[1]), 120, f"{DB_HOSTS[1]} following {DB_HOSTS[0]}")
    # The room's name is this test's own hex.
    copied = psql(DB_HOSTS[1], f"SELECT count(*) FROM chat_message WHERE room = '{room}'")  # noqa: S608
    assert copied == str(MESSAGES), f"the new db host holds {copied!r} of the messages"
    # Kept on the first Redis host, the replication password only once it has a replica.
    app_password, replication_password = map(
        request.getfixturevalue, ("app_password", "replication_password")
    )
    assert master_of(app_password) == REDIS_HOSTS[0], "the Redis that served is not the master"
    wait_replicating(REDIS_HOSTS[1], REDIS_HOSTS[0], replication_password)
    holder()

import time

import pytest

from chatstack.chat.presence import RoomPresence


@pytest.fixture(autouse=True)
def _redis(redis_client):
    return redis_client


async def test_same_user_on_two_connections_counts_once():
    first = RoomPresence("r", "alice", "chan-1")
    await first.touch()
    snapshot = await RoomPresence("r", "alice", "chan-2").touch()
    assert snapshot.users == ["alice"]
    assert (await first.leave()).users == ["alice"]


async def test_versions_increase_with_every_update():
    alice = RoomPresence("r", "alice", "chan-1")
    versions = [(await alice.touch()).version, (await alice.touch()).version]
    versions.append((await alice.leave()).version)
    assert versions == sorted(set(versions))


async def test_entries_of_a_dead_process_are_pruned(redis_client, settings):
    ghost = RoomPresence("r", "ghost", "dead-process!chan")
    stale = time.time() - 3 * settings.CHATSTACK_HEARTBEAT_SECONDS - 1
    redis_client.zadd(ghost.key, {ghost.member: stale})

    snapshot = await RoomPresence("r", "alice", "chan-1").touch()

    assert snapshot.users == ["alice"]
    assert snapshot.pruned == 1


async def test_rooms_expire_when_nobody_refreshes_them(redis_client, settings):
    await RoomPresence("r", "alice", "chan-1").touch()
    ttl = redis_client.ttl("chatstack:presence:r")
    assert 0 < ttl <= 3 * settings.CHATSTACK_HEARTBEAT_SECONDS + 1

"""Two load balancers sharing an address: the holder's host stops under chat
traffic, the other takes the address, and the stopped one comes back as the
backup with no operator step (test_7_reruns.py reruns site.yml after every
fault).

Last of the scenario (pytest takes modules by name). The stopped host is an app
host, a sentinel and an etcd member too: the site must do without those as well,
as it would if the machine failed.
"""

from conftest import LB_HOSTS, PREFIX, STOPPED, holder, holders, host_left_down
from hachat import USERS, chat_through, members_of_a_new_room, summary
from testhost import podman, podman_result, start_at_address, systemd_state


def test_stopping_the_address_holder_loses_no_message(site, new_users, person, site_addresses):
    """Otherwise losing the load balancer users reach stops chat, or loses or doubles messages."""
    held = holder()
    members = members_of_a_new_room(new_users(USERS))

    resumed = chat_through(members, person, lambda: podman("stop", held))
    print(f"load balancer {held} stopped: chat resumed after {resumed:.1f}s ({summary(members)})")
    assert holder() != held, "no other load balancer took the address"


def test_the_stopped_balancer_returns_as_backup(site_addresses):
    """Otherwise a load balancer back from a stop takes the address again, cutting every
    connection a second time, or cannot take it when the other fails."""
    returning = host_left_down(LB_HOSTS, STOPPED, "test_stopping_the_address_holder...")
    held = holder()

    start_at_address(returning, PREFIX, site_addresses[returning])
    systemd_state(returning, 120)
    keepalived = podman_result("exec", returning, "systemctl", "is-active", "keepalived")
    assert keepalived.stdout.strip() == "active", "keepalived does not run on the returning host"
    assert holders() == [held], "the returning load balancer took the address back"

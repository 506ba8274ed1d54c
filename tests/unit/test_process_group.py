"""process_group.free_port: ports for the launcher's rendezvous."""
import socket

from fast_electra_ds.runtime.process_group import ephemeral_port_floor, free_port


def test_free_port_is_bindable_and_below_the_ephemeral_range():
    """Below the range the OS draws outgoing connections' ports from, so gloo's connections cannot
    take it between the check and the launcher's bind."""
    ports = {free_port() for _ in range(5)}
    assert all(1024 <= port < ephemeral_port_floor() for port in ports)
    assert len(ports) > 1  # drawn at random, not one fixed port that concurrent jobs would share
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_taken_port(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    try:
        chosen = taken.getsockname()[1]
        monkeypatch.setattr("random.Random.sample", lambda self, population, k: [chosen] + list(population)[:k - 1])
        assert free_port() != chosen
    finally:
        taken.close()

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


def test_the_process_group_gets_the_runs_collective_timeout(monkeypatch):
    """DeepSpeed's default is 10 minutes; the run's train.collective_timeout_minutes is what bounds a collective."""
    from datetime import timedelta

    import deepspeed

    from fast_electra_ds.runtime.process_group import init_process_group

    seen = {}
    monkeypatch.setattr(deepspeed, "init_distributed", lambda **kwargs: seen.update(kwargs))
    init_process_group(45)
    assert seen["timeout"] == timedelta(minutes=45)


def test_a_gloo_timeout_is_a_peer_failure_naming_the_checkpoint(tmp_path):
    from fast_electra_ds.train import peer_failure

    failure = peer_failure(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Timed out waiting 600000ms for recv"), str(tmp_path))
    assert failure is not None and "another rank of this job stopped" in str(failure) and "no complete checkpoint yet" in str(failure)
    assert peer_failure(RuntimeError("shape mismatch"), str(tmp_path)) is None

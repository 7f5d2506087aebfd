"""Reading this process's Prometheus metrics in tests."""

from prometheus_client import REGISTRY


def value(name: str, **labels: str) -> float:
    sample = REGISTRY.get_sample_value(name, labels)
    assert sample is not None, f"{name}{labels} is not exported"
    return sample

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_config() -> str:
    """The demo's config: tests train (or reuse from the cache) exactly the demo's world and models."""
    return str(REPO / "conf" / "demo.yaml")

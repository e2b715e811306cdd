from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_config() -> str:
    """The demo's config: tests train (or reuse from the cache) exactly the demo's world and models."""
    return str(REPO / "conf" / "demo.yaml")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, demo_config):
    """A run root where `conceptlens world` has built the demo's world (models cached across sessions)."""
    from conceptlens.jobs import world

    root = tmp_path_factory.mktemp("runs")
    assert world.main(["--config", demo_config, f"run.root={root}"]) == 0
    return root


@pytest.fixture(scope="session")
def demo_done(demo_run, demo_config):
    """`conceptlens demo` run to the end on ``demo_run`` (world reused): its exit code and console output."""
    import contextlib
    import io

    from conceptlens.jobs import demo

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = demo.main(["--config", demo_config, f"run.root={demo_run}"])
    return code, out.getvalue()

"""`conceptlens report` as the demo's last step: the page of a full run, every section present, its curves
recomputed from the filter bundle agreeing with what `monitor` measured, logged to MLflow, of a sane size."""
import json
from html.parser import HTMLParser

import pyarrow.parquet as pq
import pytest

from conceptlens.report.build import SECTIONS

pytestmark = pytest.mark.slow

MAX_BYTES = 6_000_000  # images are downscaled and capped: a full demo page stays well under this


class Tags(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def page(demo_done, demo_run):
    assert demo_done[0] == 0, demo_done[1][-3000:]
    folder = demo_run / "demo" / "report"
    return folder, (folder / "index.html").read_text(), json.loads((folder / "metrics.json").read_text())


def test_the_demo_ends_with_the_report_path(demo_done, page):
    folder, _, metrics = page
    last = demo_done[1].rstrip().splitlines()[-1]
    assert last == f"report: {(folder / 'index.html').resolve()}" == f"report: {metrics['path']}"


def test_a_full_run_has_every_section(page):
    _, html, metrics = page
    assert metrics["sections"] == [s[0] for s in SECTIONS]
    tags = Tags(html).tags
    assert [a["id"] for t, a in tags if t == "section"] == metrics["sections"]
    assert [a["href"] for t, a in tags if t == "a" and a.get("href", "").startswith("#")] == [
        f"#{s}" for s in metrics["sections"]]


def test_the_page_is_one_self_contained_file_of_a_sane_size(page):
    folder, html, metrics = page
    assert "http://" not in html and "https://" not in html
    images = [a for t, a in Tags(html).tags if t == "img"]
    assert images and all(a["src"].startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for a in images)
    assert metrics["bytes"] == (folder / "index.html").stat().st_size < MAX_BYTES


def test_the_filter_curves_agree_with_monitor(demo_run, page):
    _, html, _ = page
    table = pq.read_table(demo_run / "demo" / "monitor" / "evaluation.parquet").to_pylist()
    measured = next(r["auroc"] for r in table if r["detector"] == "concept filter" and r["task"] == "misclassified")
    assert f"concept filter (AUROC {measured:.3f})" in html  # the ROC curve re-scored from the bundle
    assert html.count('<svg class="figure"') >= 4  # two ROC panels, the trade-off, the repair's before/after


def test_the_page_is_logged_to_mlflow(demo_run, page):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{demo_run / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("conceptlens").experiment_id],
                              "tags.`conceptlens.run` = 'demo' and tags.`conceptlens.command` = 'report' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    assert runs and runs[0].info.run_name == "demo/report"
    assert {"index.html", "metrics.json"} <= {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert runs[0].data.metrics["sections"] == len(SECTIONS)

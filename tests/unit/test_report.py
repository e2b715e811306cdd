"""The HTML report on small run folders written here: a section only for each command that ran (a missing
command is no error), heatmap cells whose tooltips carry value, interval and q, names escaped, images inlined,
no network reference; the page helpers; the trade-off and ROC numbers worked out by hand."""
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conceptlens.evaluation.summary import scorecard_summary
from conceptlens.jobs import report
from conceptlens.report.build import SECTIONS, build_report
from conceptlens.report.page import data_uri, num, pct, render
from conceptlens.report.runtime_filter import accepted_accuracy, roc_line
from conceptlens.config import load_config

ODD_CLASS = 'sq<u>are</u> & "co"'  # a class name a page must escape
ODD_CONCEPT = "size=<script>alert(1)</script>"
CLASSES = ["circle", ODD_CLASS]
CONCEPTS = ["lighting=dark", ODD_CONCEPT, "color=red"]


class Page(HTMLParser):
    """Every element as ``(tag, attributes)``, and the scripts' text."""

    def __init__(self, html: str):
        super().__init__()
        self.elements, self.scripts, self._in_script = [], [], False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def find(self, tag, **attrs):
        return [a for t, a in self.elements if t == tag and all(v in (a.get(k) or "").split() for k, v in attrs.items())]


def write_png(path: Path, colour=(200, 30, 30), size=(12, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def embed(run: Path) -> None:
    """embed/: 2 classes, calib and test; circle right 3 of 4 on test, the odd class 1 of 2."""
    folder = run / "embed" / "embeddings"
    folder.mkdir(parents=True)
    (run / "embed" / "metrics.json").write_text(json.dumps({"classes": CLASSES, "rows": 8, "rejects": 0}))
    rows = {"id": [f"r{i}" for i in range(8)], "path": [str(run / "img" / f"r{i}.png") for i in range(8)],
            "split": ["calib", "calib", "test", "test", "test", "test", "test", "test"],
            "label_index": [0, 1, 0, 0, 0, 0, 1, 1], "prediction": [0, 1, 0, 0, 0, 1, 1, 0]}
    pq.write_table(pa.table(rows), folder / "part-00000.parquet")
    for i in range(8):
        write_png(run / "img" / f"r{i}.png", (10 * i, 100, 100))


def analyze(run: Path) -> None:
    """analyze/: one source, four kinds; cell (circle, lighting=dark) of `differential` is −0.5 in [−0.9, −0.1],
    q 0.004, significant."""
    folder = run / "analyze"
    folder.mkdir(parents=True)
    (folder / "concepts.json").write_text(json.dumps({"classes": CLASSES, "concepts": {c: [c] for c in CONCEPTS}}))
    rows = []
    for kind in ("differential", "risk_ratio", "correct", "incorrect"):
        for i, cls in enumerate(CLASSES):
            for j, concept in enumerate(CONCEPTS):
                value = -0.5 if (i, j) == (0, 0) else 0.1 * (i + j)
                tested = kind in ("differential", "risk_ratio")
                rows.append({"kind": kind, "class": cls, "concept": concept, "n": 4.0, "value": value,
                             "low": value - 0.4, "high": value + 0.4, "p": 0.001 if tested else math.nan,
                             "q": 0.004 if tested else math.nan, "significant": tested and (i, j) == (0, 0),
                             "source": "vlm", "reliable": j != 2})
    pq.write_table(pa.Table.from_pylist(rows), folder / "heatmaps_vlm.parquet")
    summary = {"rows": 8, "misclassified": 3, "zero_shot_accuracy": {"aligned": 0.7, "vlm": 0.8},
               "aligner": {"r2_held_out": 0.6, "r2_held_out_method": "held_out"},
               "trust": {"warnings": [], "sees_classes": True},
               "responsible": {"vlm": {"circle": [
                   {"concept": "lighting=dark", "risk_ratio": 4.0, "q": 0.004, "direction": "present in failures",
                    "reliable": True}]}},
               "faults": {"overall": {"misclassified": 3, "encoder": 1, "head": 2, "encoder_share": 1 / 3,
                                      "head_share": 2 / 3},
                          "per_class": {"circle": {"misclassified": 1, "encoder": 1, "head": 0, "encoder_share": 1.0,
                                                   "head_share": 0.0}}}}
    (folder / "summary.json").write_text(json.dumps(summary))


def attack(run: Path) -> None:
    """attack/: two flipped test rows of one attack and ε, their images under attack/images/."""
    folder = run / "attack"
    rows = []
    for i, source in enumerate(["r2", "r3", "r4"]):
        image = write_png(folder / "images" / "pgd-4" / f"{source}-pgd-4.png", (0, 0, 50 * i))
        rows.append({"id": f"{source}-pgd-4", "path": f"/elsewhere/attack/images/pgd-4/{image.name}", "split": "test",
                     "attack": "pgd", "epsilon": 4.0, "label_index": 0, "clean_prediction": 0,
                     "adversarial_prediction": 1 if i < 2 else 0, "source_id": source})
    pq.write_table(pa.Table.from_pylist(rows), folder / "adversarial.parquet")
    (folder / "metrics.json").write_text(json.dumps({"rows": 3, "success": {"pgd_eps4": {
        "clean_accuracy": 1.0, "adversarial_accuracy": 1 / 3, "n": 3, "success_rate": 2 / 3}}}))


def rootcause(run: Path) -> None:
    """rootcause/: 14 small clusters (more than a page shows), a montage for the largest; explain/: its sentence."""
    folder = run / "rootcause"
    cards = [{"cluster": k, "size": 20 - k, "share": (20 - k) / 200, "pairs": [{"true": "circle", "predicted": ODD_CLASS,
              "rows": 20 - k}], "concepts": [{"concept": "lighting=dark", "cluster_share": 0.8, "correct_share": 0.2,
                                              "ratio": 4.0, "q": 1e-5}]} for k in range(14)]
    (folder / "figures").mkdir(parents=True)
    (folder / "cards.json").write_text(json.dumps({"heldout": cards}))
    write_png(folder / "figures" / "heldout_cluster_0.png", size=(64, 32))
    (run / "explain").mkdir()
    (run / "explain" / "summary.json").write_text(json.dumps({"method": "fpdiff", "clusters": [{"cluster": 0, "sentences": [
        {"sentence": "a photo of a circle in the dark", "error_rate": 0.6, "low": 0.5, "high": 0.7,
         "rest_error_rate": 0.1, "q": 1e-6}]}]}))


def neurons(run: Path) -> None:
    """neurons/: two neurons of circle (one edited), the repair lifting circle from 0.5 to 0.75."""
    folder = run / "neurons"
    (folder / "figures").mkdir(parents=True)
    write_png(folder / "figures" / "class_circle.png", size=(40, 20))
    (folder / "metrics.json").write_text(json.dumps({"classes": CLASSES, "mistakes": 3, "flipped": 1.0, "voted_neurons": 2,
                                                     "eval_split": "test", "repair": {"edit": "retain",
                                                                                      "neurons": {"circle": [7]}}}))
    pq.write_table(pa.Table.from_pylist([
        {"class": "circle", "neuron": n, "direction": "insufficient", "votes": v, "share": v / 3, "mistakes": 3,
         "concepts": ["lighting=dark"], "r": [0.3], "low": [0.2], "high": [0.4], "q": [0.001]}
        for n, v in ((3, 3), (7, 2))]), folder / "neurons.parquet")
    pq.write_table(pa.Table.from_pylist([
        {"method": m, "class": c, "rows": 4, "accuracy": a} for m, c, a in (
            ("base", "all", 0.6), ("base", "circle", 0.5), ("base", ODD_CLASS, 0.7),
            ("retain", "all", 0.7), ("retain", "circle", 0.75), ("retain", ODD_CLASS, 0.65))]), folder / "repair.parquet")


def monitor(run: Path) -> None:
    """monitor/: metrics and the AUROC table, but no bundle (the curves cannot be drawn)."""
    folder = run / "monitor"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": 0.8, "accepted": {"share": 0.9, "accuracy": 0.85},
                                                     "msp_accepted": {"share": 0.9, "accuracy": 0.83},
                                                     "verdicts": {"accept": 9, "likely-misclassified": 1}}))
    pq.write_table(pa.Table.from_pylist([{"detector": d, "task": "misclassified", "auroc": a}
                                         for d, a in (("concept filter", 0.91), ("msp", 0.87))]),
                   folder / "evaluation.parquet")


def partial_run(root: Path) -> Path:
    run = root / "partial"
    embed(run)
    analyze(run)
    attack(run)
    return run


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    run = partial_run(tmp_path_factory.mktemp("runs"))
    html, sections = build_report(run)
    return run, html, sections, Page(html)


def test_only_the_commands_that_ran_have_a_section(partial):
    _, html, sections, page = partial
    assert [s["id"] for s in sections] == ["overview", "semantic", "attacks"]
    assert [a["id"] for a in page.find("section", **{"class": "cl-section"})] == ["overview", "semantic", "attacks"]
    toc = [a["href"] for t, a in page.elements if t == "a" and a.get("href", "").startswith("#")]
    assert toc[:3] == ["#overview", "#semantic", "#attacks"]
    for missing in ("rootcause", "neurons", "monitor"):
        assert f"<code>{missing}</code>" in html  # named as not run, not an error
    assert "<code>evaluate</code>" not in html  # a run of one's own data has no truth to be scored against


def test_a_conceptworld_run_is_told_that_evaluate_has_not_run(tmp_path):
    run = partial_run(tmp_path)
    (run / "world").mkdir()
    html, _ = build_report(run)
    assert "<code>evaluate</code>" in html


def test_an_empty_run_folder_is_a_page_without_sections(tmp_path):
    (tmp_path / "nothing").mkdir()
    html, sections = build_report(tmp_path / "nothing")
    assert sections == [] and "Nothing to report yet" in html
    with pytest.raises(FileNotFoundError, match="no run folder"):
        build_report(tmp_path / "absent")


def test_the_page_is_self_contained(partial):
    _, html, _, page = partial
    assert "http://" not in html and "https://" not in html and "//" not in "".join(
        a.get("src", "") + a.get("href", "") for _, a in page.elements if not a.get("src", "").startswith("data:"))
    assert not page.find("link", rel="stylesheet") and all("src" not in a for a in page.find("script"))
    images = page.find("img")
    assert len(images) == 4  # 2 attack pairs, clean | adversarial, each inlined
    assert all(a["src"].startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for a in images)
    assert page.find("meta", name="viewport")


def test_heatmap_cells_carry_value_interval_and_q(partial):
    _, _, _, page = partial
    cells = page.find("td", **{"class": "cell"})
    assert len(cells) == 4 * len(CLASSES) * len(CONCEPTS)  # every kind written, one source
    tip = [c["title"] for c in cells if c["title"].startswith("circle × lighting=dark\ncorrect − incorrect")]
    assert tip == ["circle × lighting=dark\ncorrect − incorrect: -0.5 (95% interval -0.9 to -0.1)\n"
                   "q = 0.004, significant\nn = 4 misclassified rows"]
    significant = [c for c in cells if "sig" in c["class"].split()]
    assert len(significant) == 2  # differential and risk ratio: the one significant cell each
    ratio = [c["title"] for c in cells if c["title"].startswith("circle × lighting=dark\nrisk ratio")][0]
    assert f"×{math.exp(-0.5):.3g} (95% interval ×{math.exp(-0.9):.3g} to ×{math.exp(-0.1):.3g})" in ratio
    assert all("q = " in c["title"] and "interval" in c["title"] for c in cells)
    assert any("unreliable" in c["title"] for c in cells)  # color=red is marked unreliable


def test_odd_names_are_escaped(partial):
    _, html, _, page = partial
    assert "<script>alert(1)</script>" not in html and "<u>are</u>" not in html
    assert "size=&lt;script&gt;alert(1)&lt;/script&gt;" in html
    headers = [a for t, a in page.elements if t == "th"]
    assert headers  # the parser reads the escaped names back as text
    assert sum("alert" in s for s in page.scripts) == 0


def test_overview_accuracy_and_attack_examples(partial):
    _, html, _, _ = partial
    assert "accuracy on test (vs labels)" in html and "66.7%" in html  # 4 of 6 test rows right
    assert "75.0%" in html and "50.0%" in html  # circle 3 of 4, the odd class 1 of 2 on test
    assert html.count('<figure class="pair">') == 2  # the two flipped rows; the unflipped one is no example


def test_scorecard_rows_come_from_the_evaluation_wing(tmp_path):
    card = {"run": "x", "absent": {"neurons": "no `neurons` outputs"}, "goals": {
        "blamed_precision": {"value": 0.8, "target": 0.9, "met": False},
        "planted_first.a_b.circle": {"value": 2, "target": 1, "met": False},
        "filter_false_alarms": {"value": -0.3, "target": 1.5, "met": True}}}
    rows = scorecard_summary(card)
    assert (rows["met"], rows["total"]) == (1, 3)
    assert [(g["value"], g["target"], g["met"]) for g in rows["goals"]] == [
        ("0.8", "≥ 0.9", False), ("rank 2", "rank 1", False), ("-0.30", "within ±1.5", True)]
    run = tmp_path / "scored"
    (run / "evaluate").mkdir(parents=True)
    (run / "evaluate" / "scorecard.json").write_text(json.dumps(card))
    html, sections = build_report(run)
    assert [s["id"] for s in sections] == ["scorecard"] and "1 of 3" in html and "not met" in html


def test_a_command_folder_without_its_outputs_says_so(tmp_path):
    run = tmp_path / "broken"
    (run / "analyze").mkdir(parents=True)
    html, sections = build_report(run)
    assert [s["id"] for s in sections] == ["semantic"] and "analyze did not finish" in html


def test_the_job_writes_the_page_and_its_metrics(partial, tmp_path):
    run = partial_run(tmp_path)
    cfg = load_config([], [f"run.root={tmp_path}", "run.name=partial"])
    metrics = report.report_run(cfg)
    assert metrics["path"] == str((run / "report" / "index.html").resolve())
    assert metrics["sections"] == ["overview", "semantic", "attacks"]
    assert json.loads((run / "report" / "metrics.json").read_text())["sections"] == metrics["sections"]
    assert 0 < metrics["bytes"] < 1_000_000


def test_every_other_section_from_its_outputs(tmp_path):
    run = partial_run(tmp_path)
    rootcause(run)
    neurons(run)
    monitor(run)
    html, sections = build_report(run)
    assert [s["id"] for s in sections] == ["overview", "semantic", "rootcause", "neurons", "repair", "filter", "attacks"]
    page = Page(html)
    assert len(page.find("article", **{"class": "card"})) == 12 and "first 12 of 14" in html
    assert "“a photo of a circle in the dark”" in html and "fails 60%" in html
    assert "n7 <small>(repaired)</small>" in html and "lighting=dark (0.3, 0.2–0.4, q 0.001)" in html
    assert "+25.0" in html and "-5.0" in html  # circle 0.5 → 0.75, the odd class 0.7 → 0.65, in the figure
    assert "<b>0.91</b>" in html and "No curves: no filter bundle" in html
    assert all(a["src"].startswith("data:image/") for a in page.find("img")) and len(page.find("img")) == 4 + 2
    assert "http://" not in html and "https://" not in html


def test_a_missing_run_folder_exits_2(tmp_path, capsys):
    assert report.main([f"run.root={tmp_path}", "run.name=nope"]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_every_section_has_a_template():
    import conceptlens.report

    templates = Path(conceptlens.report.__file__).parent / "templates" / "sections"
    assert {s[0] for s in SECTIONS} == {p.name.removesuffix(".html.j2") for p in templates.glob("*.html.j2")}


def test_page_helpers():
    assert (num(0.123456), num(12345.678), num(None), num(float("nan")), num(3.0)) == (
        "0.123", "1.23e+04", "–", "–", "3")
    assert (pct(0.1234), pct(None), pct(1.0, 0)) == ("12.3%", "–", "100%")
    assert data_uri(b"\x89PNG") == "data:image/png;base64,iVBORw=="
    html = render("base.html.j2", sections=[{"id": "a&b", "title": "<x>"}])
    assert 'href="#a&amp;b"' in html and "&lt;x&gt;" in html and '<nav id="toc"' in html


def test_accepted_accuracy_by_hand():
    scores = np.array([0.9, 0.8, 0.1, 0.2])  # the two highest scores are the two errors
    correct = np.array([False, False, True, True])
    out = accepted_accuracy(scores, correct, np.array([0.0, 0.25, 0.5, 1.0]))
    assert out[:3].tolist() == [0.5, 2 / 3, 1.0] and math.isnan(out[3])


def test_roc_line_auroc_and_its_ends():
    line = roc_line("x", np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    assert line["auroc"] == pytest.approx(0.75) and "AUROC 0.750" in line["label"]
    assert (line["x"][0], line["y"][0], line["x"][-1], line["y"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert roc_line("x", np.ones(3), np.ones(3, bool)) is None

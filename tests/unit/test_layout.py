"""The layout rules of ARCHITECTURE.md, and the no-peeking rule, checked on the source tree.

Each rule is a small checker over the import graph or the string constants of a module; each
checker is also run on a planted violation, so a rule that stops seeing anything fails too.
"""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "platform" / "conceptlens"
METHOD_WINGS = {"semantic", "runtime", "rootcause", "language", "neurons"}
TOP_WINGS = {"evaluation", "report"}  # read what the method wings produce
LOWER_WINGS = {"world", "models", "recipes", "pipeline"}
TOP_MODULES = {"__init__", "cli", "config"}
TRUTH_READERS = {"world", "evaluation"}  # the only wings that may name ground-truth columns
# where the world (and its truth file) may be imported or read: the wings that make, train on and score against it,
# and the commands that run them
WORLD_WINGS = {"world", "recipes", "evaluation"}
WORLD_JOBS = {"conceptlens.jobs.world", "conceptlens.jobs.evaluate", "conceptlens.jobs.demo"}
TRUTH_FILE = "truth.parquet"
TRUTH_NAMES = {"read_truth", "split_truth", "Truth"}  # what reads a truth (the world's file or a user's table)


def module_name(path: Path) -> str:
    """``platform/conceptlens/semantic/aligner.py`` -> ``conceptlens.semantic.aligner``; jobs and serve likewise."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "platform":
        parts = parts[1:]
    else:  # jobs/, serve/ are installed as conceptlens.jobs, conceptlens.serve
        parts = ["conceptlens", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(source: str, name: str) -> set[str]:
    """Every module ``source`` imports (absolute names; relative imports resolved against ``name``)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[:-node.level] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "conceptlens" else None


def is_submodule(target: str) -> bool:
    """``conceptlens.<wing>.<module>...`` where ``<module>`` is a module or package of the wing (not a name
    the wing's ``__init__`` exports)."""
    parts = target.split(".")
    return len(parts) > 2 and ((LIBRARY / parts[1] / f"{parts[2]}.py").is_file() or (LIBRARY / parts[1] / parts[2]).is_dir())


def layout_violations(name: str, source: str) -> list[str]:
    """What module ``name`` imports against the layout rules."""
    own = wing(name)
    bad = []
    for target in imports(source, name):
        if target.split(".")[0] == "ray" and name != "conceptlens.pipeline.raydata" and name.startswith(
                "conceptlens.") and wing(name) not in ("jobs", "serve"):
            bad.append(f"{name} imports {target}: only conceptlens.pipeline.raydata may import Ray")
        if target.startswith("ray.serve") and wing(name) != "serve" and name != "conceptlens.jobs.serve":
            bad.append(f"{name} imports {target}: only serve/ may use Ray Serve")
        if not target.startswith("conceptlens.") or own in ("jobs", "serve"):
            continue
        other = wing(target)
        if other in ("jobs", "serve"):
            bad.append(f"{name} imports {target}: the library never imports jobs or serve")
        elif own in LOWER_WINGS and other in METHOD_WINGS | TOP_WINGS:
            bad.append(f"{name} imports {target}: a lower wing ({own}) never imports a method wing ({other})")
        elif own in LOWER_WINGS and own != "recipes" and other == "recipes":
            bad.append(f"{name} imports {target}: recipes build on models and world, not the other way")
        elif own in METHOD_WINGS and other in METHOD_WINGS - {own} and is_submodule(target):
            bad.append(f"{name} imports {target}: another method wing only through its public names "
                       f"(from conceptlens.{other} import ...)")
        elif own in METHOD_WINGS and other in TOP_WINGS:
            bad.append(f"{name} imports {target}: a method wing never imports {other}")
    return bad


def truth_columns() -> set[str]:
    from conceptlens.world.generate import truth_schema

    return set(truth_schema().names) - {"id"}


def may_see_the_world(name: str) -> bool:
    return wing(name) in WORLD_WINGS or name in WORLD_JOBS


def world_imports(name: str, source: str) -> list[str]:
    """Where module ``name`` imports ``conceptlens.world`` (or names it as a module to load) without being one of
    the modules that make, train on or score against the world: everything else must work on a user's data."""
    if may_see_the_world(name):
        return []
    targets = {t for t in imports(source, name) if t == "conceptlens.world" or t.startswith("conceptlens.world.")}
    targets |= {node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)
                and isinstance(node.value, str) and re.fullmatch(r"conceptlens\.world(\.\w+)*", node.value)}
    targets = {t for t in targets if not any(t.startswith(f"{other}.") for other in targets)}  # once per import
    return [f"{name} imports {t}: only {', '.join(sorted(WORLD_WINGS))} and the jobs "
            f"{', '.join(sorted(WORLD_JOBS))} use the world" for t in sorted(targets)]


def truth_reads(name: str, source: str) -> list[str]:
    """Where module ``name`` reads a truth (names ``truth.parquet``, uses ``read_truth`` / ``split_truth`` /
    ``Truth``, or reads a user's declared truth, ``<cfg>.evaluate.truth``) without being allowed to."""
    if may_see_the_world(name):
        return []
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                (node.value == TRUTH_FILE or node.value.endswith("/" + TRUTH_FILE)):
            found.append(f"{name} line {node.lineno}: names {node.value!r}")
        named = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if named in TRUTH_NAMES:
            found.append(f"{name} line {node.lineno}: uses {named}")
        if isinstance(node, ast.Attribute) and node.attr == "truth" and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "evaluate":
            found.append(f"{name} line {node.lineno}: reads evaluate.truth")
        if isinstance(node, ast.ImportFrom):
            found += [f"{name} line {node.lineno}: imports {a.name}" for a in node.names if a.name in TRUTH_NAMES]
    return found


NOT_TRUTH = "# not a truth column:"  # a line naming a homonym says so, with the reason, for a reviewer to see


def peeks(source: str, truth: set[str]) -> list[str]:
    """The ground-truth column names ``source`` spells as string constants (how tables and batches are read),
    except on lines marked ``# not a truth column: <what it is>``."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in truth \
                and NOT_TRUTH not in lines[node.lineno - 1]:
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def sources(*roots: Path):
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            yield path, module_name(path), path.read_text()


def test_platform_is_not_a_package():
    assert not (REPO / "platform" / "__init__.py").exists(), "a package named 'platform' shadows the stdlib"


def test_code_lives_in_wings():
    loose = {p.stem for p in LIBRARY.glob("*.py")} - TOP_MODULES
    assert not loose, f"modules outside any wing: {sorted(loose)}"
    expected = METHOD_WINGS | TOP_WINGS | LOWER_WINGS
    present = {p.parent.name for p in LIBRARY.glob("*/__init__.py")}
    assert expected <= present, f"missing wings: {sorted(expected - present)}"


def test_every_package_is_installed():
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in LIBRARY.rglob("__init__.py")} | {"conceptlens.jobs", "conceptlens.serve"}
    assert found == declared, f"pyproject packages differ: missing {sorted(found - declared)}, " \
                              f"stale {sorted(declared - found)}"


def test_imports_follow_the_layout():
    bad = [v for _, name, src in sources(LIBRARY, REPO / "jobs", REPO / "serve") for v in layout_violations(name, src)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name, source", [
    ("conceptlens.pipeline.registry", "from conceptlens.runtime.filter import ConceptFilter"),
    ("conceptlens.runtime.filter", "from conceptlens.semantic.aligner import Aligner"),
    ("conceptlens.semantic.analysis", "import ray"),
    ("conceptlens.models.embedding", "from conceptlens.recipes.data import load_images"),
    ("conceptlens.semantic.analysis", "from conceptlens.jobs.analyze import analyze"),
    ("conceptlens.runtime.filter", "from ray import serve"),
    ("conceptlens.language.bank", "from conceptlens.evaluation import scorecard"),
])
def test_layout_checker_sees_a_planted_violation(name, source):
    assert layout_violations(name, source)


def test_layout_checker_allows_public_names():
    assert not layout_violations("conceptlens.runtime.filter", "from conceptlens.semantic import Aligner, unit")
    assert not layout_violations("conceptlens.pipeline.raydata", "import ray\nfrom ray.data import ActorPoolStrategy")
    assert not layout_violations("conceptlens.jobs.analyze", "from conceptlens.semantic.heatmaps import matrix")


def test_no_analysis_names_ground_truth_columns():
    """Only world/ and evaluation/ may read `scenario` and the attribute columns: every other module of the
    library, jobs/ and serve/ must work on a user's data, where no truth exists."""
    truth = truth_columns()
    assert {"scenario", "caption", "background", "background_water", "weather_fog"} <= truth
    bad = []
    for path, name, src in sources(LIBRARY, REPO / "jobs", REPO / "serve"):
        if wing(name) in TRUTH_READERS:
            continue
        bad += [f"{path.relative_to(REPO)} {hit}" for hit in peeks(src, truth)]
    assert not bad, "ground-truth columns named outside world/ and evaluation/:\n" + "\n".join(bad)


def test_peek_checker_sees_a_planted_peek():
    truth = truth_columns()
    assert peeks('rows = table.column("scenario")', truth)
    assert peeks('mask = batch["background_water"]', truth)
    assert not peeks('rows = table.column("prediction")', truth)
    assert not peeks('n = cfg["size"]  # not a truth column: open_clip preprocess config', truth)


def test_only_the_world_wings_and_jobs_import_the_world():
    """``conceptlens.world`` (vocabulary, scenarios, the manifest and truth readers) is imported only by world/,
    recipes/, evaluation/ and the jobs world, evaluate and demo: every other command runs on a user's data."""
    bad = [v for _, name, src in sources(LIBRARY, REPO / "jobs", REPO / "serve") for v in world_imports(name, src)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name, source", [
    ("conceptlens.jobs.analyze", "from conceptlens.world import CLASSES"),
    ("conceptlens.jobs.embed", "import conceptlens.world.vocabulary as v"),
    ("conceptlens.semantic.analysis", "from conceptlens import world"),
    ("conceptlens.pipeline.runs", "from ..world.scenarios import Scenario"),
    ("conceptlens.serve.app", "mod = importlib.import_module('conceptlens.world')"),
])
def test_world_import_checker_sees_a_planted_import(name, source):
    assert world_imports(name, source)


def test_world_import_checker_allows_the_world_wings_and_jobs():
    assert not world_imports("conceptlens.recipes.conceptworld", "from conceptlens.world import split_arrays")
    assert not world_imports("conceptlens.evaluation.ground_truth", "from conceptlens.world import read_truth")
    assert not world_imports("conceptlens.jobs.world", "from conceptlens.world import read_manifest")
    assert not world_imports("conceptlens.jobs.analyze", "from conceptlens.pipeline.datasets import stated_classes")
    assert not world_imports("conceptlens.pipeline.tracking", 'tag = "conceptlens.world_hash"')


def test_only_the_world_wings_and_jobs_read_the_truth_file():
    """A truth (``truth.parquet``, read through ``read_truth`` / ``Truth``, or a user's ``evaluate.truth``) is read
    only where the world may be: an analysis never sees it, even by a path."""
    bad = [v for _, name, src in sources(LIBRARY, REPO / "jobs", REPO / "serve") for v in truth_reads(name, src)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name, source", [
    ("conceptlens.jobs.analyze", 'truth = pq.read_table(run / "world" / "truth.parquet")'),
    ("conceptlens.report.heatmaps", 'truth = pq.read_table(f"{run}/world/truth.parquet")'),
    ("conceptlens.jobs.rootcause", "from conceptlens.evaluation.ground_truth import Truth"),
    ("conceptlens.runtime.filter", "truth = ground_truth.Truth.of_world(folder)"),
    ("conceptlens.semantic.analysis", "table = pq.read_table(cfg.evaluate.truth.table)"),
    ("conceptlens.jobs.explain", "table = world.read_truth(folder)"),
])
def test_truth_read_checker_sees_a_planted_read(name, source):
    assert truth_reads(name, source)


def test_truth_read_checker_allows_the_world_jobs_and_other_files():
    assert not truth_reads("conceptlens.jobs.evaluate", "truth = Truth.of_world(truth_folder(cfg))")
    assert not truth_reads("conceptlens.jobs.world", 'pq.write_table(read_truth(world), out / "truth.parquet")')
    assert not truth_reads("conceptlens.report.heatmaps", 'pq.read_table(folder / "ground_truth.parquet")')
    assert not truth_reads("conceptlens.jobs.embed", 'manifest = world_dir(cfg) / "manifest.parquet"')

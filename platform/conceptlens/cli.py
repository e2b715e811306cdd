"""The ``conceptlens`` console script: ``conceptlens <command> [--config FILE] [key=value ...]``.

Each command is a module with ``main(argv) -> int``; modules are imported only when their
command runs, so ``conceptlens --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from conceptlens.config import Config, ConfigError, load_config
from conceptlens.pipeline.shards import IncompleteShards

COMMANDS = {
    "world": ("conceptlens.jobs.world", "build ConceptWorld and train (or reuse) its classifier and tiny CLIP"),
    "check": ("conceptlens.jobs.check", "preflight: do the models and the data go together (preprocessing, classes, "
                                        "checkpoint, VLM)? before any heavy work"),
    "embed": ("conceptlens.jobs.embed", "embed images with the classifier and the VLM on Ray Data (resumable)"),
    "analyze": ("conceptlens.jobs.analyze", "semantic and differential heatmaps, encoder-vs-head fault localisation"),
    "attack": ("conceptlens.jobs.attack", "adversarial inputs (FGSM, PGD, APGD) on the held-out splits, embedded"),
    "monitor": ("conceptlens.jobs.monitor", "calibrate the runtime filter, compare it with baselines, register it"),
    "serve": ("conceptlens.jobs.serve", "the runtime filter as an HTTP endpoint on a local Ray Serve (Ctrl-C stops)"),
    "rootcause": ("conceptlens.jobs.rootcause", "cluster the failures into root causes (HUDD/SAFE pipeline grid on Ray)"),
    "explain": ("conceptlens.jobs.explain", "describe each root cause in validated sentences (LBEE: TopS, SetDiff, PDiff, FPDiff)"),
    "neurons": ("conceptlens.jobs.neurons", "the neurons behind each class's mistakes, their concepts and images, "
                                            "a repaired head (NeuroInspect)"),
    "evaluate": ("conceptlens.jobs.evaluate", "score a ConceptWorld run's diagnoses against the world's truth"),
    "report": ("conceptlens.jobs.report", "one self-contained HTML page of a run: what is wrong, why, where, what to do"),
    "compare": ("conceptlens.jobs.compare", "what changed between two runs or two registered model versions (from MLflow)"),
    "demo": ("conceptlens.jobs.demo", "run the whole pipeline on ConceptWorld and print a summary"),
}


class ChecksFailed(RuntimeError):
    """A job wrote its outputs, but they fail a check the user must act on (the message says how);
    ``result`` is what the job returned, for its report."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


def parse_config(prog: str, description: str, argv: Sequence[str] | None) -> Config:
    """Parse ``[--config FILE ...] [key=value ...]`` into a Config; exit 2 with the key named on error."""
    parser = argparse.ArgumentParser(prog=f"conceptlens {prog}", description=description)
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config file; repeat to layer several (later wins)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. run.name=exp1")
    args = parser.parse_args(argv)
    try:
        return load_config(args.config, args.overrides)
    except (ConfigError, ValueError) as err:
        parser.exit(2, f"conceptlens {prog}: config error: {err}\n")


def run_command(prog: str, description: str, argv: Sequence[str] | None, run: Callable[[Config], Any],
                report: Callable[[Any], str]) -> int:
    """A command's ``main``: parse the config, ``run`` it, print ``report(result)`` and the output folder.
    Bad input (``ValueError``, ``FileNotFoundError``) prints the reason and exits with 2; a job that could not
    finish its output (:class:`~conceptlens.pipeline.shards.IncompleteShards`: rows lost on the way) prints the
    reason and exits with 1, as does one whose output fails its checks (:class:`ChecksFailed`), after its
    report."""
    cfg = parse_config(prog, description, argv)
    try:
        result = run(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"conceptlens {prog}: {err}", file=sys.stderr)
        _drop_empty(Path(cfg.run.root) / cfg.run.name, prog)
        return 2
    except IncompleteShards as err:
        print(f"conceptlens {prog}: failed: {err}", file=sys.stderr)
        return 1
    except ChecksFailed as err:
        report_failure(prog, err, report)
        return 1
    except BaseException:
        _drop_empty(Path(cfg.run.root) / cfg.run.name, prog)
        raise
    print(report(result))
    print(f"outputs: {Path(cfg.run.root) / cfg.run.name / prog}")
    return 0


def _drop_empty(run_dir: Path, prog: str) -> None:
    """After a failure: the command's folder and the run's, when the failed command left them empty."""
    for folder in (run_dir / prog, run_dir):
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            return


def report_failure(prog: str, err: ChecksFailed, report: Callable[[Any], str]) -> None:
    """Print the failed job's report (when it has a result) and why it failed."""
    if err.result is not None:
        print(report(err.result))
    print(f"conceptlens {prog}: failed: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("usage: conceptlens <command> [--config FILE] [key=value ...]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<{width}}  {help_}")
        print("\n`conceptlens <command> --help` describes one command.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"conceptlens: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())

"""``benmm experiment``: grids of training runs (models, modalities, label sets, initialisations,
fractions of the training split, seeds) on one base recipe, run one after another, and their results.

    from benmm.train.experiment import load_grid, run_experiment, summarize
    grid = load_grid("demo-pretraining")             # a shipped grid, or a path to a .toml file
    outcomes = run_experiment(grid, "exp/")          # exp/runs/<run>/ = a `benmm train` + evaluate folder
    summary = summarize(grid, Path("exp/"))          # results.md/.csv, classes.md/.csv, plots
"""

from benmm.train.experiment.grid import AXES, Grid, GridError, Run, list_grids, load_grid
from benmm.train.experiment.plan import PlannedRun, plan
from benmm.train.experiment.results import collect, summarize
from benmm.train.experiment.runner import RULE_43_TO_19, RunOutcome, run_experiment, score_on_19

__all__ = ["AXES", "RULE_43_TO_19", "Grid", "GridError", "PlannedRun", "Run", "RunOutcome", "collect",
           "list_grids", "load_grid", "plan", "run_experiment", "score_on_19", "summarize"]

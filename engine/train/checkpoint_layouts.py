"""The layouts of a checkpoint, by number: the current one, and how a checkpoint of an older one becomes it.

A change to what a checkpoint or a run's state (`loop.Run.state_dict`) holds bumps `LAYOUT` and adds to
`UPGRADES` the step from the layout before it, so that a job an older worker checkpointed resumes.
"""

LAYOUT = 3  # a checkpoint says its layout; one of layout 1 did not


def upgraded(saved: dict, layout: int) -> dict:
    """The checkpoint `saved`, of `layout` (1 to LAYOUT), in the current layout."""
    for older in range(layout, LAYOUT):
        saved = UPGRADES[older](saved)
    return saved


def from_layout_1(saved: dict) -> dict:
    """Layout 1 kept a run's students, optimizers, schedulers, gradient scalers and loss means in lists side
    by side, and its step beside its epoch and batch; layout 2 keeps one state per learner, and no step."""
    live = saved["live"]
    return saved | {
        "finished": [run_from_layout_1(run) for run in saved["finished"]],
        "live": None if live is None else run_from_layout_1(live),
    }


def run_from_layout_1(run: dict) -> dict:
    """A run's state: a finished run's students and series, or everything to continue it."""
    if "optimizers" not in run:
        return {"learners": run["students"], "series": run["series"]}
    lists = [run["students"], run["optimizers"], run["schedulers"], run["scalers"], run["means"]]
    learners = [
        model_and_objective
        | {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "means": means}
        for model_and_objective, optimizer, scheduler, scaler, means in zip(*lists, strict=True)
    ]
    return {
        "learners": learners,
        "generator": run["generator"],
        "epoch": run["epoch"],
        "order": run["order"],
        "batch": 0 if run["order"] is None else run["batch"],  # between epochs, layout 1 kept the last's
        "series": run["series"],
    }


def from_layout_2(saved: dict) -> dict:
    """Layout 3 adds what a job keeps of its own besides its runs (`JobCheckpoints.keep`)."""
    return saved | {"kept": {}}


UPGRADES = {1: from_layout_1, 2: from_layout_2}  # each layout's step to the next

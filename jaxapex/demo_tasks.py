"""The tasks ``jaxapex demo`` can run; free of heavy imports so that the command line can list them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class DemoTask:
    """What the demo needs to know about one task: how to run its recipe and how to name it."""

    run: Callable[..., Any]  # a jaxapex.tasks runner: (quick, seed, block_size, config, log) -> TaskRun
    describe: str  # the log line while it trains
    model_id: str


def _run_characters(**kwargs):
    from . import tasks

    return tasks.run_characters_task(**kwargs)


def _run_digits(**kwargs):
    from . import tasks

    return tasks.run_vision_task(**kwargs)


DEMO_TASKS: dict[str, DemoTask] = {
    "characters": DemoTask(
        run=_run_characters,
        describe="characters task: MNIST + printed capitals, personalized on handwriting fonts",
        model_id="characters-vit",
    ),
    "digits": DemoTask(
        run=_run_digits,
        describe="8x8 digits task, embedded scikit-learn data",
        model_id="digits-vit",
    ),
}
DEFAULT_TASK = "digits"

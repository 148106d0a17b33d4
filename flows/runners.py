"""What the scale-out stages (summarize, build_dataset) share: their default task runner and the
map-then-collect loop over one mapped task.

The loop hands each result to the flow as it finishes (so the flow can cache it at once, in its own
thread), lets every task finish even after one fails (what finished is kept; a retry of the stage
redoes only the rest), and returns the results in the order of the inputs, so what the flow writes
does not depend on which worker finished first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from prefect import Task
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

# Threads of the default runner: a backend that holds a model takes its batches in turn anyway,
# and a shard task reads its images with threads of its own; more threads would only hold more
# batches in memory at once.
DEFAULT_THREADS = max(2, min(4, os.cpu_count() or 1))


def default_task_runner() -> ThreadPoolTaskRunner:
    return ThreadPoolTaskRunner(max_workers=DEFAULT_THREADS)


def map_in_order(task: Task, items: Sequence[Any], *fixed: Any,
                 on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """Run `task(*fixed, item)` for every item; results in the order of `items`.

    `on_result` sees each result as it finishes, in the calling thread. When tasks fail, the
    others still run to the end, then the first error is raised.
    """
    if not items:
        return []
    futures = task.map(*(unmapped(value) for value in fixed), list(items))
    position = {future.task_run_id: i for i, future in enumerate(futures)}
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    for future in as_completed(futures):
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - the others still finish (and are kept) first
            errors.append(err)
            continue
        if on_result is not None:
            on_result(result)
        results[position[future.task_run_id]] = result
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(futures))]


class ProgressLog:
    """A log line per tenth of the work done (and at the end), not one per task."""

    def __init__(self, logger: Any, total: int, message: str):
        self.logger, self.total, self.message = logger, total, message
        self.done = 0
        self._tenth = 0

    def add(self, amount: int = 1) -> None:
        self.done += amount
        tenth = 10 * self.done // max(1, self.total)
        if tenth != self._tenth or self.done >= self.total:
            self._tenth = tenth
            self.logger.info(self.message, self.done, self.total, 100 * self.done // max(1, self.total))

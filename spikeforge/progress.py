"""The progress bar shared by long-running host and simulation jobs (``rich``, imported lazily)."""

from __future__ import annotations

__all__ = ["progress_bar"]


def progress_bar(enabled, total, label):
    """A started ``rich`` progress bar with one task (``bar.task``), or ``None``.

    Parameters
    ----------
    enabled : bool
        ``False``: return ``None`` (callers skip their updates).
    total : int or None
        Units of work (``None``: unknown, an indeterminate bar).
    label : str
        The task's description.

    The bar is transient (erased when stopped): callers call ``bar.update(bar.task,
    advance=n)`` and, in a ``finally``, ``bar.stop()``.
    """
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    prog = Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                    console=None)
    prog.start()
    prog.task = prog.add_task(label, total=total)
    return prog

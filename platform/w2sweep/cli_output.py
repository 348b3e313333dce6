"""What the CLI prints at the end of a run and for warnings: one line per thing, never a traceback."""

from __future__ import annotations

import sys

from w2sweep.config_checks import one_line


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one stderr line, ``warning: <message>``, instead of Python's two (with source)."""
    print(f"warning: {one_line(str(message))}", file=sys.stderr if file is None else file)


def print_run_summary(sweep: str, report, storage) -> None:
    """What `w2sweep run` did: cells finished, skipped and failed; each failure on stderr, one line."""
    print(f"{sweep}: {report.num_done} cells finished, {report.num_skipped} already done, "
          f"{len(report.failed)} failed (of {report.num_cells})")
    if getattr(report, "num_grid", 0):  # search: adaptive
        print(f"  adaptive search: {report.num_cells} of the grid's {report.num_grid} cells chosen, "
              f"{report.num_rounds} rounds trained")
    for cell_id, message in sorted(report.failed.items()):
        print(f"  failed {cell_id}: {message}", file=sys.stderr)
    if report.failed:
        print(f"  their axes and errors: w2sweep status --failed {storage.url(sweep)}", file=sys.stderr)


def frontier_failure(e: Exception, report) -> str:
    """The one line `w2sweep run` ends with when the frontier step fails after the cells ran."""
    if report.num_done + report.num_skipped == 0 and len(report.failed) == report.num_cells:
        return f"frontier not written: every cell failed ({report.num_cells} of {report.num_cells}), so none has a result"
    return one_line(f"frontier error: {type(e).__name__}: {e}")

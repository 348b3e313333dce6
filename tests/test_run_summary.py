"""`w2sweep run`'s ending, with the runner stood in for (`run_sweep` monkeypatched in-process): its
summary always prints, a frontier step that fails after the cells ran is one line and exit 1, and the
frontier files print as URIs ready to paste."""

import pytest

import w2sweep.frontier
import w2sweep.sweep
from conftest import tiny_config
from w2sweep.cli import main
from w2sweep.config import parse_config
from w2sweep.grid import expand_cells
from w2sweep.storage import S3Storage


def _stand_in_runner(monkeypatch, config: dict, *, num_failed: int | None = None):
    """`run_sweep` replaced by one that fails `num_failed` cells (default all) and finishes the rest."""
    ids = [c.cell_id for c in expand_cells(parse_config(config))]
    num_failed = len(ids) if num_failed is None else num_failed

    def run_sweep(resolved, **options):  # retry_failed=...: the CLI passes its flags through
        return w2sweep.sweep.SweepReport(
            num_cells=len(ids), num_skipped=0, num_done=len(ids) - num_failed,
            failed={i: "RuntimeError: CUDA out of memory" for i in ids[:num_failed]})

    monkeypatch.setattr(w2sweep.sweep, "run_sweep", run_sweep)
    monkeypatch.setattr(w2sweep.sweep, "shut_down", lambda: None)
    return ids


def test_a_run_in_which_every_cell_fails_prints_its_summary_and_exits_1(monkeypatch, tmp_path, write_config,
                                                                        capsys):
    config = tiny_config(str(tmp_path / "out"))
    ids = _stand_in_runner(monkeypatch, config)
    assert main(["run", str(write_config(config))]) == 1  # the real frontier step finds no results
    out, err = capsys.readouterr()
    assert f"tiny: 0 cells finished, 0 already done, {len(ids)} failed (of {len(ids)})" in out
    assert "Traceback" not in out + err
    lines = err.rstrip().splitlines()
    assert sum(line.startswith("  failed ") for line in lines) == len(ids)
    assert lines[-2] == f"  their axes and errors: w2sweep status --failed {tmp_path / 'out' / 'tiny'}"
    assert lines[-1] == f"frontier not written: every cell failed ({len(ids)} of {len(ids)}), so none has a result"


def test_a_frontier_step_that_breaks_after_cells_ran_is_one_line_and_exit_1(monkeypatch, tmp_path,
                                                                           write_config, capsys):
    config = tiny_config(str(tmp_path / "out"))
    _stand_in_runner(monkeypatch, config, num_failed=0)

    def broken(*args, **kwargs):
        raise KeyError("curves\nwith a second line")

    monkeypatch.setattr(w2sweep.frontier, "write_frontier", broken)
    assert main(["run", str(write_config(config))]) == 1
    out, err = capsys.readouterr()
    assert "tiny: 6 cells finished, 0 already done, 0 failed (of 6)" in out
    assert err.strip().splitlines() == ["frontier error: KeyError: 'curves\\nwith a second line'"]


@pytest.mark.parametrize("storage", ["local", "s3://w2s-bucket/team/sweeps"])
def test_run_prints_the_frontier_files_as_uris_to_paste(monkeypatch, tmp_path, write_config, capsys, storage):
    root = str(tmp_path / "out") if storage == "local" else storage
    config = tiny_config(root)
    _stand_in_runner(monkeypatch, config, num_failed=1)
    monkeypatch.setattr(S3Storage, "check", lambda self: None)  # no S3 endpoint here: nothing is read or written
    monkeypatch.setattr(w2sweep.frontier, "write_frontier", lambda storage, sweep, tolerance: dict(
        keys=[f"{sweep}/frontier/frontier.csv", f"{sweep}/frontier/report.html"], no_signal=[]))
    assert main(["run", str(write_config(config))]) == 1  # one cell failed
    out, err = capsys.readouterr()
    listed = out.split("frontier written:\n")[1].split()
    assert listed == [f"{root}/tiny/frontier/frontier.csv", f"{root}/tiny/frontier/report.html"]
    assert f"w2sweep status --failed {root}/tiny" in err

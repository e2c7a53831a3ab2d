"""The console's pieces without a browser: the run lock, the Bradley-Terry leaderboard, the preference rows, the
trigger's body checks, the login redirect target and the CLI command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata import runlock
from strata.cli import main
from strata.console import arena, auth, training
from strata.serve.errors import ApiError


def test_run_lock_is_exclusive_released_with_its_fd_and_inherited_by_run_id(tmp_path: Path, monkeypatch):
    runs = tmp_path / "runs"
    assert runlock.active(runs) is None
    fd, info = runlock.acquire(runs, "strata build all")
    assert runlock.active(runs)["run_id"] == info["run_id"]
    with pytest.raises(runlock.RunActive, match=info["run_id"]):
        runlock.acquire(runs, "console trigger")
    monkeypatch.setenv(runlock.RUN_ID_ENV, info["run_id"])  # the runner's child: the parent's lock and id
    with runlock.hold(runs, "strata build all") as run_id:
        assert run_id == info["run_id"]
    monkeypatch.setenv(runlock.RUN_ID_ENV, "someone-else")
    with pytest.raises(runlock.RunActive):
        with runlock.hold(runs, "strata build all"):
            pass
    os.close(fd)
    assert runlock.active(runs) is None
    with runlock.hold(runs, "strata build all") as run_id:
        assert run_id != info["run_id"] and runlock.active(runs)["run_id"] == run_id


def test_bradley_terry_orders_by_wins_with_intervals_and_counts():
    rows = [{"a_label": "alpha@1", "b_label": "base", "vote": "A", "topic": "leases"}] * 8 + \
           [{"a_label": "alpha@1", "b_label": "base", "vote": "B", "topic": "leases"}] * 2 + \
           [{"a_label": "beta@1", "b_label": "base", "vote": "tie", "topic": "revenue"}] * 4
    board = arena.leaderboard(rows)
    assert list(board) == ["all topics", "leases", "revenue"]
    leases = {r["name"]: r for r in board["leases"]}
    assert leases["alpha@1"]["rating"] > 1000 > leases["base"]["rating"]
    assert leases["alpha@1"]["votes"] == 10 and leases["alpha@1"]["wins"] == 8
    assert all(r["low"] <= r["rating"] <= r["high"] for r in board["all topics"])
    revenue = {r["name"]: r["rating"] for r in board["revenue"]}
    assert revenue["beta@1"] == pytest.approx(revenue["base"], abs=1)  # ties only: equal strength


def test_preferences_keep_only_decisive_votes_with_winner_as_chosen():
    base = {"id": 1, "prompt": "p", "topic": "t", "a_label": "alpha@1", "b_label": "base", "a_output": "good",
            "b_output": "bad", "voted": "now"}
    rows = [base | {"vote": "A"}, base | {"id": 2, "vote": "B"}, base | {"id": 3, "vote": "tie"},
            base | {"id": 4, "vote": "bad"}]
    out = list(arena.preferences(rows))
    assert [(r["chosen"], r["rejected"], r["chosen_adapters"]) for r in out] == \
        [("good", "bad", "alpha@1"), ("bad", "good", "base")]


@pytest.mark.parametrize("body, problem", [({"stage": "rm -rf"}, "is not one the console starts"),
                                           ({"stage": "merge_level", "max_steps": 3}, "applies only to"),
                                           ({"stage": "train_all", "max_steps": -1}, "positive integer")])
def test_trigger_body_errors_name_the_problem(body, problem):
    with pytest.raises(ApiError, match=problem) as raised:
        training.command_for(body)
    assert raised.value.status == 400


def test_trigger_arguments():
    assert training.command_for({"stage": "train_level2", "max_steps": 5}) == \
        ("train_level2", ["train", "--level", "2", "--max-steps", "5"])
    assert training.command_for({}) == ("train_all", ["all"])


@pytest.mark.parametrize("target, safe", [("/arena", "/arena"), ("//evil.example/x", "/"), ("https://evil", "/"),
                                          ("/\\evil", "/"), (None, "/")])
def test_login_redirect_stays_on_this_site(target, safe):
    assert auth.safe_next(target) == safe


def test_cli_console_help():
    result = CliRunner().invoke(main, ["console", "--help"])
    assert result.exit_code == 0 and "--server" in result.output and "409" in result.output
    assert "console" in CliRunner().invoke(main, ["--help"]).output


def test_runs_history_comes_from_train_all_manifests_and_the_lock(tmp_path: Path):
    from strata.pipeline import Options, Stage, run_stages
    from strata.settings import Settings

    settings = Settings.resolve(workspace=tmp_path / "ws")
    # the dataset stage's result as strata.pipeline writes it: build_dataset's per-topic counts
    counts = {"ASC_Leases": {"train": 4, "val": 1}, "ASC_Revenue_Recognition": {"train": 3, "val": 1}}
    dataset = Stage("dataset", lambda s, o, e: {"counts": counts}, ())
    done = run_stages(settings, [dataset], Options(), echo=lambda line: None)

    def broken(s, o, e):
        raise RuntimeError("the base model is missing\nsecond line")

    with pytest.raises(Exception, match="stage level1 failed"):
        run_stages(settings, [Stage("level1", broken, ())], Options(), echo=lambda line: None)
    rows = {r["id"]: r for r in training.runs(settings.runs)["runs"]}
    assert rows[done["run_id"]]["status"] == "ok" and rows[done["run_id"]]["samples"] == 7
    failed = next(r for r in rows.values() if r["id"] != done["run_id"])
    assert failed["status"] == "failed" and "the base model is missing" in failed["error"]
    stale = settings.runs / "20260101T000000000000Z"  # a manifest left "running" by a process that died
    stale.mkdir()
    (stale / "manifest.json").write_text('{"run_id": "x", "status": "running", "stages": []}')
    assert {r["id"]: r for r in training.runs(settings.runs)["runs"]}[stale.name]["error"] == training.DIED


def test_serve_with_the_console_imports_no_build_stack(tmp_path: Path):
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from strata.serve.config import ServeConfig; "
            "from strata.serve.app import create_app; "
            f"app = create_app(ServeConfig(model=Path('m.gguf'), workspace=Path({str(tmp_path)!r}))); "
            "assert any(getattr(r, 'path', '') == '/training' for r in app.router.routes); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_build_stage_typed_by_hand_takes_the_run_lock(tmp_path: Path, monkeypatch):
    """A stage run in a terminal meets another run's lock with one line naming it, holds the lock itself while it
    runs (so a console trigger gets the 409), and lets torchrun's other ranks through."""
    from click.testing import CliRunner

    from strata.cli import main
    from strata.data import archive

    ws = tmp_path / "ws"
    runs = ws / "runs"
    fd, info = runlock.acquire(runs, "strata build all")
    try:
        for args in (["pdf-pretest"], ["dataset"], ["synthesize"], ["index"], ["train_level1"], ["merge"],
                     ["convert"], ["archive"]):
            result = CliRunner().invoke(main, ["build", *args, "--workspace", str(ws)])
            assert result.exit_code == 1 and f"run {info['run_id']} (strata build all" in result.output, result.output
        seen = []
        monkeypatch.setattr(archive, "archive_pdfs", lambda settings: seen.append(runlock.active(runs)) or
                            {"moved": [], "skipped": [], "archive": "-", "record": "-"})
        monkeypatch.setenv("RANK", "1")  # a torchrun rank other than 0: rank 0 holds the lock for the run
        assert CliRunner().invoke(main, ["build", "archive", "--workspace", str(ws)]).exit_code == 0
        assert seen == [info]
    finally:
        os.close(fd)
    monkeypatch.delenv("RANK")
    result = CliRunner().invoke(main, ["build", "archive", "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    assert seen[1]["command"] == "strata build archive" and seen[1]["pid"] == os.getpid()
    assert runlock.active(runs) is None and runlock.RUN_ID_ENV not in os.environ  # released, nothing left behind

"""`strata demo`: the whole chain on the embedded tiny model."""

from __future__ import annotations

from pathlib import Path

import click

from strata.cli.common import friendly_errors


@click.command()
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-workspace"),
              show_default=True, help="Isolated workspace for the demo (created; reused on re-runs).")
@friendly_errors
def demo(workspace: Path) -> None:
    """Sample PDFs -> tiny base -> train_all -> serve -> QA, printing each stage and the report path."""
    from strata.demo import run_demo

    run_demo(workspace, echo=click.echo)
    ws = workspace.absolute()
    click.echo(f"web console: strata serve --workspace {ws} --model {ws / 'models' / 'strata.Q4_K_M.gguf'}\n"
               "  then open http://127.0.0.1:5000/ to apply, blend, compare, vote and read the leaderboard")

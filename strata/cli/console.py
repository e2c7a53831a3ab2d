"""`strata console`: the web console on its own (training runs of a workspace; engine pages via --server)."""

from __future__ import annotations

import click

from strata.cli.common import friendly_errors, workspace_option
from strata.settings import Settings


@click.command("console")
@click.option("--server", default=None, metavar="URL", help="strata server the Adapters, Playground, Compare, "
              "Arena and Status pages talk to (e.g. http://127.0.0.1:5000); without it only Training runs and QA "
              "reports work.")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to bind (0.0.0.0 for all).")
@click.option("--port", default=8080, show_default=True, type=int, help="port of the console.")
@click.option("--api-key", envvar="API_KEY", default=None, help="require this key (login form or `Authorization: "
              "Bearer KEY`) for every page and console API; also sent to --server (env API_KEY).")
@click.option("--server-key", default=None, help="the server's key when it differs from --api-key.")
@click.option("--adapter-root", "adapter_roots", multiple=True, type=click.Path(file_okay=False),
              help="extra folder whose adapters the Adapters page lists (repeat); the workspace always is.")
@click.option("--max-lora-scale", default=8.0, show_default=True, type=float, help="slider range (±), as the "
              "server's --max-lora-scale.")
@workspace_option
@friendly_errors
def console(settings: Settings, server: str | None, host: str, port: int, api_key: str | None, server_key: str | None,
            adapter_roots: tuple[str, ...], max_lora_scale: float) -> None:
    """Run the web console alone, e.g. on a build pod: start training runs (one per workspace, 409 while one is
    active, the same lock a terminal `strata build all` takes), follow their logs, read QA reports.

    \b
    strata console --workspace /workspace --host 0.0.0.0 --port 8080
    strata console --workspace /workspace --server http://127.0.0.1:5000
    """
    import uvicorn

    from strata.console.app import standalone

    settings.ensure_skeleton()
    app = standalone(settings.workspace, server, api_key, server_key, max_lora_scale, list(adapter_roots))
    click.echo(f"strata console on http://{host}:{port}/ (workspace {settings.workspace}"
               f"{', server ' + server if server else ''})")
    uvicorn.run(app, host=host, port=port, log_level="warning")

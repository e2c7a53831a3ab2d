"""Shared CLI plumbing: snake_case aliases, the --workspace option, and friendly errors."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from strata.errors import StrataError
from strata.settings import Settings


class AliasGroup(click.Group):
    """A group whose commands answer to kebab-case and snake_case names, plus aliases that expand to a
    command line (e.g. the seed's `train_level2` -> `train --level 2`)."""

    def __init__(self, *args: Any, aliases: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = dict(aliases or {})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or super().get_command(ctx, cmd_name.replace("_", "-"))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in self.aliases:
            args = self.aliases[args[0]].split() + args[1:]
        _, command, rest = super().resolve_command(ctx, args)
        return (command.name if command else None), command, rest

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.aliases:
            with formatter.section("Aliases (seed 003 names)"):
                formatter.write_dl(sorted(self.aliases.items()))


def workspace_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --workspace (env WORKSPACE) and hand the command a resolved `settings`."""

    @click.option(
        "--workspace",
        type=click.Path(file_okay=False),
        default=None,
        help="Workspace root (env WORKSPACE, default ./workspace). Every stage reads and writes under it.",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, workspace: str | None, **kwargs: Any) -> Any:
        try:
            settings = Settings.resolve(workspace=workspace)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return func(*args, settings=settings, **kwargs)

    return wrapper


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a StrataError into `Error: <message>` and exit code 1 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StrataError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def run_locked(func: Callable[..., Any]) -> Callable[..., Any]:
    """Hold the workspace's run lock (strata/runlock.py) while a build stage typed by hand runs, so a console
    trigger meets a 409 and a second terminal run an error naming the first; a dry run takes none."""

    @functools.wraps(func)
    def wrapper(*args: Any, settings: Settings, **kwargs: Any) -> Any:
        if kwargs.get("dry_run"):
            return func(*args, settings=settings, **kwargs)
        from strata import runlock

        with runlock.hold(settings.runs, f"strata build {click.get_current_context().info_name}"):
            return func(*args, settings=settings, **kwargs)

    return wrapper


def teacher_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--generator / --teacher-url / --teacher-model for the question/answer synthesis (synthesize and all)."""
    options = [
        click.option("--generator", type=click.Choice(["auto", "extractive", "llm"]), default=None,
                     help="Question/answer generator. extractive: from the text's own structure, no model. llm: ask a "
                          "teacher model. Default: presets/synthesis.yaml (auto = llm when a teacher URL is set)."),
        click.option("--teacher-url", envvar="STRATA_TEACHER_URL", default=None,
                     help="OpenAI-compatible base URL of the teacher (env STRATA_TEACHER_URL; API key from "
                          "STRATA_TEACHER_API_KEY). Without it, --generator llm serves the base model as GGUF in "
                          "this process."),
        click.option("--teacher-model", default=None,
                     help="Model name sent to --teacher-url; for the in-process teacher a GGUF path (default: the "
                          "base converted once to models/teacher-<fingerprint>.F16.gguf)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def teacher_of(teacher_url: str | None, teacher_model: str | None) -> dict[str, Any]:
    """The synthesis options as run_all / Teacher take them (a local --teacher-model is a GGUF path)."""
    from pathlib import Path

    local = teacher_url is None and teacher_model is not None
    return {"teacher_url": teacher_url, "teacher_model": str(Path(teacher_model).resolve()) if local else teacher_model}

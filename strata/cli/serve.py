"""`strata serve`: the OpenAI-compatible llama.cpp server with /lora-adapters (flags parsed by strata.serve.config)."""

from __future__ import annotations

import sys

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Serve a GGUF with hot-swappable LoRA adapters (`strata serve --help` lists the flags).

    \b
    strata serve --model M.gguf --lora DIR --host 0.0.0.0 --port 5000 --n_ctx 2048 --n_threads 8 \\
      --chat_format mistral-instruct --flash_attn False
    """
    from strata.serve.__main__ import main

    code = main(list(args), prog="strata serve")
    if code:
        sys.exit(code)

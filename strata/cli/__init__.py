"""The `strata` command: one noun group per part; heavy imports stay inside the commands."""

from __future__ import annotations

import click

from strata.cli.build import build
from strata.cli.common import AliasGroup
from strata.cli.console import console
from strata.cli.demo import demo
from strata.cli.kit import kit
from strata.cli.qa import qa
from strata.cli.release import release
from strata.cli.serve import serve


@click.group(cls=AliasGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="strata")
def main() -> None:
    """strata: turn a folder of PDFs into layered LoRA adapters and a quantized GGUF,
    then serve them with llama.cpp and hot-swap adapters at runtime.

    \b
    Typical flow:
      strata build train_all            # PDFs -> adapters -> merged -> Q4_K_M GGUF
      strata serve --model M.gguf --lora peft/level1
      strata qa --server http://127.0.0.1:5000
      strata release publish --store s3://bucket/strata   # then: strata serve --release NAME@prod
      strata console --server URL       # the web console alone (strata serve has it at /)
      strata demo                       # all of it on a tiny local model
    """


for command in (build, serve, console, qa, release, kit, demo):
    main.add_command(command)

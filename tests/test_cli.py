"""The CLI skeleton: groups, help, seed snake_case aliases, --workspace everywhere."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from strata.cli import main
from strata.cli.common import AliasGroup


def test_root_help_lists_every_group():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for group in ("build", "serve", "qa", "kit", "demo"):
        assert f"  {group} " in result.output


def test_help_is_instant_without_heavy_imports():
    code = "import sys; from strata.cli import main; print(sorted(m for m in ('torch','transformers','peft','llama_cpp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_alias_group_resolves_snake_case_and_expanding_aliases():
    seen = []

    @click.group(cls=AliasGroup, aliases={"train_level2": "train-model --level 2"})
    def group():
        pass

    @group.command("train-model")
    @click.option("--level", type=int)
    @click.option("--dry-run", is_flag=True)
    def train_model(level, dry_run):
        seen.append((level, dry_run))

    runner = CliRunner()
    assert runner.invoke(group, ["train_model", "--level", "1"]).exit_code == 0
    assert runner.invoke(group, ["train_level2", "--dry-run"]).exit_code == 0
    assert seen == [(1, False), (2, True)]
    result = runner.invoke(group, ["nope"])
    assert result.exit_code == 2 and "No such command" in result.output


def test_kit_snake_case_alias():
    kit = main.get_command(click.Context(main), "kit")
    assert kit.get_command(click.Context(kit), "sample_pdfs") is kit.get_command(click.Context(kit), "sample-pdfs")


def test_build_help_names_seed_aliases():
    result = CliRunner().invoke(main, ["build", "--help"])
    assert result.exit_code == 0
    assert "train_all" in result.output and "train_level2" in result.output


def test_every_leaf_command_takes_workspace():
    def leaves(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from leaves(sub, path + [name])
        else:
            yield path, command

    for path, command in leaves(main, []):
        result = CliRunner().invoke(main, [*path, "--help"])  # serve parses its own (llama_cpp.server) flags
        assert result.exit_code == 0, (path, result.output)
        assert "--workspace" in result.output, f"strata {' '.join(path)} lacks --workspace"


def test_python_dash_m_strata_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "strata", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "build" in done.stdout


def test_every_seed_alias_resolves_to_a_build_command():
    from strata.cli.build import SEED_ALIASES, build

    ctx = click.Context(build)
    for alias, target in SEED_ALIASES.items():
        name, command, rest = build.resolve_command(ctx, [alias, "--help"])
        assert command is not None and name == target.split()[0], alias
        assert rest == target.split()[1:] + ["--help"]
    result = CliRunner().invoke(main, ["build", "train_level2", "--help"])
    assert result.exit_code == 0 and "--per-topic" in result.output


@pytest.mark.parametrize("alias", ["pdf_pretest", "build_dataset", "archive_pdfs", "train_level1", "train_level2",
                                   "train_level3", "merge_level", "convert_to_gguf", "train_all"])
def test_each_seed_alias_help_is_its_commands_help(alias):
    """`strata build <seed alias> --help` exits 0 and prints exactly the help of the command it stands for."""
    from strata.cli.build import SEED_ALIASES

    target = SEED_ALIASES[alias].split()[0]
    got = CliRunner().invoke(main, ["build", alias, "--help"])
    want = CliRunner().invoke(main, ["build", target, "--help"])
    assert got.exit_code == 0 and want.exit_code == 0, got.output
    assert got.output == want.output and "--workspace" in got.output


def test_a_seed_alias_help_through_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "strata", "build", "train_all", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "--levels" in done.stdout and "--nproc" in done.stdout, done.stderr

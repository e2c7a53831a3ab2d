"""The launch line: seed 003's flags, llama-server spellings, env defaults, --help, and the import boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from strata.cli import main
from strata.errors import StrataError
from strata.serve.config import parse_argv

SEED_LINE = ("--model M.gguf --lora /workspace/output/peft/ASC_Financial_Accounting --host 0.0.0.0 --port 5000 "
             "--n_ctx 2048 --n_threads 8 --chat_format mistral-instruct --flash_attn False")


def test_seed_launch_line_parses_exactly(workspace):
    config = parse_argv(SEED_LINE.split())
    assert config.model == workspace.workspace / "M.gguf"
    assert config.loras == [("/workspace/output/peft/ASC_Financial_Accounting", 1.0)]
    assert (config.host, config.port, config.n_ctx, config.n_threads) == ("0.0.0.0", 5000, 2048, 8)
    assert config.chat_format == "mistral-instruct"
    assert config.flash_attn is False and config.logits_all is True and config.lora_init_without_apply is False


def test_llama_server_spellings_and_repeats(tmp_path):
    config = parse_argv(["--model", str(tmp_path / "m.gguf"), "--lora", "a", "--lora-scaled", "b", "0.25",
                         "--lora", "c", "--lora-init-without-apply", "--n-ctx", "512", "--adapter-root", "/x",
                         "--adapter_root", "/y", "--api-key", "k", "--logits_all", "false", "--flash-attn"])
    assert config.loras == [("a", 1.0), ("b", 0.25), ("c", 1.0)]
    assert config.lora_init_without_apply is True and config.flash_attn is True and config.logits_all is False
    assert (config.n_ctx, config.adapter_roots, config.api_key) == (512, ["/x", "/y"], "k")
    assert config.parallel == 4  # slots by default
    assert parse_argv(["-np", "2"]).parallel == parse_argv(["--parallel", "2"]).parallel == 2
    assert config.access_log is False and parse_argv(["--access-log"]).access_log is True
    assert parse_argv(["--access_log", "false"]).access_log is False


def test_env_defaults(tmp_path):
    env = {"WORKSPACE": str(tmp_path), "MODEL_PATH": "models/x.gguf", "N_CTX": "1024", "N_THREADS": "3",
           "API_KEY": "secret"}
    config = parse_argv([], env=env)
    assert config.model == tmp_path / "models" / "x.gguf"
    assert (config.n_ctx, config.n_threads, config.api_key, config.workspace) == (1024, 3, "secret", tmp_path)


@pytest.mark.parametrize("bad", [["--lora-scaled", "a", "nan"], ["--flash_attn", "maybe"], ["--port", "x"],
                                 ["--parallel", "0"], ["-np", "9", "--n_batch", "8"]])
def test_bad_flags_exit_with_usage_error(bad):
    with pytest.raises(SystemExit) as info:
        parse_argv(bad)
    assert info.value.code == 2


def test_missing_model_names_model_path_and_build_stage(tmp_path):
    config = parse_argv(["--model", str(tmp_path / "absent.gguf")])
    with pytest.raises(StrataError, match="MODEL_PATH.*strata build convert"):
        config.check_model()
    result = CliRunner().invoke(main, ["serve", "--model", str(tmp_path / "absent.gguf")])
    assert result.exit_code == 1
    assert "MODEL_PATH" in result.output and "strata build convert" in result.output


def test_module_help_works():
    done = subprocess.run([sys.executable, "-m", "strata.serve", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--lora-scaled" in done.stdout and "--chat-format" in done.stdout and "--api-key" in done.stdout
    assert "-np" in done.stdout and "grows linearly" in " ".join(done.stdout.split())  # --parallel: its KV cost


def test_serve_imports_no_training_stack():
    code = ("import sys, strata.serve.app, strata.serve.server, strata.cli.serve; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft') "
            "or m.startswith(('strata.data', 'strata.train', 'strata.export', 'strata.pipeline'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_engine_flags_parse_and_bad_values_name_the_flag(tmp_path):
    config = parse_argv(["--model", str(tmp_path / "m.gguf"), "--switch-budget", "8", "--max-queue", "3",
                         "--max_loaded_adapters", "2", "-kvu"])
    assert (config.switch_budget, config.max_queue, config.max_loaded_adapters, config.kv_unified) == (8, 3, 2, True)
    defaults = parse_argv(["--model", str(tmp_path / "m.gguf")])
    assert (defaults.switch_budget, defaults.max_queue, defaults.max_loaded_adapters, defaults.kv_unified) == (
        32, 64, 16, False)
    for flags, words in ((["--switch-budget", "0"], "--switch-budget"), (["--max-queue", "0"], "--max-queue"),
                         (["--max-loaded-adapters", "-1"], "--max-loaded-adapters"),
                         (["--max-loaded-adapters", "1", "--lora", "a", "--lora", "b"], "do not fit")):
        with pytest.raises(StrataError, match=words):
            parse_argv(["--model", str(tmp_path / "m.gguf"), *flags])

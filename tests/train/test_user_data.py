"""User datasets: --train-files rows of each shape, a preset's `datasets:`, --dataset-name on a saved HF dataset,
bad rows named by file and line, and user files that no build step overwrites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from strata.cli import main as cli
from strata.errors import StrataError
from strata.train.trainer import train_level

from .conftest import corpus_records

SHAPES = {  # shape -> how a corpus paragraph becomes a user row
    "text": lambda r: {"text": r["text"]},
    "prompt_response": lambda r: {"prompt": r["messages"][0]["content"], "response": r["messages"][1]["content"],
                                  "topic": r["topic"]},
    "messages": lambda r: {"messages": [{"role": "system", "content": "Answer briefly."}, *r["messages"]]},
}
ROWS = 12
TEMPLATE = "### Question:\n{prompt}\n### Answer:\n{response}"


def user_rows(shape: str, n: int = ROWS) -> list[dict]:
    return [SHAPES[shape](r) for r in corpus_records()[:n]]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def summary(folder: Path) -> dict:
    return json.loads((folder / "training_summary.json").read_text())


def fast_preset(fast: dict, **values) -> dict:
    return fast | {"max_steps": 10, "eval_batches": 8, "max_seq_len": 128} | values  # whole chat examples


@pytest.mark.parametrize("shape, fmt", [("text", "text"), ("prompt_response", "text"), ("prompt_response", "chat"),
                                        ("messages", "chat")])
def test_user_rows_of_each_shape_train_a_layer(ws, fast, preset_file, tmp_path, monkeypatch, shape, fmt):
    """`strata build train --train-files 'data/*.jsonl'` (a glob from the current dir) trains on the user's rows
    instead of the PDF dataset: the held-out loss on those same rows falls, and the summary names the files."""
    monkeypatch.chdir(tmp_path)
    rows = user_rows(shape)
    write_jsonl(tmp_path / "data" / "a.jsonl", rows[:8])
    write_jsonl(tmp_path / "data" / "b.jsonl", rows[8:])
    preset = preset_file(fast_preset(fast, format=fmt))
    args = ["build", "train", "--workspace", str(ws.workspace), "--preset", str(preset), "--no-progress",
            "--train-files", "data/*.jsonl", "--val-files", "data/a.jsonl"]
    templated = shape == "prompt_response" and fmt == "text"
    if templated:
        args += ["--prompt-template", TEMPLATE]
    result = CliRunner().invoke(cli, args, env={"N_THREADS": "1", "BASE_MODEL": ws.base_model})
    assert result.exit_code == 0, result.output
    record = summary(ws.peft / "level1")
    data = record["dataset"]
    assert data["records"] == ROWS and data["val_records"] == 8
    assert sorted(data["train_files"]) == [str(tmp_path / "data" / "a.jsonl"), str(tmp_path / "data" / "b.jsonl")]
    assert data["train"] == [{"files": str(tmp_path / "data/*.jsonl")} | ({"prompt_template": TEMPLATE} if templated else {})]
    metrics = record["metrics"]
    assert metrics["steps"] == 10 and metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert (ws.peft / "level1" / "adapter.gguf").stat().st_size > 0
    if shape == "prompt_response":
        assert data["topics"] == sorted({r["topic"] for r in rows})


def test_prompt_template_shapes_the_text_a_text_level_trains_on(ws, tiny_base):
    from strata.train import batches
    from strata.train.trainer import training_tokenizer
    from strata.userdata import Source, load_user_data

    path = write_jsonl(ws.workspace / "user" / "pr.jsonl", user_rows("prompt_response", 3))
    data = load_user_data([Source(files=str(path), prompt_template=TEMPLATE)])
    first = user_rows("prompt_response", 1)[0]
    assert data.records[0]["text"] == TEMPLATE.format(prompt=first["prompt"], response=first["response"])
    assert data.records[0]["messages"][-1] == {"role": "assistant", "content": first["response"]}
    tokenizer = training_tokenizer(tiny_base)
    blocks = batches.build_blocks(data.records, tokenizer, "text", 4096)
    assert tokenizer.decode(blocks[0].input_ids, skip_special_tokens=True).startswith("### Question:\n")
    with pytest.raises(StrataError, match="must contain both"):
        load_user_data([Source(files=str(path), prompt_template="Q: {prompt}")])
    with pytest.raises(StrataError, match="may name only"):
        load_user_data([Source(files=str(path), prompt_template="{prompt} {answer} {response}")])


@pytest.mark.parametrize("line, needle", [
    ({"question": "q", "answer": "a"}, "needs `text`, `prompt` + `response`, or `messages`"
                                       " (a list of {role, content} ending with an assistant turn); found keys "
                                       "['answer', 'question']"),
    ({"prompt": "q"}, "found keys ['prompt']"),
    ({"text": ""}, "`text` must be a non-empty string"),
    ({"messages": [{"role": "user", "content": "q"}]}, "must end with an assistant turn"),
    ({"messages": [{"role": "bot", "content": "q"}]}, "message 1 must be"),
])
def test_a_bad_row_is_a_one_line_error_naming_file_line_and_keys(ws, tmp_path, line, needle):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n\n" + json.dumps(line) + "\n")
    result = CliRunner().invoke(cli, ["build", "train", "--workspace", str(ws.workspace), "--train-files", str(path)],
                                env={"N_THREADS": "1", "BASE_MODEL": ws.base_model})
    assert result.exit_code == 1
    (message,) = result.output.strip().splitlines()
    assert message.startswith(f"Error: {path}:3: ") and needle in message, message
    assert not (ws.peft / "level1").exists()


def test_no_matching_file_says_which_pattern(ws, tmp_path):
    with pytest.raises(StrataError, match=r"--train-files '.*nothing/\*\.jsonl' matched no .jsonl or .json file"):
        train_level(ws, 1, data=[{"files": str(tmp_path / "nothing" / "*.jsonl")}], progress=False)


def test_preset_datasets_train_from_the_workspace(ws, fast, preset_file):
    """A level preset's `datasets:` list (paths relative to the workspace; a JSON array file too) replaces
    data/processed/train.jsonl; a source's `topic` labels its rows and the preset's topics keep them."""
    write_jsonl(ws.workspace / "data" / "user" / "notes.jsonl", user_rows("text", 6))
    (ws.workspace / "data" / "user" / "chat.json").write_text(json.dumps(user_rows("messages", 4)))
    preset = preset_file(fast_preset(fast, max_steps=3, topics=["mine"], datasets=[
        {"files": "data/user/*.jsonl", "topic": "mine"},
        {"files": "data/user/chat.json", "topic": "mine", "max_samples": 3},
        {"files": "data/user/notes.jsonl", "topic": "other"}]))
    (folder,) = train_level(ws, 1, preset=str(preset), progress=False)
    data = summary(folder)["dataset"]
    assert data["records"] == 6 + 3 and data["topics"] == ["mine"]
    assert str(ws.workspace / "data" / "user" / "notes.jsonl") in data["train_files"]
    with pytest.raises(StrataError, match=r"unknown key\(s\) \['path'\]"):
        train_level(ws, 1, preset=str(preset_file(fast | {"datasets": [{"path": "x.jsonl"}]}, "bad.yaml")),
                    progress=False)


def test_dataset_name_loads_a_saved_hf_dataset_and_a_local_data_dir(ws, fast, preset_file, tmp_path, monkeypatch):
    """--dataset-name reads through `datasets`: a DatasetDict written by save_to_disk (its split chosen with
    --dataset-split) and a plain folder of JSONL files; nothing is downloaded."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    rows = user_rows("prompt_response", 10)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:7]),
                          "extra": datasets.Dataset.from_list(rows[7:])}).save_to_disk(str(tmp_path / "saved"))
    preset = preset_file(fast_preset(fast, max_steps=2, format="chat"))
    base = ["build", "train", "--workspace", str(ws.workspace), "--preset", str(preset), "--no-progress"]
    env = {"N_THREADS": "1", "BASE_MODEL": ws.base_model}
    result = CliRunner().invoke(cli, base + ["--dataset-name", str(tmp_path / "saved"), "--dataset-split", "extra"],
                                env=env)
    assert result.exit_code == 0, result.output
    data = summary(ws.peft / "level1")["dataset"]
    assert data["records"] == 3 and data["train"][0] == {"name": str(tmp_path / "saved"), "split": "extra"}

    write_jsonl(tmp_path / "folder" / "part-0.jsonl", user_rows("messages", 5))
    result = CliRunner().invoke(cli, base + ["--dataset-name", str(tmp_path / "folder")], env=env)
    assert result.exit_code == 0, result.output
    assert summary(ws.peft / "level1")["dataset"]["records"] == 5

    missing = CliRunner().invoke(cli, base + ["--dataset-name", str(tmp_path / "saved"), "--dataset-split", "test"],
                                 env=env)
    assert missing.exit_code == 1 and "has no split 'test'; it has ['extra', 'train']" in missing.output
    write_jsonl(tmp_path / "texts" / "part-0.jsonl", user_rows("text", 2))
    texts = CliRunner().invoke(cli, base + ["--dataset-name", str(tmp_path / "texts")], env=env)
    assert texts.exit_code == 1 and "row 1: a `format: chat` level trains on `messages`" in texts.output


def test_the_dataset_step_never_overwrites_a_users_train_jsonl(ws):
    """A train.jsonl that `strata build dataset` did not write is the user's: the step refuses, the file stays."""
    from strata.data.dataset import build_dataset

    mine = ws.train_jsonl.read_bytes()
    with pytest.raises(StrataError, match="not written by `strata build dataset`.*never overwrites user files"):
        build_dataset(ws)
    assert ws.train_jsonl.read_bytes() == mine


def test_build_all_refuses_user_files_where_a_stage_writes(ws, monkeypatch):
    from strata.pipeline import run_all

    monkeypatch.setenv("BASE_MODEL", ws.base_model)
    with pytest.raises(StrataError, match=r"is your training data but `strata build all` writes .*\(train\)"):
        run_all(ws, levels=(1,), train_overrides={"data": [{"files": str(ws.train_jsonl)}]}, progress=False,
                echo=lambda line: None)
    assert not list(ws.runs.iterdir())  # refused before any stage ran

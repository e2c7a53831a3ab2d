"""User training rows (`text` | `prompt` + `response` | `messages`) from JSONL/JSON files or a Hugging Face dataset;
shared by the build rooms (train levels, soft prompts) and the pipeline, so it lives outside them."""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from strata.errors import StrataError
from strata.files import numbered_jsonl, sha256_file

SHAPES = "`text`, `prompt` + `response`, or `messages` (a list of {role, content} ending with an assistant turn)"
DEFAULT_TEMPLATE = "{prompt}\n\n{response}"
ROLES = ("system", "user", "assistant")
FILE_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class Source:
    """Where user rows come from: one entry of a level preset's `datasets:` list, or the CLI's --train-files /
    --dataset-name. `files` is a path or glob (preset: relative to the workspace; CLI: to the current dir);
    `name` is a dataset dir saved with `save_to_disk`, a local folder of data files, or a hub id already in the
    local Hugging Face cache. `prompt_template` joins `prompt` + `response` into the text a `format: text` level
    trains on; `topic` labels rows that carry none; `max_samples` caps this source."""

    files: str | None = None
    name: str | None = None
    split: str = "train"
    config: str | None = None
    prompt_template: str | None = None
    topic: str | None = None
    max_samples: int | None = None


@dataclass(frozen=True)
class UserData:
    """Rows read from every source as dataset records, the files they came from, and a hash of the rows."""

    records: list[dict[str, Any]]
    files: list[Path]
    sources: list[dict[str, Any]]
    sha256: str


def source_from(entry: str | dict[str, Any], where: str = "preset datasets:") -> Source:
    """A preset `datasets:` entry (a glob string, or a mapping of Source fields) as a Source; unknown keys named."""
    from strata.presets import from_mapping

    if isinstance(entry, str):
        return Source(files=entry)
    if not isinstance(entry, dict):
        raise StrataError(f"{where} entries are a path/glob or a mapping like {{files: data/*.jsonl}}, got {entry!r}")
    source = from_mapping(Source, entry, source=where)
    if (source.files is None) == (source.name is None):
        raise StrataError(f"{where} entry {entry!r} needs exactly one of `files` (a path or glob) or `name` (a "
                          "Hugging Face dataset dir or cached id)")
    return source


def check_template(template: str) -> str:
    """A prompt template must use {prompt} and {response} and nothing else (literal braces doubled: {{ }})."""
    try:
        template.format(prompt="", response="")
    except (KeyError, IndexError, ValueError) as exc:
        raise StrataError(f"--prompt-template {template!r} is not usable ({type(exc).__name__}: {exc}); it may "
                          "name only {prompt} and {response}, with literal braces written {{ and }}") from None
    if "{prompt}" not in template or "{response}" not in template:
        raise StrataError(f"--prompt-template {template!r} must contain both {{prompt}} and {{response}}")
    return template


def to_record(row: dict[str, Any], where: str, template: str | None = None,
              topic: str | None = None) -> dict[str, Any]:
    """One user row as a dataset record with `text` and/or `messages` (what strata/train/batches.py packs).
    A row with none of the shapes, or a shape with the wrong types, raises a one-line error naming `where`."""
    messages, text = row.get("messages"), row.get("text")
    if messages is None and "prompt" in row and "response" in row:
        prompt, response = row["prompt"], row["response"]
        for key, value in (("prompt", prompt), ("response", response)):
            if not isinstance(value, str) or not value.strip():
                raise StrataError(f"{where}: `{key}` must be a non-empty string, got {_short(value)}")
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if text is None:
            text = (template or DEFAULT_TEMPLATE).format(prompt=prompt, response=response)
    if messages is None and text is None:
        raise StrataError(f"{where}: a training row needs {SHAPES}; found keys {sorted(row)}")
    record: dict[str, Any] = {"id": where}
    if messages is not None:
        record["messages"] = _checked_messages(messages, where)
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise StrataError(f"{where}: `text` must be a non-empty string, got {_short(text)}")
        record["text"] = text
    elif messages is not None:  # a text level reads a conversation as its turns' text
        record["text"] = "\n\n".join(m["content"] for m in record["messages"])
    label = row.get("topic", topic)
    if label is not None:
        if not isinstance(label, str) or not label.strip():
            raise StrataError(f"{where}: `topic` must be a non-empty string, got {_short(label)}")
        record["topic"] = label
    return record


def _checked_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise StrataError(f"{where}: `messages` must be a non-empty list of {{role, content}}, got {_short(messages)}")
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise StrataError(f"{where}: message {number} must be {{\"role\": one of {list(ROLES)}, \"content\": "
                              f"a string}}, got {_short(message)}")
    if messages[-1]["role"] != "assistant":
        raise StrataError(f"{where}: `messages` must end with an assistant turn (the reply to learn), "
                          f"ends with {messages[-1]['role']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def expand(pattern: str, root: Path | None = None) -> list[Path]:
    """The .jsonl/.json files a path or glob names (`**` recurses), sorted; none is an error naming the pattern."""
    full = Path(pattern).expanduser()
    if root is not None and not full.is_absolute():
        full = root / full
    found = sorted(Path(p) for p in glob.glob(str(full), recursive=True))
    files = [p for p in found if p.is_file() and p.suffix in FILE_SUFFIXES]
    if not files:
        where = f" (under {root})" if root is not None and not Path(pattern).is_absolute() else ""
        raise StrataError(f"--train-files {pattern!r}{where} matched no .jsonl or .json file"
                          + (f"; it matched {[p.name for p in found][:5]}" if found else ""))
    return files


def file_rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    """(`file:line` or `file[index]`, row) for every object of a .jsonl file or of a .json file's top-level list."""
    hint = f"fix that line; each row is a JSON object with {SHAPES}"
    if path.suffix == ".jsonl":
        yield from ((f"{path}:{number}", row) for number, row in numbered_jsonl(path, hint))
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StrataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); {hint}") from None
    rows = data if isinstance(data, list) else [data]
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise StrataError(f"{path}[{index}] must be a JSON object, got {type(row).__name__}; {hint}")
        yield f"{path}[{index}]", row


def dataset_rows(name: str, split: str = "train", config: str | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
    """(`dataset NAME[split] row N`, row) from a Hugging Face dataset: a dir written by `save_to_disk`, a local
    folder of data files, or a hub id in the local cache (set HF_DATASETS_OFFLINE=1 where there is no network)."""
    try:
        import datasets
    except ImportError:
        raise StrataError("--dataset-name needs the `datasets` package: pip install 'strata[build]'") from None
    path = Path(name).expanduser()
    saved = path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
    try:
        data = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs the message, not the type
        raise StrataError(f"--dataset-name {name!r} could not be loaded ({type(exc).__name__}: {exc}). Nothing is "
                          "downloaded at train time: pass a dir saved with Dataset.save_to_disk, a folder of "
                          "jsonl/json/csv/parquet files, or a hub id already in the Hugging Face cache.") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise StrataError(f"--dataset-name {name!r} has no split {split!r}; it has {sorted(data)} "
                              "(choose one with --dataset-split)")
        data = data[split]
    for index, row in enumerate(data, 1):
        yield f"dataset {name}[{split}] row {index}", dict(row)


def read_source(source: Source, root: Path | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Records from one source (capped at its max_samples) and the files they were read from."""
    template = check_template(source.prompt_template) if source.prompt_template is not None else None
    if source.name is not None:
        files: list[Path] = []
        rows = dataset_rows(source.name, source.split, source.config)
    else:
        files = expand(source.files or "", root)
        rows = (item for path in files for item in file_rows(path))
    records = []
    for where, row in rows:
        if source.max_samples is not None and len(records) >= source.max_samples:
            break
        records.append(to_record(row, where, template, source.topic))
    if not records:
        raise StrataError(f"training data {source.name or source.files!r} holds no rows")
    return records, files


def load_user_data(sources: list[Source], root: Path | None = None) -> UserData:
    """Every source's records in order, the files read, the sources as recorded, and a sha256 of the records."""
    records: list[dict[str, Any]] = []
    files: list[Path] = []
    for source in sources:
        rows, read = read_source(source, root)
        records += rows
        files += read
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    described = [{k: v for k, v in asdict(s).items() if v is not None and not (k == "split" and s.files)}
                 for s in sources]
    return UserData(records, files, described, digest)


def file_hashes(files: list[Path]) -> dict[str, str]:
    """path -> sha256 of each user file (what a training summary records)."""
    return {str(path): sha256_file(path) for path in files}

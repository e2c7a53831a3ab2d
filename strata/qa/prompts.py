"""Prompt sets: YAML files under presets/qa (prompt, optional reference, topic, tags) or held-out val.jsonl items."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strata.errors import StrataError
from strata.files import read_jsonl
from strata.presets import from_mapping, preset_path

DEFAULT_SET = "qa/asc"


@dataclass(frozen=True)
class PromptItem:
    """One prompt; `repeat` repeats the prompt text (joined by a blank line) to build very long inputs."""

    id: str
    prompt: str
    reference: str | None = None
    topic: str | None = None
    tags: list[str] = field(default_factory=list)
    repeat: int = 1

    @property
    def text(self) -> str:
        return "\n\n".join([self.prompt] * self.repeat)


@dataclass(frozen=True)
class PromptSetFile:
    """The YAML layout of a prompt set."""

    prompts: list[dict]
    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class PromptSet:
    name: str
    source: str
    items: list[PromptItem]

    @property
    def references(self) -> list[str]:
        return [item.reference for item in self.items if item.reference]


def load_prompt_set(name: str | os.PathLike | None = None) -> PromptSet:
    """A prompt set by path or preset name (default presets/qa/asc.yaml); every problem names the file and item."""
    path = preset_path(name or DEFAULT_SET)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise StrataError(f"prompt set {path} is not valid YAML: {exc}; fix the file or pass another --prompts") from None
    if not isinstance(data, dict) or "prompts" not in data:
        raise StrataError(f"prompt set {path} must be a mapping with a `prompts:` list (see presets/qa/asc.yaml)")
    head = from_mapping(PromptSetFile, data, source=str(path))
    items = [_item(entry, f"{path}: prompts[{i}]") for i, entry in enumerate(head.prompts)]
    return _checked(PromptSet(head.name or path.stem, str(path), items))


def _item(entry: Any, source: str) -> PromptItem:
    if not isinstance(entry, dict):
        raise StrataError(f"{source} must be a mapping with at least `id` and `prompt`, got {entry!r}")
    missing = [key for key in ("id", "prompt") if key not in entry]
    if missing:
        raise StrataError(f"{source} is missing {missing}; every prompt needs an `id` and a `prompt` (may be \"\")")
    item = from_mapping(PromptItem, entry, source=source)
    if item.repeat < 1:
        raise StrataError(f"{source}: repeat must be at least 1, got {item.repeat}")
    return item


def _checked(prompt_set: PromptSet) -> PromptSet:
    if not prompt_set.items:
        raise StrataError(f"prompt set {prompt_set.source} has no prompts; add at least one")
    seen: set[str] = set()
    for item in prompt_set.items:
        if item.id in seen:
            raise StrataError(f"prompt set {prompt_set.source}: id {item.id!r} appears twice; ids must be unique")
        seen.add(item.id)
    return prompt_set


def from_val(val_jsonl: Path, count: int) -> PromptSet:
    """The first `count` held-out records: a pair's question and answer (pairs_val.jsonl), else the user message
    (or heading) and the section text (or assistant message) of a val.jsonl record."""
    if count < 1:
        raise StrataError(f"--from-val needs a positive count, got {count}")
    records = read_val(val_jsonl)
    items = []
    for number, record in enumerate(records[:count]):
        user, assistant = _messages(record)
        prompt = record.get("question") or user or record.get("heading") or ""  # a held-out pair asks its question
        reference = record.get("answer") or record.get("text") or assistant
        if not prompt:
            raise StrataError(f"{val_jsonl} line {number + 1} has neither a user message nor a heading to ask about")
        topic = record.get("topic")
        items.append(PromptItem(id=f"val-{number + 1}", prompt=prompt, reference=reference, topic=topic,
                                tags=["val"] + ([topic] if topic else [])))
    return _checked(PromptSet(f"val:{count}", str(val_jsonl), items))


def read_val(val_jsonl: Path) -> list[dict]:
    """Every record of val.jsonl; a missing or malformed file says how to make it."""
    records = read_jsonl(val_jsonl, "run `strata build dataset` first or use --prompts FILE.yaml")
    if not records:
        raise StrataError(f"{val_jsonl} is empty; rebuild it with `strata build dataset`")
    return records


def val_texts(val_jsonl: Path) -> list[str]:
    """Section texts of the held-out records (for perplexity); [] when val.jsonl is missing or empty."""
    if not Path(val_jsonl).is_file():
        return []
    records = read_jsonl(val_jsonl, "rebuild it with `strata build dataset`")
    return [text for record in records if (text := record.get("answer") or record.get("text") or _messages(record)[1])]


def _messages(record: dict) -> tuple[str | None, str | None]:
    """(user, assistant) contents of a chat record, None where absent."""
    found: dict[str, str] = {}
    for message in record.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("user", "assistant"):
            found.setdefault(message["role"], str(message.get("content") or ""))
    return found.get("user"), found.get("assistant")

"""Dataset records -> training blocks, one per example: `text` as BOS ... EOS, `chat` via the chat template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import read_jsonl
from strata.modelfolder import CHAT_TEMPLATE_PLACES, require_chat_template
from strata.settings import DEFAULT_TOPIC

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class Block:
    """One packed training sequence: token ids and labels of the same length (IGNORE where no loss)."""

    input_ids: list[int]
    labels: list[int]


def load_records(path: Path, topics: list[str] | None = None, what: str = "training data") -> list[dict[str, Any]]:
    """Read a dataset JSONL, keep `topics` (None: all); name the missing step if absent. (--max-train-samples caps
    each adapter's records once they are split by topic: trainer._jobs.)"""
    records = read_jsonl(path, f"{what}: run `strata build dataset` first (it writes data/processed/train.jsonl and val.jsonl)")
    if topics is not None:
        wanted = set(topics)
        records = [r for r in records if r.get("topic") in wanted]
        if not records:
            raise StrataError(f"{path} has no records for topics {sorted(wanted)}; check --topics / the preset's "
                              f"topics against the dataset's topics.")
    if not records:
        raise StrataError(f"{path} holds no records; rebuild the dataset with `strata build dataset`.")
    return records


def topics_of(records: list[dict[str, Any]]) -> list[str]:
    """Distinct topics in first-seen order (records without one count as DEFAULT_TOPIC)."""
    return list(dict.fromkeys(r.get("topic") or DEFAULT_TOPIC for r in records))


def build_blocks(records: list[dict[str, Any]], tokenizer: Any, fmt: str, max_seq_len: int) -> list[Block]:
    """Tokenize and pack `records` into blocks of at most `max_seq_len` tokens."""
    if fmt == "text":
        return _pack_text(records, tokenizer, max_seq_len)
    if fmt == "chat":
        return _pack_chat(records, tokenizer, max_seq_len)
    raise StrataError(f"unknown data format {fmt!r}; use `text` or `chat` in the preset")


def _pack_text(records: list[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> list[Block]:
    """One block per text (BOS ... EOS), a text longer than `max_seq_len` cut into several: the collator packs
    blocks with position-id resets, so texts never attend to each other."""
    blocks = []
    for record in records:
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise StrataError(f"record {record.get('id', '?')} has no `text`; rebuild with `strata build dataset`.")
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        blocks += [Block(ids[i:i + max_seq_len], ids[i:i + max_seq_len]) for i in range(0, len(ids), max_seq_len)]
    return [b for b in blocks if len(b.input_ids) > 1]


def chat_example(messages: list[dict[str, str]], tokenizer: Any, max_seq_len: int) -> Block:
    """Render a conversation with the tokenizer's chat template; loss only on the final assistant turn."""
    require_chat_template(bool(getattr(tokenizer, "chat_template", None)), "the base model's tokenizer",
                          "chat records cannot be rendered", f"Add one ({CHAT_TEMPLATE_PLACES}), or use `format: text`.")
    if not messages or messages[-1].get("role") != "assistant":
        raise StrataError("a chat record's `messages` must end with an assistant turn; rebuild the dataset.")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):  # templates that rewrite earlier turns: fall back to the answer text
        prompt = full[: len(full) - len(messages[-1]["content"]) - len(tokenizer.eos_token or "")]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:max_seq_len]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_seq_len]
    return Block(ids, labels)


def is_plain_text(record: dict[str, Any]) -> bool:
    """A text row with no chat form (a teacher paraphrase): a chat level trains on it as text."""
    return "messages" not in record and "text" in record


def _pack_chat(records: list[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> list[Block]:
    """One block per conversation (loss on its final answer); the collator packs them apart (position-id resets).
    Plain text rows among them (a chat level's `with_chunks` paraphrases) become text blocks, loss on every token."""
    blocks = _pack_text([r for r in records if is_plain_text(r)], tokenizer, max_seq_len)
    for record in (r for r in records if not is_plain_text(r)):
        if not isinstance(record.get("messages"), list):
            raise StrataError(f"record {record.get('id', '?')} has no `messages`; use `format: text` or rebuild the dataset.")
        blocks.append(chat_example(record["messages"], tokenizer, max_seq_len))
    return [b for b in blocks if any(label != IGNORE for label in b.labels[1:])]

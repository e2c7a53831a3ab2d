"""The `llm` question generator: an OpenAI-compatible teacher (default: strata's engine serving the base GGUF
in-process) asked for JSON-schema-constrained pairs per chunk, concurrently, cached per (chunk, prompt, teacher)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator

from strata.data.extractive import Draft
from strata.errors import StrataError
from strata.files import atomic_write_json
from strata.settings import Settings

PROMPT_VERSION = "qa-v1"
SYSTEM = ("You write study questions about an accounting standard. Use only the passage. Every answer must be a "
          "sentence taken from, or closely following, the passage. Vary the kinds: definition, scenario (apply a rule "
          "to a short situation), comparison, threshold (amounts, dates, how often), list, and one unanswerable "
          "question whose answer is exactly: The document does not say. Then paraphrase the passage in plain words.")
USER = "Section: {section}\nPassage:\n{text}\n\nWrite {n} question/answer pairs as JSON."
TYPE_ENUM = ["definition", "summary", "rule", "scenario", "comparison", "threshold", "list", "unanswerable"]


def schema(n_pairs: int) -> dict[str, Any]:
    """The JSON schema a reply must follow (strata turns it into a grammar; OpenAI-style servers enforce it too)."""
    pair = {"type": "object", "additionalProperties": False, "required": ["type", "question", "answer"],
            "properties": {"type": {"enum": TYPE_ENUM}, "question": {"type": "string", "minLength": 8, "maxLength": 200},
                           "answer": {"type": "string", "minLength": 1, "maxLength": 400}}}
    return {"type": "object", "additionalProperties": False, "required": ["pairs", "paraphrase"],
            "properties": {"pairs": {"type": "array", "items": pair, "minItems": 1, "maxItems": n_pairs},
                           "paraphrase": {"type": "string", "maxLength": 1000}}}


def cache_key(chunk: dict[str, Any], teacher_identity: str, n_pairs: int) -> str:
    """(chunk text hash, prompt version, teacher): a changed chunk, prompt or teacher asks again."""
    text = hashlib.sha256(chunk["text"].encode()).hexdigest()
    return hashlib.sha256(f"{text}\x00{PROMPT_VERSION}:{n_pairs}:{SYSTEM}{USER}\x00{teacher_identity}".encode()).hexdigest()[:32]


def parse_reply(content: str | None) -> tuple[list[Draft], str, str | None]:
    """(drafts, paraphrase, rejection reason or None) from a teacher's reply text; never raises."""
    if not content or not content.strip():
        return [], "", "teacher_empty_reply"
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return [], "", "teacher_malformed_json"
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        return [], "", "teacher_wrong_shape"
    drafts = [Draft(str(p["question"]).strip(), str(p["answer"]).strip(), str(p.get("type", "")))
              for p in data["pairs"] if isinstance(p, dict) and p.get("question") and p.get("answer")]
    paraphrase = data.get("paraphrase") if isinstance(data.get("paraphrase"), str) else ""
    return drafts, paraphrase.strip(), None if drafts else "teacher_no_pairs"


class _Client:
    """One shared httpx client posting chat requests to the teacher."""

    def __init__(self, base_url: str, model: str | None, api_key: str | None, timeout: float) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def ask(self, chunk: dict[str, Any], n_pairs: int, max_tokens: int, temperature: float) -> str | None:
        body: dict[str, Any] = {
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": USER.format(section=chunk.get("heading") or chunk["topic"],
                                                                 text=chunk["text"], n=n_pairs)}],
            "max_tokens": max_tokens, "temperature": temperature, "seed": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "qa_pairs", "schema": schema(n_pairs)}}}
        if self.model:
            body["model"] = self.model
        reply = self.http.post("/v1/chat/completions", json=body)
        if reply.status_code >= 400:
            raise StrataError(f"teacher answered {reply.status_code}: {reply.text[:300]}")
        choice = (reply.json().get("choices") or [{}])[0]
        return (choice.get("message") or {}).get("content")


def base_gguf(settings: Settings, echo: Callable[[str], None]) -> Path:
    """The base HF model as an F16 GGUF for the in-process teacher, converted once per base (keyed by its files)."""
    from strata.modelfolder import fingerprint, resolve_base_model
    from strata.llamacpp import convert_hf

    base = resolve_base_model(settings, None)
    out = settings.models / f"teacher-{fingerprint(base)[:12]}.F16.gguf"
    if not out.is_file():
        echo(f"teacher: converting the base {base} to {out.name} (once per base) ...")
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            convert_hf(base, tmp, "f16", log=out.with_suffix(".convert.log"), model_name=base.name)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def endpoint(settings: Settings, teacher: Any, slots: int, echo: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """(base URL, teacher identity): the given URL, or strata's engine on the base GGUF served in this process."""
    if teacher.url:
        yield teacher.url, teacher.identity
        return
    from strata.serve.config import ServeConfig
    from strata.serve.server import serve_in_thread

    gguf = Path(teacher.gguf) if teacher.gguf else base_gguf(settings, echo)
    if not gguf.is_file():
        raise StrataError(f"teacher GGUF {gguf} not found; pass --teacher-model PATH.gguf or --teacher-url URL")
    stat = gguf.stat()
    config = ServeConfig(model=gguf, n_ctx=max(settings.n_ctx, 2048), n_threads=settings.n_threads,
                         parallel=slots, workspace=settings.workspace)
    with serve_in_thread(config) as url:
        yield url, f"strata-in-process|{gguf.name}|{stat.st_size}|{int(stat.st_mtime)}"


def teacher_drafts(settings: Settings, chunks: list[dict[str, Any]], teacher: Any, preset: Any, progress: bool,
                   echo: Callable[[str], None]) -> tuple[list[list[Draft]], list[dict[str, Any]], dict[str, Any]]:
    """Drafts per chunk (in chunk order), paraphrase records, and request stats (with per-reason rejections).
    Each finished reply is cached under data/processed/synthesis_cache/ at once, so a killed run resumes there."""
    from tqdm import tqdm

    cache = settings.processed / "synthesis_cache"
    cache.mkdir(parents=True, exist_ok=True)
    replies: dict[int, dict[str, Any]] = {}
    stats: dict[str, Any] = {"requested": 0, "cached": 0, "failed": 0, "rejected": {}}
    lock = threading.Lock()
    started = time.monotonic()
    with endpoint(settings, teacher, preset.teacher_concurrency, echo) as (url, identity):
        keys = [cache_key(chunk, identity, preset.teacher_pairs) for chunk in chunks]
        todo = []
        for index, key in enumerate(keys):
            try:
                replies[index] = json.loads((cache / f"{key}.json").read_text())
                stats["cached"] += 1
            except (OSError, json.JSONDecodeError):
                todo.append(index)
        client = _Client(url, teacher.model, os.environ.get(teacher.api_key_env), preset.teacher_timeout_s)

        def one(index: int) -> None:
            try:
                content = client.ask(chunks[index], preset.teacher_pairs, preset.teacher_max_tokens,
                                     preset.teacher_temperature)
                error = None
            except Exception as exc:  # noqa: BLE001 - a failed request drops that chunk's pairs, with the reason
                content, error = None, f"{type(exc).__name__}: {exc}"
            drafts, paraphrase, reason = parse_reply(content)
            record = {"chunk_id": chunks[index]["id"], "teacher": identity, "prompt_version": PROMPT_VERSION,
                      "content": content, "reason": "teacher_request_failed" if error else reason, "error": error,
                      "drafts": [d.__dict__ for d in drafts], "paraphrase": paraphrase}
            if record["reason"] is None:  # only good replies are cached: a failed one is asked again next run
                atomic_write_json(cache / f"{keys[index]}.json", record)
            with lock:
                replies[index] = record
                stats["requested"] += 1

        with tqdm(total=len(chunks), initial=stats["cached"], desc="teacher", unit="chunk",
                  disable=not progress or None) as bar, \
                ThreadPoolExecutor(max_workers=preset.teacher_concurrency) as pool:
            for future in as_completed([pool.submit(one, i) for i in todo]):
                future.result()
                bar.update(1)
    stats["seconds"] = time.monotonic() - started
    drafted, paraphrases = [], []
    rejected: dict[str, int] = {}
    for index, chunk in enumerate(chunks):
        record = replies[index]
        if record.get("reason"):
            rejected[record["reason"]] = rejected.get(record["reason"], 0) + 1
            stats["failed"] += 1
        drafted.append([Draft(**d) for d in record.get("drafts", [])])
        if record.get("paraphrase"):
            paraphrases.append({"id": f"{chunk['id']}-para", "text": record["paraphrase"], "topic": chunk["topic"],
                                "source": chunk.get("source"), "pages": chunk.get("pages"),
                                "heading": chunk.get("heading"), "paraphrase_of": chunk["id"]})
    stats["rejected"] = rejected
    return drafted, paraphrases, stats

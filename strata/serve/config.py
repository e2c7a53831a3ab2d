"""ServeConfig and the launch-line parser (llama_cpp.server, llama-server and kebab-case spellings)."""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from strata.errors import StrataError
from strata.serve.adapters import check_path
from strata.serve.errors import ApiError
from strata.settings import Settings

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB is plenty for chat + adapter bodies
# |LoRA scale| allowed by default: 1 is the adapter as trained, blends use fractions that sum to about 1, and
# "strength" boosts or negations go a few times 1 either way. 8 leaves room for those and rejects typos (100,
# 1e308) that would silently wreck every later reply on the global set.
DEFAULT_MAX_LORA_SCALE = 8.0
# /gen/ask: chunks of evidence per answer, and the BM25 score a chunk needs to count as evidence (seed 000's knobs)
DEFAULT_EVIDENCE_TOP_K = 4
DEFAULT_MIN_RANK_SCORE = 1.0
MAX_EVIDENCE_TOP_K = 32


def finite_float32(value: float) -> bool:
    """Whether `value` stays finite as a C float (llama.cpp's scales and biases): 1e308 does not."""
    try:
        return math.isfinite(ctypes.c_float(float(value)).value)
    except OverflowError:
        return False


def check_scale(value: float, where: str, limit: float = DEFAULT_MAX_LORA_SCALE) -> float:
    """`value` as llama.cpp will use it (a C float): ValueError naming `where` unless finite and within ±limit."""
    if not finite_float32(value):
        raise ValueError(f"{where} is {value!r}, which is not a finite number once stored as llama.cpp's float32 "
                         f"scale; use a scale within [-{limit:g}, {limit:g}].")
    if abs(value) > limit:
        raise ValueError(f"{where} is {value!r}, outside the allowed range [-{limit:g}, {limit:g}] (1 = the adapter "
                         "as trained, blends use fractions); use a smaller scale, or start the server with a larger "
                         "--max-lora-scale.")
    return value


@dataclass
class ServeConfig:
    """Everything `strata serve` needs; build it with :func:`parse_argv` or directly."""

    model: Path
    loras: list[tuple[str, float]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 5000
    n_ctx: int = 2048
    n_threads: int = 1
    chat_format: str | None = None
    api_key: str | None = None
    adapter_roots: list[str] = field(default_factory=list)
    lora_init_without_apply: bool = False
    logits_all: bool = True
    workspace: Path | None = None
    flash_attn: bool = False
    n_batch: int = 512
    parallel: int = 4
    embeddings: bool = True
    n_gpu_layers: int = 0
    seed: int = 4294967295
    base_model: str | None = None  # HF dir of the base, for on-the-fly PEFT -> GGUF conversion
    max_body_bytes: int = DEFAULT_MAX_BODY
    model_alias: str | None = None
    verbose: bool = False
    access_log: bool = False  # uvicorn's line per request: about 0.3 ms of the event loop each (measured)
    release: dict[str, Any] | None = None  # {name, version, tag, path, adapters} when serving a pulled release
    max_lora_scale: float = DEFAULT_MAX_LORA_SCALE
    soft_prompt: str | None = None  # default soft prompt: a name under WORKSPACE/soft_prompts/ or a path
    soft_prompt_enabled: bool | None = None  # apply the default to requests that name none (None: when one is set)
    soft_prompt_home: Path | None = None  # the folder whose soft_prompts/NAME/ names resolve in (None: workspace)
    kv_unified: bool = False  # one KV stream for all slots (llama-server's default) instead of one per slot
    switch_budget: int = 32  # decode steps an adapter set keeps the context while another set waits
    max_queue: int = 64  # requests waiting for a slot before new ones get 429
    max_loaded_adapters: int = 16  # adapters kept loaded; idle ones are evicted least-recently-used first (0: no cap)
    index: str | None = None  # evidence index: a SQLite path or postgresql:// URL (default WORKSPACE/index.sqlite)
    embedding_model: Path | None = None  # GGUF embedder for the dense rerank; None: lexical only
    evidence_top_k: int = DEFAULT_EVIDENCE_TOP_K
    min_rank_score: float = DEFAULT_MIN_RANK_SCORE

    def __post_init__(self) -> None:
        """Start-up adapters obey the same scale and path rules as POST /lora-adapters."""
        if not (math.isfinite(self.max_lora_scale) and self.max_lora_scale > 0):
            raise StrataError(f"--max-lora-scale must be a positive number, got {self.max_lora_scale!r}.")
        for name in ("switch_budget", "max_queue"):
            if getattr(self, name) < 1:
                raise StrataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)!r}.")
        if self.max_loaded_adapters < 0:
            raise StrataError(f"--max-loaded-adapters must be 0 (no cap) or more, got {self.max_loaded_adapters!r}.")
        if 0 < self.max_loaded_adapters < len(self.loras):
            raise StrataError(f"{len(self.loras)} start-up adapters do not fit --max-loaded-adapters "
                              f"{self.max_loaded_adapters}; raise it.")
        if not 1 <= self.evidence_top_k <= MAX_EVIDENCE_TOP_K:
            raise StrataError(f"--evidence-top-k (GEN_EVIDENCE_TOP_K) must be between 1 and {MAX_EVIDENCE_TOP_K}, "
                              f"got {self.evidence_top_k!r}.")
        if not math.isfinite(self.min_rank_score):
            raise StrataError(f"--min-rank-score (GEN_MIN_RANK_SCORE) must be a finite number, got "
                              f"{self.min_rank_score!r}.")
        for path, scale in self.loras:
            try:
                check_path(path, f"start-up adapter path {path[:80]!r}")
                check_scale(scale, f"the scale of start-up adapter {path}", self.max_lora_scale)
            except (ApiError, ValueError) as exc:
                raise StrataError(f"{exc} (from --lora / --lora-scaled / LORA_PATHS)") from None

    @property
    def model_name(self) -> str:
        """The name /v1/models reports for the bare base model."""
        return self.model_alias or Path(self.model).stem

    def check_model(self) -> None:
        """Fail early, clearly, when the base GGUF is missing."""
        path = Path(self.model)
        if not path.is_file():
            raise StrataError(
                f"model file {path} not found. Pass --model PATH or set MODEL_PATH; the build stage writes the "
                "quantized GGUF there with `strata build convert` (or `strata build train_all`)."
            )


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def _env_bool(env: dict[str, str], name: str) -> bool | None:
    """A True/False environment variable (None when unset or empty); a clear error for anything else."""
    value = env.get(name, "").strip()
    try:
        return _bool(value) if value else None
    except argparse.ArgumentTypeError as exc:
        raise StrataError(f"{name}: {exc}; set it to true or false.") from None


def _scale(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"LoRA scale must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"LoRA scale must be finite, got {value!r}")
    return number


class _LoraAction(argparse.Action):
    """`--lora PATH` (scale 1) and `--lora-scaled PATH SCALE`, kept in command-line order."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option: Any = None) -> None:
        items = list(getattr(ns, self.dest) or [])
        if isinstance(values, list) and len(values) == 2:
            try:
                items.append((values[0], _scale(values[1])))
            except argparse.ArgumentTypeError as exc:
                parser.error(str(exc))
        else:
            items.append((values, 1.0))
        setattr(ns, self.dest, items)


def _flags(name: str) -> list[str]:
    """`--n_ctx` and `--n-ctx` both work (llama_cpp.server uses underscores, llama-server dashes)."""
    return sorted({f"--{name}", f"--{name.replace('_', '-')}"})


def build_parser(prog: str = "strata serve") -> argparse.ArgumentParser:
    """The argparse parser behind `strata serve` and `python -m strata.serve`."""
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Serve one base GGUF with llama.cpp, OpenAI-compatible, with LoRA adapters hot-swapped, "
        "blended and cleared at runtime through /lora-adapters. Flag spellings of `python -m llama_cpp.server` "
        "(underscores) and llama-server (dashes) both work.",
    )
    p.add_argument(*_flags("model"), dest="model", help="base GGUF to serve (env MODEL_PATH, default "
                   "WORKSPACE/models/strata.Q4_K_M.gguf)")
    p.add_argument(*_flags("lora"), "--lora_path", dest="loras", action=_LoraAction, metavar="PATH",
                   help="adapter to load at start, scale 1 (an adapter dir holding adapter.gguf, or a .gguf); repeat")
    p.add_argument(*_flags("lora_scaled"), dest="loras", action=_LoraAction, nargs=2, metavar=("PATH", "SCALE"),
                   help="adapter to load at start with this scale (llama-server spelling); repeat")
    p.add_argument(*_flags("max_lora_scale"), type=float, default=DEFAULT_MAX_LORA_SCALE, metavar="LIMIT",
                   help=f"largest |scale| accepted for an adapter, at start and per request (default "
                   f"{DEFAULT_MAX_LORA_SCALE:g}); bigger scales get 400")
    p.add_argument(*_flags("lora_init_without_apply"), type=_bool, nargs="?", const=True, default=False,
                   help="load the start adapters but apply none (scale 0); apply later via POST /lora-adapters")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument(*_flags("n_ctx"), type=int, default=None, help="context of one request (prompt + completion) in "
                   "tokens (env N_CTX, default 2048); each of the --parallel slots gets this much KV cache")
    p.add_argument(*_flags("n_threads"), type=int, default=None, help="CPU threads (env N_THREADS)")
    p.add_argument(*_flags("n_batch"), type=int, default=512, help="most tokens one llama_decode call takes: prompt "
                   "chunks plus one token per generating slot (default 512)")
    p.add_argument(*_flags("parallel"), "-np", dest="parallel", type=int, default=4, metavar="N",
                   help="sequence slots decoded together (continuous batching, each with its own adapter set; "
                   "default 4). The KV cache holds N x --n_ctx tokens, so its memory grows linearly with N; a "
                   "request beyond N waits for a free slot")
    p.add_argument(*_flags("kv_unified"), "-kvu", dest="kv_unified", type=_bool, nargs="?", const=True,
                   default=False, help="one KV cache stream shared by all slots (llama-server's default) instead of "
                   "one per slot (default False: measured faster here, see README Benchmarks)")
    p.add_argument(*_flags("switch_budget"), type=int, default=32, metavar="STEPS",
                   help="decode steps an adapter set keeps the context while requests under another set wait "
                   "(default 32). A busy set waits at most (busy sets - 1) x STEPS steps; switching re-reserves "
                   "llama.cpp's graph, so larger is faster and less fair")
    p.add_argument(*_flags("max_queue"), type=int, default=64, metavar="N", help="requests that may wait for a "
                   "free slot (default 64); beyond that a request gets 429 with Retry-After")
    p.add_argument(*_flags("max_loaded_adapters"), type=int, default=16, metavar="N", help="adapters kept loaded "
                   "(default 16; 0: no cap). Loading one more evicts the least-recently used adapter that no request "
                   "and not the global set uses; when all are in use the load gets 429")
    p.add_argument(*_flags("embeddings"), type=_bool, nargs="?", const=True, default=True,
                   help="serve POST /v1/embeddings (True/False, default True). Its own llama.cpp context is made on "
                   "the first request: one sequence of --n_ctx tokens of KV cache plus a compute buffer for that "
                   "many tokens; each input is decoded between two generation steps")
    p.add_argument(*_flags("n_gpu_layers"), type=int, default=0, help="layers to offload to a GPU (default 0)")
    p.add_argument(*_flags("chat_format"), default=None, help="chat template name, e.g. mistral-instruct; default: "
                   "the GGUF's own tokenizer.chat_template")
    p.add_argument(*_flags("flash_attn"), type=_bool, nargs="?", const=True, default=False,
                   help="use flash attention (True/False, default False)")
    p.add_argument(*_flags("logits_all"), type=_bool, nargs="?", const=True, default=True,
                   help="accepted for llama_cpp.server compatibility; prompt logits (echo + logprobs) are always "
                   "available, computed only for the requests that ask")
    p.add_argument(*_flags("seed"), type=int, default=4294967295, help="default sampling seed")
    p.add_argument(*_flags("api_key"), default=None, help="require `Authorization: Bearer KEY` (env API_KEY); "
                   "/health stays open")
    p.add_argument(*_flags("adapter_root"), dest="adapter_roots", action="append", default=[], metavar="DIR",
                   help="extra folder adapters may be loaded from (repeat); WORKSPACE and the start adapters' "
                   "folders are always allowed")
    p.add_argument("--workspace", default=None, help="workspace root (env WORKSPACE, default ./workspace)")
    p.add_argument("--release", default=None, metavar="NAME[@TAG]", help="serve a published release instead of "
                   "--model: pulled (sha256-verified) into WORKSPACE/releases/NAME/VERSION/ if needed; its adapters "
                   "folder is allowed and --lora may name its adapters (e.g. --lora ASC_Leases)")
    p.add_argument("--store", default=None, metavar="DIR|s3://BUCKET/PREFIX", help="release store for --release "
                   "(env STRATA_STORE); without one, a release pulled earlier is served")
    p.add_argument(*_flags("base_model"), default=None, help="HF dir of the base model (env BASE_MODEL), used "
                   "only to convert a PEFT adapter dir without adapter.gguf on the fly (needs torch)")
    p.add_argument(*_flags("max_body_bytes"), type=int, default=DEFAULT_MAX_BODY, help="largest request body "
                   "accepted (default 1 MiB); bigger ones get 413")
    p.add_argument(*_flags("soft_prompt"), default=None, metavar="NAME|PATH",
                   help="default soft prompt (env SOFT_PROMPT): a name under WORKSPACE/soft_prompts/ or a soft prompt "
                   "dir / softprompt.gguf under an allowed root; applied to every request that sends no "
                   "\"soft_prompt\" while enabled. A missing or mismatched one stops the start")
    p.add_argument(*_flags("soft_prompt_enabled"), type=_bool, nargs="?", const=True, default=None,
                   help="apply the default soft prompt (True/False; env SOFT_PROMPT_ENABLED; default True when a "
                   "--soft-prompt is given); switch at runtime with POST /soft-prompts {\"enabled\": ...}")
    p.add_argument(*_flags("model_alias"), default=None, help="name of the base in /v1/models (default: file stem)")
    p.add_argument(*_flags("verbose"), type=_bool, nargs="?", const=True, default=False,
                   help="print llama.cpp's own logs")
    p.add_argument(*_flags("access_log"), type=_bool, nargs="?", const=True, default=False,
                   help="log one line per HTTP request (True/False, default False: writing it cost about 0.3 ms "
                   "per request here, a third of an idle adapter switch; /metrics counts requests per route and "
                   "status either way)")
    p.add_argument("--index", default=None, metavar="PATH|postgresql://...", help="evidence index for POST /gen/ask: "
                   "a SQLite file or a Postgres URL shared by replicas (env STRATA_INDEX; default "
                   "WORKSPACE/index.sqlite when it exists, or the release's index with --release)")
    p.add_argument(*_flags("embedding_model"), default=None, metavar="M.gguf", help="GGUF sentence embedder: "
                   "reranks the lexical candidates by cosine when the index holds its vectors (env EMBEDDING_MODEL); "
                   "without it retrieval is lexical (BM25) only")
    p.add_argument(*_flags("evidence_top_k"), type=int, default=None, metavar="K", help="chunks of evidence per "
                   f"answer when a request gives no top_k (env GEN_EVIDENCE_TOP_K, default {DEFAULT_EVIDENCE_TOP_K})")
    p.add_argument(*_flags("min_rank_score"), type=float, default=None, metavar="S", help="BM25 score a chunk needs "
                   "to count as evidence when a request gives no min_score (env GEN_MIN_RANK_SCORE, default "
                   f"{DEFAULT_MIN_RANK_SCORE:g}); below it for every chunk, /gen/ask says the documents do not cover "
                   "the question")
    return p


def _env_number(env: dict[str, str], name: str, kind: type, flag: Any, default: Any) -> Any:
    if flag is not None:
        return flag
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise StrataError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {value!r}.") \
            from None


def parse_argv(argv: Sequence[str], env: dict[str, str] | None = None, prog: str = "strata serve") -> ServeConfig:
    """Parse a launch line (flags only, no program name) into a ServeConfig; env fills the defaults."""
    env = dict(os.environ if env is None else env)
    parser = build_parser(prog)
    ns = parser.parse_args(list(argv))
    if not 1 <= ns.parallel <= ns.n_batch:
        parser.error(f"--parallel must be between 1 and --n_batch ({ns.n_batch}), got {ns.parallel}")
    try:
        settings = Settings.resolve(workspace=ns.workspace, model_path=ns.model, n_ctx=ns.n_ctx,
                                    n_threads=ns.n_threads, base_model=ns.base_model, env=env)
    except ValueError as exc:
        raise StrataError(f"{exc}; fix the flag or the environment variable.") from None
    model, loras, roots, release = settings.model_path, list(ns.loras or []), list(ns.adapter_roots), None
    home = None
    if ns.release:
        if ns.model:
            raise StrataError("pass either --release NAME@TAG or --model M.gguf, not both.")
        model, loras, roots, release = _release(settings, ns.release, ns.store or env.get("STRATA_STORE"), loras,
                                                roots)
        home = Path(release["path"])  # the release's soft_prompts/NAME/ answer to their names
    return ServeConfig(
        model=model, loras=loras, host=ns.host, port=ns.port, release=release,
        n_ctx=settings.n_ctx, n_threads=settings.n_threads, chat_format=ns.chat_format,
        api_key=ns.api_key or env.get("API_KEY") or None, adapter_roots=roots,
        lora_init_without_apply=ns.lora_init_without_apply, logits_all=ns.logits_all,
        workspace=settings.workspace, flash_attn=ns.flash_attn, n_batch=ns.n_batch, parallel=ns.parallel,
        embeddings=ns.embeddings,
        n_gpu_layers=ns.n_gpu_layers,
        seed=ns.seed, base_model=settings.base_model, max_body_bytes=ns.max_body_bytes,
        model_alias=ns.model_alias, verbose=ns.verbose, max_lora_scale=ns.max_lora_scale,
        access_log=ns.access_log, kv_unified=ns.kv_unified, switch_budget=ns.switch_budget,
        max_queue=ns.max_queue, max_loaded_adapters=ns.max_loaded_adapters,
        index=ns.index or env.get("STRATA_INDEX") or None,
        embedding_model=Path(ns.embedding_model or env["EMBEDDING_MODEL"]) if ns.embedding_model
        or env.get("EMBEDDING_MODEL") else None,
        evidence_top_k=_env_number(env, "GEN_EVIDENCE_TOP_K", int, ns.evidence_top_k, DEFAULT_EVIDENCE_TOP_K),
        min_rank_score=_env_number(env, "GEN_MIN_RANK_SCORE", float, ns.min_rank_score, DEFAULT_MIN_RANK_SCORE),
        soft_prompt=ns.soft_prompt or env.get("SOFT_PROMPT") or None,
        soft_prompt_enabled=ns.soft_prompt_enabled if ns.soft_prompt_enabled is not None else (
            _env_bool(env, "SOFT_PROMPT_ENABLED")), soft_prompt_home=home,
    )


def _release(settings: Settings, ref: str, store: str | None, loras: list[tuple[str, float]],
             roots: list[str]) -> tuple[Path, list[tuple[str, float]], list[str], dict[str, Any]]:
    """Pull (if needed) and resolve a release: its GGUF, --lora names mapped to its adapters, its adapters root."""
    from strata.release.serving import prepare  # boto3 is imported only if the store is s3://

    pulled = prepare(settings, ref, store, echo=lambda line: print(line, file=sys.stderr))
    mapped = [(str(pulled.adapters / path) if not Path(path).exists() and pulled.manifest.adapter(path) else path,
               scale) for path, scale in loras]
    return pulled.model, mapped, [*roots, str(pulled.adapters), str(pulled.root / "soft_prompts")], pulled.label()

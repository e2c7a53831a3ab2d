"""Release stores behind one small interface: a local folder (a mounted volume) or an S3-compatible bucket (boto3)."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from strata.errors import StrataError
from strata.files import staged_file

Advance = Callable[[int], None]
CHUNK = 1 << 20
DEFAULT_PART_SIZE = 16 << 20  # 4 GB GGUF -> 256 parts, far under S3's 10,000
MIN_PART_SIZE = 5 << 20  # S3's minimum (boto3 raises smaller sizes to it anyway)
DEFAULT_ATTEMPTS = 5
STORE_HINT = ("pass --store DIR (a mounted volume, e.g. /workspace/releases) or --store s3://bucket/prefix, "
              "or set STRATA_STORE")


class Writer(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class StoreUnreachable(StrataError):
    """The store cannot be reached at all (volume not mounted, endpoint down): a local copy may still serve."""


class Store(Protocol):
    """Keys are `/`-separated; objects become visible only once complete; `create` is create-exclusive."""

    url: str

    def ensure(self) -> None: ...
    def read(self, key: str) -> bytes | None: ...
    def size(self, key: str) -> int | None: ...
    def children(self, prefix: str) -> list[str]: ...
    def upload(self, key: str, path: Path, advance: Advance) -> None: ...
    def download(self, key: str, writer: Writer, advance: Advance) -> None: ...
    def write(self, key: str, data: bytes) -> None: ...
    def create(self, key: str, data: bytes) -> bool: ...


def open_store(url: str | None) -> Store:
    """`s3://bucket/prefix` -> S3Store; a path (or file://path) -> LocalStore; empty -> STRATA_STORE."""
    url = (url or os.environ.get("STRATA_STORE") or "").strip()
    if not url:
        raise StrataError(f"no release store given: {STORE_HINT}.")
    if url.startswith("s3://"):
        return S3Store(url)
    if "://" in url and not url.startswith("file://"):
        raise StrataError(f"release store {url!r} has an unknown scheme; {STORE_HINT}.")
    return LocalStore(Path(url.removeprefix("file://")).expanduser())


class LocalStore:
    """A folder: blobs copied in through a temp file + os.replace; `create` by os.link, which fails if the key exists."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def ensure(self) -> None:
        """Publishing creates the folder; reading from a missing one is an error (the volume is not mounted)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def _reachable(self) -> None:
        if not self.root.is_dir():
            raise StoreUnreachable(f"release store folder {self.root} does not exist; mount the volume there or "
                                   f"fix the path ({STORE_HINT}).")

    def read(self, key: str) -> bytes | None:
        self._reachable()
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, key: str) -> int | None:
        self._reachable()
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def children(self, prefix: str) -> list[str]:
        self._reachable()
        folder = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def upload(self, key: str, path: Path, advance: Advance) -> None:
        with open(path, "rb") as src, staged_file(self._path(key)) as out:
            while block := src.read(CHUNK):
                out.write(block)
                advance(len(block))

    def download(self, key: str, writer: Writer, advance: Advance) -> None:
        self._reachable()
        try:
            src = open(self._path(key), "rb")
        except FileNotFoundError:
            raise StrataError(f"object {key} is missing from the store {self.url}; the release is damaged: "
                              "publish it again from the build pod, or pull another version.") from None
        with src:
            while block := src.read(CHUNK):
                writer.write(block)
                advance(len(block))

    def write(self, key: str, data: bytes) -> None:
        with staged_file(self._path(key)) as out:
            out.write(data)

    def create(self, key: str, data: bytes) -> bool:
        try:
            with staged_file(self._path(key), publish=_link_exclusive) as out:
                out.write(data)
        except FileExistsError:
            return False
        return True


def _link_exclusive(tmp: str, dest: Path) -> None:
    """os.link is atomic and exclusive: of two racers exactly one gets the name. File systems without hard
    links fall back to O_EXCL (still exclusive)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(Path(tmp).read_bytes())
            out.flush()
            os.fsync(out.fileno())


def part_size(env: dict[str, str] | None = None) -> int:
    """STRATA_S3_PART_SIZE (bytes, or with K/M/G for KiB/MiB/GiB), default 16 MiB, at least S3's 5 MiB: files
    above it go up as a multipart upload of parts this big (and come down as ranged GETs of this size)."""
    raw = (os.environ if env is None else env).get("STRATA_S3_PART_SIZE", "").strip()
    if not raw:
        return DEFAULT_PART_SIZE
    match = re.fullmatch(r"(\d+)\s*([KMG]?)(?:i?B)?", raw, re.IGNORECASE)
    size = int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()] if match else 0
    if size < MIN_PART_SIZE:
        raise StrataError(f"STRATA_S3_PART_SIZE={raw!r} must be a size of at least 5M (S3's minimum part), "
                          "e.g. 16M.")
    return size


class S3Store:
    """An S3-compatible bucket through boto3's managed transfers (multipart, retries). The endpoint comes from
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (MinIO, R2, RunPod), credentials from the standard AWS chain."""

    def __init__(self, url: str) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise StrataError(f"release store {url!r} names no bucket; write it as s3://bucket/prefix.")
        self.url, self.bucket, self.prefix = url.rstrip("/"), bucket, prefix.strip("/")
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self._s3: Any = None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self._client()
        return self._s3

    def _client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise StrataError("s3:// stores need boto3, which is not installed: pip install 'strata[release]' "
                              "(or use a local --store DIR).") from None
        raw = os.environ.get("AWS_MAX_ATTEMPTS", "").strip() or str(DEFAULT_ATTEMPTS)
        if not raw.isdigit() or int(raw) < 1:
            raise StrataError(f"AWS_MAX_ATTEMPTS={raw!r} must be a whole number of at least 1.")
        options: dict[str, Any] = {"retries": {"mode": "standard", "max_attempts": int(raw)},
                                   "connect_timeout": 10, "read_timeout": 60}
        if self.endpoint:  # MinIO, moto and most S3-compatible services want path-style addressing
            options["s3"] = {"addressing_style": "path"}
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=self.endpoint, region_name=session.region_name or "us-east-1",
                              config=Config(**options))

    def ensure(self) -> None:
        """The bucket must exist already; a missing one is reported by the first request."""

    def _transfer(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        size = part_size()
        return TransferConfig(multipart_threshold=size, multipart_chunksize=size, max_concurrency=8)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """botocore/boto3 failures as one-line StrataErrors that say what to do."""
        try:
            yield
        except StrataError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, or re-raised unchanged
            error = self._translate(exc, action, key)
            if error is None:
                raise
            raise error from None

    def _translate(self, exc: BaseException, action: str, key: str) -> StrataError | None:
        from botocore import exceptions as bx

        where = self.endpoint or "AWS S3"
        while exc is not None:  # boto3's S3UploadFailedError carries the botocore error as its context
            if isinstance(exc, bx.NoCredentialsError):
                return StrataError(f"no AWS credentials found for {self.url}: set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or use a host with an instance role).")
            if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError,
                                bx.ReadTimeoutError)):
                return StoreUnreachable(f"cannot reach the S3 endpoint {where} for {self.url} "
                                        f"({type(exc).__name__}); check AWS_ENDPOINT_URL and the network.")
            if isinstance(exc, bx.ClientError):
                code = str(exc.response.get("Error", {}).get("Code", ""))
                message = exc.response.get("Error", {}).get("Message", "") or str(exc)
                if code == "NoSuchBucket":
                    return StrataError(f"bucket {self.bucket} does not exist at {where}; create it (for example "
                                       f"`aws s3 mb s3://{self.bucket}`) or fix --store / STRATA_STORE.")
                if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                            "ExpiredToken"):
                    return StrataError(f"{where} refused the credentials for {self.url} ({code}); check "
                                       "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions.")
                return StrataError(f"S3 {action} of {key} in {self.url} failed: {code} {message}".strip())
            exc = exc.__cause__ or exc.__context__
        return None

    @staticmethod
    def _missing(exc: Any) -> bool:
        return str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404", "NotFound")

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with self._errors("read", key):
            try:
                return self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        with self._errors("head", key):
            try:
                return int(self.s3.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise

    def children(self, prefix: str) -> list[str]:
        base = self._key(prefix.strip("/")) + "/" if prefix.strip("/") else (f"{self.prefix}/" if self.prefix else "")
        names: set[str] = set()
        with self._errors("list", prefix or "/"):
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                names.update(p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(base):] for o in page.get("Contents", []))
        return sorted(n for n in names if n and not n.startswith("."))

    def upload(self, key: str, path: Path, advance: Advance) -> None:
        with self._errors("upload", key):
            self.s3.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer(), Callback=advance)

    def download(self, key: str, writer: Writer, advance: Advance) -> None:
        from botocore.exceptions import ClientError

        # The writer has no seek(), so s3transfer hands it the parts in order (hashing while writing works).
        with self._errors("download", key):
            try:
                self.s3.download_fileobj(self.bucket, self._key(key), writer, Config=self._transfer(),
                                         Callback=advance)
            except ClientError as exc:
                if self._missing(exc):
                    raise StrataError(f"object {key} is missing from the store {self.url}; the release is damaged: "
                                      "publish it again from the build pod, or pull another version.") from None
                raise

    def write(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType="application/json")

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        with self._errors("create", key):
            try:  # S3 conditional write: 412 when the key exists (AWS, MinIO, R2 honour If-None-Match)
                self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*",
                                   ContentType="application/json")
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) in ("PreconditionFailed", "412",
                                                                           "ConditionalRequestConflict", "409"):
                    return False
                raise
        return True

"""S3 store against a real S3-compatible HTTP server on loopback (moto's server mode, a separate process)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import boto3
import pytest

from strata.files import sha256_file
from strata.release.manifest import blob_key
from strata.release.stores import S3Store
from strata.settings import Settings

PART = 5 << 20  # as STRATA_S3_PART_SIZE in the s3_store fixture


def _bucket(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix


def _client():
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def test_publish_pull_over_s3(publish, s3_store: str, cli, build_pod: Settings, workspace: Settings) -> None:
    publish(s3_store, "--version", "v1")
    assert cli("release", "list", "--store", s3_store).output.split()[0] == "strata@v1"
    manifest = json.loads(cli("release", "show", "strata@latest", "--store", s3_store, "--json").output)
    bucket, prefix = _bucket(s3_store)
    keys = [o["Key"] for o in _client().list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert f"{prefix}/strata/versions/v1/manifest.json" in keys and f"{prefix}/strata/tags/latest.json" in keys
    assert len([k for k in keys if "/blobs/sha256/" in k]) == len({f["sha256"] for f in manifest["files"]})

    assert cli("release", "promote", "strata@v1", "--tag", "prod", "--store", s3_store).exit_code == 0
    pulled = cli("release", "pull", "strata@prod", "--store", s3_store, "--quiet")
    assert pulled.exit_code == 0, pulled.output
    root = workspace.workspace / "releases" / "strata" / "v1"
    assert sha256_file(root / "model" / "strata.Q4_K_M.gguf") == sha256_file(build_pod.model_path)
    assert all(sha256_file(root / f["path"]) == f["sha256"] for f in manifest["files"])
    assert "nothing to pull" in cli("release", "pull", "strata@prod", "--store", s3_store, "--quiet").output


def test_a_gguf_bigger_than_a_part_goes_up_multipart_and_comes_down_whole(cli, s3_store: str, f32_pod: Settings,
                                                                          workspace: Settings) -> None:
    size = f32_pod.model_path.stat().st_size
    assert size > PART  # the tiny base as F32 GGUF: two 5 MiB parts
    done = cli("release", "publish", "--store", s3_store, "--workspace", f32_pod.workspace, "--name", "tiny",
               "--version", "v1", "--no-qa", env={"MODEL_PATH": str(f32_pod.model_path)})  # progress: log lines
    assert done.exit_code == 0, done.output
    assert f"upload model/tiny.F32.gguf: {size / 1e6:.1f}/{size / 1e6:.1f} MB (100%)" in done.output
    sha = sha256_file(f32_pod.model_path)
    bucket, prefix = _bucket(s3_store)
    head = _client().head_object(Bucket=bucket, Key=f"{prefix}/{blob_key('tiny', sha)}")
    assert head["ETag"].strip('"').endswith(f"-{math.ceil(size / PART)}")  # a multipart upload's ETag
    assert head["ContentLength"] == size

    pulled = cli("release", "pull", "tiny@v1", "--store", s3_store)  # ranged GETs, hashed in order while written
    assert pulled.exit_code == 0, pulled.output
    assert sha256_file(workspace.workspace / "releases" / "tiny" / "v1" / "model" / "tiny.F32.gguf") == sha


def test_create_is_a_conditional_write(s3_store: str, publish, cli, one_line_error) -> None:
    """If-None-Match: * is sent and honoured (412), so of two racing publishers only the first manifest lands.
    (moto checks and writes without a lock, so the race itself is tested on the local store; AWS S3, MinIO and
    R2 decide it atomically on the server.)"""
    first, second = S3Store(s3_store), S3Store(s3_store)
    assert first.create("x/versions/v1/manifest.json", b"first") is True
    assert second.create("x/versions/v1/manifest.json", b"second") is False
    assert second.read("x/versions/v1/manifest.json") == b"first"

    publish(s3_store, "--version", "v1")
    error = one_line_error(publish(s3_store, "--version", "v1", "--adapter", "level1", ok=False))
    assert "strata@v1 is already published" in error and "versions are immutable" in error


def test_a_corrupted_object_fails_the_pull_naming_file_and_hashes(publish, s3_store: str, cli, one_line_error,
                                                                  workspace: Settings) -> None:
    publish(s3_store, "--version", "v1")
    manifest = json.loads(cli("release", "show", "strata@v1", "--store", s3_store, "--json").output)
    adapter = next(f for f in manifest["files"] if f["path"] == "peft/level1/adapter.gguf")
    bucket, prefix = _bucket(s3_store)
    key = f"{prefix}/{blob_key('strata', adapter['sha256'])}"
    data = bytearray(_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    data[100] ^= 0x80
    _client().put_object(Bucket=bucket, Key=key, Body=bytes(data))

    error = one_line_error(cli("release", "pull", "strata@v1", "--store", s3_store, "--quiet"))
    assert "peft/level1/adapter.gguf is corrupt" in error
    assert adapter["sha256"] in error and hashlib.sha256(bytes(data)).hexdigest() in error
    assert not (workspace.workspace / "releases" / "strata" / "v1").exists()


def test_s3_bad_input_is_one_line_errors(publish, s3_store: str, cli, one_line_error, free_port,
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bucket, _ = _bucket(s3_store)
    error = one_line_error(cli("release", "list", "--store", f"s3://no-such-{bucket}/x"))
    assert "does not exist" in error and "aws s3 mb" in error

    error = one_line_error(cli("release", "pull", "nosuch", "--store", s3_store))
    assert "no release named 'nosuch'" in error

    with monkeypatch.context() as env:  # nothing listens on this port
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
        env.setenv("AWS_MAX_ATTEMPTS", "2")
        error = one_line_error(cli("release", "list", "--store", s3_store))
        assert "cannot reach the S3 endpoint" in error and "AWS_ENDPOINT_URL" in error

    with monkeypatch.context() as env:  # no keys anywhere in the credential chain
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.delenv(name)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        env.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        error = one_line_error(cli("release", "list", "--store", s3_store))
        assert "no AWS credentials found" in error and "AWS_ACCESS_KEY_ID" in error

"""archive_pdfs: verified moves of only the dataset's PDFs, no-op re-runs, name clashes, and injected failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from strata.data.archive import archive_pdfs
from strata.errors import StrataError
from strata.files import sha256_file
from strata.kit.pdfs import BAD_KINDS, load_corpus

TOPICS = sorted(load_corpus())


@pytest.fixture
def ready(workspace, built):
    """A fresh workspace holding every kit PDF and the session build's dataset_summary.json."""
    shutil.copytree(built.raw_pdfs, workspace.raw_pdfs, dirs_exist_ok=True)
    shutil.copy(built.processed / "dataset_summary.json", workspace.processed / "dataset_summary.json")
    return workspace


def files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_moves_exactly_the_dataset_sources_verified_and_rerun_is_a_no_op(ready):
    before = files(ready.raw_pdfs)
    record = archive_pdfs(ready)
    archived = files(ready.pdf_archive)
    assert archived == {f"{t}/{t}.pdf": before[f"{t}/{t}.pdf"] for t in TOPICS}
    assert files(ready.raw_pdfs) == {f"_bad/{n}": before[f"_bad/{n}"] for n in BAD_KINDS}  # rejected PDFs stay
    assert sorted(m["path"] for m in record["moved"]) == sorted(archived) and record["skipped"] == []
    assert json.loads(Path(record["record"]).read_text())["moved"] == record["moved"]

    again = archive_pdfs(ready)
    assert again["moved"] == [] and {s["reason"] for s in again["skipped"]} == {"already archived"}
    assert files(ready.pdf_archive) == archived and again["record"] != record["record"]
    assert len(list((ready.processed / "archive").glob("archive-*.json"))) == 2


def test_a_name_clash_gets_a_suffix_never_an_overwrite(ready):
    clash = ready.pdf_archive / "ASC_Leases" / "ASC_Leases.pdf"
    clash.parent.mkdir(parents=True)
    clash.write_bytes(b"%PDF-1.7 an older, different file")
    source_sha = sha256_file(ready.raw_pdfs / "ASC_Leases" / "ASC_Leases.pdf")
    record = archive_pdfs(ready)
    assert clash.read_bytes() == b"%PDF-1.7 an older, different file"
    suffixed = clash.with_name("ASC_Leases-1.pdf")
    assert sha256_file(suffixed) == source_sha and not (ready.raw_pdfs / "ASC_Leases" / "ASC_Leases.pdf").exists()
    (row,) = [m for m in record["moved"] if m["topic"] == "ASC_Leases"]
    assert row["renamed"] and row["dest"] == str(suffixed)
    assert archive_pdfs(ready)["moved"] == [] and not clash.with_name("ASC_Leases-2.pdf").exists()


def test_failure_between_copy_and_unlink_keeps_the_pdf_and_a_rerun_completes(ready):
    source = ready.raw_pdfs / "ASC_Leases" / "ASC_Leases.pdf"
    sha = sha256_file(source)

    def crash(stage: str, src: Path, dest: Path) -> None:
        if src == source:
            raise OSError(f"simulated crash at {stage}")

    with pytest.raises(OSError, match="simulated crash at copied"):
        archive_pdfs(ready, hook=crash)
    assert sha256_file(source) == sha  # still in raw_pdfs, untouched
    (record,) = [json.loads(p.read_text()) for p in (ready.processed / "archive").glob("archive-*.json")]
    assert "simulated crash" in record["error"]

    archive_pdfs(ready)
    assert not source.exists()
    assert sorted(p.name for p in (ready.pdf_archive / "ASC_Leases").iterdir()) == ["ASC_Leases.pdf"]
    assert sha256_file(ready.pdf_archive / "ASC_Leases" / "ASC_Leases.pdf") == sha


def test_failure_during_the_copy_leaves_no_partial_file(ready, monkeypatch):
    def broken_copy(src, dst, length=0):
        dst.write(src.read(100))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", broken_copy)
    before = files(ready.raw_pdfs)
    with pytest.raises(OSError, match="disk full"):
        archive_pdfs(ready)
    assert files(ready.raw_pdfs) == before
    assert not ready.pdf_archive.exists() or files(ready.pdf_archive) == {}


def test_changed_pdfs_stay_and_missing_summary_is_a_clear_error(ready, workspace):
    changed = ready.raw_pdfs / "ASC_Intangibles" / "ASC_Intangibles.pdf"
    changed.write_bytes(changed.read_bytes() + b"\n% edited after the dataset build\n")
    record = archive_pdfs(ready)
    (skipped,) = record["skipped"]
    assert skipped["path"] == "ASC_Intangibles/ASC_Intangibles.pdf" and "changed" in skipped["reason"]
    assert changed.exists() and not (ready.pdf_archive / "ASC_Intangibles").exists()

    (workspace.processed / "dataset_summary.json").unlink()
    with pytest.raises(StrataError, match="run `strata build dataset` first"):
        archive_pdfs(workspace)

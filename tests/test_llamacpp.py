"""Extracting llama.cpp's converters from the sdist: also on Pythons without tarfile's `filter` (Debian's 3.11.2)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from strata import llamacpp

ROOT = "llama_cpp_python-9.9.9/vendor/llama.cpp/"


def _sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/__init__.py",
                     "gguf-py/gguf/__init__.py", "gguf-py/../../escaped.py", "src/llama.cpp"):
            data = f"# {name}\n".encode()
            info = tarfile.TarInfo(ROOT + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(ROOT + "gguf-py/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


@pytest.mark.parametrize("has_filter", [True, False])
def test_only_the_converter_parts_are_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               has_filter: bool) -> None:
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    dest = tmp_path / "cache" / "llama.cpp-9.9.9"
    llamacpp._extract(_sdist(tmp_path / "llama_cpp_python-9.9.9.tar.gz"), dest)
    assert (dest / "convert_hf_to_gguf.py").read_text() == "# convert_hf_to_gguf.py\n"
    assert (dest / "gguf-py/gguf/__init__.py").is_file() and (dest / "conversion/__init__.py").is_file()
    assert not (dest / "src").exists() and not (dest / "gguf-py/link").exists()
    assert not list(tmp_path.rglob("escaped.py"))

"""PEFT adapter -> adapter.gguf the server can load, stamped with the base fingerprint it expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strata.files import staged_path
from strata.llamacpp import convert_lora

FINGERPRINT_KEY = "strata.base_fingerprint"
DORA_MESSAGE = "DoRA adapters cannot be converted to GGUF LoRA; merge them with `strata build merge` instead"


def export_adapter_gguf(adapter_dir: Path, base_dir: Path, out: Path, base_fingerprint: str,
                        log: Path | None = None) -> Path:
    """Convert with llama.cpp's convert_lora_to_gguf.py (it reads only the base's config and tokenizer, which a
    base with lower levels merged shares), then rewrite the file with `strata.base_fingerprint` added. llama.cpp's
    output goes to `log` (default: beside `out`)."""
    raw = out.with_name(out.name + ".raw.tmp")
    log = log or out.with_name(out.name + ".log")
    try:
        convert_lora(adapter_dir, base_dir, raw, log=log)
        stamp_metadata(raw, out, {FINGERPRINT_KEY: base_fingerprint})
    finally:
        raw.unlink(missing_ok=True)
    return out


def stamp_metadata(src: Path, dest: Path, values: dict[str, str]) -> Path:
    """Copy GGUF `src` to `dest` (atomically) with extra string metadata, as gguf-py's gguf_new_metadata does."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    with staged_path(dest) as tmp:
        _copy_with(reader, gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess), values)
    return dest


def _copy_with(reader: Any, writer: Any, values: dict[str, str]) -> None:
    """Every field and tensor of `reader` into `writer`, plus `values` as string fields."""
    import gguf

    try:
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") or field.name in values:
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        for key, value in values.items():
            writer.add_key_value(key, value, gguf.GGUFValueType.STRING)
        for tensor in reader.tensors:
            writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    finally:
        writer.close()


def read_metadata(path: Path, key: str) -> str | None:
    """One string metadata value of a GGUF file (None when absent)."""
    import gguf

    field = gguf.GGUFReader(path).get_field(key)
    return field.contents() if field else None

"""Quantize a GGUF through llama-cpp-python's C API, in a child process so a kill or failure is clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from strata.errors import StrataError
from strata.files import staged_path

FTYPE_PREFIX = "LLAMA_FTYPE_MOSTLY_"


def quant_types() -> dict[str, int]:
    """Every type name llama.cpp knows (Q4_K_M, Q8_0, F16, ...) -> its LLAMA_FTYPE_* value."""
    import llama_cpp

    names = {name[len(FTYPE_PREFIX):]: getattr(llama_cpp, name) for name in dir(llama_cpp) if name.startswith(FTYPE_PREFIX)}
    names["F32"] = llama_cpp.LLAMA_FTYPE_ALL_F32
    return names


def ftype_for(quant: str) -> int:
    """The LLAMA_FTYPE_* value for a type name (case-insensitive); unknown names list the valid ones."""
    types = quant_types()
    key = quant.strip().upper()
    if key not in types:
        raise StrataError(f"unknown quantization type {quant!r}; choose one llama.cpp knows: {', '.join(sorted(types))}")
    return types[key]


def quantize_gguf(src: Path, dst: Path, quant: str, n_threads: int = 0, timeout_s: float | None = None) -> Path:
    """Quantize `src` into `dst` (written whole or not at all). The C call runs in a child process: a failure,
    timeout or kill of that child leaves no partial file and `dst`'s previous contents untouched."""
    ftype_for(quant)  # fail fast, before spawning anything
    try:
        with staged_path(dst, "partial") as tmp:
            cmd = [sys.executable, "-m", "strata.export.quantize", str(src), str(tmp), quant, str(n_threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            if done.returncode != 0:
                how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else f"exited {done.returncode}"
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
                raise StrataError(f"quantizing {src.name} to {quant} {how}; {dst} was left as it was. "
                                  f"llama.cpp said:\n{tail or '(nothing)'}")
    except subprocess.TimeoutExpired:
        raise StrataError(f"quantizing {src.name} to {quant} took over {timeout_s}s and was stopped; "
                          f"{dst} was left as it was. Raise the timeout or pick a smaller model.") from None
    return dst


def _quantize_here(src: str, dst: str, quant: str, n_threads: int) -> int:
    """The blocking C call (`llama_model_quantize`); returns llama.cpp's status (0 is success)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_for(quant)
    params.nthread = n_threads
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params))


if __name__ == "__main__":
    source, target, kind, threads = sys.argv[1:5]
    sys.exit(1 if _quantize_here(source, target, kind, int(threads)) else 0)

#!/usr/bin/env bash
# Build (once) and print the path of a portable llama-cpp-python wheel, cached by version + CMAKE_ARGS.
# pip's own wheel cache ignores CMAKE_ARGS, so we keep our own, keyed by both (see DESIGN.md).
#
# usage: llama_wheel.sh [--cached] VERSION
#   --cached         print the cached wheel and exit 0, or exit 3 when there is none (builds nothing)
# env:
#   PYTHON           interpreter whose pip builds the wheel (default python3)
#   STRATA_CACHE     cache root (default ~/.cache/strata): wheels/llama-cpp-python-VERSION-KEY/, sdist/
#   CMAKE_ARGS       llama.cpp build flags (default: portable, no AMX); part of the cache key
#   STRATA_PREBUILT  optional folder in the same layout (e.g. another machine's ~/.cache/strata, read-only):
#                    a wheel with the same version + flags key and the sdist are taken from it, not rebuilt
set -euo pipefail
cached_only=""
if [ "${1:-}" = "--cached" ]; then
  cached_only=1
  shift
fi
version="${1:?usage: llama_wheel.sh [--cached] VERSION}"
python="${PYTHON:-python3}"
cache="${STRATA_CACHE:-$HOME/.cache/strata}"
prebuilt="${STRATA_PREBUILT:-}"
: "${CMAKE_ARGS:=-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
key=$(printf '%s|%s' "$version" "$CMAKE_ARGS" | sha1sum | cut -c1-12)
name="llama-cpp-python-$version-$key"
sdist_name="llama_cpp_python-$version.tar.gz"

find_wheel() {  # the wheel in folder $1, if any
  find "$1" -maxdepth 1 -name "llama_cpp_python-$version-*.whl" 2>/dev/null | sort | head -n1 || true
}

wheel=$(find_wheel "$cache/wheels/$name")
if [ -z "$wheel" ] && [ -n "$prebuilt" ]; then
  seed=$(find_wheel "$prebuilt/wheels/$name")
  if [ -n "$seed" ]; then
    mkdir -p "$cache/wheels/$name"
    cp "$seed" "$cache/wheels/$name/"
    wheel=$(find_wheel "$cache/wheels/$name")
    echo "using the prebuilt wheel $seed (same version and CMAKE_ARGS)" >&2
  fi
fi
if [ -n "$prebuilt" ] && [ -f "$prebuilt/sdist/$sdist_name" ] && [ ! -f "$cache/sdist/$sdist_name" ]; then
  mkdir -p "$cache/sdist"
  cp "$prebuilt/sdist/$sdist_name" "$cache/sdist/"
fi
if [ -n "$cached_only" ]; then
  [ -n "$wheel" ] || exit 3
  echo "$wheel"
  exit 0
fi
if [ -z "$wheel" ]; then
  dir="$cache/wheels/$name"
  mkdir -p "$dir" "$cache/sdist"
  sdist="$cache/sdist/$sdist_name"
  if [ ! -f "$sdist" ]; then
    # Only llama-cpp-python comes from source; its build dependencies stay wheels (`:all:` rebuilt them all).
    "$python" -m pip download --no-deps --no-binary llama-cpp-python -d "$cache/sdist" "llama-cpp-python==$version" >&2
  fi
  echo "building llama-cpp-python $version (portable, ~6 min on 2 cores): CMAKE_ARGS=$CMAKE_ARGS" >&2
  tmp=$(mktemp -d "$dir.tmp.XXXX")
  CMAKE_ARGS="$CMAKE_ARGS" "$python" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "$sdist" >&2
  mv "$tmp"/llama_cpp_python-*.whl "$dir"/
  rmdir "$tmp"
  wheel=$(find_wheel "$dir")
fi
echo "$wheel"

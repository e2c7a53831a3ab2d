#!/usr/bin/env bash
# Build (once) and print the path of a portable llama-cpp-python wheel, cached by version + CMAKE_ARGS.
# pip's own wheel cache ignores CMAKE_ARGS, so we keep our own, keyed by both (see DESIGN.md).
set -euo pipefail
version="${1:?usage: llama_wheel.sh VERSION}"
python="${PYTHON:-python3}"
cache="${STRATA_CACHE:-$HOME/.cache/strata}"
: "${CMAKE_ARGS:=-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
key=$(printf '%s|%s' "$version" "$CMAKE_ARGS" | sha1sum | cut -c1-12)
dir="$cache/wheels/llama-cpp-python-$version-$key"
sdist_dir="$cache/sdist"
mkdir -p "$dir" "$sdist_dir"
wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
  if [ ! -f "$sdist" ]; then
    "$python" -m pip download --no-deps --no-binary :all: -d "$sdist_dir" "llama-cpp-python==$version" >&2
  fi
  echo "building llama-cpp-python $version (portable, ~6 min on 2 cores): CMAKE_ARGS=$CMAKE_ARGS" >&2
  tmp=$(mktemp -d "$dir.tmp.XXXX")
  CMAKE_ARGS="$CMAKE_ARGS" "$python" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "$sdist" >&2
  mv "$tmp"/llama_cpp_python-*.whl "$dir"/
  rmdir "$tmp"
  wheel=$(ls "$dir"/llama_cpp_python-"$version"-*.whl | head -n1)
fi
echo "$wheel"

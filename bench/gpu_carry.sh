#!/usr/bin/env bash
# The GPU-only packages (flash-attn-4 with its CuTe-DSL runtime, quack, liger) and the bench-300
# text, carried to a device machine whose calls take at most 64 MiB each and that has no network.
#
# Here, once (needs pip's index and ../shared):
#   bash bench/gpu_carry.sh prepare
#     .whl/       the small wheels, ~16 MB (pinned as measured: see pyproject's `gpu` extra), and
#                 pgolf's own dependencies the device image lacks (zstandard, brotli,
#                 python-minifier: without it `pgolf pack` cannot measure the counted code)
#     .whl_cu13/  nvidia-cutlass-dsl-libs-cu13 4.8.1: a 92 MB wheel, too big for one call; its
#                 files re-packed as tar.xz are 62 MB and travel alone
#     .carry/     bench-300's text (../shared/bench/make_carry.sh, 58 MB) and the tokenizers
# On the device, three calls back to back (the machine stays warm ~30 s after each); each call
# carries one folder, which `stage` copies to /tmp/stage so the next calls find it:
#   1. carry [".whl_cu13"]:  bash bench/gpu_carry.sh stage
#   2. carry [".carry"]:     bash bench/gpu_carry.sh stage
#   3. carry [".whl"]:       source bench/gpu_carry.sh install; python3 bench/train_speed.py ...
# `install` puts every package under /tmp/site-packages and exports PYTHONPATH, including the
# CuTe DSL's own packages folder, which its .pth file would add in a normal install (--target
# skips .pth). The folder must be named site-packages: quack keys its kernel cache by hashing
# the code an epilogue reaches, and treats code outside a `site-packages` path as its own, so
# from /tmp/site its fused GEMM epilogues failed on cutlass's globals (TypeError "no
# fail-closed semantic key", H200, 2026-12-01).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stage=/tmp/stage

download() { # DIR PACKAGE...: wheels for the device's Python 3.12 on x86-64
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$@"
}

prepare() {
  cd "$here"
  download .whl flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 \
    nvidia-cutlass-dsl-libs-base==4.8.1 nvidia-cutlass-dsl-libs-core==4.8.1 \
    quack-kernels==0.6.5 apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5 \
    einops==0.8.2 liger-kernel==0.8.5 zstandard brotli python-minifier==3.4.0
  mkdir -p .whl_cu13 /tmp/cu13
  download /tmp/cu13 nvidia-cutlass-dsl-libs-cu13==4.8.1
  rm -rf /tmp/cu13/x && mkdir /tmp/cu13/x
  (cd /tmp/cu13/x && unzip -q ../nvidia_cutlass_dsl_libs_cu13-*.whl && tar cf - . | xz -9 -T2 >"$here/.whl_cu13/cu13.tar.xz")
  [ -f .carry/bench_subset.jsonl.xz ] || bash ../shared/bench/make_carry.sh .carry/bench_subset.jsonl.xz
  cp ../shared/tokenizers/fineweb_{1024,4096,8192}_bpe.model .carry/
  du -sh .whl .whl_cu13 .carry
}

stage_carried() {
  mkdir -p "$stage"
  cd "$here"
  for d in .whl_cu13 .carry .whl; do
    if [ -d "$d" ] && [ ! -L "$d" ]; then cp -r "$d" "$stage/"; fi
  done
  ls -la "$stage"
}

install() {
  cd "$here"
  stage_carried >/dev/null
  [ -e .carry ] || ln -s "$stage/.carry" .carry
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site-packages "$stage"/.whl/*.whl
  tar xJf "$stage/.whl_cu13/cu13.tar.xz" -C /tmp/site-packages
  export PYTHONPATH="/tmp/site-packages:/tmp/site-packages/nvidia_cutlass_dsl/dsl_packages:$here:${PYTHONPATH:-}"
  python3 -c 'import flash_attn.cute, quack, liger_kernel; print("gpu_packages: ok")'
}

case "${1:-}" in
prepare) prepare ;;
stage) stage_carried ;;
install) install ;;
*) echo "usage: gpu_carry.sh prepare|stage|install (see the header)" >&2 && exit 2 ;;
esac

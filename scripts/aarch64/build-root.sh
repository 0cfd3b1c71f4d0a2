#!/usr/bin/env bash
# Build, or bring up to date, an aarch64 Debian bookworm userland (Raspberry Pi OS 64-bit's
# base: Python 3.11) with hemalite's edge install in it, run by qemu-user on an x86-64
# Debian host: no chroot, no binfmt, the host's dpkg untouched.
#
# Usage: scripts/aarch64/build-root.sh   (run from the checkout; make aarch64-check calls it)
# Cache, kept between runs: $AARCH64_CACHE, default /var/cache/hemalite-aarch64 as root,
# else ~/.cache/hemalite-aarch64. Inside it:
#   apt/               a private APT_CONFIG: arm64 lists and .debs (the host's state untouched)
#   root/              those .debs unpacked (files only, no maintainer scripts)
#   cpu/<QEMU_CPU>/    the prefix for qemu -L: root/ hard-linked, plus that CPU's /proc/cpuinfo
#   venv-litert/       pip install ".[bench]": LiteRT, numpy 2, what a Pi user installs
#   venv-tflite/       pip install "numpy<2" "tflite-runtime==2.14.*" .
# Each venv's bin/python is a host shell script that runs the venv's aarch64 Python under
# qemu with $QEMU_CPU, so scripts, entry points and child processes (pip's build backend,
# edge-bench's cold start) all work. A venv is rebuilt when setup.cfg/pyproject.toml
# change; otherwise only hemalite itself is reinstalled from the checkout.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/scripts/aarch64
if [ "$(id -u)" = 0 ]; then CACHE=${AARCH64_CACHE:-/var/cache/hemalite-aarch64}
else CACHE=${AARCH64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hemalite-aarch64}; fi
# Python, and what the wheels link from the system: libstdc++ (LiteRT). OpenCV's headless
# wheel (imported by the stain mask) needs no GL, GLib or X11 library (opencv-python did).
PACKAGES="python3.11 python3.11-venv libstdc++6"
CPUS="cortex-a72 cortex-a76 neoverse-n1"   # those cpuinfo.py knows; never qemu's `max`
QEMU=/usr/bin/qemu-aarch64-static
BUILD_CPU=cortex-a72   # the CPU pip runs on while building
ROOT=$CACHE/root

say() { echo "aarch64: $*" >&2; }
die() { echo "aarch64: error: $*" >&2; exit 1; }

install_qemu() {
    [ -x "$QEMU" ] && return
    [ "$(id -u)" = 0 ] || die "qemu-user-static is missing: apt-get install qemu-user-static"
    say "installing qemu-user-static"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static >/dev/null
}

# A private APT: arm64 only, its own lists, cache and (empty) dpkg status, the host's sources.
apt_config() {
    local apt=$CACHE/apt
    mkdir -p "$apt/sources" "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/empty"
    : >"$apt/state/status"
    grep -qs bookworm /etc/apt/sources.list.d/*.sources /etc/apt/sources.list ||
        die "the host's APT sources have no bookworm suite: this script expects a Debian 12 host"
    rm -f "$apt"/sources/*
    local f
    for f in $(grep -ls bookworm /etc/apt/sources.list.d/*.sources); do cp "$f" "$apt/sources/"; done
    [ -s /etc/apt/sources.list ] && cp /etc/apt/sources.list "$apt/sources/host.list"
    cat >"$apt/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
Dir::State "$apt/state";
Dir::State::status "$apt/state/status";
Dir::Cache "$apt/cache";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$apt/sources";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$apt/empty";
Debug::NoLocking "true";
EOF
    echo "$apt/apt.conf"
}

build_root() {
    if [ "$(cat "$ROOT/.packages" 2>/dev/null)" = "$PACKAGES" ]; then return; fi
    say "resolving and unpacking arm64 packages: $PACKAGES"
    local conf
    conf=$(apt_config)
    APT_CONFIG=$conf apt-get -q update >/dev/null
    APT_CONFIG=$conf apt-get -q clean  # unpack this resolution's .debs only
    # shellcheck disable=SC2086
    APT_CONFIG=$conf apt-get -q -y install --download-only $PACKAGES >/dev/null
    rm -rf "$ROOT" "$CACHE/cpu"
    mkdir -p "$ROOT"
    local deb n=0
    for deb in "$CACHE"/apt/cache/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; n=$((n + 1)); done
    say "unpacked $n .debs ($(du -sh "$CACHE/apt/cache/archives" | cut -f1))"
    echo "$PACKAGES" >"$ROOT/.packages"
    basename "$CACHE"/apt/cache/archives/python3.11-minimal_*.deb >"$ROOT/.python"
}

# cpu/<name>/: the root, hard-linked (not symlinked: realpath() in the guest would follow a
# link out of the prefix), and proc/cpuinfo describing that CPU as qemu emulates it (LiteRT
# crashes on the host's x86 /proc/cpuinfo, which qemu passes through).
cpu_prefixes() {
    local cpu dir
    for cpu in $CPUS; do
        dir=$CACHE/cpu/$cpu
        [ "$(cat "$dir/.cores" 2>/dev/null)" = "$(nproc)" ] && continue
        rm -rf "$dir" && mkdir -p "$CACHE/cpu" && cp -al "$ROOT" "$dir" && mkdir -p "$dir/proc"
        QEMU_CPU=$cpu "$QEMU" -L "$dir" "$ROOT/usr/bin/python3.11" "$HERE/cpuinfo.py" "$(nproc)" \
            >"$dir/proc/cpuinfo"
        nproc >"$dir/.cores"
    done
}

# The venv's python: a host script (the kernel runs it natively, for entry points and child
# processes too) that starts the venv's aarch64 interpreter under qemu with argv[0] = itself,
# so Python finds the venv.
write_python_wrapper() {
    local venv=$1
    rm -f "$venv/bin/python" "$venv/bin/python3"
    cat >"$venv/bin/python" <<EOF
#!/bin/sh
# This venv's aarch64 Python under qemu-user (scripts/aarch64/build-root.sh wrote it).
# QEMU_CPU picks the emulated CPU and its /proc/cpuinfo: $CPUS.
prefix=$CACHE/cpu/\${QEMU_CPU:-unset}
if [ ! -f "\$prefix/proc/cpuinfo" ]; then
    echo "error: set QEMU_CPU to one of: $CPUS (qemu's default, max, makes XNNPACK's int8 wrong)" >&2
    exit 2
fi
exec $QEMU -L "\$prefix" -0 "\$0" "$venv/bin/python3.11" "\$@"
EOF
    chmod +x "$venv/bin/python"
    ln -s python "$venv/bin/python3"
}

# make_venv NAME PIP_ARGS...: create when missing or stale, else reinstall hemalite only.
make_venv() {
    local name=$1
    shift
    local venv=$CACHE/$name key
    # the venvs outlive a root rebuilt for other libraries, not another Python
    key=$(cat "$REPO/setup.cfg" "$REPO/pyproject.toml" "$ROOT/.python" <(echo "$@") | sha256sum | cut -c1-16)
    export QEMU_CPU=$BUILD_CPU
    cd "$REPO"
    if [ "$(cat "$venv/.key" 2>/dev/null)" != "$key" ]; then
        say "creating $name: pip install $* (under emulation: minutes)"
        rm -rf "$venv"
        "$QEMU" -L "$CACHE/cpu/$BUILD_CPU" "$ROOT/usr/bin/python3.11" -m venv --without-pip "$venv"
        write_python_wrapper "$venv"
        "$venv/bin/python" -m ensurepip >/dev/null
        "$venv/bin/python" -m pip install -q "setuptools>=69" wheel
        "$venv/bin/python" -m pip install -q "$@"
        echo "$key" >"$venv/.key"
    else
        say "refreshing hemalite in $name"
        "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index \
            --no-compile --force-reinstall .
    fi
    cd - >/dev/null
}

install_qemu
mkdir -p "$CACHE"
build_root
cpu_prefixes
make_venv venv-litert ".[bench]"
make_venv venv-tflite "numpy<2" "tflite-runtime==2.14.*" .
say "ready in $CACHE"

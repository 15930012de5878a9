#!/usr/bin/env bash
# Build QEMU's own tests/qtest/ide-test from Debian's `qemu` source package, the same upstream version as the
# installed qemu-system-x86, into a git-ignored cache. The test binary then runs against any program named by
# QTEST_QEMU_BINARY (xenide's launcher: bin/xenide-system-x86_64).
#
# Build dependencies (Debian): build-essential ninja-build meson python3-venv pkg-config libglib2.0-dev
# libpixman-1-dev flex bison zlib1g-dev python3-setuptools libfdt-dev dpkg-dev; the source version is read
# from the installed qemu-system-x86.
# The system's apt configuration is left untouched: a private apt state (sources, lists, cache) lives in the cache,
# whose only source is the system's own debian.sources with `Types: deb-src`.
#
# Usage: scripts/build-ide-test.sh [CACHE_DIR]    (default: .cache/qemu-ide-test under the repository root)
# Prints the path of the built binary on its last line. Safe to run again: a built binary is not rebuilt.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-${XENIDE_IDE_TEST_CACHE:-$root/.cache/qemu-ide-test}}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
binary="$cache/build/tests/qtest/ide-test"

if [[ -x $binary && -f $cache/READY ]]; then
  echo "build-ide-test: already built"
  echo "$binary"
  exit 0
fi

need() { command -v "$1" >/dev/null || { echo "build-ide-test: $1 not found ($2)" >&2; exit 1; }; }
need apt-get "a Debian system is needed"
need dpkg-query "a Debian system is needed"
need dpkg-source "install dpkg-dev"
need ninja "install ninja-build"
need meson "install meson"
need cc "install build-essential"
need pkg-config "install pkg-config"
pkg-config --exists glib-2.0 || { echo "build-ide-test: glib-2.0 not found (install libglib2.0-dev)" >&2; exit 1; }

# "1:7.2+dfsg-7+deb12u18+b3" -> "1:7.2+dfsg-7+deb12u18": a binNMU suffix (+bN) names no source version.
installed="$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)"
[[ -n $installed ]] || { echo "build-ide-test: qemu-system-x86 is not installed (its version picks the source)" >&2; exit 1; }
version="${installed%+b[0-9]*}"

# Private apt state: sources, lists and archives under the cache.
state="$cache/apt"
mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/sources.list.d"
system_sources=/etc/apt/sources.list.d/debian.sources
[[ -f $system_sources ]] || { echo "build-ide-test: $system_sources not found" >&2; exit 1; }
sed 's/^Types:.*/Types: deb-src/' "$system_sources" >"$state/sources.list.d/debian.sources"
: >"$state/sources.list"
apt_opts=(-q -o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=$state/sources.list.d"
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state" -o "Dir::State::status=/dev/null"
  -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")

src="$cache/src"
if [[ ! -f $src/tests/qtest/ide-test.c ]]; then
  if ! compgen -G "$state/lists/*_Sources*" >/dev/null; then
    # A security-mirror sync can make one index fail; the main archive's index is what matters.
    apt-get "${apt_opts[@]}" update >"$state/update.log" 2>&1 || true
    compgen -G "$state/lists/*_Sources*" >/dev/null || {
      cat "$state/update.log" >&2
      echo "build-ide-test: apt-get update found no source index" >&2
      exit 1
    }
  fi
  dl="$cache/download"
  rm -rf "$dl" "$src"
  mkdir -p "$dl"
  (cd "$dl" && apt-get "${apt_opts[@]}" --download-only source "qemu=$version")
  dsc="$(ls "$dl"/*.dsc | head -n1)"
  # Unpacked with the Debian patches applied, as Debian's own build sees it.
  dpkg-source --no-check -x "$dsc" "$src" >/dev/null
  # dpkg-source copies the upstream tarball beside the unpacked tree; the tree is all the build needs.
  rm -rf "$dl" "$cache"/qemu_*.orig.tar.*
fi

build="$cache/build"
if [[ ! -f $build/build.ninja ]]; then
  rm -rf "$build"
  mkdir -p "$build"
  (cd "$build" && "$src/configure" --target-list=x86_64-softmmu --disable-docs --disable-werror \
    --with-git-submodules=ignore --without-default-features --disable-tools --disable-user --enable-system \
    --disable-slirp --disable-capstone --enable-fdt=system >"$cache/configure.log" 2>&1) || {
    tail -n 30 "$cache/configure.log" >&2
    echo "build-ide-test: configure failed (log: $cache/configure.log)" >&2
    exit 1
  }
fi
jobs="${XENIDE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
ninja -C "$build" -j "$jobs" tests/qtest/ide-test >"$cache/ninja.log" 2>&1 || {
  tail -n 30 "$cache/ninja.log" >&2
  echo "build-ide-test: ninja failed (log: $cache/ninja.log)" >&2
  exit 1
}
[[ -x $binary ]] || { echo "build-ide-test: $binary was not produced" >&2; exit 1; }
echo "qemu $version" >"$cache/READY"
echo "build-ide-test: built QEMU $version ide-test"
echo "$binary"

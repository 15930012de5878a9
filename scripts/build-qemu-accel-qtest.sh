#!/usr/bin/env bash
# Build the `accel-qtest-x86_64.so` module for the installed Debian QEMU, so that QEMU's own ide-test can run
# against Debian's qemu-system-x86_64 (`-accel qtest`): Debian's package deletes that module. It is built from the
# same source tree scripts/build-ide-test.sh unpacks (that script is run first when the tree is missing), in a
# second build directory configured with --enable-modules and the installed package's version string, which QEMU
# stamps into every module and checks when it loads one.
#
# Run Debian's QEMU with it: QEMU_MODULE_DIR=<printed directory> qemu-system-x86_64 ... -accel qtest
# The system's QEMU and apt configuration are left untouched; everything lives in the git-ignored cache.
#
# Usage: scripts/build-qemu-accel-qtest.sh [CACHE_DIR]    (default: .cache/qemu-ide-test)
# Prints the directory holding the module on its last line. Safe to run again: a built module is not rebuilt.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-${XENIDE_IDE_TEST_CACHE:-$root/.cache/qemu-ide-test}}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
modules="$cache/qemu-modules"
module="$modules/accel-qtest-x86_64.so"

# The stamp is QEMU's --with-pkgversion: "Debian 1:7.2+dfsg-7+deb12u18+b3" (the full package version, binNMU
# suffix included, as `qemu-system-x86_64 --version` prints it).
installed="$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)"
[[ -n $installed ]] || { echo "build-qemu-accel-qtest: qemu-system-x86 is not installed" >&2; exit 1; }
pkgversion="Debian $installed"

if [[ -f $module && -f $modules/READY && "$(cat "$modules/READY")" == "$pkgversion" ]]; then
  echo "build-qemu-accel-qtest: already built"
  echo "$modules"
  exit 0
fi

src="$cache/src"
if [[ ! -f $src/configure ]]; then
  "$root/scripts/build-ide-test.sh" "$cache" >/dev/null
fi
[[ -f $src/configure ]] || { echo "build-qemu-accel-qtest: no QEMU source in $src" >&2; exit 1; }

build="$cache/build-modules"
if [[ ! -f $build/build.ninja || "$(cat "$build/PKGVERSION" 2>/dev/null)" != "$pkgversion" ]]; then
  rm -rf "$build"
  mkdir -p "$build"
  (cd "$build" && "$src/configure" --target-list=x86_64-softmmu --disable-docs --disable-werror \
    --with-git-submodules=ignore --without-default-features --disable-tools --disable-user --enable-system \
    --disable-slirp --disable-capstone --enable-fdt=system --enable-modules \
    --with-pkgversion="$pkgversion" >"$cache/configure-modules.log" 2>&1) || {
    tail -n 30 "$cache/configure-modules.log" >&2
    echo "build-qemu-accel-qtest: configure failed (log: $cache/configure-modules.log)" >&2
    exit 1
  }
  echo "$pkgversion" >"$build/PKGVERSION"
fi
jobs="${XENIDE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
ninja -C "$build" -j "$jobs" accel-qtest-x86_64.so >"$cache/ninja-modules.log" 2>&1 || {
  tail -n 30 "$cache/ninja-modules.log" >&2
  echo "build-qemu-accel-qtest: ninja failed (log: $cache/ninja-modules.log)" >&2
  exit 1
}
[[ -f $build/accel-qtest-x86_64.so ]] || {
  echo "build-qemu-accel-qtest: $build/accel-qtest-x86_64.so was not produced" >&2
  exit 1
}
mkdir -p "$modules"
cp "$build/accel-qtest-x86_64.so" "$module"
echo "$pkgversion" >"$modules/READY"
echo "build-qemu-accel-qtest: built accel-qtest-x86_64.so for QEMU ($pkgversion)"
echo "$modules"

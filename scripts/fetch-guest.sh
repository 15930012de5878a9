#!/usr/bin/env bash
# Fetch the pieces of the real-guest tests from Debian's package archive into a git-ignored cache:
#   i386 (the guest; v86 emulates a 32-bit PC only): the 686 Linux kernel with its modules, busybox-static;
#   architecture-independent firmware: seabios (bios.bin, vgabios-stdvga.bin), syslinux-common (mbr.bin);
#   host tools, unpacked rather than installed so no root is needed: mtools, dosfstools, syslinux (the mtools
#   installer). They depend on libc6 only.
# The system's apt configuration is left untouched: package lists go into the cache (Dir::State::Lists).
#
# Usage: scripts/fetch-guest.sh [CACHE_DIR]    (default: .cache/guests under the repository root)
# Exits 0 when every piece is present afterwards. Safe to run again: a complete cache is not fetched twice.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-${XENIDE_GUEST_CACHE:-$root/.cache/guests}}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
stamp="$cache/READY"

if [[ -f "$stamp" ]]; then
  ok=1
  while read -r rel; do [[ -e "$cache/$rel" ]] || ok=0; done < <(sed -n 's/^file //p' "$stamp")
  if [[ $ok == 1 ]]; then
    echo "fetch-guest: cache complete in $cache"
    exit 0
  fi
fi

command -v apt-get >/dev/null || { echo "fetch-guest: apt-get not found (a Debian system is needed)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "fetch-guest: dpkg-deb not found" >&2; exit 1; }

# One private apt state per architecture; only the main archive (the kernel ABI we need is there).
fetch() { # fetch ARCH DEST PACKAGE...
  local arch="$1" dest="$2"
  shift 2
  local state="$cache/apt-$arch"
  mkdir -p "$state/lists/partial" "$state/archives/partial" "$dest"
  local o=(-q -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o "Dir::State::Lists=$state/lists"
    -o "Dir::Cache=$state" -o "Dir::State::status=/dev/null" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  if ! compgen -G "$state/lists/*_Packages*" >/dev/null; then
    # A security-mirror sync can make one index fail; the main archive's index is what matters.
    apt-get "${o[@]}" update >"$state/update.log" 2>&1 || true
    compgen -G "$state/lists/*_Packages*" >/dev/null || {
      cat "$state/update.log" >&2
      echo "fetch-guest: apt-get update for $arch found no package index" >&2
      exit 1
    }
  fi
  local pkgs=()
  for p in "$@"; do
    if [[ $p == "@kernel" ]]; then
      # linux-image-686 is a metapackage; download the image package it names.
      p="$(apt-cache "${o[@]}" depends linux-image-686 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
      [[ -n $p ]] || { echo "fetch-guest: cannot resolve linux-image-686" >&2; exit 1; }
    fi
    pkgs+=("$p")
  done
  (cd "$dest" && apt-get "${o[@]}" download "${pkgs[@]}")
}

debs="$cache/debs"
rm -rf "$debs" "$cache/i386" "$cache/host"
fetch i386 "$debs/i386" @kernel busybox-static
host_arch="$(dpkg --print-architecture)"
fetch "$host_arch" "$debs/host" seabios syslinux-common syslinux mtools dosfstools

for f in "$debs"/i386/*.deb; do dpkg-deb -x "$f" "$cache/i386"; done
for f in "$debs"/host/*.deb; do dpkg-deb -x "$f" "$cache/host"; done

kver="$(basename "$(ls -d "$cache"/i386/lib/modules/*/ | head -n1)")"
need=(
  "i386/boot/vmlinuz-$kver"
  "i386/lib/modules/$kver/modules.order"
  "i386/bin/busybox"
  "host/usr/share/seabios/bios.bin"
  "host/usr/share/seabios/vgabios-stdvga.bin"
  "host/usr/lib/syslinux/mbr/mbr.bin"
  "host/usr/bin/syslinux"
  "host/usr/bin/mcopy"
  "host/sbin/mkfs.fat"
)
{
  echo "kernel $kver"
  for f in "$debs"/*/*.deb; do echo "deb $(basename "$f")"; done
  for rel in "${need[@]}"; do
    [[ -e "$cache/$rel" ]] || { echo "fetch-guest: $rel missing after unpacking" >&2; exit 1; }
    echo "file $rel"
  done
} >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "fetch-guest: pieces for kernel $kver in $cache"

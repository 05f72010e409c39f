#!/bin/sh
# Bookworm's mkosi (14) cannot build an ESP disk on these kernels; trixie's 25.x can (via a tools tree).
# mkosi is not on PyPI, so fetch trixie's .deb with a private apt state and unpack it: nothing is
# installed on the host, and the result lives under image/.tools (git-ignored).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tools="$here/.tools"
want="${MKOSI_SERIES:-25}"
if [ -f "$tools/mkosi/usr/lib/python3/dist-packages/mkosi/__init__.py" ]; then exit 0; fi
apt="$tools/apt"
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/etc/sources.list.d" "$apt/etc/preferences.d"
cat > "$apt/etc/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
SRC
opts="-o Dir::Etc=$apt/etc -o Dir::State=$apt -o Dir::State::Lists=$apt/lists -o Dir::Cache=$apt
      -o Dir::Etc::SourceParts=$apt/etc/sources.list.d -o Dir::Etc::Preferences=$apt/etc/preferences.d
      -o Dir::State::status=/var/lib/dpkg/status -o Debug::NoLocking=1"
# shellcheck disable=SC2086
apt-get $opts -qq update
# shellcheck disable=SC2086
ver=$(apt-cache $opts show mkosi | sed -n 's/^Version: //p' | head -n1)
case "$ver" in "$want"*) ;; *) echo "fetch-mkosi: trixie offers mkosi $ver, want $want.x" >&2; exit 1 ;; esac
cd "$apt/archives"
# shellcheck disable=SC2086
apt-get $opts -qq download "mkosi=$ver"
rm -rf "$tools/mkosi"
dpkg -x "$apt/archives"/mkosi_*.deb "$tools/mkosi"
echo "fetch-mkosi: mkosi $ver unpacked in $tools/mkosi"

#!/bin/sh
# verify-unit.sh [BUILD_DIR] — checks the systemd files of this directory:
#  - agentbraked.service with `systemd-analyze verify`, on a copy whose program paths point at
#    BUILD_DIR's agentbraked (or /bin/true when it is not built) and at the helper here;
#  - agentbrake.sysusers and agentbrake.tmpfiles applied to a scratch root directory;
#  - the helper script's shell syntax.
# Exit 0 when everything passes; prints what failed otherwise. Needs systemd installed (not
# running: PID 1 may be anything).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-}
daemon=/bin/true
if [ -n "$build" ] && [ -x "$build/agentbraked" ]; then daemon=$(cd "$build" && pwd)/agentbraked; fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

sed -e "s#/usr/sbin/agentbraked#$daemon#g" \
    -e "s#/usr/libexec/agentbrake/agentbrake-mount-kernel-fs#$here/agentbrake-mount-kernel-fs#g" \
    "$here/agentbraked.service" >"$scratch/agentbraked.service"
# verify prints warnings for anything it dislikes; treat any output as a failure
out=$(systemd-analyze verify "$scratch/agentbraked.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; exit 1; fi

if [ "$(id -u)" != 0 ]; then
  # tmpfiles chowns to root:agentbrake, which needs root even inside a scratch root
  echo "note: not root, sysusers/tmpfiles not applied"
  sh -n "$here/agentbrake-mount-kernel-fs" || { echo "agentbrake-mount-kernel-fs: syntax error"; exit 1; }
  echo "systemd files OK (ExecStart=$daemon)"
  exit 0
fi
root="$scratch/root"
mkdir -p "$root/etc"
: >"$root/etc/passwd"
: >"$root/etc/group"
systemd-sysusers --root="$root" "$here/agentbrake.sysusers" >/dev/null 2>&1 ||
  { echo "systemd-sysusers failed on agentbrake.sysusers"; exit 1; }
grep -q '^agentbrake:' "$root/etc/group" || { echo "sysusers did not create group agentbrake"; exit 1; }
systemd-tmpfiles --root="$root" --create "$here/agentbrake.tmpfiles" ||
  { echo "systemd-tmpfiles failed on agentbrake.tmpfiles"; exit 1; }
for d in etc/agentbrake/policy.d var/lib/agentbrake; do
  [ -d "$root/$d" ] || { echo "tmpfiles did not create /$d"; exit 1; }
done
[ "$(stat -c %a "$root/var/lib/agentbrake")" = 750 ] || { echo "/var/lib/agentbrake is not 0750"; exit 1; }

sh -n "$here/agentbrake-mount-kernel-fs" || { echo "agentbrake-mount-kernel-fs: syntax error"; exit 1; }
echo "systemd files OK (ExecStart=$daemon)"

#!/usr/bin/env bash
# CI stage: the README's two commands (scripts/demo.sh, then scripts/test.sh) on a brand-new minimal
# Debian 12, so that a missing install step fails CI instead of the first user.
#
# Every run starts from a bare `mmdebstrap --variant=minbase bookworm` root (nothing reused from an
# earlier run but the downloaded .deb files, which apt checks against the signed archive indices), with
# the working tree's files (git ls-files: no build/ or out/) copied to /src in it. Needs root (mount,
# chroot); uses sudo when not root. DEMO_STEPS (default 30) keeps the demo short; it must still print
# its samples. FRESH_DEB_CACHE (default ~/.cache/tensorpar-fresh-debs) keeps the .debs between runs.
# TENSORPAR_REQUIRE_ENVIRONMENT is passed in (CI sets it: an environment skip in the tests fails).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=DEMO_STEPS,FRESH_DEB_CACHE,TENSORPAR_REQUIRE_ENVIRONMENT "$0" "$@"
fi
steps="${DEMO_STEPS:-30}"
debs="${FRESH_DEB_CACHE:-$HOME/.cache/tensorpar-fresh-debs}"
mkdir -p "$debs/partial"

work="$(mktemp -d /tmp/tensorpar-fresh.XXXXXX)"
sys="$work/root"
mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
  done
  # --one-file-system: should an unmount have failed, never delete through it into the host
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mnt() { # mnt TARGET MOUNT-ARGS...: mounts and remembers it for cleanup
  local target="$1"; shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

t0=$SECONDS
mmdebstrap --quiet --variant=minbase bookworm "$sys"
echo "fresh-debian: minbase root in $((SECONDS - t0)) s" >&2

# the host's name resolution: without /etc/hosts, Open MPI's start-up waits on DNS for the hostname
cp -L /etc/resolv.conf /etc/hosts "$sys/etc/"
mnt "$sys/proc" -t proc proc
mnt "$sys/sys" --bind /sys
# a booted machine has its cgroup hierarchy mounted (slurmd needs it); a plain --bind of /sys leaves it out
# (cgroup v1 has one mount per controller below it: --rbind; rslave so that unmounting our copy
# never propagates back to the host's)
if mountpoint -q /sys/fs/cgroup; then
  mnt "$sys/sys/fs/cgroup" --rbind /sys/fs/cgroup
  mount --make-rslave "$sys/sys/fs/cgroup"
fi
mnt "$sys/dev" --bind /dev
mnt "$sys/dev/pts" --bind /dev/pts
# Open MPI's shared-memory transport maps files under /dev/shm: a fresh tmpfs, not the host's
mnt "$sys/dev/shm" -t tmpfs -o mode=1777 tmpfs
mnt "$sys/var/cache/apt/archives" --bind "$debs"

# the tree as a fresh clone would have it (plus files not yet committed), never build/ or out/
mkdir -p "$sys/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf -) | tar -xf - -C "$sys/src"

log="$work/readme-commands.log"
t1=$SECONDS
set +e
chroot "$sys" /usr/bin/env -i HOME=/root TERM=dumb DEMO_STEPS="$steps" \
  TENSORPAR_REQUIRE_ENVIRONMENT="${TENSORPAR_REQUIRE_ENVIRONMENT:-}" \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  bash -c 'echo "fresh-debian: TENSORPAR_REQUIRE_ENVIRONMENT=${TENSORPAR_REQUIRE_ENVIRONMENT:-unset}"; cd /src && scripts/demo.sh && echo "fresh-debian: demo done" && scripts/test.sh' 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "fresh-debian: README commands took $((SECONDS - t1)) s (exit $status)" >&2
[ "$status" -eq 0 ] || { echo "fresh-debian: FAILED: the README's commands fail on a fresh Debian 12" >&2; exit 1; }
# the demo's point is its samples: the header, then text after it
if ! awk '/^Samples from the TP=2 model/ {s = 1; next} s && /[A-Za-z]/ {found = 1} /fresh-debian: demo done/ {exit} END {exit !found}' "$log"; then
  echo "fresh-debian: FAILED: the demo printed no samples" >&2
  exit 1
fi
echo "fresh-debian: passed in $((SECONDS - t0)) s" >&2

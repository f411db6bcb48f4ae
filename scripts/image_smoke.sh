#!/usr/bin/env bash
# Smoke test of a built image where no container runtime can start one (as on the development
# machines: podman builds, but crun cannot set rlimits there): mount the image's file system with
# podman, and run `medssl doctor` and `medssl infer` in it the way
#   docker run --read-only --tmpfs /tmp --network none --user 12345:12345 \
#     -v MODEL:/model:ro -v SCANS:/input:ro -v OUT:/output IMAGE ...
# would: a private mount namespace with the root file system read-only, a tmpfs on /tmp, no network
# namespace interfaces, chroot as a uid without a passwd entry, the image's own environment. Root only.
#   scripts/image_smoke.sh medssl:cpu MODEL_DIR SCANS_DIR OUT_DIR
set -euo pipefail
IMAGE=$1 MODEL=$(realpath "$2") SCANS=$(realpath "$3") OUT=$(realpath "$4")
P="podman --storage-driver ${STORAGE_DRIVER:-vfs}"
ROOTFS=$($P image mount "$IMAGE")
ENVS=$($P image inspect "$IMAGE" --format '{{range .Config.Env}}{{.}} {{end}}')
WORKDIR=$($P image inspect "$IMAGE" --format '{{.Config.WorkingDir}}')
mkdir -p "$OUT" && chown 12345:12345 "$OUT"
MNT=$(mktemp -d)
trap '$P image umount "$IMAGE" >/dev/null; rmdir "$MNT"' EXIT
unshare -m -n --propagation private bash -s <<INNER
set -u
mount --bind "$ROOTFS" "$MNT" && mount -o remount,bind,ro "$MNT"
mount -t tmpfs -o mode=1777 tmpfs "$MNT/tmp"
mount -t proc proc "$MNT/proc"
mount --rbind /dev "$MNT/dev"
mount --bind "$MODEL" "$MNT/model" && mount -o remount,bind,ro "$MNT/model"
mount --bind "$SCANS" "$MNT/input" && mount -o remount,bind,ro "$MNT/input"
mount --bind "$OUT" "$MNT/output"
run() { chroot --userspec=12345:12345 "$MNT" /usr/bin/env -i $ENVS MEDSSL_MODEL=/model /bin/sh -c "cd $WORKDIR && medssl \$*"; echo "exit \$?"; }
run doctor
run infer --model /model --input /input --output /output --no-progress --preview
run data medmnist breastmnist --root /tmp/mm --download
chroot --userspec=12345:12345 "$MNT" /bin/sh -c 'touch /home/medssl/x /opt/medssl/x $WORKDIR/x 2>&1; true'
INNER
ls -ln "$OUT"

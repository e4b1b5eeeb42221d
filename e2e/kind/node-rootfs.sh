#!/bin/sh
# mmdebstrap customize hook for the kind node's base root filesystem.
# Usage (from build-cluster.mjs): node-rootfs.sh <rootfs> <kind images/base/files dir>
#
# Lays kind's base-image files (taken at build time from the sigs.k8s.io/kind module, never copied into
# this repository) into the Debian tree and makes the adjustments kind's own Dockerfile makes, plus the
# ones needed because containerd, runc and the CNI plugins come from Debian's packages instead of being
# built from source.
set -eu
root=$1
files=$2

install -d -m 0755 "$root/kind/bin" "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" \
  "$root/etc/systemd/system/kubelet.service.d" "$root/etc/kubernetes/manifests" "$root/opt/cni/bin" \
  "$root/kind/manifests"
install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
install -m 0644 "$files/etc/crictl.yaml" "$root/etc/crictl.yaml"
install -m 0644 "$files/etc/containerd/config.toml" "$root/etc/containerd/config.toml"
install -m 0644 "$files"/etc/default/* "$root/etc/default/"
install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
for f in "$files"/etc/systemd/system/*; do
  [ -f "$f" ] && install -m 0644 "$f" "$root/etc/systemd/system/"
done
install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"

# kind's units start /usr/local/bin/containerd; Debian installs it in /usr/bin.
for b in containerd containerd-shim-runc-v2 ctr; do
  ln -sf "/usr/bin/$b" "$root/usr/local/bin/$b"
done
# containerd's CRI plugin looks for CNI plugins in /opt/cni/bin; Debian puts them in /usr/lib/cni.
for p in "$root"/usr/lib/cni/*; do
  ln -sf "/usr/lib/cni/$(basename "$p")" "$root/opt/cni/bin/$(basename "$p")"
done
# The fuse-overlayfs snapshotter is only for rootless nodes, which this harness does not run; without its
# binary the unit would fail at every boot.
rm -f "$root/etc/systemd/system/containerd-fuse-overlayfs.service"

# The runtime spec containerd starts from: its default, minus rlimits, plus kind's hook that gives each
# container its own copy of the product_name/product_uuid files.
chroot "$root" ctr oci spec \
  | chroot "$root" jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
  | chroot "$root" jq 'del(.process.rlimits)' >"$root/etc/containerd/cri-base.json"

# systemd in a container: only what the node needs starts at boot.
find "$root/lib/systemd/system/sysinit.target.wants/" -name 'systemd-tmpfiles-setup.service' -delete
rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
  "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
  "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
echo 'ReadKMsg=no' >>"$root/etc/systemd/journald.conf"
ln -sf /lib/systemd/systemd "$root/sbin/init"
chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
chroot "$root" systemctl mask systemd-binfmt.service

# Nothing in the node looks for packages later: drop what only apt and people read.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*

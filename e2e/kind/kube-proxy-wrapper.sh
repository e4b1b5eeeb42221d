#!/bin/sh
# Entry of the kube-proxy image built for the kind harness: kubeadm's DaemonSet runs /usr/local/bin/kube-proxy.
# kube-proxy drives iptables through the iptables binaries of its own image, and they must use the same
# backend (legacy or nf_tables) as the node, or its rules land where the kernel path of the node's other
# rules does not see them. The node's entrypoint picked one by counting existing rules; pick the same way
# here, then run the real binary.
set -eu
legacy=$( (iptables-legacy-save || true; ip6tables-legacy-save || true) 2>/dev/null | grep -c '^-' || true)
nft=$( (timeout 5 sh -c 'iptables-nft-save; ip6tables-nft-save' || true) 2>/dev/null | grep -c '^-' || true)
mode=nft
if [ "$legacy" -gt "$nft" ]; then mode=legacy; fi
for t in iptables ip6tables; do
  update-alternatives --set "$t" "/usr/sbin/$t-$mode" >/dev/null
done
echo "kube-proxy: iptables backend $mode (legacy rules $legacy, nft rules $nft)" >&2
exec /usr/local/bin/kube-proxy.bin "$@"

#!/usr/bin/env bash
# The demo on kind, for machines with Docker: build the image, load it, install the chart, create two
# loop-device block PVs inside the kind node, and apply the example two-member ShadowSet.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "demo --kind: '$tool' is not installed (kind mode needs Docker, kind, kubectl and helm)"; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "demo --kind: no Docker engine is running"; exit 2; }
cluster=shadowset-demo
image=ghcr.io/shadowset/shadowset:dev
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
docker build -t "$image" .
kind load docker-image --name "$cluster" "$image"
helm upgrade --install shadowset charts/shadowset -n shadowset-system --create-namespace \
  --set image.tag=dev --set image.pullPolicy=IfNotPresent --wait
node="$cluster-control-plane"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
for m in a b; do
  docker exec "$node" bash -c "test -e /var/lib/shadow-$m.img || truncate -s 256M /var/lib/shadow-$m.img; losetup -j /var/lib/shadow-$m.img | grep -q . || losetup -f /var/lib/shadow-$m.img"
  dev=$(docker exec "$node" losetup -j "/var/lib/shadow-$m.img" | cut -d: -f1)
  cat <<YAML | kubectl apply -f -
apiVersion: v1
kind: PersistentVolume
metadata: { name: demo-member-$m }
spec:
  capacity: { storage: 256Mi }
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: local
  local: { path: $dev }
  nodeAffinity: { required: { nodeSelectorTerms: [ { matchExpressions: [ { key: kubernetes.io/hostname, operator: In, values: [$node] } ] } ] } }
  claimRef: { namespace: demo, name: member-$m }
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: { name: member-$m, namespace: demo }
spec: { accessModes: [ReadWriteOnce], volumeMode: Block, storageClassName: local, volumeName: demo-member-$m, resources: { requests: { storage: 256Mi } } }
YAML
done
cat <<YAML | kubectl apply -f -
apiVersion: shadowset.dev/v1alpha1
kind: ShadowSet
metadata: { name: demo, namespace: demo }
spec:
  members:
    - { name: a, claimName: member-a }
    - { name: b, claimName: member-b }
YAML
kubectl wait -n demo shadowset/demo --for=condition=Ready --timeout=180s
kubectl get shadowsets,writebitmaps -n demo
echo "NBD: kubectl port-forward -n demo svc/demo 10809 & then nbdinfo nbd://127.0.0.1:10809/shadow"
echo "Tear down: kind delete cluster --name $cluster"

// Small programs for the kind node image (see e2e/README.md, "kind"): the pod sandbox's pause process
// and the pod-network agent. Standard library only, so the build needs no module downloads.
module shadowset.local/kind-tools

go 1.22

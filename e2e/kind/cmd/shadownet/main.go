// shadownet is the pod-network agent of the kind harness, run by a DaemonSet on every node (host network).
// kind's own kindnet is not available from the registries reachable here, so this small agent does the
// part of its job the harness needs:
//
//   - writes a CNI config for the node's podCIDR (the ptp plugin, addresses from host-local): every pod gets
//     a point-to-point veth and all its traffic is routed by the node, so kube-proxy's rules apply without
//     bridge netfilter;
//   - keeps one route per other node: that node's podCIDR via its InternalIP (all kind nodes share one
//     Docker network, so the next hop is directly reachable);
//   - optionally routes the Service CIDR onto the node's interface, so host-network processes can open
//     ClusterIPs on a node without a default route (the harness's Docker network is internal).
//
// It polls the API every few seconds (list nodes) rather than watching: clusters here have three nodes.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

type node struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR string `json:"podCIDR"`
	} `json:"spec"`
	Status struct {
		Addresses []struct {
			Type    string `json:"type"`
			Address string `json:"address"`
		} `json:"addresses"`
	} `json:"status"`
}

type agent struct {
	api, nodeName, confDir, serviceCIDR string
	client                              *http.Client
	lastConf                            string
	routes                              map[string]string // podCIDR -> next hop
}

func main() {
	a := &agent{routes: map[string]string{}}
	flag.StringVar(&a.api, "apiserver", os.Getenv("APISERVER"), "API server URL (https://host:port)")
	flag.StringVar(&a.nodeName, "node", os.Getenv("NODE_NAME"), "this node's name")
	flag.StringVar(&a.confDir, "cni-conf-dir", "/etc/cni/net.d", "where the CNI config is written")
	flag.StringVar(&a.serviceCIDR, "service-cidr", os.Getenv("SERVICE_CIDR"), "Service CIDR to route onto the node's interface (empty: none)")
	interval := flag.Duration("interval", 5*time.Second, "how often the node list is read")
	flag.Parse()
	if a.api == "" || a.nodeName == "" {
		log.Fatal("--apiserver and --node (or APISERVER and NODE_NAME) are required")
	}
	if err := a.setup(); err != nil {
		log.Fatal(err)
	}
	// Pods on this node are routed by it to pods elsewhere.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		log.Printf("cannot enable ip_forward: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	for {
		if err := a.sync(ctx); err != nil {
			log.Printf("sync: %v", err)
		}
		select {
		case <-ctx.Done():
			log.Print("stopping; routes and CNI config stay for the pods that use them")
			return
		case <-time.After(*interval):
		}
	}
}

func (a *agent) setup() error {
	caPEM, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	a.client = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	return nil
}

func (a *agent) listNodes(ctx context.Context) ([]node, error) {
	// The token is read each time: kubelet rotates projected tokens.
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(a.api, "/")+"/api/v1/nodes", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list nodes: %s: %.200s", resp.Status, body)
	}
	var list struct {
		Items []node `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

func internalIP(n node) string {
	for _, addr := range n.Status.Addresses {
		if addr.Type == "InternalIP" && net.ParseIP(addr.Address).To4() != nil {
			return addr.Address
		}
	}
	return ""
}

func (a *agent) sync(ctx context.Context) error {
	nodes, err := a.listNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		_, cidr, err := net.ParseCIDR(n.Spec.PodCIDR)
		ip := internalIP(n)
		if err != nil || ip == "" {
			continue // not yet given a podCIDR or an address
		}
		if n.Metadata.Name == a.nodeName {
			if err := a.writeConf(cidr.String()); err != nil {
				return err
			}
			if a.serviceCIDR != "" {
				if err := routeServices(a.serviceCIDR, ip); err != nil {
					return err
				}
			}
			continue
		}
		// Replaced on every pass: a route someone removed comes back within one interval.
		if out, err := exec.CommandContext(ctx, "ip", "route", "replace", cidr.String(), "via", ip).CombinedOutput(); err != nil {
			return fmt.Errorf("route %s via %s: %v: %s", cidr, ip, err, out)
		}
		if a.routes[cidr.String()] != ip {
			log.Printf("route %s via %s (%s)", cidr, ip, n.Metadata.Name)
			a.routes[cidr.String()] = ip
		}
	}
	return nil
}

// routeServices sends the Service CIDR out of the interface that holds the node's address. Packets to a
// ClusterIP are rewritten by kube-proxy's rules after the routing decision; without some route the
// kernel refuses them first when the node has no default route.
func routeServices(serviceCIDR, nodeIP string) error {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return err
	}
	dev := ""
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[3], nodeIP+"/") {
			dev = f[1]
		}
	}
	if dev == "" {
		return fmt.Errorf("no interface holds %s", nodeIP)
	}
	if out, err := exec.Command("ip", "route", "replace", serviceCIDR, "dev", dev, "src", nodeIP).CombinedOutput(); err != nil {
		return fmt.Errorf("route %s dev %s: %v: %s", serviceCIDR, dev, err, out)
	}
	return nil
}

func (a *agent) writeConf(podCIDR string) error {
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "shadownet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": %q }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
`, podCIDR)
	if conf == a.lastConf {
		return nil
	}
	// Written whole and renamed, so containerd never reads half a file.
	path := filepath.Join(a.confDir, "10-shadownet.conflist")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	log.Printf("CNI config for %s written (%s)", podCIDR, path)
	a.lastConf = conf
	return nil
}

// runc-caps stands in front of runc and drops, from a container's capability sets, every capability that
// this process's own bounding set lacks; then it runs the real runc with the same arguments.
//
// Why: on the machines this project is developed on, even root runs without CAP_SYS_RESOURCE in its
// bounding set. Docker 20.10 (Debian's docker.io) gives a --privileged container every capability the
// kernel knows, and runc then fails with "unable to apply caps: operation not permitted". kind starts
// its nodes with --privileged and runs `docker exec --privileged`, so no kind node could start. With this
// wrapper as dockerd's runtime a privileged container gets everything the daemon itself has, which is
// what a privileged container can have here anyway.
//
// Usage: runc-caps [runc arguments]; RUNC_CAPS_RUNC names the real runc (default: runc in PATH).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Capability numbers as in linux/capability.h.
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE",
}

func boundingSet() (uint64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapBnd in /proc/self/status")
}

// allowed says whether a capability name ("CAP_X") is in the bounding set; unknown names are kept.
func allowed(bnd uint64, name string) bool {
	for i, n := range capNames {
		if "CAP_"+n == name {
			return bnd&(1<<uint(i)) != 0
		}
	}
	return true
}

// filterCaps rewrites the "capabilities" object found at caps (in place) and reports what it dropped.
func filterCaps(caps map[string]any, bnd uint64) []string {
	var dropped []string
	for set, v := range caps {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := list[:0]
		for _, c := range list {
			if s, ok := c.(string); ok && !allowed(bnd, s) {
				dropped = append(dropped, set+":"+s)
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
	return dropped
}

// rewrite filters the capabilities of an OCI config (process.capabilities) or process file (capabilities).
func rewrite(path string, nested bool, bnd uint64) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	holder := doc
	if nested {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return nil
		}
		holder = p
	}
	caps, ok := holder["capabilities"].(map[string]any)
	if !ok {
		return nil
	}
	if len(filterCaps(caps, bnd)) == 0 {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, info.Mode().Perm())
}

// flagValue finds --name value, --name=value or -short value in runc's arguments.
func flagValue(args []string, long, short string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, long+"="); ok {
			return v
		}
		if (a == long || (short != "" && a == short)) && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func main() {
	args := os.Args[1:]
	runc := os.Getenv("RUNC_CAPS_RUNC")
	if runc == "" {
		runc = "runc"
	}
	real, err := exec.LookPath(runc)
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-caps: %v\n", err)
		os.Exit(127)
	}
	if bnd, err := boundingSet(); err == nil {
		sub := ""
		for _, a := range args {
			if a == "create" || a == "run" || a == "exec" {
				sub = a
				break
			}
		}
		switch sub {
		case "create", "run":
			bundle := flagValue(args, "--bundle", "-b")
			if bundle == "" {
				bundle = "."
			}
			err = rewrite(bundle+"/config.json", true, bnd)
		case "exec":
			if p := flagValue(args, "--process", "-p"); p != "" {
				err = rewrite(p, false, bnd)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "runc-caps: %v\n", err)
			os.Exit(1)
		}
	}
	if err := syscall.Exec(real, append([]string{real}, args...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "runc-caps: exec %s: %v\n", real, err)
		os.Exit(127)
	}
}

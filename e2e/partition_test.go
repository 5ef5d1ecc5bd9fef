package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
)

// netns is a network namespace joined to the host by a veth pair: the
// host side has 10.77.N.1, the namespace side 10.77.N.2.
type netns struct {
	name, hostIP, nsIP, nsLink string
}

func run(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the partition test puts a daemon in a network namespace and must run as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the partition test needs the ip command: apt-get install iproute2")
	}
	n := rand.IntN(200) + 20
	ns := &netns{name: fmt.Sprintf("mh%d", n), hostIP: fmt.Sprintf("10.77.%d.1", n), nsIP: fmt.Sprintf("10.77.%d.2", n), nsLink: fmt.Sprintf("mhp%d", n)}
	host := fmt.Sprintf("mhh%d", n)
	_ = exec.Command("ip", "link", "del", host).Run()
	_ = exec.Command("ip", "netns", "del", ns.name).Run()
	run(t, "ip", "netns", "add", ns.name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", host).Run()
		_ = exec.Command("ip", "netns", "del", ns.name).Run()
	})
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", ns.nsLink)
	run(t, "ip", "link", "set", ns.nsLink, "netns", ns.name)
	run(t, "ip", "addr", "add", ns.hostIP+"/24", "dev", host)
	run(t, "ip", "link", "set", host, "up")
	run(t, "ip", "netns", "exec", ns.name, "ip", "addr", "add", ns.nsIP+"/24", "dev", ns.nsLink)
	run(t, "ip", "netns", "exec", ns.name, "ip", "link", "set", ns.nsLink, "up")
	run(t, "ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
	return ns
}

// cut and heal take the namespace's link down and up.
func (ns *netns) cut(t *testing.T) {
	run(t, "ip", "netns", "exec", ns.name, "ip", "link", "set", ns.nsLink, "down")
}

func (ns *netns) heal(t *testing.T) {
	run(t, "ip", "netns", "exec", ns.name, "ip", "link", "set", ns.nsLink, "up")
}

func addrOn(t *testing.T, ip string) string {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", ip, p)
}

// TestPartitionedPrimary runs the primary's daemon in its own network
// namespace and cuts its link: it stops uploading within a lease, another
// node is promoted, and nothing the old primary does after that reaches
// what listings and restores see.
func TestPartitionedPrimary(t *testing.T) {
	ns := newNetns(t)
	ins := harness.StartInstances(t, 3, harness.Options{})
	ctx := context.Background()
	for _, r := range ins[1:] {
		if err := r.ReplicateFrom(ctx, ins[0]); err != nil {
			t.Fatal(err)
		}
	}
	backups := filepath.Join(t.TempDir(), "backups")
	var nodes []*clusterNode
	ca := tlstest.NewCA(t, t.TempDir(), "cluster")
	for i, in := range ins {
		ip := ns.hostIP
		if i == 0 {
			ip = ns.nsIP
		}
		api := addrOn(t, ip)
		extra := map[string]any{"raft_address": addrOn(t, ip), "gossip_address": addrOn(t, ip), "rpc_address": addrOn(t, ip)}
		var join []string
		if i > 0 {
			join = []string{nodes[0].gossip}
		}
		n := newClusterNode(t, ca, fmt.Sprintf("n%d", i+1), 101+i, in, backups, join, extra)
		n.gossip = extra["gossip_address"].(string)
		host, port, _ := strings.Cut(api, ":")
		n.url = "http://" + api
		patchConfig(t, n.cfgPath, func(cfg map[string]any) {
			cfg["http_address"] = host
			cfg["http_allow_unauthenticated"] = true // a lab across namespaces
			var p int
			fmt.Sscan(port, &p)
			cfg["http_port"] = p
			if i == 0 { // across namespaces the server is reached by its socket
				m := cfg["mysql"].(map[string]any)
				m["client_params"] = map[string]any{"socket": in.Socket, "user": "root", "password": ""}
			}
		})
		nodes = append(nodes, n)
	}
	nodes[0].d = startProcess(t, nil, []string{"ip", "netns", "exec", ns.name, binary, "--config", nodes[0].cfgPath})
	waitForAPI(t, nodes[0])
	for _, n := range nodes[1:] {
		n.start(t)
	}
	setRoles(t, nodes)
	db1 := harness.OpenDB(t, ins[0])
	load, err := harness.NewLoadGen(ctx, db1, 61)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() { _ = load.Run(lctx, 5*time.Millisecond, 0.05) }()
	waitCompletedBackup(t, nodes[0].url)
	uploads := func(epoch int64) (int, time.Time) { return epochUploads(t, backups, epoch) }
	harness.WaitFor(t, "binlogs flowing", 30*time.Second, func() (bool, string) { n, _ := uploads(1); return n >= 3, fmt.Sprint(n) })

	waitVoters(t, nodes[1], 3)
	ns.cut(t)
	cut := time.Now()
	count := stopsUploading(t, nodes[0], func() int { n, _ := uploads(1); return n })
	_, last := uploads(1)
	t.Logf("partitioned: %d epoch-1 manifests, the last %v after the cut", count, last.Sub(cut).Round(time.Millisecond))
	// The rest of the cluster promotes n2 while n1 still runs (and its
	// server still takes writes).
	harness.WaitFor(t, "a leader among n2 and n3", 30*time.Second, func() (bool, string) {
		l := nodes[1].view(t).Leader
		return l == "n2" || l == "n3", l
	})
	if code, body := doJSON(t, "PUT", nodes[1].url+"/status", map[string]any{"mode": "promote", "force": true}); code != 200 {
		t.Fatalf("promote n2: %d %v", code, body)
	}
	harness.WaitFor(t, "n2 active", 60*time.Second, func() (bool, string) { return nodes[1].mode(t) == "active", "" })
	stopLoad() // the old primary's writes stop being interesting here
	db2 := harness.OpenDB(t, ins[1])
	load2, err := harness.NewLoadGen(ctx, db2, 62)
	if err != nil {
		t.Fatal(err)
	}
	if err := load2.WriteTransactions(ctx, 200); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", nodes[1].url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("rotation on n2: %d %v", code, body)
	}
	// The partition heals: n1 learns it is deposed and stays refused.
	ns.heal(t)
	harness.WaitFor(t, "n1 back in the cluster and refused", 60*time.Second, func() (bool, string) {
		out := nodes[0].d.out.String()
		return strings.Contains(out, `primary is \"n2\" at epoch 2`), ""
	})
	if _, last := uploads(1); last.After(cut.Add(time.Second)) {
		t.Errorf("an epoch-1 manifest was written at %v, after the cut at %v", last, cut)
	}
	// A restore to latest equals the new primary.
	restoreOldestEquals(t, backups, nodes[1].url, db2)
}

func waitForAPI(t *testing.T, n *clusterNode) {
	t.Helper()
	harness.WaitFor(t, n.id+"'s API", 30*time.Second, func() (bool, string) {
		_, err := statusOf(n.url)
		return err == nil, fmt.Sprint(err)
	})
}

// patchConfig edits a written config file.
func patchConfig(t testing.TB, path string, f func(map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := jsonUnmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	f(cfg)
	writeJSON(t, path, cfg)
}

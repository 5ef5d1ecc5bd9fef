package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
	"github.com/myhoard/myhoard/wire"
)

// clusterNode is a MariaDB server with its daemon in a cluster.
type clusterNode struct {
	id      string
	in      *harness.Instance
	url     string
	cfgPath string
	gossip  string
	dataDir string // cluster.data_dir (the Raft state)
	// raftAddr and rpcAddr are its cluster.raft_address and rpc_address.
	raftAddr, rpcAddr string
	ca                *tlstest.CA
	d                 *daemonProc
}

func freeAddr(t testing.TB) string {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// newClusterNodes writes the configs of a cluster of len(ins) nodes made
// from one template: every node gets the same seed list (every member's
// gossip address, its own included) and bootstrap_expect, as an operator
// deploys it. ins may hold nil: a node without a database.
func newClusterNodes(t testing.TB, ins []*harness.Instance, backups string) []*clusterNode {
	t.Helper()
	seeds := make([]string, len(ins))
	for i := range seeds {
		seeds[i] = freeAddr(t)
	}
	ca := tlstest.NewCA(t, t.TempDir(), "cluster")
	var nodes []*clusterNode
	for i, in := range ins {
		nodes = append(nodes, newClusterNodeAt(t, ca, fmt.Sprintf("n%d", i+1), 101+i, in, backups, seeds[i],
			map[string]any{"join": seeds, "bootstrap_expect": len(ins)}))
	}
	return nodes
}

// newClusterNode writes the config of one cluster node with a certificate
// of ca.
func newClusterNode(t testing.TB, ca *tlstest.CA, id string, serverID int, in *harness.Instance, backups string, join []string, extra map[string]any) *clusterNode {
	t.Helper()
	cl := map[string]any{"join": join}
	for k, v := range extra {
		cl[k] = v
	}
	return newClusterNodeAt(t, ca, id, serverID, in, backups, freeAddr(t), cl)
}

// newClusterNodeAt writes the config of one cluster node gossiping on
// gossip, with mutual TLS from a certificate of ca for its id; cluster
// holds the rest of its cluster block.
func newClusterNodeAt(t testing.TB, ca *tlstest.CA, id string, serverID int, in *harness.Instance, backups, gossip string, cluster map[string]any) *clusterNode {
	t.Helper()
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &clusterNode{id: id, in: in, url: fmt.Sprintf("http://127.0.0.1:%d", port),
		cfgPath: filepath.Join(dir, "myhoard.json"), gossip: gossip, dataDir: filepath.Join(dir, "cluster"), ca: ca}
	tlsFiles := n.useCert(t, ca.File, ca.Issue(t, id))
	cfg := daemonConfig(t, dir, port, in)
	cfg["server_id"] = serverID
	cfg["backup_sites"] = map[string]any{
		"default": map[string]any{"object_storage": map[string]any{"storage_type": "local", "directory": backups}},
	}
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 1}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": true, "min_binlog_age_before_purge": 1, "purge_interval": 1}
	n.raftAddr, n.rpcAddr = freeAddr(t), freeAddr(t)
	cl := map[string]any{"node_id": id, "raft_address": n.raftAddr, "gossip_address": gossip, "rpc_address": n.rpcAddr, "local_timing": true,
		"dead_member_grace": 3, "data_dir": n.dataDir, "gossip_key": "bXlob2FyZC10ZXN0a2V5IQ==",
		"tls": tlsFiles}
	for k, v := range cluster {
		cl[k] = v
	}
	cfg["cluster"] = cl
	writeJSON(t, n.cfgPath, cfg)
	return n
}

// useCert puts a CA bundle and a certificate into the node's own TLS
// files (as on a host of its own) and returns its cluster.tls block.
func (n *clusterNode) useCert(t testing.TB, bundle string, c tlstest.Cert) map[string]any {
	t.Helper()
	dir := filepath.Join(filepath.Dir(n.cfgPath), "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]any{"ca_file": filepath.Join(dir, "ca.pem"), "cert_file": filepath.Join(dir, "cert.pem"), "key_file": filepath.Join(dir, "key.pem")}
	for src, dst := range map[string]any{bundle: files["ca_file"], c.CertFile: files["cert_file"], c.KeyFile: files["key_file"]} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst.(string), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func (n *clusterNode) start(t testing.TB) {
	t.Helper()
	n.d = startDaemon(t, "--config", n.cfgPath)
	harness.WaitFor(t, n.id+"'s API", 30*time.Second, func() (bool, string) {
		_, err := statusOf(n.url)
		return err == nil, fmt.Sprint(err)
	})
}

func (n *clusterNode) mode(t testing.TB) string {
	st, _ := statusOf(n.url)
	return st.Mode
}

// view is n's GET /cluster (empty when it does not answer).
func (n *clusterNode) view(t testing.TB) wire.ClusterStatus {
	t.Helper()
	v, _ := apiClient(n.url).Cluster(context.Background())
	return v
}

// memberGTIDs maps node ids to the GTID sets GET /cluster shows.
func memberGTIDs(v wire.ClusterStatus) map[string]string {
	out := map[string]string{}
	for _, m := range v.Members {
		out[m.ID] = m.GTIDs
	}
	return out
}

// stopsUploading waits until the cut-off primary n refuses to upload, then
// for two more refused attempts (the load keeps writing binlogs), and
// checks that count (its manifests in storage) did not move meanwhile. It
// returns the count.
func stopsUploading(t testing.TB, n *clusterNode, count func() int) int {
	t.Helper()
	refusals := func() int { return strings.Count(n.d.out.String(), "not allowed to upload") }
	harness.WaitFor(t, n.id+" refusing to upload", 30*time.Second, func() (bool, string) { return refusals() > 0, "" })
	before, seen := count(), refusals()
	harness.WaitFor(t, "two more refused attempts", 30*time.Second, func() (bool, string) { return refusals() >= seen+2, fmt.Sprint(refusals()) })
	if after := count(); after != before {
		t.Errorf("%s uploaded %d manifests after it refused to upload", n.id, after-before)
	}
	return before
}

// replicatedCluster starts three MariaDB servers (the second and third
// replicating from the first) and their daemons from one template, and
// waits for the cluster to form.
func replicatedCluster(t testing.TB) (ins []*harness.Instance, nodes []*clusterNode, backups string) {
	t.Helper()
	ins = harness.StartInstances(t, 3, harness.Options{})
	for _, r := range ins[1:] {
		if err := r.ReplicateFrom(context.Background(), ins[0]); err != nil {
			t.Fatal(err)
		}
	}
	backups = filepath.Join(t.TempDir(), "backups")
	nodes = newClusterNodes(t, ins, backups)
	startTogether(t, nodes)
	waitOneCluster(t, nodes, 3)
	return ins, nodes, backups
}

func TestThreeNodeFailoverAndRestore(t *testing.T) {
	ins, nodes, backups := replicatedCluster(t)
	ctx := context.Background()
	setRoles(t, nodes)
	db1 := harness.OpenDB(t, ins[0])
	load, err := harness.NewLoadGen(ctx, db1, 31)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- load.Run(lctx, 3*time.Millisecond, 0.01) }()
	waitCompletedBackup(t, nodes[0].url)

	// Without any PUT /replication_state, every node sees every node's
	// GTID set, and the replicas' catch up with the primary's.
	harness.WaitFor(t, "every member's GTIDs in every node's GET /cluster", 30*time.Second, func() (bool, string) {
		for _, n := range nodes {
			v := n.view(t)
			g := memberGTIDs(v)
			if len(g) != 3 || g["n1"] == "" || g["n2"] == "" || g["n3"] == "" || v.Primary != "n1" {
				return false, fmt.Sprint(n.id, v)
			}
		}
		return true, ""
	})
	time.Sleep(2 * time.Second) // some binlogs uploaded by n1
	// n2's server falls behind: what it lacks is only in storage, and the
	// promotion must apply it.
	db2 := harness.OpenDB(t, ins[1])
	harness.Exec(t, db2, "STOP SLAVE")
	time.Sleep(2 * time.Second)
	stopLoad()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", nodes[0].url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("rotation on n1: %d %v", code, body)
	}
	pos1 := harness.QueryString(t, db1, "SELECT @@gtid_binlog_pos")
	if err := ins[2].WaitForGTID(ctx, pos1); err != nil {
		t.Fatal(err)
	}
	behind := harness.QueryString(t, db2, "SELECT @@gtid_binlog_pos")
	if behind == pos1 {
		t.Fatalf("n2's server is not behind (%s)", behind)
	}
	for _, r := range ins[1:] {
		// replicas rotate only by size: give them complete binlogs
		harness.Exec(t, harness.OpenDB(t, r), "FLUSH BINARY LOGS", "FLUSH BINARY LOGS")
	}
	waitVoters(t, nodes[0], 3)
	// A replica about to be promoted is read-only; while the primary is
	// alive, promoting it needs force.
	harness.Exec(t, db2, "SET GLOBAL read_only = 1")
	if code, body := doJSON(t, "PUT", nodes[1].url+"/status", map[string]any{"mode": "promote"}); code != 400 ||
		!strings.Contains(fmt.Sprint(body["message"]), "node n1 is the primary at epoch 1 and gossip sees it alive") {
		t.Fatalf("promote n2 with n1 alive, without force: %d %v", code, body)
	}
	// The primary's server and daemon go away.
	_ = nodes[0].d.cmd.Process.Kill()
	_, _ = nodes[0].d.wait(t, 10*time.Second)
	if err := ins[0].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Once gossip marks n1 failed, n2 is promoted through its own API
	// without force; n3 follows it.
	harness.WaitFor(t, "gossip marking n1 failed on n2", 30*time.Second, func() (bool, string) {
		v := nodes[1].view(t)
		m, _ := v.Member("n1")
		return m.Gossip == "failed", fmt.Sprint(v)
	})
	start := time.Now()
	if code, body := doJSON(t, "PUT", nodes[1].url+"/status", map[string]any{"mode": "promote"}); code != 200 {
		t.Fatalf("promote n2: %d %v", code, body)
	}
	harness.WaitFor(t, "n2 active", 60*time.Second, func() (bool, string) {
		return nodes[1].mode(t) == "active", nodes[1].d.out.String()
	})
	if !strings.Contains(nodes[1].d.out.String(), "applying the binlogs the old primary uploaded") {
		t.Errorf("n2 was behind (%s of %s) but did not catch up from storage", behind, pos1)
	}
	if got := harness.QueryString(t, db2, "SELECT @@gtid_binlog_pos"); got != pos1 {
		t.Errorf("n2 promoted at %s, the old primary ended at %s", got, pos1)
	}
	if err := ins[2].ReplicateFrom(ctx, ins[1]); err != nil {
		t.Fatal(err)
	}
	load2, err := harness.NewLoadGen(ctx, db2, 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := load2.WriteTransactions(ctx, 300); err != nil {
		t.Fatal(err)
	}
	harness.Exec(t, db2, "FLUSH BINARY LOGS")
	// The first binlog of the new primary reaches storage under epoch 2.
	harness.WaitFor(t, "a binlog uploaded by n2 under epoch 2", 60*time.Second, func() (bool, string) {
		n, _ := epochUploads(t, backups, 2)
		return n > 0, nodes[1].d.out.String()
	})
	t.Logf("promotion to the first binlog uploaded under the new epoch: %v", time.Since(start))
	if v := nodes[2].view(t); v.Primary != "n2" || v.Epoch != 2 {
		t.Errorf("n3's view after the promotion: primary %v epoch %v", v.Primary, v.Epoch)
	}
	// The old primary comes back, writes on its own and tries to upload.
	if err := ins[0].Start(ctx); err != nil {
		t.Fatal(err)
	}
	rogue, err := harness.NewLoadGen(ctx, db1, 33)
	if err != nil {
		t.Fatal(err)
	}
	if err := rogue.WriteTransactions(ctx, 50); err != nil {
		t.Fatal(err)
	}
	harness.Exec(t, db1, "FLUSH BINARY LOGS")
	rogueGTID := harness.QueryString(t, db1, "SELECT @@gtid_binlog_pos")
	nodes[0].start(t)
	harness.WaitFor(t, "the rogue primary's upload refused", 60*time.Second, func() (bool, string) {
		out := nodes[0].d.out.String()
		return strings.Contains(out, "not allowed to upload"), out
	})
	// The deposed primary still thinks it is active: a full backup it
	// takes is never published (basebackup.json passes the writer gate).
	if code, body := doJSON(t, "POST", nodes[0].url+"/backup", map[string]any{"backup_type": "basebackup"}); code != 200 {
		t.Fatalf("basebackup request on the deposed n1: %d %v", code, body)
	}
	harness.WaitFor(t, "the deposed primary's basebackup.json refused", 120*time.Second, func() (bool, string) {
		out := nodes[0].d.out.String()
		return strings.Contains(out, "write basebackup.json: not allowed to upload"), out
	})
	// More writes on the new primary, then everything settles.
	if err := load2.WriteTransactions(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", nodes[1].url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("final rotation on n2: %d %v", code, body)
	}
	pos2 := harness.QueryString(t, db2, "SELECT @@gtid_binlog_pos")
	if err := ins[2].WaitForGTID(ctx, pos2); err != nil {
		t.Fatal(err)
	}
	if got := harness.QueryString(t, harness.OpenDB(t, ins[2]), "SELECT @@gtid_binlog_pos"); got != pos2 {
		t.Errorf("n3 at %s, the new primary at %s", got, pos2)
	}
	// No manifest nor basebackup of the deposed primary after the
	// promotion.
	streams, site := readManifests(t, openFileSite(t, backups))
	published, _ := filepath.Glob(filepath.Join(backups, "streams", "*", "basebackup.json"))
	for _, path := range published {
		var m storage.BasebackupManifest
		raw, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(raw, &m)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m.Epoch == 1 && m.StartedAt.After(start) {
			t.Errorf("%s: a basebackup of epoch 1 taken after the promotion was published", path)
		}
	}
	for id, ms := range streams {
		for _, m := range ms {
			if m.Epoch == 1 && m.UploadedAt.After(start) {
				t.Errorf("stream %s: binlog %d uploaded under epoch 1 after the promotion", id, m.RemoteIndex)
			}
		}
	}
	// A deposed primary without the gate (an old version, a clock-stuck
	// process) that still got a binlog in under epoch 1 at the new
	// epoch's start index: readers must ignore it.
	for id, ms := range streams {
		var lastOld, firstNew *storage.BinlogManifest
		for i := range ms {
			if ms[i].Epoch == 1 {
				lastOld = &ms[i]
			} else if firstNew == nil {
				firstNew = &ms[i]
			}
		}
		if lastOld == nil || firstNew == nil {
			continue
		}
		fake := *lastOld
		fake.RemoteIndex = firstNew.RemoteIndex
		ref := fake.Ref()
		if err := site.Copy(ctx, ref.DataKey(), lastOld.Ref().DataKey()); err != nil {
			t.Fatal(err)
		}
		body, err := storage.MarshalManifest(&fake)
		if err != nil {
			t.Fatal(err)
		}
		if err := site.PutBytes(ctx, ref.ManifestKey(), body, storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Logf("stream %s: planted an epoch-1 binlog at index %d, where epoch 2 begins", id, fake.RemoteIndex)
	}
	// A restore to latest from storage equals the new primary and holds
	// none of the rogue writes.
	restoreOldestEquals(t, backups, nodes[1].url, db2)
	if rogueGTID == pos2 {
		t.Errorf("the rogue writes did not diverge (%s)", rogueGTID)
	}
	// A fourth node joins with auto_restore and an empty data directory:
	// it restores the newest backup by itself and replicates from the
	// new primary.
	tools, err := harness.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	in4, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "m4"), ServerID: 104, NoInit: true})
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{tools.Mariadbd, "--defaults-file=" + in4.ConfigFile}
	t.Cleanup(func() { _ = (&mysql.CommandControl{Argv: argv, StopTimeout: time.Minute}).Stop(context.Background()) })
	// n4 gets the same template (the seed list of the three, expect 3):
	// a cluster exists, so it is added to it.
	n4 := newClusterNode(t, nodes[0].ca, "n4", 104, in4, backups, []string{nodes[0].gossip, nodes[1].gossip, nodes[2].gossip},
		map[string]any{"auto_restore": true, "replication_user": "root", "bootstrap_expect": 3})
	raw, _ := os.ReadFile(n4.cfgPath)
	var cfg4 map[string]any
	_ = json.Unmarshal(raw, &cfg4)
	cfg4["start_command"] = argv
	writeJSON(t, n4.cfgPath, cfg4)
	n4.start(t)
	harness.WaitFor(t, "n4 restored, observing and replicating", 3*time.Minute, func() (bool, string) {
		if n4.mode(t) != "observe" {
			st, err := apiClient(n4.url).RestoreStatus(context.Background())
			return false, fmt.Sprint(st, err)
		}
		db4, err := in4.Open()
		if err != nil {
			return false, err.Error()
		}
		defer db4.Close()
		var pos string
		_ = db4.QueryRow("SELECT @@gtid_slave_pos").Scan(&pos)
		return pos == pos2, pos + " vs " + pos2
	})
	if err := load2.WriteTransactions(ctx, 20); err != nil {
		t.Fatal(err)
	}
	pos3 := harness.QueryString(t, db2, "SELECT @@gtid_binlog_pos")
	for _, in := range []*harness.Instance{ins[2], in4} {
		if err := in.WaitForGTID(ctx, pos3); err != nil {
			t.Fatal(err)
		}
	}
	sums3, rows3, err := harness.TableChecksums(ctx, db2)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []*harness.Instance{ins[2], in4} {
		db, _ := in.Open()
		diffs, err := harness.Mismatches(ctx, db, harness.Checkpoint{Label: "the new primary", GTID: pos3, Checksums: sums3, Rows: rows3})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range diffs {
			t.Errorf("%s: %s", in.Dir, d)
		}
	}
	harness.WaitFor(t, "n4 in every node's GET /cluster", 30*time.Second, func() (bool, string) {
		for _, n := range []*clusterNode{nodes[1], nodes[2], n4} {
			if g := memberGTIDs(n.view(t)); g["n4"] == "" {
				return false, fmt.Sprint(n.id, g)
			}
		}
		return true, ""
	})
	code, out, errOut := runCLI(t, nil, "cluster", "--url", nodes[1].url)
	if code != 0 || !strings.Contains(out, "primary: n2  epoch: 2") || !strings.Contains(out, "n4") {
		t.Errorf("myhoard cluster: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("myhoard cluster:\n%s", out)
	// The observing replica purged binlogs that were safe to purge.
	harness.WaitFor(t, "n3 purged local binlogs", 60*time.Second, func() (bool, string) {
		return strings.Contains(nodes[2].d.out.String(), "purged local binlogs"), nodes[2].d.out.String()
	})
}

// TestPrimaryCutOffStopsUploading freezes the two other daemons (the
// primary's daemon then has no quorum and no leader to ask): its uploads
// stop within a lease, and go on once the others are back.
func TestPrimaryCutOffStopsUploading(t *testing.T) {
	ins := harness.StartInstances(t, 3, harness.Options{})
	ctx := context.Background()
	backups := filepath.Join(t.TempDir(), "backups")
	nodes := newClusterNodes(t, ins, backups)
	for _, n := range nodes {
		n.start(t)
	}
	setRoles(t, nodes)
	waitVoters(t, nodes[0], 3)
	db1 := harness.OpenDB(t, ins[0])
	load, err := harness.NewLoadGen(ctx, db1, 41)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() { _ = load.Run(lctx, 5*time.Millisecond, 0.05) }()
	waitCompletedBackup(t, nodes[0].url)
	uploads := func() (int, time.Time) { return epochUploads(t, backups, 1) }
	harness.WaitFor(t, "binlogs flowing", 30*time.Second, func() (bool, string) { n, _ := uploads(); return n >= 3, fmt.Sprint(n) })
	for _, n := range nodes[1:] {
		if err := n.d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now()
	count := stopsUploading(t, nodes[0], func() int { n, _ := uploads(); return n })
	_, last := uploads()
	t.Logf("cut off: %d manifests, the last %v after the cut", count, last.Sub(cut).Round(time.Millisecond))
	for _, n := range nodes[1:] {
		_ = n.d.cmd.Process.Signal(syscall.SIGCONT)
	}
	harness.WaitFor(t, "uploads resuming after the others are back", 60*time.Second, func() (bool, string) {
		n, _ := uploads()
		return n > count, fmt.Sprint(n, " ", count)
	})
}

// TestClusterRestartAndConcurrentPromotions restarts every daemon (the
// view survives, nobody bootstraps again) and promotes two nodes at once:
// the epoch compare-and-set lets exactly one win.
func TestClusterRestartAndConcurrentPromotions(t *testing.T) {
	ins := harness.StartInstances(t, 3, harness.Options{})
	backups := filepath.Join(t.TempDir(), "backups")
	nodes := newClusterNodes(t, ins, backups)
	for _, n := range nodes {
		n.start(t)
	}
	setRoles(t, nodes)
	waitVoters(t, nodes[0], 3)
	harness.WaitFor(t, "every node sees n1 as the primary", 30*time.Second, func() (bool, string) {
		for _, n := range nodes {
			if v := n.view(t); v.Primary != "n1" || v.Epoch != 1 {
				return false, fmt.Sprint(n.id, v)
			}
		}
		return true, ""
	})
	// Every daemon restarts.
	for _, n := range nodes {
		_ = n.d.cmd.Process.Kill()
		_, _ = n.d.wait(t, 10*time.Second)
	}
	for _, n := range nodes {
		n.start(t)
	}
	harness.WaitFor(t, "the view back on every node", 30*time.Second, func() (bool, string) {
		for _, n := range nodes {
			v := n.view(t)
			if v.Primary != "n1" || v.Epoch != 1 || v.Leader == "" {
				return false, fmt.Sprint(n.id, v)
			}
		}
		return true, ""
	})
	for _, n := range nodes {
		if strings.Contains(n.d.out.String(), "bootstrapping a new cluster") {
			t.Errorf("%s bootstrapped again after a restart", n.id)
		}
	}
	waitVoters(t, nodes[1], 3)
	// Without force, a second primary is refused.
	if code, body := doJSON(t, "PUT", nodes[1].url+"/status", map[string]any{"mode": "promote"}); code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "n1 is the primary") {
		t.Errorf("promote without force: %d %v", code, body)
	}
	// Two forced promotions at once: each that commits takes an epoch of
	// its own (the compare-and-set on the epoch it read); one that read
	// the same epoch as the winner is refused and told why.
	type result struct {
		id   string
		code int
		body map[string]any
	}
	res := make(chan result, 2)
	for _, n := range nodes[1:] {
		go func() {
			code, body := doJSON(t, "PUT", n.url+"/status", map[string]any{"mode": "promote", "force": true})
			res <- result{n.id, code, body}
		}()
	}
	won := map[string]bool{}
	for range 2 {
		r := <-res
		switch {
		case r.code == 200:
			won[r.id] = true
		case r.code == 400 && strings.Contains(fmt.Sprint(r.body["message"]), "promoted meanwhile"):
		default:
			t.Errorf("concurrent promotion on %s: %d %v", r.id, r.code, r.body)
		}
	}
	if len(won) == 0 {
		t.Fatal("no concurrent promotion won")
	}
	want := int64(1 + len(won))
	harness.WaitFor(t, fmt.Sprintf("epoch %v everywhere, the primary one of the winners", want), 30*time.Second, func() (bool, string) {
		for _, n := range nodes {
			v := n.view(t)
			if v.Epoch != want || !won[v.Primary] {
				return false, fmt.Sprint(n.id, v.Epoch, v.Primary)
			}
		}
		return true, ""
	})
	// A daemon that dies is removed from the cluster after the grace
	// period (3 s here); the other two keep a quorum.
	_ = nodes[0].d.cmd.Process.Kill()
	_, _ = nodes[0].d.wait(t, 10*time.Second)
	harness.WaitFor(t, "the dead n1 removed", 60*time.Second, func() (bool, string) {
		v := nodes[1].view(t)
		ids := memberGTIDs(v)
		_, still := ids["n1"]
		return !still && len(ids) == 2 && v.Leader != "", fmt.Sprint(v)
	})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// restoreOldestEquals restores the oldest completed backup to the latest
// transaction on a fresh node and compares it with the server behind db.
func restoreOldestEquals(t *testing.T, backups, listURL string, db *sql.DB) {
	t.Helper()
	ctx := context.Background()
	pos := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos")
	sums, rows, err := harness.TableChecksums(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var first string
	for _, b := range listBackups(t, listURL) {
		if b.CompletedAt != nil && (first == "" || b.StreamID < first) {
			first = b.StreamID
		}
	}
	rn := newRestoreNode(t, backups, nil)
	if code, body := doJSON(t, "PUT", rn.url+"/status", map[string]any{"mode": "restore", "site": "default", "stream_id": first}); code != 200 {
		t.Fatalf("restore: %d %v", code, body)
	}
	rn.waitObserve(t, 5*time.Minute)
	rn.assertRestored(t, harness.Checkpoint{Label: "the new primary", GTID: pos, Checksums: sums, Rows: rows})
}

// waitVoters waits until n's GET /cluster shows want voters.
func waitVoters(t testing.TB, n *clusterNode, want int) {
	t.Helper()
	harness.WaitFor(t, fmt.Sprintf("%d voters", want), 30*time.Second, func() (bool, string) {
		v := n.view(t)
		voters := 0
		for _, m := range v.Members {
			if m.Voter {
				voters++
			}
		}
		return voters == want, fmt.Sprint(v)
	})
}

// epochUploads counts the binlog manifests uploaded under epoch and
// returns when the newest was written.
func epochUploads(t testing.TB, backups string, epoch int64) (n int, last time.Time) {
	t.Helper()
	streams, _ := readManifests(t, openFileSite(t, backups))
	for _, ms := range streams {
		for _, m := range ms {
			if m.Epoch == epoch {
				n++
				if m.UploadedAt.After(last) {
					last = m.UploadedAt
				}
			}
		}
	}
	return n, last
}

// setRoles makes nodes[0] the first primary (active) and the others
// observers.
func setRoles(t testing.TB, nodes []*clusterNode) {
	t.Helper()
	if st := setMode(t, nodes[0].url, wire.ModeRequest{Mode: "active"}); st.Mode != "active" {
		t.Fatalf("%s active: %+v", nodes[0].id, st)
	}
	for _, n := range nodes[1:] {
		if code, body := doJSON(t, "PUT", n.url+"/status", map[string]any{"mode": "observe"}); code != 200 {
			t.Fatalf("%s observe: %d %v", n.id, code, body)
		}
	}
}

package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/failpoint"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// tryJSON is doJSON for a request whose server may die while answering.
func tryJSON(method, url string, body any) (int, map[string]any, error) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequest(method, url, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, nil
}

// TestPromotionSurvivesKill promotes one node after another (with force:
// the old primary's daemon stays up, deposed) and kills the promoting
// daemon with kill -9 at one point of the promotion each time: right
// after the compare-and-set, during the drain, during the catch-up, and
// right after the promotion record. Restarted, each ends active at the
// epoch it was given (no second one), with everything its predecessor
// uploaded. A deposed primary's binlog that lands after the record is
// ignored by the catch-up and by restores. A restore from storage equals
// the last primary.
func TestPromotionSurvivesKill(t *testing.T) {
	ins, nodes, backups := replicatedCluster(t)
	ctx := context.Background()
	setRoles(t, nodes)
	dbs := make([]*sql.DB, len(ins))
	for i, in := range ins {
		dbs[i] = harness.OpenDB(t, in)
	}
	load, err := harness.NewLoadGen(ctx, dbs[0], 61)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 100); err != nil {
		t.Fatal(err)
	}
	waitCompletedBackup(t, nodes[0].url)
	// From here on the servers do not replicate: what a promoted node
	// lacks comes from storage alone.
	pos := harness.QueryString(t, dbs[0], "SELECT @@gtid_binlog_pos")
	for _, in := range ins[1:] {
		if err := in.WaitForGTID(ctx, pos); err != nil {
			t.Fatal(err)
		}
		harness.Exec(t, harness.OpenDB(t, in), "STOP SLAVE")
	}
	primary, epoch := 0, 1
	steps := []struct {
		to     int
		killAt string
	}{{1, "promote-after-cas"}, {2, "promote-drain"}, {1, "promote-catchup"}, {0, "promote-after-record"}}
	var rogue string
	for i, st := range steps {
		// The primary writes; all of it reaches storage.
		lg, err := harness.NewLoadGen(ctx, dbs[primary], uint64(62+i))
		if err != nil {
			t.Fatal(err)
		}
		if err := lg.WriteTransactions(ctx, 300); err != nil {
			t.Fatal(err)
		}
		if code, body := doJSON(t, "POST", nodes[primary].url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
			t.Fatalf("rotation on %s: %d %v", nodes[primary].id, code, body)
		}
		pos := harness.QueryString(t, dbs[primary], "SELECT @@gtid_binlog_pos")
		c := nodes[st.to]
		if missing := harness.QueryString(t, dbs[st.to], "SELECT @@gtid_binlog_pos"); missing == pos {
			t.Fatalf("%s is not behind (%s)", c.id, pos)
		}
		// The candidate's daemon runs with the failpoint and is promoted.
		_ = c.d.cmd.Process.Kill()
		_, _ = c.d.wait(t, 10*time.Second)
		c.d = startDaemonEnv(t, []string{failpoint.EnvKillAt + "=" + st.killAt}, "--config", c.cfgPath)
		harness.WaitFor(t, c.id+"'s API", 30*time.Second, func() (bool, string) {
			m := c.mode(t)
			return m == "observe" || m == "active", c.d.out.String()
		})
		code, body, err := tryJSON("PUT", c.url+"/status", map[string]any{"mode": "promote", "force": true})
		t.Logf("step %d: promote %s, killed at %s: answer %d %v %v", i+1, c.id, st.killAt, code, body, err)
		if _, err := c.d.wait(t, 120*time.Second); err != nil {
			t.Fatalf("%s was not killed at %s: %v", c.id, st.killAt, err)
		}
		if !strings.Contains(c.d.out.String(), "failpoint: killing the daemon") {
			t.Fatalf("%s stopped, but not at the failpoint:\n%s", c.id, c.d.out.String())
		}
		if st.killAt == "promote-after-record" {
			rogue = plantDeposedBinlog(t, nodes[primary], ins[primary], dbs[primary], backups, int64(epoch), int64(epoch+1))
		}
		c.start(t)
		harness.WaitFor(t, fmt.Sprintf("%s active at epoch %d", c.id, epoch+1), 120*time.Second, func() (bool, string) {
			v := c.view(t)
			return c.mode(t) == "active" && v.Primary == c.id && v.Epoch == int64(epoch+1), fmt.Sprint(v)
		})
		if got := harness.QueryString(t, dbs[st.to], "SELECT @@gtid_binlog_pos"); got != pos {
			t.Errorf("step %d: %s active at %s, its predecessor ended at %s", i+1, c.id, got, pos)
		}
		primary, epoch = st.to, epoch+1
	}
	// Nothing took an epoch of its own: the kills did not repeat a
	// compare-and-set.
	if v := nodes[primary].view(t); v.Epoch != int64(epoch) {
		t.Errorf("epoch %v after %d promotions", v.Epoch, len(steps))
	}
	executed := harness.QueryString(t, dbs[primary], "SELECT @@gtid_binlog_state")
	rogueSet, err1 := mysql.ParseGTIDSet(mysql.FlavorMariaDB, rogue)
	executedSet, err2 := mysql.ParseGTIDSet(mysql.FlavorMariaDB, executed)
	if err1 != nil || err2 != nil || rogue == "" {
		t.Fatalf("GTIDs %q %q: %v %v", rogue, executed, err1, err2)
	}
	if rogueSet.IsSubsetOf(executedSet) {
		t.Errorf("the new primary applied the deposed primary's binlog (%s in %s)", rogue, executed)
	}
	lg, err := harness.NewLoadGen(ctx, dbs[primary], 70)
	if err != nil {
		t.Fatal(err)
	}
	if err := lg.WriteTransactions(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", nodes[primary].url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("final rotation: %d %v", code, body)
	}
	restoreOldestEquals(t, backups, nodes[primary].url, dbs[primary])
}

// plantDeposedBinlog makes the deposed primary (its daemon stopped) write
// transactions of its own and puts its newest binlog into the open stream
// as that primary would without the writer gate: under its old epoch, at
// the start index of the new epoch's promotion record. It returns the
// GTID of the rogue transactions.
func plantDeposedBinlog(t *testing.T, n *clusterNode, in *harness.Instance, db *sql.DB, backups string, oldEpoch, newEpoch int64) string {
	t.Helper()
	ctx := context.Background()
	_ = n.d.cmd.Process.Kill()
	_, _ = n.d.wait(t, 10*time.Second)
	lg, err := harness.NewLoadGen(ctx, db, 99)
	if err != nil {
		t.Fatal(err)
	}
	if err := lg.WriteTransactions(ctx, 20); err != nil {
		t.Fatal(err)
	}
	rogue := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos")
	harness.Exec(t, db, "FLUSH BINARY LOGS")
	site := openFileSite(t, backups)
	var rec *storage.PromotionRecord
	err = site.List(ctx, storage.StreamsPrefix, func(o storage.ObjectInfo) error {
		if _, e, err := storage.ParsePromotionKey(o.Key); err == nil && e == newEpoch {
			data, err := site.GetBytes(ctx, o.Key)
			if err != nil {
				return err
			}
			rec = &storage.PromotionRecord{}
			return storage.UnmarshalManifest(o.Key, data, rec)
		}
		return nil
	})
	if err != nil || rec == nil {
		t.Fatalf("the promotion record of epoch %d: %v %v", newEpoch, rec, err)
	}
	scanner, err := backup.NewScanner(in.BinlogPrefix(), mysql.FlavorMariaDB, filepath.Join(t.TempDir(), "scan.json"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := scanner.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	local := scanner.Binlogs()
	last := local[len(local)-1]
	var serverID uint32
	fmt.Sscan(strings.TrimPrefix(n.id, "n"), &serverID)
	ref := storage.BinlogRef{StreamID: rec.StreamID, RemoteIndex: rec.StartIndex, Epoch: oldEpoch, ServerID: 100 + serverID}
	if _, err := backup.UploadBinlog(ctx, site, backup.BinlogUpload{Ref: ref, Binlog: last, Flavor: mysql.FlavorMariaDB,
		Encode: storage.EncodeOptions{Compression: storage.Compression("zstd")}}, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("planted the deposed %s's binlog %s (%s) at %s", n.id, last.Name, rogue, ref.ManifestKey())
	return rogue
}

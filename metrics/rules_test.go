package metrics

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAlertRules checks deploy/prometheus/myhoard-rules.yml with promtool
// (Debian's prometheus package): the syntax, the unit tests next to it,
// and that every myhoard metric a rule names is one the daemon exports.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is missing: apt-get install prometheus (make test installs it)")
	}
	dir := filepath.Join("..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "myhoard-rules.yml"}, {"test", "rules", "myhoard-rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules, err := os.ReadFile(filepath.Join(dir, "myhoard-rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	p := NewPrometheus(func() Snapshot {
		return Snapshot{Mode: "active", LastBackupCompleted: time.Now(), LastBinlogUploaded: time.Now(), RestorableUntil: time.Now(),
			BasebackupDuration: time.Second, InCluster: true, LastVerify: time.Now(), LastDrill: time.Now(), LastDrillPassed: time.Now(), DrillInterval: time.Hour}
	})
	families, err := p.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		exported[f.GetName()] = true
	}
	for _, name := range regexp.MustCompile(`myhoard_[a-z_]+`).FindAllString(string(rules), -1) {
		if !exported[name] && !strings.HasPrefix(name, "myhoard_rules") {
			t.Errorf("the rules name %s, which the daemon does not export", name)
		}
	}
}

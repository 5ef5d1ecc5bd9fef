package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// TestPrometheusScrapes: a real Prometheus (Debian's package, started
// here on loopback) scrapes a daemon that backs up a server, and answers
// a query for the newest backup's time and the node's mode.
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is missing: apt-get install prometheus (make test installs it)")
	}
	s := newActiveSetup(t)
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	waitCompletedBackup(t, s.url)

	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %s\nscrape_configs:\n  - job_name: myhoard\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
		mustAbs(t, filepath.Join("..", "deploy", "prometheus", "myhoard-rules.yml")), s.port)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := startProcess(t, nil, []string{bin, "--config.file=" + filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port)})
	defer func() { _ = prom.cmd.Process.Kill() }()
	query := func(q string) ([]any, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/query?query=%s", port, url.QueryEscape(q)))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var body struct {
			Status string `json:"status"`
			Data   struct {
				Result []any `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return nil, err
		}
		return body.Data.Result, nil
	}
	for _, q := range []string{"myhoard_backup_last_completed_timestamp_seconds", `myhoard_mode{mode="active"} == 1`,
		`myhoard_http_request_duration_seconds_count{route="backup_get"}`} {
		harness.WaitFor(t, "Prometheus answers "+q, 60*time.Second, func() (bool, string) {
			res, err := query(q)
			return err == nil && len(res) == 1, fmt.Sprint(res, err, prom.out.String())
		})
	}
	// the rules loaded and evaluated: nothing fires on a healthy primary
	harness.WaitFor(t, "the alert rules evaluated", 30*time.Second, func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/rules", port))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name           string `json:"name"`
						Health         string `json:"health"`
						LastEvaluation string `json:"lastEvaluation"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || len(body.Data.Groups) != 1 {
			return false, fmt.Sprint(body, err)
		}
		for _, r := range body.Data.Groups[0].Rules {
			if r.Health != "ok" {
				return false, fmt.Sprint(r)
			}
		}
		return len(body.Data.Groups[0].Rules) >= 6, fmt.Sprint(body)
	})
	res, err := query(`ALERTS{alertstate="firing"}`)
	if err != nil || len(res) != 0 {
		t.Errorf("alerts firing on a healthy primary: %v %v", res, err)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/myhoard/myhoard/config"
)

// apiClient calls the daemon's API: its URL, the token every request
// bears (http_auth_token_file of the config, or $MYHOARD_TOKEN) and, for
// HTTPS, the CA its certificate is verified against (http_tls.ca_file, or
// $MYHOARD_CA_FILE; default the system's roots).
type apiClient struct {
	url   string
	token string
	http  *http.Client
}

// Environment variables of the CLI.
const (
	envToken  = "MYHOARD_TOKEN"
	envCAFile = "MYHOARD_CA_FILE"
)

// clientFlags parses a client command's flags: --url, or the daemon's
// address from --config / $MYHOARD_CONFIG.
func clientFlags(name string, args []string, stderr io.Writer, extra func(fs *flag.FlagSet)) (*apiClient, *flag.FlagSet, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "the daemon's API (default: http_address:http_port of the config)")
	cfgPath := fs.String("config", "", "config file (default $"+config.EnvConfigPath+")")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, false
	}
	c := &apiClient{url: "http://127.0.0.1:16001", token: os.Getenv(envToken)}
	caFile := os.Getenv(envCAFile)
	path := *cfgPath
	if path == "" {
		path = os.Getenv(config.EnvConfigPath)
	}
	if path != "" {
		cfg, ok := loadConfig(path, stderr)
		if !ok {
			return nil, nil, false
		}
		host := cfg.HTTPAddress
		if host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		scheme := "http"
		if cfg.HTTPTLS.Enabled() {
			scheme = "https"
			if caFile == "" {
				caFile = cfg.HTTPTLS.CAFile
			}
		}
		c.url = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(cfg.HTTPPort))
		if c.token == "" && cfg.HTTPAuthTokenFile != "" {
			tok, err := config.ReadToken(cfg.HTTPAuthTokenFile)
			if err != nil {
				fmt.Fprintf(stderr, "myhoard %s: http_auth_token_file: %v\n", name, err)
				return nil, nil, false
			}
			c.token = tok
		}
	}
	if *url != "" {
		c.url = strings.TrimRight(*url, "/")
	}
	tr := &http.Transport{}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		pool := x509.NewCertPool()
		if err == nil && !pool.AppendCertsFromPEM(pem) {
			err = fmt.Errorf("%s: no PEM certificate in it", caFile)
		}
		if err != nil {
			fmt.Fprintf(stderr, "myhoard %s: CA file: %v\n", name, err)
			return nil, nil, false
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c.http = &http.Client{Timeout: 10 * time.Minute, Transport: tr}
	return c, fs, true
}

// call sends a request and decodes the JSON answer; API errors come back as
// their message.
func (c *apiClient) call(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the myhoard daemon: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Message, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func statusCommand(args []string, stdout, stderr io.Writer) int {
	srv, _, ok := clientFlags("status", args, stderr, nil)
	if !ok {
		return 2
	}
	var st struct {
		Mode string `json:"mode"`
	}
	if err := srv.call("GET", "/status", nil, &st); err != nil {
		fmt.Fprintf(stderr, "myhoard status: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "mode: %s\n", st.Mode)
	return 0
}

func backupsCommand(args []string, stdout, stderr io.Writer) int {
	srv, _, ok := clientFlags("backups", args, stderr, nil)
	if !ok {
		return 2
	}
	var list struct {
		Backups []struct {
			StreamID       string     `json:"stream_id"`
			Site           string     `json:"site"`
			CompletedAt    *time.Time `json:"completed_at"`
			ClosedAt       *time.Time `json:"closed_at"`
			BrokenAt       *time.Time `json:"broken_at"`
			PreserveUntil  *time.Time `json:"preserve_until"`
			RestorableFrom *time.Time `json:"restorable_from"`
			BasebackupInfo *struct {
				EncodedSize int64 `json:"encoded_size"`
				Size        int64 `json:"size"`
			} `json:"basebackup_info"`
		} `json:"backups"`
	}
	if err := srv.call("GET", "/backup?order=asc", nil, &list); err != nil {
		fmt.Fprintf(stderr, "myhoard backups: %v\n", err)
		return 1
	}
	if list.Backups == nil {
		fmt.Fprintln(stdout, "the daemon has not listed the backups yet")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSITE\tCOMPLETED\tCLOSED\tSIZE\tSTORED\tRESTORABLE\tNOTES")
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	}
	for _, b := range list.Backups {
		size, stored := "-", "-"
		if b.BasebackupInfo != nil {
			size, stored = humanBytes(b.BasebackupInfo.Size), humanBytes(b.BasebackupInfo.EncodedSize)
		}
		window := "-"
		if b.RestorableFrom != nil {
			until := "now"
			if b.ClosedAt != nil {
				until = at(b.ClosedAt)
			}
			window = at(b.RestorableFrom) + " .. " + until
		}
		var notes []string
		if b.BrokenAt != nil {
			notes = append(notes, "broken")
		}
		if b.PreserveUntil != nil {
			notes = append(notes, "preserved until "+at(b.PreserveUntil))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.StreamID, b.Site, at(b.CompletedAt), at(b.ClosedAt), size, stored, window, strings.Join(notes, ", "))
	}
	tw.Flush()
	return 0
}

func backupCommand(args []string, stdout, stderr io.Writer) int {
	var binlog bool
	var wait float64
	srv, _, ok := clientFlags("backup", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&binlog, "binlog", false, "rotate and upload the current binlog instead of a full backup")
		fs.Float64Var(&wait, "wait", 0, "with --binlog: seconds to wait for the upload")
	})
	if !ok {
		return 2
	}
	body := map[string]any{"backup_type": "basebackup"}
	if binlog {
		body = map[string]any{"backup_type": "binlog", "wait_for_upload": wait}
	} else if wait != 0 {
		fmt.Fprintln(stderr, "myhoard backup: --wait only goes with --binlog")
		return 2
	}
	if err := srv.call("POST", "/backup", body, nil); err != nil {
		fmt.Fprintf(stderr, "myhoard backup: %v\n", err)
		return 1
	}
	if binlog {
		fmt.Fprintln(stdout, "binlog rotated")
	} else {
		fmt.Fprintln(stdout, "full backup requested")
	}
	return 0
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// clusterCommand prints GET /cluster as a table.
func clusterCommand(args []string, stdout, stderr io.Writer) int {
	srv, _, ok := clientFlags("cluster", args, stderr, nil)
	if !ok {
		return 2
	}
	var st struct {
		Leader    string `json:"leader"`
		Primary   string `json:"primary"`
		Epoch     int64  `json:"epoch"`
		Bootstrap string `json:"bootstrap"`
		Members   []struct {
			ID       string    `json:"node_id"`
			API      string    `json:"api_address"`
			Mode     string    `json:"mode"`
			Voter    bool      `json:"voter"`
			InRaft   bool      `json:"in_raft"`
			Gossip   string    `json:"gossip"`
			LastSeen time.Time `json:"last_seen"`
			GTIDs    string    `json:"gtid_executed"`
			Behind   *uint64   `json:"transactions_behind_primary"`
		} `json:"members"`
	}
	if err := srv.call("GET", "/cluster", nil, &st); err != nil {
		fmt.Fprintf(stderr, "myhoard cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "leader: %s  primary: %s  epoch: %d\n", st.Leader, st.Primary, st.Epoch)
	if st.Bootstrap != "" {
		fmt.Fprintf(stdout, "bootstrap: %s\n", st.Bootstrap)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tAPI\tMODE\tROLE\tGOSSIP\tLAST SEEN\tBEHIND\tGTID EXECUTED")
	for _, m := range st.Members {
		role := "non-voter"
		switch {
		case !m.InRaft:
			role = "not in raft"
		case m.Voter:
			role = "voter"
		}
		if m.ID == st.Leader {
			role += ",leader"
		}
		if m.ID == st.Primary {
			role += ",primary"
		}
		behind := "-"
		if m.Behind != nil {
			behind = strconv.FormatUint(*m.Behind, 10)
		}
		seen := "-"
		if !m.LastSeen.IsZero() {
			seen = time.Since(m.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.API, m.Mode, role, m.Gossip, seen, behind, m.GTIDs)
	}
	tw.Flush()
	return 0
}

// promoteCommand makes the local node the primary.
func promoteCommand(args []string, stdout, stderr io.Writer) int {
	var force *bool
	srv, _, ok := clientFlags("promote", args, stderr, func(fs *flag.FlagSet) {
		force = fs.Bool("force", false, "take over even though another node is the primary")
	})
	if !ok {
		return 2
	}
	var out struct {
		Mode string `json:"mode"`
	}
	if err := srv.call("PUT", "/status", map[string]any{"mode": "promote", "force": *force}, &out); err != nil {
		fmt.Fprintf(stderr, "myhoard promote: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "mode: %s\n", out.Mode)
	return 0
}

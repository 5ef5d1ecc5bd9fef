package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/myhoard/myhoard/client"
	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/wire"
)

// Environment variables of the CLI.
const (
	envToken  = "MYHOARD_TOKEN"
	envCAFile = "MYHOARD_CA_FILE"
)

// clientFlags parses a client command's flags: --url, or the daemon's
// address from --config / $MYHOARD_CONFIG.
func clientFlags(name string, args []string, stderr io.Writer, extra func(fs *flag.FlagSet)) (*client.Client, *flag.FlagSet, bool) {
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
	c := client.New("http://127.0.0.1:16001")
	c.Token = os.Getenv(envToken)
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
		c.URL = scheme + "://" + net.JoinHostPort(host, strconv.Itoa(cfg.HTTPPort))
		if c.Token == "" && cfg.HTTPAuthTokenFile != "" {
			tok, err := config.ReadToken(cfg.HTTPAuthTokenFile)
			if err != nil {
				fmt.Fprintf(stderr, "myhoard %s: http_auth_token_file: %v\n", name, err)
				return nil, nil, false
			}
			c.Token = tok
		}
	}
	if *url != "" {
		c.URL = strings.TrimRight(*url, "/")
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
	c.HTTP.Transport = tr
	return c, fs, true
}

func statusCommand(args []string, stdout, stderr io.Writer) int {
	srv, _, ok := clientFlags("status", args, stderr, nil)
	if !ok {
		return 2
	}
	st, err := srv.Status(context.Background())
	if err != nil {
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
	list, err := srv.Backups(context.Background(), "asc")
	if err != nil {
		fmt.Fprintf(stderr, "myhoard backups: %v\n", err)
		return 1
	}
	if list == nil {
		fmt.Fprintln(stdout, "the daemon has not listed the backups yet")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSITE\tKIND\tCOMPLETED\tCLOSED\tSIZE\tSTORED\tRESTORABLE\tNOTES")
	for _, b := range list {
		size, stored, kind := "-", "-", "-"
		if b.Basebackup != nil {
			size, stored, kind = humanBytes(b.Basebackup.Size), humanBytes(b.Basebackup.EncodedSize), "full"
			if r := b.Basebackup.RequiredStreams; b.Basebackup.Incremental && len(r) > 0 {
				kind = "incremental of " + r[len(r)-1]
			}
		}
		window := "-"
		if b.RestorableFrom != nil {
			until := "now"
			if b.ClosedAt != nil {
				until = timeOrDash(b.ClosedAt)
			}
			window = timeOrDash(b.RestorableFrom) + " .. " + until
		}
		var notes []string
		if b.BrokenAt != nil {
			notes = append(notes, "broken")
		}
		if b.PreserveUntil != nil {
			notes = append(notes, "preserved until "+timeOrDash(b.PreserveUntil))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.StreamID, b.Site, kind, timeOrDash(b.CompletedAt), timeOrDash(b.ClosedAt), size, stored, window, strings.Join(notes, ", "))
	}
	tw.Flush()
	return 0
}

// timeOrDash is a table cell for a time ("-": none).
func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// binlogsCommand lists a stream's binlogs in storage, as a restore of it
// would use them.
func binlogsCommand(args []string, stdout, stderr io.Writer) int {
	var stream string
	var full bool
	srv, _, ok := clientFlags("binlogs", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&stream, "stream", "", "the backup's stream id (required)")
		fs.BoolVar(&full, "full", false, "list every key again, not only those after the daemon's last listing")
	})
	if !ok {
		return 2
	}
	if stream == "" {
		fmt.Fprintln(stderr, "myhoard binlogs: --stream is required")
		return 2
	}
	list, err := srv.StreamBinlogs(context.Background(), stream, full)
	if err != nil {
		fmt.Fprintf(stderr, "myhoard binlogs: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tEPOCH\tSERVER\tNAME\tFIRST EVENT\tLAST EVENT\tTRX\tSIZE\tGTIDS ADDED")
	for _, b := range list.Binlogs {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", b.RemoteIndex, b.Epoch, b.ServerID, b.LocalName, timeOrDash(b.FirstEventAt), timeOrDash(b.LastEventAt),
			b.Transactions, humanBytes(b.Size), b.GTIDsAdded)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d binlogs of %s on site %s\n", len(list.Binlogs), list.StreamID, list.Site)
	return 0
}

func backupCommand(args []string, stdout, stderr io.Writer) int {
	var binlog, incremental bool
	var wait float64
	srv, _, ok := clientFlags("backup", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&binlog, "binlog", false, "rotate and upload the current binlog instead of a full backup")
		fs.BoolVar(&incremental, "incremental", false, "an incremental backup (refused with the reason when none can be taken)")
		fs.Float64Var(&wait, "wait", 0, "with --binlog: seconds to wait for the upload")
	})
	if !ok {
		return 2
	}
	body := wire.BackupRequest{BackupType: "basebackup"}
	if incremental {
		body.Incremental = &incremental
	}
	if binlog && incremental {
		fmt.Fprintln(stderr, "myhoard backup: --incremental does not go with --binlog")
		return 2
	}
	if binlog {
		body = wire.BackupRequest{BackupType: "binlog", WaitForUpload: &wait}
	} else if wait != 0 {
		fmt.Fprintln(stderr, "myhoard backup: --wait only goes with --binlog")
		return 2
	}
	if err := srv.Backup(context.Background(), body); err != nil {
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
	st, err := srv.Cluster(context.Background())
	if err != nil {
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.APIAddr, m.Mode, role, m.Gossip, seen, behind, m.GTIDs)
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
	out, err := srv.SetMode(context.Background(), wire.ModeRequest{Mode: "promote", Force: *force})
	if err != nil {
		fmt.Fprintf(stderr, "myhoard promote: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "mode: %s\n", out.Mode)
	return 0
}

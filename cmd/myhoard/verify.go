package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/verify"
)

// verifyCommand is `myhoard verify`: it checks the backup sites of the
// config directly in storage (never writing to them) and prints one
// finding per line. Exit 0: clean; 1: findings; 2: could not run.
func verifyCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfgPath, siteName, stream string
	var deep, asJSON bool
	fs.StringVar(&cfgPath, "config", os.Getenv(config.EnvConfigPath), "config file (default $"+config.EnvConfigPath+")")
	fs.StringVar(&siteName, "site", "", "only this backup site")
	fs.StringVar(&stream, "stream", "", "only this backup stream")
	fs.BoolVar(&deep, "deep", false, "also download and decode every object")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return 2
	}
	if cfgPath == "" {
		fmt.Fprintf(stderr, "myhoard verify: no config file: pass --config FILE or set %s\n", config.EnvConfigPath)
		return 2
	}
	cfg, ok := loadConfig(cfgPath, stderr)
	if !ok {
		return 2
	}
	var names []string
	for name := range cfg.BackupSites {
		if siteName == "" || name == siteName {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		fmt.Fprintf(stderr, "myhoard verify: no backup site %q in %s\n", siteName, cfgPath)
		return 2
	}
	sort.Strings(names)
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	keys := storage.Keyring{}
	for _, sc := range cfg.BackupSites {
		if sc.EncryptionKeys != nil {
			kp, err := storage.NewKeyPair(sc.EncryptionKeys.Public, sc.EncryptionKeys.Private)
			if err != nil {
				fmt.Fprintf(stderr, "myhoard verify: encryption keys: %v\n", err)
				return 2
			}
			keys[kp.ID] = kp
		}
	}
	var reports []*verify.Report
	findings := 0
	for _, name := range names {
		site, err := storage.OpenSite(ctx, name, cfg.BackupSites[name].ObjectStorage, storage.SiteOptions{})
		if err != nil {
			fmt.Fprintf(stderr, "myhoard verify: %v\n", err)
			return 2
		}
		site.RecoveryOnly = cfg.BackupSites[name].RecoveryOnly
		r, err := verify.Site(ctx, site, verify.Options{StreamID: stream, Deep: deep, Keys: keys})
		site.Close()
		if err != nil {
			fmt.Fprintf(stderr, "myhoard verify: %v\n", err)
			return 2
		}
		reports = append(reports, r)
		findings += len(r.Findings)
		if !asJSON {
			for _, f := range r.Findings {
				fmt.Fprintln(stdout, f)
			}
			fmt.Fprintf(stderr, "site %s: %d streams, %d binlogs, %d basebackup parts checked%s: %d findings\n",
				name, r.Streams, r.Binlogs, r.Parts, map[bool]string{true: fmt.Sprintf(", %d bytes decoded", r.DecodedBytes), false: ""}[deep], len(r.Findings))
		}
	}
	if asJSON {
		_ = json.NewEncoder(stdout).Encode(map[string]any{"sites": names, "reports": reports})
	}
	if findings > 0 {
		return 1
	}
	return 0
}

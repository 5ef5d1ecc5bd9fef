package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/config"
)

// openCluster joins (or bootstraps) the cluster when cluster.raft_address
// is set; nil otherwise.
func openCluster(ctx context.Context, cfg *config.Config, log *slog.Logger) (*cluster.Node, error) {
	cl := cfg.Cluster
	if !cl.Enabled() {
		return nil, nil
	}
	var key []byte
	if cl.GossipKey != "" {
		k, err := base64.StdEncoding.DecodeString(cl.GossipKey)
		if err != nil {
			return nil, fmt.Errorf("cluster.gossip_key: %w", err)
		}
		key = k
	}
	host := cfg.HTTPAddress
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host, _, _ = net.SplitHostPort(cl.GossipAddress) // advertise the API where gossip is
	}
	t := cluster.Timing{Local: cl.LocalTiming, DeadGrace: time.Duration(cl.DeadMemberGrace * float64(time.Second))}
	if cl.LocalTiming {
		t.Reconcile, t.StableFor = 300*time.Millisecond, time.Second
	}
	client := &http.Client{Timeout: 15 * time.Second}
	forward := func(ctx context.Context, apiAddr, path string, body []byte) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, "POST", "http://"+apiAddr+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s%s: HTTP %d: %s", apiAddr, path, resp.StatusCode, bytes.TrimSpace(out))
		}
		return out, nil
	}
	mysqlAddr := cl.MySQLAddress
	if mysqlAddr == "" && cfg.MySQL.ClientParams.Host != "" {
		mysqlAddr = net.JoinHostPort(cfg.MySQL.ClientParams.Host, strconv.Itoa(cfg.MySQL.ClientParams.Port))
	}
	return cluster.Open(ctx, cluster.Options{
		NodeID: cl.NodeID, RaftAddr: cl.RaftAddress, GossipAddr: cl.GossipAddress,
		APIAddr: net.JoinHostPort(host, strconv.Itoa(cfg.HTTPPort)), Join: cl.Join, BootstrapExpect: cl.BootstrapExpect, GossipKey: key, DataDir: cl.DataDir,
		ServerID: uint32(cfg.ServerID), Flavor: cfg.MySQL.Flavor, MySQLAddr: mysqlAddr, Forward: forward, Timing: t, Log: log,
	})
}

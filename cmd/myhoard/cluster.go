package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/tlsconfig"
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
	var store *tlsconfig.Store
	if !cl.Insecure {
		var err error
		if store, err = tlsconfig.Load(tlsconfig.Files{CAFile: cl.TLS.CAFile, CertFile: cl.TLS.CertFile, KeyFile: cl.TLS.KeyFile}); err != nil {
			return nil, fmt.Errorf("cluster.tls: %w", err)
		}
	} else {
		log.Warn("cluster.insecure: Raft and node-to-node calls are plaintext and unauthenticated; use it for a lab on loopback only")
	}
	mysqlAddr := cl.MySQLAddress
	if mysqlAddr == "" && cfg.MySQL.ClientParams.Host != "" {
		mysqlAddr = net.JoinHostPort(cfg.MySQL.ClientParams.Host, strconv.Itoa(cfg.MySQL.ClientParams.Port))
	}
	return cluster.Open(ctx, cluster.Options{
		NodeID: cl.NodeID, RaftAddr: cl.RaftAddress, GossipAddr: cl.GossipAddress,
		RPCAddr: cl.RPCAddress, APIAddr: net.JoinHostPort(host, strconv.Itoa(cfg.HTTPPort)), Join: cl.Join, BootstrapExpect: cl.BootstrapExpect,
		GossipKey: key, DataDir: cl.DataDir, ServerID: uint32(cfg.ServerID), Flavor: cfg.MySQL.Flavor, MySQLAddr: mysqlAddr, TLS: store, Timing: t, Log: log,
	})
}

package node

import (
	"context"
	"fmt"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/restore"
	"github.com/myhoard/myhoard/wire"
)

// SetCluster attaches this node's cluster membership (nil: a lone node).
// With a cluster the primary and its epoch come from the Raft view, each
// node publishes its executed GTIDs there, and uploads pass the writer
// gate.
func (c *Controller) SetCluster(cn *cluster.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cluster = cn
}

func (c *Controller) clusterNode() *cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cluster
}

func (c *Controller) nodeID() string { return c.Config().Cluster.NodeID }

// publishState publishes this node's executed GTID set and mode into the
// cluster view when they changed, and every few seconds (its liveness).
func (c *Controller) publishState(ctx context.Context) {
	cn := c.clusterNode()
	if cn == nil {
		return
	}
	c.mu.Lock()
	db, flavor := c.db, c.flavor
	c.mu.Unlock()
	var gtids string
	if db != nil && Mode(c.Mode()) != ModeRestore {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		set, err := mysql.DialectOf(flavor).Executed(pctx, db)
		cancel()
		if err == nil {
			gtids = set.String()
		}
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cn.PublishIfChanged(actx, gtids, c.Mode()); err != nil {
		c.log.Debug("publishing the node state failed", "error", err)
	}
}

// gate is the writer gate (cluster.Node.WriterGate); nil for a lone node.
func (c *Controller) gate(epoch int64) backup.Gate {
	if cn := c.clusterNode(); cn != nil {
		return cn.WriterGate(epoch)
	}
	return nil
}

// ClusterStatus reports the cluster view as this node sees it: the
// members of the view, and those gossip sees that the view does not
// have yet (in_raft false).
func (c *Controller) ClusterStatus() (wire.ClusterStatus, error) {
	cn := c.clusterNode()
	if cn == nil {
		return wire.ClusterStatus{}, badRequest("this node is not part of a cluster (cluster.raft_address is not set)")
	}
	return cn.Status()
}

// autoRestore starts a restore of the newest backup on a cluster node
// with cluster.auto_restore and an empty data directory (a new replica
// provisioning itself).
func (c *Controller) autoRestore(ctx context.Context) error {
	cfg := c.Config()
	c.mu.Lock()
	done := c.state.AutoRestored
	c.mu.Unlock()
	if c.clusterNode() == nil || !cfg.Cluster.AutoRestore || done || restore.CheckDataDirEmpty(cfg.MySQL.DataDirectory) != nil {
		return nil
	}
	newest := restore.NewestRestorable(c.Backups(), "", "")
	if newest == nil {
		return nil // nothing to restore yet
	}
	c.log.Info("auto_restore: restoring the newest backup", "stream", newest.StreamID, "site", newest.Site)
	if _, err := c.requestMode(ctx, wire.ModeChange{Mode: string(ModeRestore), Site: newest.Site, StreamID: newest.StreamID}); err != nil {
		return fmt.Errorf("auto_restore of %s: %w", newest.StreamID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.AutoRestored = true
	return c.saveLocked()
}

// startReplication points a node provisioned by auto_restore at the
// current primary with GTID auto-position (once, when
// cluster.replication_user is set).
func (c *Controller) startReplication(ctx context.Context) error {
	cfg := c.Config()
	cn := c.clusterNode()
	c.mu.Lock()
	db, flavor, pending := c.db, c.flavor, c.state.AutoRestored && !c.state.ReplicationStarted
	c.mu.Unlock()
	if cn == nil || !pending || cfg.Cluster.ReplicationUser == "" || db == nil {
		return nil
	}
	view := cn.View()
	primary, ok := view.Members[view.Primary]
	if !ok || primary.MySQLAddr == "" || view.Primary == c.nodeID() {
		return nil // no primary known yet
	}
	src, err := mysql.ParseReplicationSource(primary.MySQLAddr)
	if err != nil {
		return fmt.Errorf("primary %s advertises a bad MySQL address: %w", view.Primary, err)
	}
	cp := cfg.MySQL.ClientParams
	src.User, src.Password, src.SSL, src.CAFile = cfg.Cluster.ReplicationUser, cfg.Cluster.ReplicationPassword, cp.RequireSSL, cp.CAFile
	if err := mysql.StartReplication(ctx, db, mysql.DialectOf(flavor), src); err != nil {
		return fmt.Errorf("replicate from the primary %s: %w", view.Primary, err)
	}
	c.log.Info("replicating from the primary", "primary", view.Primary, "address", primary.MySQLAddr)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.ReplicationStarted = true
	return c.saveLocked()
}

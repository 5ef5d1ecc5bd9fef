// Package mysql owns everything myhoard knows about the database servers it
// sits next to: the two flavors (MySQL 8 and MariaDB 10.6+), GTID sets and
// their algebra, reading binary log files, and small SQL helpers.
//
// Everything that differs between the flavours is a Dialect (dialect.go),
// one per flavour: replication (MariaDB's CHANGE MASTER and MySQL's CHANGE
// REPLICATION SOURCE are built there, by ReplicateFrom and ApplyRelayLogs),
// GTID state and waits, server options, the backup tools and their flags.
// The packages above never branch on the flavour.
//
// It must never import any other myhoard package, never keep global mutable
// state, and never panic on bad input (a corrupt binlog or a malformed GTID
// string is an error that names what and where).
package mysql

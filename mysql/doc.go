// Package mysql owns everything myhoard knows about the database servers it
// sits next to: the two flavors (MySQL 8 and MariaDB 10.6+), GTID sets and
// their algebra, reading binary log files, and small SQL helpers.
//
// It must never import any other myhoard package, never keep global mutable
// state, and never panic on bad input (a corrupt binlog or a malformed GTID
// string is an error that names what and where).
package mysql

package backup

import (
	"time"

	"github.com/myhoard/myhoard/config"
)

// The config's backup rules (backup_settings, binlog_purge_settings) as
// the decisions of this package take them.

// ScheduleOf is backup_settings' schedule (the config was validated: the
// full-backup days parse).
func ScheduleOf(bs config.BackupSettings) Schedule {
	days, _ := bs.Incremental.FullBackupDays()
	return Schedule{Hour: bs.BackupHour, Minute: bs.BackupMinute, IntervalMinutes: bs.BackupIntervalMinutes,
		Incremental: bs.Incremental.Enabled, FullDays: days}
}

// RetentionOf is backup_settings' retention.
func RetentionOf(bs config.BackupSettings) Retention {
	return Retention{CountMin: bs.BackupCountMin, CountMax: bs.BackupCountMax, AgeDaysMax: bs.BackupAgeDaysMax}
}

// PurgeLimitsOf are binlog_purge_settings' limits of one purge.
func PurgeLimitsOf(ps config.BinlogPurgeSettings) PurgeLimits {
	l := PurgeLimits{MinAge: seconds(ps.MinBinlogAgeBeforePurge)}
	if ps.MaxFilesPerCycle != nil {
		l.MaxFiles = *ps.MaxFilesPerCycle
	}
	if ps.MaxBytesPerCycle != nil {
		l.MaxBytes = *ps.MaxBytesPerCycle
	}
	return l
}

// PurgeDue reports whether local binlogs are purged now: purging is
// enabled and purge_interval passed since the last purge.
func PurgeDue(ps config.BinlogPurgeSettings, last, now time.Time) bool {
	return ps.Enabled && now.Sub(last) >= seconds(ps.PurgeInterval)
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

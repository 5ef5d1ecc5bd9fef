package backup

import (
	"reflect"
	"testing"
	"time"

	"github.com/myhoard/myhoard/config"
)

func TestSettings(t *testing.T) {
	bs := config.BackupSettings{BackupHour: 3, BackupMinute: 15, BackupIntervalMinutes: 1440, BackupCountMin: 2, BackupCountMax: 5, BackupAgeDaysMax: 30,
		Incremental: config.Incremental{Enabled: true, FullBackupWeekSchedule: "sun, WED"}}
	want := Schedule{Hour: 3, Minute: 15, IntervalMinutes: 1440, Incremental: true, FullDays: map[time.Weekday]bool{time.Sunday: true, time.Wednesday: true}}
	if got := ScheduleOf(bs); !reflect.DeepEqual(got, want) {
		t.Errorf("schedule %+v", got)
	}
	if got := RetentionOf(bs); got != (Retention{CountMin: 2, CountMax: 5, AgeDaysMax: 30}) {
		t.Errorf("retention %+v", got)
	}
	files := int64(10)
	ps := config.BinlogPurgeSettings{Enabled: true, MinBinlogAgeBeforePurge: 1.5, PurgeInterval: 60, MaxFilesPerCycle: &files}
	if got := PurgeLimitsOf(ps); got != (PurgeLimits{MinAge: 1500 * time.Millisecond, MaxFiles: 10}) {
		t.Errorf("purge limits %+v", got)
	}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		enabled bool
		last    time.Time
		want    bool
	}{
		{"never purged", true, time.Time{}, true},
		{"within the interval", true, now.Add(-59 * time.Second), false},
		{"interval passed", true, now.Add(-60 * time.Second), true},
		{"disabled", false, time.Time{}, false},
	} {
		ps.Enabled = tc.enabled
		if got := PurgeDue(ps, tc.last, now); got != tc.want {
			t.Errorf("%s: due %v, want %v", tc.name, got, tc.want)
		}
	}
}

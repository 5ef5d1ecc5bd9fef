package backup

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

func TestCatalog(t *testing.T) {
	ctx := context.Background()
	site, _ := fileSite(t)
	rsite, _ := fileSite(t)
	rsite.Name = "r"
	base := time.Now().UTC().Add(-100 * 24 * time.Hour).Truncate(time.Hour)
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, putFakeBackup(t, site, base.Add(time.Duration(i)*time.Hour), storage.MarkerCompleted, storage.MarkerClosed))
	}
	recovered := putFakeBackup(t, rsite, base.Add(-time.Hour), storage.MarkerCompleted, storage.MarkerClosed)

	k := NewCatalog(nil)
	if k.Ready() || k.Backups() != nil {
		t.Fatal("a new catalog is ready or has a listing")
	}
	if err := k.Refresh(ctx, 0); !errors.Is(err, ErrSitesClosed) {
		t.Fatalf("refresh before open: %v, want ErrSitesClosed", err)
	}
	rsite.RecoveryOnly = true
	k.Open(map[string]*storage.Site{"s": site, "r": rsite}, nil)
	if err := k.Refresh(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := len(k.Backups()); got != 5 {
		t.Fatalf("%d backups listed, want 5", got)
	}

	// The cached listing is used within maxAge; Invalidate or maxAge 0
	// lists again; Find lists again for a backup it lacks.
	newer := putFakeBackup(t, site, base.Add(10*time.Hour), storage.MarkerCompleted)
	if err := k.Refresh(ctx, time.Hour); err != nil || len(k.Backups()) != 5 {
		t.Fatalf("refresh within maxAge listed again: %d backups, %v", len(k.Backups()), err)
	}
	b, err := k.Find(ctx, "s", newer)
	if err != nil || b == nil || b.StreamID != newer {
		t.Fatalf("Find of a backup stored after the listing: %+v, %v", b, err)
	}
	if b, err := k.Find(ctx, "r", newer); err != nil || b != nil {
		t.Fatalf("Find on the wrong site: %+v, %v", b, err)
	}

	// Markers: only on writable sites, shown by the listing at once.
	for _, tc := range []struct{ stream, want string }{
		{recovered, "recovery-only site r"},
		{"nonexistent", `no backup "nonexistent"`},
	} {
		var re *wire.RequestError
		err := k.SetMarker(ctx, tc.stream, storage.MarkerBroken, &storage.MarkerRecord{At: time.Now()})
		if !errors.As(err, &re) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("marker on %s: %v, want a request error with %q", tc.stream, err, tc.want)
		}
	}
	brokenAt := func(id string) *time.Time {
		for _, b := range k.Backups() {
			if b.StreamID == id {
				return b.BrokenAt
			}
		}
		t.Fatalf("%s is not listed", id)
		return nil
	}
	if err := k.SetMarker(ctx, ids[1], storage.MarkerBroken, &storage.MarkerRecord{At: time.Now()}); err != nil || brokenAt(ids[1]) == nil {
		t.Fatalf("mark broken: %v, broken at %v", err, brokenAt(ids[1]))
	}
	if err := k.SetMarker(ctx, ids[1], storage.MarkerBroken, nil); err != nil || brokenAt(ids[1]) != nil {
		t.Fatalf("unmark broken: %v, broken at %v", err, brokenAt(ids[1]))
	}

	// Retention: at most 2 unbroken backups of the writable site; the
	// open newest one (own) and the recovery site's are never deleted.
	if err := k.DeleteOld(ctx, Retention{CountMin: 1, CountMax: 2, AgeDaysMax: 1000}, map[string]bool{newer: true}, 10); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, b := range k.Backups() {
		left = append(left, b.StreamID)
	}
	want := []string{ids[3], newer, recovered}
	slices.Sort(left)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Fatalf("after retention %v are listed, want %v", left, want)
	}
	if err := k.Refresh(ctx, 0); err != nil || len(k.Backups()) != 3 {
		t.Fatalf("storage still lists %d backups (%v), want 3", len(k.Backups()), err)
	}
	for _, id := range ids[:3] {
		var n int
		if err := site.List(ctx, storage.StreamPrefix(id), func(storage.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
			t.Errorf("%d objects of deleted backup %s left (%v)", n, id, err)
		}
	}

	k.Close()
	if k.Ready() || k.Site("s") != nil {
		t.Fatal("closed catalog is ready")
	}
}

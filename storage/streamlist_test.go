package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/config"
)

func memSite(t *testing.T) *Site {
	t.Helper()
	s, err := OpenSite(context.Background(), "m", &config.ObjectStorage{StorageType: "url", URL: "mem://"}, SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func putBinlog(t *testing.T, s *Site, ref BinlogRef, manifest bool) {
	t.Helper()
	ctx := context.Background()
	if err := s.PutBytes(ctx, ref.DataKey(), []byte("data"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if !manifest {
		return
	}
	b, err := MarshalManifest(&BinlogManifest{Version: ManifestVersion, StreamID: ref.StreamID, RemoteIndex: ref.RemoteIndex,
		Epoch: ref.Epoch, ServerID: ref.ServerID, LocalName: fmt.Sprintf("binlog.%06d", ref.RemoteIndex), SHA256: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutBytes(ctx, ref.ManifestKey(), b, PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func putPromotion(t *testing.T, s *Site, sid string, epoch, start int64) {
	t.Helper()
	b, err := MarshalManifest(&PromotionRecord{Version: ManifestVersion, StreamID: sid, Epoch: epoch, StartIndex: start, PromotedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutBytes(context.Background(), PromotionKey(sid, epoch), b, PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestListStreamBinlogsFencing(t *testing.T) {
	ctx := context.Background()
	sid := NewStreamID(time.Now())
	ref := func(idx, epoch int64, server uint32) BinlogRef {
		return BinlogRef{StreamID: sid, RemoteIndex: idx, Epoch: epoch, ServerID: server}
	}
	keys := func(list []StoredBinlog) string {
		var out []string
		for _, b := range list {
			out = append(out, fmt.Sprintf("%d/e%d", b.Ref.RemoteIndex, b.Ref.Epoch))
		}
		return strings.Join(out, " ")
	}

	t.Run("a deposed primary's late uploads are ignored", func(t *testing.T) {
		s := memSite(t)
		for i := int64(1); i <= 6; i++ {
			putBinlog(t, s, ref(i, 1, 101), true) // the old primary keeps uploading 4..6
		}
		putPromotion(t, s, sid, 2, 4)
		putBinlog(t, s, ref(4, 2, 102), true)
		putBinlog(t, s, ref(5, 2, 102), true)
		putBinlog(t, s, ref(6, 1, 101), true)
		got, err := ListStreamBinlogs(ctx, s, sid)
		if err != nil {
			t.Fatal(err)
		}
		if k := keys(got); k != "1/e1 2/e1 3/e1 4/e2 5/e2" {
			t.Errorf("chain %s", k)
		}
	})
	t.Run("data without a manifest does not exist yet", func(t *testing.T) {
		s := memSite(t)
		putBinlog(t, s, ref(1, 1, 101), true)
		putBinlog(t, s, ref(2, 1, 101), false)
		got, err := ListStreamBinlogs(ctx, s, sid)
		if err != nil || keys(got) != "1/e1" {
			t.Errorf("chain %s, %v", keys(got), err)
		}
	})
	t.Run("a gap is an error", func(t *testing.T) {
		s := memSite(t)
		putBinlog(t, s, ref(1, 1, 101), true)
		putBinlog(t, s, ref(3, 1, 101), true)
		_, err := ListStreamBinlogs(ctx, s, sid)
		if !errors.Is(err, ErrGap) || !strings.Contains(err.Error(), "binlog 2 is missing") {
			t.Errorf("gap: %v", err)
		}
	})
	t.Run("two valid binlogs at one index are an error", func(t *testing.T) {
		s := memSite(t)
		putBinlog(t, s, ref(1, 1, 101), true)
		putBinlog(t, s, ref(1, 1, 102), true)
		if _, err := ListStreamBinlogs(ctx, s, sid); err == nil || !strings.Contains(err.Error(), "valid binlogs at index 1") {
			t.Errorf("conflict: %v", err)
		}
	})
	t.Run("an empty stream", func(t *testing.T) {
		got, err := ListStreamBinlogs(ctx, memSite(t), sid)
		if err != nil || len(got) != 0 {
			t.Errorf("%v %v", got, err)
		}
	})
}

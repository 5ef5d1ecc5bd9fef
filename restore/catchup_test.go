package restore

import (
	"reflect"
	"testing"

	"github.com/myhoard/myhoard/storage"
)

func TestBelowStart(t *testing.T) {
	b := func(stream string, index int64) storage.StoredBinlog {
		return storage.StoredBinlog{Ref: storage.BinlogRef{StreamID: stream, RemoteIndex: index}}
	}
	chain := []storage.StoredBinlog{b("a", 1), b("a", 2), b("b", 1), b("b", 2), b("b", 3), b("c", 1)}
	got := belowStart(chain, storage.PromotionRecord{StreamID: "b", StartIndex: 3})
	want := []storage.StoredBinlog{b("a", 1), b("a", 2), b("b", 1), b("b", 2)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("belowStart: %v, want %v", got, want)
	}
}

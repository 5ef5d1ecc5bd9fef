package storage

import (
	"context"
	"os"
	"testing"

	"github.com/myhoard/myhoard/config"
)

func TestOpenSitesEncodeOptions(t *testing.T) {
	pub, err1 := os.ReadFile("testdata/test-key-a.pub.pem")
	priv, err2 := os.ReadFile("testdata/test-key-a.pem")
	if err1 != nil || err2 != nil {
		t.Fatalf("test keys: %v %v", err1, err2)
	}
	level := 7
	recovery := t.TempDir()
	sites := map[string]*config.Site{
		"enc": {Compression: config.Compression{Algorithm: "zstd", Level: &level}, EncryptionKeys: &config.EncryptionKeys{Public: string(pub), Private: string(priv)},
			ObjectStorage: &config.ObjectStorage{URL: "file://" + t.TempDir()}},
		"old": {Compression: config.Compression{Algorithm: "none"}, RecoveryOnly: true, ObjectStorage: &config.ObjectStorage{URL: "file://" + recovery}},
	}
	open, keys, err := OpenSites(context.Background(), sites, SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	enc, old := open["enc"], open["old"]
	if enc.Encode.Compression != "zstd" || enc.Encode.Level == nil || *enc.Encode.Level != 7 || enc.Encode.Key == nil || enc.RecoveryOnly {
		t.Errorf("site enc: %+v recovery %v", enc.Encode, enc.RecoveryOnly)
	}
	if enc.Encode.Key != nil && keys[enc.Encode.Key.ID] != enc.Encode.Key {
		t.Error("the site's key is not the keyring's")
	}
	if old.Encode.Compression != "none" || old.Encode.Key != nil || !old.RecoveryOnly {
		t.Errorf("site old: %+v recovery %v", old.Encode, old.RecoveryOnly)
	}
}

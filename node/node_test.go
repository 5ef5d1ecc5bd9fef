package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
)

func testConfig(t *testing.T, flavor string, port int) *config.Config {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"state_directory": t.TempDir(),
		"start_command":   []string{"mariadbd"},
		"mysql":           map[string]any{"flavor": flavor, "client_params": map[string]any{"host": "127.0.0.1", "port": port, "user": "root"}},
		"backup_sites":    map[string]any{"s": map[string]any{"object_storage": map[string]any{"url": "mem://"}}},
	})
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestControllerDetectsFlavorAndReloads(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A configured flavor is known at once; auto waits for the server.
	if f := mustNew(t, testConfig(t, "mysql", in.Port), log).Flavor(); f != mysql.FlavorMySQL {
		t.Errorf("configured flavor = %q", f)
	}
	free, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, testConfig(t, "auto", free), log) // nothing listens there yet
	if c.Mode() != "idle" || c.Flavor() != "" {
		t.Fatalf("new controller: mode %q flavor %q", c.Mode(), c.Flavor())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	// Reloading with the right port makes it find the server.
	c.Reload(testConfig(t, "auto", in.Port))
	deadline := time.Now().Add(20 * time.Second)
	for c.Flavor() != mysql.FlavorMariaDB {
		if time.Now().After(deadline) {
			t.Fatalf("flavor not detected: %q", c.Flavor())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c.Config().MySQL.ClientParams.Port != in.Port {
		t.Error("reloaded config not in force")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop when its context ended")
	}
}

func mustNew(t *testing.T, cfg *config.Config, log *slog.Logger) *Controller {
	t.Helper()
	c, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

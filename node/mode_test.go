package node

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myhoard/myhoard/statefile"
)

var modes = []Mode{ModeIdle, ModeRestore, ModeObserve, ModePromote, ModeActive}

// TestEveryTransition: each of the 25 (from, to) pairs is allowed exactly
// when the table has it; an allowed one is persisted with its state
// changes, a refused one changes nothing.
func TestEveryTransition(t *testing.T) {
	for _, from := range modes {
		for _, to := range modes {
			t.Run(string(from)+" to "+string(to), func(t *testing.T) {
				c := mustNew(t, testConfig(t, "mariadb", 1), slog.New(slog.DiscardHandler))
				c.state.Mode, c.state.Epoch = from, 1
				c.mode.Store(from)
				_, allowed := transitions[from][to]
				err := c.changeMode(to, func(s *controllerState) { s.Epoch = 7 })
				var saved controllerState
				found, lerr := statefile.Load(c.statePath(), &saved)
				if lerr != nil {
					t.Fatal(lerr)
				}
				switch {
				case allowed && err != nil:
					t.Fatalf("refused: %v", err)
				case allowed && (Mode(c.Mode()) != to || c.state.Epoch != 7 || !found || saved.Mode != to || saved.Epoch != 7):
					t.Fatalf("not persisted: mode %s epoch %d, saved %v %s %d", c.Mode(), c.state.Epoch, found, saved.Mode, saved.Epoch)
				case !allowed && err == nil:
					t.Fatal("allowed")
				case !allowed && (Mode(c.Mode()) != from || c.state.Epoch != 1 || found):
					t.Fatalf("a refused change changed something: mode %s epoch %d, saved %v", c.Mode(), c.state.Epoch, found)
				}
			})
		}
	}
}

// TestEveryRequest: PUT /status may ask directly only for the changes the
// table marks as requests; the others say why not.
func TestEveryRequest(t *testing.T) {
	for _, from := range modes {
		for _, to := range append(modes, "bogus") {
			err := checkRequest(from, to)
			want := transitions[from][to].request
			if (err == nil) != want {
				t.Errorf("%s to %s: %v, want allowed %v", from, to, err, want)
			}
			switch {
			case err == nil:
			case to == "bogus" && !strings.Contains(err.Error(), "unknown mode"):
				t.Errorf("%s to bogus: %v", from, err)
			case from == ModeActive && to != "bogus" && !strings.Contains(err.Error(), "an active node stays active"):
				t.Errorf("%s to %s: %v", from, to, err)
			}
		}
	}
}

// TestFailedSaveRollsBack: when the state cannot be saved the mode and
// the state stay as they were, in memory and on disk.
func TestFailedSaveRollsBack(t *testing.T) {
	c := mustNew(t, testConfig(t, "mariadb", 1), slog.New(slog.DiscardHandler))
	c.state.Mode, c.state.Epoch = ModeObserve, 3
	c.mode.Store(ModeObserve)
	// a directory where the state file goes: the rename fails
	if err := os.MkdirAll(filepath.Join(c.statePath(), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := c.changeMode(ModePromote, func(s *controllerState) { s.Epoch = 4; s.PromoteAfterRestore = true })
	if err == nil {
		t.Fatal("the change was taken without a saved state")
	}
	if Mode(c.Mode()) != ModeObserve || c.state.Mode != ModeObserve || c.state.Epoch != 3 || c.state.PromoteAfterRestore {
		t.Errorf("after a failed save: mode %s (%s) epoch %d %v", c.Mode(), c.state.Mode, c.state.Epoch, c.state.PromoteAfterRestore)
	}
}

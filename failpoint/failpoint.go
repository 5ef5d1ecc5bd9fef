// Package failpoint kills the daemon at named points of its work when an
// end-to-end test asks for it (EnvKillAt), so that the test can prove a
// daemon killed at exactly that instant resumes from there, or holds the
// work there until it is cancelled (EnvHoldAt), so that a test can act
// while the daemon is at exactly that point instead of racing it.
//
// Unset (always, outside tests) it does nothing. It must never do anything
// but kill the process or wait, and never import another myhoard package.
package failpoint

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"syscall"
)

// EnvKillAt names the points at which the daemon kills itself with
// SIGKILL (comma-separated).
const EnvKillAt = "MYHOARD_TEST_KILL_AT"

// EnvHoldAt names the points at which the daemon waits until the work is
// cancelled (comma-separated).
const EnvHoldAt = "MYHOARD_TEST_HOLD_AT"

// HoldsFromEnv is the hold points of the environment.
func HoldsFromEnv() Set { return fromEnv(EnvHoldAt) }

// Hold waits at point name, if it is one of s, until ctx ends.
func (s Set) Hold(ctx context.Context, name string, log *slog.Logger) {
	if !s[name] {
		return
	}
	if log != nil {
		log.Warn("failpoint: holding until cancelled", "at", name)
	}
	<-ctx.Done()
}

// Set is the points a test asked for.
type Set map[string]bool

// FromEnv reads EnvKillAt.
func FromEnv() Set { return fromEnv(EnvKillAt) }

func fromEnv(env string) Set {
	out := Set{}
	for _, name := range strings.Split(os.Getenv(env), ",") {
		if name = strings.TrimSpace(name); name != "" {
			out[name] = true
		}
	}
	return out
}

// Hit kills the process (kill -9) when the set names the point.
func (s Set) Hit(name string, log *slog.Logger) {
	if s[name] {
		if log != nil {
			log.Warn("failpoint: killing the daemon", "at", name)
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

// Package failpoint kills the daemon at named points of its work when an
// end-to-end test asks for it (EnvKillAt), so that the test can prove a
// daemon killed at exactly that instant resumes from there.
//
// Unset (always, outside tests) it does nothing. It must never do anything
// but kill the process, and never import another myhoard package.
package failpoint

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
)

// EnvKillAt names the points at which the daemon kills itself with
// SIGKILL (comma-separated).
const EnvKillAt = "MYHOARD_TEST_KILL_AT"

// Set is the points a test asked for.
type Set map[string]bool

// FromEnv reads EnvKillAt.
func FromEnv() Set {
	out := Set{}
	for _, name := range strings.Split(os.Getenv(EnvKillAt), ",") {
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

package node

import (
	"os"
	"strings"
	"syscall"
)

// EnvKillAt names the failpoints at which the daemon kills itself with
// SIGKILL (comma-separated). It exists for the end-to-end tests, which
// prove that a daemon killed at exactly that instant resumes from there;
// unset (always, outside tests) it does nothing.
const EnvKillAt = "MYHOARD_TEST_KILL_AT"

// failpoints reads EnvKillAt.
func failpoints() map[string]bool {
	out := map[string]bool{}
	for _, name := range strings.Split(os.Getenv(EnvKillAt), ",") {
		if name = strings.TrimSpace(name); name != "" {
			out[name] = true
		}
	}
	return out
}

// failpoint kills the daemon (kill -9) when EnvKillAt names the point.
func (c *Controller) failpoint(name string) {
	if c.killAt[name] {
		c.log.Warn("failpoint: killing the daemon", "at", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}

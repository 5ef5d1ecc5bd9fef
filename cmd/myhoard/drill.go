package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

// drillCommand is `myhoard drill`: a restore drill now, with the live
// progress line, then its result. Exit 0: the drill passed; 1: it failed
// (or could not start).
func drillCommand(args []string, stdout, stderr io.Writer) int {
	var interval *time.Duration
	srv, _, ok := clientFlags("drill", args, stderr, func(fs *flag.FlagSet) {
		interval = fs.Duration("interval", time.Second, "how often the progress is refreshed")
	})
	if !ok {
		return 2
	}
	ctx := context.Background()
	before, err := srv.DrillStatus(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "myhoard drill: %v\n", err)
		return 1
	}
	if err := srv.Drill(ctx); err != nil {
		fmt.Fprintf(stderr, "myhoard drill: %v\n", err)
		return 1
	}
	started := time.Now()
	last := ""
	for {
		st, err := srv.DrillStatus(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "myhoard drill: %v\n", err)
			return 1
		}
		done := st.Last != nil && (before.Last == nil || st.Last.At.After(before.Last.At))
		if st.Progress != nil && !done {
			if line := progressLine(*st.Progress, started); line != last {
				fmt.Fprintln(stdout, line)
				last = line
			}
		}
		if done {
			r := st.Last
			if !r.OK {
				fmt.Fprintf(stdout, "restore drill FAILED (backup %s): %s\n", r.StreamID, r.Error)
				return 1
			}
			fmt.Fprintf(stdout, "restore drill passed: backup %s restored to %s in %.1f s (%d bytes downloaded), %d tables checked\n",
				r.StreamID, r.TargetGTID, r.RestoreSeconds, r.Bytes, r.TablesChecked)
			return 0
		}
		time.Sleep(*interval)
	}
}

package node

import (
	"errors"
	"fmt"
)

// Mode is a controller main mode.
type Mode string

// The modes of the spec.
const (
	ModeIdle    Mode = "idle"
	ModeRestore Mode = "restore"
	ModeObserve Mode = "observe"
	ModePromote Mode = "promote"
	ModeActive  Mode = "active"
)

// allModes are the spec's modes, for validating requests.
var allModes = map[Mode]bool{ModeIdle: true, ModeRestore: true, ModeObserve: true, ModePromote: true, ModeActive: true}

// transition is one allowed mode change: whether a PUT /status request
// may ask for it directly, and what makes it happen.
type transition struct {
	request bool
	cause   string
}

// transitions are every mode change there is. A mode changes only through
// changeModeLocked, which checks this table; PUT /status asks only for the
// changes marked request (promote and restore requests are checked
// further by promote and RequestMode).
var transitions = map[Mode]map[Mode]transition{
	ModeIdle: {
		ModeActive:  {true, "PUT active: a lone node's first backup, or the cluster's compare-and-set named this node the first primary"},
		ModeObserve: {true, "PUT observe"},
		ModeRestore: {true, "PUT restore, validated"},
	},
	ModeRestore: {
		ModeRestore: {true, "PUT restore after a failed restore"},
		ModeObserve: {false, "the restore completed"},
	},
	ModeObserve: {
		ModeObserve: {true, "PUT observe again"},
		ModePromote: {true, "PUT promote or active: a lone node after a restore, or the cluster named this node the primary"},
	},
	ModePromote: {
		ModePromote: {false, "the cluster named this node the primary again, at a higher epoch"},
		ModeActive:  {false, "the promotion finished"},
	},
	ModeActive: {
		ModeActive:  {true, "PUT active again"},
		ModePromote: {false, "the cluster named this deposed node the primary again, at a higher epoch"},
	},
}

// errStateChanged marks a request whose mode changed under it.
var errStateChanged = errors.New("the mode changed meanwhile")

// checkRequest tells whether PUT /status may switch from to to directly.
func checkRequest(from, to Mode) error {
	if !allModes[to] {
		return badRequest("unknown mode %q (want active, idle, observe, promote or restore)", to)
	}
	if t, ok := transitions[from][to]; ok && t.request {
		return nil
	}
	if from == ModeActive {
		return badRequest("switch from active to %s mode is not allowed: an active node stays active; stop myhoard to end its role", to)
	}
	return badRequest("switch from %s to %s mode is not supported", from, to)
}

// changeModeLocked is the one place the mode changes (c.mu held): the
// change must be in the transition table; change, when given, makes the
// state changes that go with it (it must assign new values rather than
// modify shared slices or maps, so that the rollback is exact). The whole
// state is persisted; when that fails, it is rolled back and the error
// returned.
func (c *Controller) changeModeLocked(to Mode, change func(*controllerState)) error {
	from := c.state.Mode
	if _, ok := transitions[from][to]; !ok {
		return fmt.Errorf("mode %s cannot change to %s", from, to)
	}
	prev := c.state
	if change != nil {
		change(&c.state)
	}
	c.state.Mode = to
	if err := c.saveLocked(); err != nil {
		c.state = prev
		return fmt.Errorf("change mode from %s to %s: %w", from, to, err)
	}
	c.mode.Store(to)
	if from != to {
		c.log.Info("mode changed", "from", from, "to", to, "epoch", c.state.Epoch, "why", transitions[from][to].cause)
	}
	c.poke()
	return nil
}

// changeMode is changeModeLocked taking the lock.
func (c *Controller) changeMode(to Mode, change func(*controllerState)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changeModeLocked(to, change)
}

// SetMode handles the PUT /status requests that only switch the mode
// (observe, and active on a lone node).
func (c *Controller) SetMode(to Mode) (Mode, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := checkRequest(c.state.Mode, to); err != nil {
		return c.state.Mode, err
	}
	if c.state.Mode == to {
		return to, nil
	}
	if err := c.changeModeLocked(to, nil); err != nil {
		return c.state.Mode, err
	}
	return to, nil
}

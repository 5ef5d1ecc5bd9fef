// Package metrics owns myhoard's statsd metrics (Telegraf tag format:
// "name,tag=value:1|c") and Sentry reporting of unexpected errors. Every
// metric carries the configured tags and the current controller_mode.
//
// It must never block or fail its callers: a missing or unreachable statsd
// server or Sentry only loses data points.
package metrics

import (
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cactus/go-statsd-client/v5/statsd"
	"github.com/getsentry/sentry-go"
)

// Metrics sends data points; the zero value and nil are no-ops.
type Metrics struct {
	client interface {
		statsd.ExtendedStatSender
		Close() error
	}
	tags   []statsd.Tag
	mode   func() string
	sentry *sentry.Client
	log    *slog.Logger

	mu      sync.Mutex
	counter map[string]int64 // last values of cumulative counters
}

// Options configure New.
type Options struct {
	Host      string
	Port      int
	Tags      map[string]string
	Mode      func() string // controller_mode tag
	SentryDSN string
	Log       *slog.Logger
}

// New makes a sender; without a host it sends nothing.
func New(o Options) (*Metrics, error) {
	m := &Metrics{mode: o.Mode, log: o.Log, counter: map[string]int64{}}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	keys := make([]string, 0, len(o.Tags))
	for k := range o.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.tags = append(m.tags, statsd.Tag{clean(k), clean(o.Tags[k])})
	}
	if o.Host != "" {
		c, err := statsd.NewClientWithConfig(&statsd.ClientConfig{
			Address: net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), UseBuffered: true,
			FlushInterval: 200 * time.Millisecond, TagFormat: statsd.InfixComma,
		})
		if err != nil {
			return nil, fmt.Errorf("statsd %s:%d: %w", o.Host, o.Port, err)
		}
		ext, ok := c.(interface {
			statsd.ExtendedStatSender
			Close() error
		})
		if !ok {
			return nil, fmt.Errorf("statsd client lacks float gauges")
		}
		m.client = ext
	}
	if o.SentryDSN != "" {
		sc, err := sentry.NewClient(sentry.ClientOptions{Dsn: o.SentryDSN, Tags: o.Tags})
		if err != nil {
			return nil, fmt.Errorf("sentry_dsn: %w", err)
		}
		m.sentry = sc
	}
	return m, nil
}

// clean replaces values statsd cannot carry, as the original does.
func clean(v string) string {
	if v == "" || strings.ContainsAny(v, " :|=,\n") {
		return "INVALID"
	}
	return v
}

func (m *Metrics) allTags(extra map[string]string) []statsd.Tag {
	tags := append([]statsd.Tag(nil), m.tags...)
	if m.mode != nil {
		tags = append(tags, statsd.Tag{"controller_mode", clean(m.mode())})
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tags = append(tags, statsd.Tag{clean(k), clean(extra[k])})
	}
	return tags
}

// Inc adds to a counter.
func (m *Metrics) Inc(name string, n int64, extra map[string]string) {
	if m == nil || m.client == nil {
		return
	}
	_ = m.client.Inc(name, n, 1, m.allTags(extra)...)
}

// Gauge sets a gauge.
func (m *Metrics) Gauge(name string, v float64, extra map[string]string) {
	if m == nil || m.client == nil {
		return
	}
	_ = m.client.GaugeFloat(name, v, 1, m.allTags(extra)...)
}

// Timing records a duration.
func (m *Metrics) Timing(name string, d time.Duration, extra map[string]string) {
	if m == nil || m.client == nil {
		return
	}
	_ = m.client.TimingDuration(name, d, 1, m.allTags(extra)...)
}

// Cumulative sends the growth of a cumulative counter (such as a storage
// error count) since the last call.
func (m *Metrics) Cumulative(name string, total int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	d := total - m.counter[name]
	m.counter[name] = total
	m.mu.Unlock()
	if d > 0 {
		m.Inc(name, d, nil)
	}
}

// Error counts an unexpected error and reports it to Sentry.
func (m *Metrics) Error(where string, err error) {
	if m == nil || err == nil {
		return
	}
	m.Inc("myhoard.generic_errors", 1, map[string]string{"where": where})
	if m.sentry != nil {
		scope := sentry.NewScope()
		scope.SetTag("where", where)
		if m.mode != nil {
			scope.SetTag("controller_mode", m.mode())
		}
		m.sentry.CaptureException(err, &sentry.EventHint{OriginalException: err}, scope)
	}
}

// Close flushes and stops.
func (m *Metrics) Close() {
	if m == nil {
		return
	}
	if m.client != nil {
		_ = m.client.Close()
	}
	if m.sentry != nil {
		m.sentry.Flush(2 * time.Second)
	}
}

// Package client calls a myhoard daemon's HTTP API with the wire types:
// the CLI and the end-to-end tests read the API through it, so that each
// answer's shape is written once (package wire). It knows nothing of the
// config file (the CLI reads that) and keeps no state but the address,
// the token and the HTTP client.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/myhoard/myhoard/wire"
)

// Client calls one daemon.
type Client struct {
	// URL is the daemon's API (http[s]://host:port).
	URL string
	// Token, when set, is sent as Authorization: Bearer.
	Token string
	HTTP  *http.Client
}

// New is a client of the daemon at url with a long timeout (a binlog
// upload may be waited for).
func New(url string) *Client {
	return &Client{URL: strings.TrimRight(url, "/"), HTTP: &http.Client{Timeout: 10 * time.Minute}}
}

// APIError is an answer with an error status; Message is the API's.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Do sends a request (body as JSON, nil for none) and decodes the answer
// into out (nil: ignored). An error status is an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the myhoard daemon: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e wire.Error
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// Status is GET /status.
func (c *Client) Status(ctx context.Context) (wire.Status, error) {
	var st wire.Status
	return st, c.Do(ctx, http.MethodGet, "/status", nil, &st)
}

// SetMode is PUT /status.
func (c *Client) SetMode(ctx context.Context, r wire.ModeRequest) (wire.Status, error) {
	var st wire.Status
	return st, c.Do(ctx, http.MethodPut, "/status", r, &st)
}

// RestoreStatus is GET /status/restore.
func (c *Client) RestoreStatus(ctx context.Context) (wire.RestoreStatus, error) {
	var st wire.RestoreStatus
	return st, c.Do(ctx, http.MethodGet, "/status/restore", nil, &st)
}

// Backups is GET /backup (order "", "asc" or "desc"); nil before the
// daemon's first listing.
func (c *Client) Backups(ctx context.Context, order string) ([]wire.Backup, error) {
	path := "/backup"
	if order != "" {
		path += "?order=" + order
	}
	var list wire.BackupList
	return list.Backups, c.Do(ctx, http.MethodGet, path, nil, &list)
}

// StreamBinlogs is GET /backup/<stream id>/binlogs.
func (c *Client) StreamBinlogs(ctx context.Context, streamID string, full bool) (wire.StreamBinlogs, error) {
	var out wire.StreamBinlogs
	return out, c.Do(ctx, http.MethodGet, fmt.Sprintf("/backup/%s/binlogs?full=%t", url.PathEscape(streamID), full), nil, &out)
}

// Backup is POST /backup.
func (c *Client) Backup(ctx context.Context, r wire.BackupRequest) error {
	return c.Do(ctx, http.MethodPost, "/backup", r, nil)
}

// BackupList is GET /backup whole (the backups and the last drill).
func (c *Client) BackupList(ctx context.Context) (wire.BackupList, error) {
	var list wire.BackupList
	return list, c.Do(ctx, http.MethodGet, "/backup?order=asc", nil, &list)
}

// Drill is POST /drill: a restore drill now.
func (c *Client) Drill(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/drill", struct{}{}, nil)
}

// DrillStatus is GET /drill.
func (c *Client) DrillStatus(ctx context.Context) (wire.DrillStatus, error) {
	var st wire.DrillStatus
	return st, c.Do(ctx, http.MethodGet, "/drill", nil, &st)
}

// Verify is POST /verify.
func (c *Client) Verify(ctx context.Context, deep bool) error {
	return c.Do(ctx, http.MethodPost, "/verify", wire.VerifyRequest{Deep: deep}, nil)
}

// Cluster is GET /cluster.
func (c *Client) Cluster(ctx context.Context) (wire.ClusterStatus, error) {
	var st wire.ClusterStatus
	return st, c.Do(ctx, http.MethodGet, "/cluster", nil, &st)
}

// Package storage owns everything myhoard keeps in object storage: backup
// sites opened with gocloud.dev/blob (file, mem, S3, GCS, Azure), retries
// with backoff for transient failures and error counters, the object key
// layout and the JSON manifests (layout.go, manifest.go), the codec
// that compresses and encrypts every object (codec.go), the listing of a
// stream's binlogs (streamlist.go: fenced, gapless, each manifest read once
// and in parallel, pollers continuing where they stopped) and the object
// cache that keeps write-once objects across restarts (cache.go).
//
// It imports only the bottom packages (config for the site and key
// settings, mysql for GTID sets in manifests). It must never decide what to
// upload or when (package backup does), never order objects by modification
// time, never leave a partial object visible to readers, and never serve a
// cached copy of an object that a listing shows in another version.
package storage

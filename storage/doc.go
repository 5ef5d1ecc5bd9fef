// Package storage owns everything myhoard keeps in object storage: backup
// sites opened with gocloud.dev/blob (file, mem, S3, GCS, Azure), retries
// with backoff for transient failures and error counters, the object key
// layout and the JSON manifests (layout.go, manifest.go), and the codec
// that compresses and encrypts every object (codec.go).
//
// It imports only the bottom packages (config for the site and key
// settings, mysql for GTID sets in manifests). It must never decide what to
// upload or when (package backup does), never order objects by modification
// time, and never leave a partial object visible to readers.
package storage

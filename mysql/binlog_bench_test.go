package mysql

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// BenchmarkScanBinlog reads a ~16 MiB MariaDB binlog of mixed transactions
// (bulk inserts and many small ones) and compares, in the same run, with
// `mariadb-binlog FILE > /dev/null` (what operators use to read binlogs)
// and with a plain read of the file (the floor).
func BenchmarkScanBinlog(b *testing.B) {
	tools, err := harness.FindTools()
	if err != nil {
		b.Fatal(err)
	}
	in := harness.StartInstances(b, 1, harness.Options{})[0]
	db := harness.OpenDB(b, in)
	harness.Exec(b, db,
		"CREATE DATABASE bench",
		"CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, a INT, b VARCHAR(200)) ENGINE=InnoDB",
	)
	for i := 0; i < 40; i++ {
		harness.Exec(b, db, "USE bench; INSERT INTO bench.t (a, b) SELECT seq, REPEAT('x', 150) FROM seq_1_to_1000")
		var batch strings.Builder
		for j := 0; j < 100; j++ {
			fmt.Fprintf(&batch, "BEGIN; INSERT INTO bench.t (a, b) VALUES (%d, 'small'); UPDATE bench.t SET a = a + 1 WHERE id = %d; COMMIT;", j, i*100+j+1)
		}
		harness.Exec(b, db, batch.String())
	}
	harness.Exec(b, db, "FLUSH BINARY LOGS")
	files, err := filepath.Glob(in.BinlogPrefix() + ".[0-9]*")
	if err != nil || len(files) < 2 {
		b.Fatalf("binlogs: %v %v", files, err)
	}
	var path string
	var size int64
	for _, f := range files[:len(files)-1] {
		if st, err := os.Stat(f); err == nil && st.Size() > size {
			path, size = f, st.Size()
		}
	}
	median := func(run func() error) time.Duration {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			if err := run(); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	ours := median(func() error {
		_, err := ReadBinlogFile(path, FlavorMariaDB, ReadOptions{}, nil)
		return err
	})
	tool := median(func() error {
		return exec.Command(tools.Binlog, path).Run()
	})
	floor := median(func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
	b.Logf("%s (%.1f MiB): myhoard %v, mariadb-binlog %v (ratio %.2f), plain read %v (ratio %.2f)",
		filepath.Base(path), float64(size)/(1<<20), ours, tool, float64(ours)/float64(tool), floor, float64(ours)/float64(floor))
	b.ReportMetric(float64(ours)/float64(tool), "x_vs_mariadb-binlog")
	b.ReportMetric(float64(ours)/float64(floor), "x_vs_plain_read")
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := ReadBinlogFile(path, FlavorMariaDB, ReadOptions{}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGTIDSetUnion(b *testing.B) {
	a, c := NewGTIDSet(FlavorMySQL), NewGTIDSet(FlavorMySQL)
	for i := uint64(1); i < 20000; i += 2 {
		a = a.WithGTID(GTID{Source: uuidA, Seq: i})
		c = c.WithGTID(GTID{Source: uuidA, Seq: i + 1})
	}
	b.ResetTimer()
	for b.Loop() {
		if a.Union(c).Count() != 20000 {
			b.Fatal("bad union")
		}
	}
}

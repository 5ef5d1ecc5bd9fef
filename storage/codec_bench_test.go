package storage

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/myhoard/myhoard/e2e/harness"
)

// backupStream makes real data: a MariaDB instance with ~100 MiB of table
// data, backed up with `mariabackup --backup --stream=xbstream`.
func backupStream(b *testing.B) []byte {
	b.Helper()
	tools, err := harness.FindTools()
	if err != nil {
		b.Fatal(err)
	}
	in := harness.StartInstances(b, 1, harness.Options{Extra: []string{"innodb_buffer_pool_size=256M"}})[0]
	db := harness.OpenDB(b, in)
	harness.Exec(b, db,
		"CREATE DATABASE shop",
		"CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer INT, status VARCHAR(16), note VARCHAR(200), amount DECIMAL(12,2), created DATETIME) ENGINE=InnoDB",
	)
	for i := 0; i < 10; i++ {
		harness.Exec(b, db, fmt.Sprintf("USE shop; INSERT INTO orders SELECT seq, seq %% 9973, ELT(1 + seq %% 4, 'new', 'paid', 'shipped', 'returned'), "+
			"CONCAT('order ', seq, ' for customer ', seq %% 9973, ' ', REPEAT(CHAR(65 + seq %% 26), seq %% 80)), (seq * 7919 %% 100000) / 100, "+
			"'2026-01-01' + INTERVAL seq SECOND FROM seq_%d_to_%d", i*100000+1, (i+1)*100000))
	}
	out := filepath.Join(harness.ShortTempDir(b), "backup.xbstream")
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(tools.Mariabackup, "--defaults-file="+in.ConfigFile, "--backup", "--stream=xbstream",
		"--target-dir="+filepath.Join(in.Dir, "tmp"), "--user=root", "--socket="+in.Socket)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		b.Fatalf("mariabackup: %v\n%s", err, lastLines(stderr.String(), 20))
	}
	f.Close()
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// peakHeap samples the heap while f runs and returns the largest in-use
// size above the level before.
func peakHeap(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > base && m.HeapInuse-base > peak.Load() {
				peak.Store(m.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	return peak.Load()
}

func median(runs int, f func()) time.Duration {
	var ds []time.Duration
	for i := 0; i < runs; i++ {
		start := time.Now()
		f()
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// feed writes data in 1 MiB writes, as a pipe from mariabackup would
// arrive, so that every encoder sees the same pattern.
func feed(w io.Writer, data []byte) {
	for len(data) > 0 {
		k := min(len(data), 1<<20)
		_, _ = w.Write(data[:k])
		data = data[k:]
	}
}

// fileReader streams a file n times (for peak memory without a large live
// buffer in the process).
func fileReader(b *testing.B, path string, n int) io.Reader {
	var rs []io.Reader
	for i := 0; i < n; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		rs = append(rs, f)
	}
	return io.MultiReader(rs...)
}

// pair times a and b alternately, runs times each, and returns both
// medians, so that both see the same machine state.
func pair(runs int, a, b func()) (time.Duration, time.Duration) {
	var da, db []time.Duration
	for i := 0; i < runs; i++ {
		start := time.Now()
		a()
		da = append(da, time.Since(start))
		start = time.Now()
		b()
		db = append(db, time.Since(start))
	}
	slices.Sort(da)
	slices.Sort(db)
	return da[len(da)/2], db[len(db)/2]
}

func mbps(n int, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// BenchmarkCodec prints a table of encode/decode throughput and peak heap
// for every codec, with and without encryption, next to baselines measured
// in the same run: the bare klauspost zstd encoder and decoder at the same
// settings, the zstd command line (-1 -T0), and a plain copy.
func BenchmarkCodec(b *testing.B) {
	zstdCLI, err := exec.LookPath("zstd")
	if err != nil {
		b.Fatal("the zstd command is missing: apt-get install zstd")
	}
	data := backupStream(b)
	key, _ := keys(b)
	ring := NewKeyring(key)
	const runs = 3
	conc := runtime.GOMAXPROCS(0)

	var sink bytes.Buffer
	sink.Grow(len(data))
	copyTime := median(runs, func() { sink.Reset(); _, _ = io.Copy(&sink, bytes.NewReader(data)) })

	bareEnc := func() []byte {
		var out bytes.Buffer
		out.Grow(len(data) / 4)
		zw, _ := zstd.NewWriter(&out, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(conc), zstd.WithEncoderCRC(true))
		feed(zw, data)
		_ = zw.Close()
		return out.Bytes()
	}
	var bareOut []byte
	bareEncTime := median(runs, func() { bareOut = bareEnc() })
	bareRatio := float64(len(data)) / float64(len(bareOut))
	bareDec := func() {
		zr, _ := zstd.NewReader(bytes.NewReader(bareOut), zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true))
		_, _ = io.Copy(io.Discard, zr)
		zr.Close()
	}
	bareDecTime := median(runs, bareDec)
	cliTime := median(runs, func() {
		cmd := exec.Command(zstdCLI, "-1", "-T0", "-c", "-q")
		cmd.Stdin, cmd.Stdout = bytes.NewReader(data), io.Discard
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	})

	type row struct {
		name             string
		opts             EncodeOptions
		enc, dec         time.Duration
		bareEnc, bareDec time.Duration
		n, encoded       int
		peakEnc, peakDec uint64
		encFile          string
	}
	dir := b.TempDir()
	var rows []*row
	for _, c := range allCompressions {
		for _, encrypted := range []bool{false, true} {
			in := data
			if c == CompressionLZMA {
				in = data[:min(len(data), 24<<20)] // lzma is slow; a slice is enough for a rate
			}
			r := &row{name: string(c), opts: EncodeOptions{Compression: c}, n: len(in)}
			if encrypted {
				r.opts.Key = key
				r.name += "+age"
			}
			var out bytes.Buffer
			out.Grow(len(in) / 2)
			encode := func() {
				out.Reset()
				w, err := NewEncoder(&out, r.opts)
				if err != nil {
					b.Fatal(err)
				}
				feed(w, in)
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			if c == CompressionZstd {
				r.bareEnc, r.enc = pair(runs+2, func() { bareOut = bareEnc() }, encode)
			} else {
				r.enc = median(runs, encode)
			}
			r.encoded = out.Len()
			r.encFile = filepath.Join(dir, r.name)
			if err := os.WriteFile(r.encFile, out.Bytes(), 0o600); err != nil {
				b.Fatal(err)
			}
			enc := out.Bytes()
			decode := func() {
				d, _, err := NewDecoder(bytes.NewReader(enc), ring)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, d); err != nil {
					b.Fatal(err)
				}
				d.Close()
			}
			if c == CompressionZstd {
				r.bareDec, r.dec = pair(runs+2, bareDec, decode)
			} else {
				r.dec = median(runs, decode)
			}
			rows = append(rows, r)
		}
	}

	// Peak heap, streaming from files with nothing large left in memory.
	dataFile := filepath.Join(dir, "data")
	if err := os.WriteFile(dataFile, data, 0o600); err != nil {
		b.Fatal(err)
	}
	dataLen := len(data)
	lzmaFile := filepath.Join(dir, "data-lzma")
	if err := os.WriteFile(lzmaFile, data[:min(len(data), 24<<20)], 0o600); err != nil {
		b.Fatal(err)
	}
	data, bareOut = nil, nil
	sink = bytes.Buffer{}
	runtime.GC()
	for _, r := range rows {
		src := dataFile
		if r.opts.Compression == CompressionLZMA {
			src = lzmaFile
		}
		r.peakEnc = peakHeap(func() {
			w, _ := NewEncoder(io.Discard, r.opts)
			_, _ = io.Copy(w, fileReader(b, src, 1))
			_ = w.Close()
		})
		r.peakDec = peakHeap(func() {
			d, _, err := NewDecoder(fileReader(b, r.encFile, 1), ring)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, d)
			d.Close()
		})
	}
	reps := (4<<30 + dataLen - 1) / dataLen
	var total atomic.Int64
	peak4G := peakHeap(func() {
		w, _ := NewEncoder(io.Discard, EncodeOptions{Compression: CompressionZstd, Key: key})
		n, _ := io.Copy(w, fileReader(b, dataFile, reps))
		_ = w.Close()
		total.Store(n)
	})

	var t strings.Builder
	data = make([]byte, dataLen) // only its length is used below
	fmt.Fprintf(&t, "\ncodec benchmark on a real mariabackup xbstream of %.1f MiB (%d CPUs)\n", float64(len(data))/(1<<20), conc)
	fmt.Fprintf(&t, "baselines: plain copy %.0f MB/s; bare klauspost zstd fastest enc %.0f MB/s dec %.0f MB/s (ratio %.2f); zstd -1 -T0 CLI %.0f MB/s\n",
		mbps(len(data), copyTime), mbps(len(data), bareEncTime), mbps(len(data), bareDecTime), bareRatio, mbps(len(data), cliTime))
	fmt.Fprintf(&t, "%-12s %9s %9s %7s %9s %9s %10s %10s %10s\n", "codec", "enc MB/s", "dec MB/s", "ratio", "enc/bare", "dec/bare", "enc/CLI", "peak enc", "peak dec")
	for _, r := range rows {
		encBare, decBare := "", ""
		if r.bareEnc > 0 {
			encRatio, decRatio := float64(r.bareEnc)/float64(r.enc), float64(r.bareDec)/float64(r.dec)
			encBare, decBare = fmt.Sprintf("%.2fx", encRatio), fmt.Sprintf("%.2fx", decRatio)
			b.ReportMetric(encRatio, r.name+"_enc_vs_bare")
			b.ReportMetric(decRatio, r.name+"_dec_vs_bare")
		}
		fmt.Fprintf(&t, "%-12s %9.0f %9.0f %7.2f %9s %9s %9.2fx %8.1fMiB %8.1fMiB\n", r.name, mbps(r.n, r.enc), mbps(r.n, r.dec),
			float64(r.n)/float64(r.encoded), encBare, decBare, mbps(r.n, r.enc)/mbps(len(data), cliTime),
			float64(r.peakEnc)/(1<<20), float64(r.peakDec)/(1<<20))
	}
	fmt.Fprintf(&t, "zstd+age over a %.1f GiB stream: peak heap %.1f MiB\n", float64(total.Load())/(1<<30), float64(peak4G)/(1<<20))
	b.ReportMetric(float64(peak4G)/(1<<20), "peak_MiB_4GiB")
	fmt.Print(t.String())
	b.SetBytes(int64(dataLen))
	b.ResetTimer()
	for b.Loop() {
		w, _ := NewEncoder(io.Discard, EncodeOptions{Compression: CompressionZstd, Key: key})
		_, _ = io.Copy(w, fileReader(b, dataFile, 1))
		_ = w.Close()
	}
}

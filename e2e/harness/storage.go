package harness

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of the storage emulators started here.
const (
	S3AccessKey   = "myhoardtest"
	S3SecretKey   = "myhoardtestsecret"
	S3Region      = "us-east-1"
	AzureAccount  = "devstoreaccount1"
	AzureKey      = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
	StorageBucket = "backups"
	installHint   = "run `make deps` (scripts/install-deps.sh installs the storage emulators into .tools)"
)

// StorageServer is a storage emulator process on loopback.
type StorageServer struct {
	Kind string // "s3", "gcs" or "azure"
	Port int
	Dir  string

	argv []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Endpoint is the server's base URL.
func (s *StorageServer) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", s.Port) }

// RepoRoot finds the module root (the directory holding go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

func findServerTool(name string, repoRel string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	root, err := RepoRoot()
	if err == nil {
		p := filepath.Join(root, repoRel)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s: %s", name, repoRel, installHint)
}

// StartS3 starts versitygw (S3) with a bucket named StorageBucket.
func StartS3(t testing.TB) *StorageServer {
	t.Helper()
	bin, err := findServerTool("versitygw", ".tools/bin/versitygw")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, "s3")
	if err := os.MkdirAll(filepath.Join(s.Dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.argv = []string{bin, "--access", S3AccessKey, "--secret", S3SecretKey, "--region", S3Region,
		"--port", fmt.Sprintf("127.0.0.1:%d", s.Port), "posix", filepath.Join(s.Dir, "data")}
	s.mustStart(t)
	client := s3.New(s3.Options{
		Region:       S3Region,
		Credentials:  credentials.NewStaticCredentialsProvider(S3AccessKey, S3SecretKey, ""),
		BaseEndpoint: aws.String(s.Endpoint()),
		UsePathStyle: true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(StorageBucket)}); err != nil {
		t.Fatalf("create S3 bucket: %v", err)
	}
	return s
}

// StartGCS starts fake-gcs-server with a bucket named StorageBucket.
// Clients find it through STORAGE_EMULATOR_HOST=127.0.0.1:<Port>.
func StartGCS(t testing.TB) *StorageServer {
	t.Helper()
	bin, err := findServerTool("fake-gcs-server", ".tools/bin/fake-gcs-server")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, "gcs")
	hostPort := fmt.Sprintf("127.0.0.1:%d", s.Port)
	s.argv = []string{bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(s.Port),
		"-backend", "filesystem", "-filesystem-root", filepath.Join(s.Dir, "data"),
		"-public-host", hostPort, "-external-url", "http://" + hostPort, "-log-level", "error"}
	s.mustStart(t)
	resp, err := http.Post(s.Endpoint()+"/storage/v1/b?project=test", "application/json",
		bytes.NewReader([]byte(`{"name": "`+StorageBucket+`"}`)))
	if err != nil {
		t.Fatalf("create GCS bucket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("create GCS bucket: HTTP %d", resp.StatusCode)
	}
	return s
}

// StartAzure starts Azurite (blob service) with a container named
// StorageBucket, for account AzureAccount with key AzureKey.
func StartAzure(t testing.TB) *StorageServer {
	t.Helper()
	bin, err := findServerTool("azurite-blob", ".tools/azurite/node_modules/.bin/azurite-blob")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, "azure")
	s.argv = []string{bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(s.Port),
		"--location", filepath.Join(s.Dir, "data"), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose"}
	s.mustStart(t)
	cred, err := container.NewSharedKeyCredential(AzureAccount, AzureKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.NewClientWithSharedKeyCredential(fmt.Sprintf("%s/%s/%s", s.Endpoint(), AzureAccount, StorageBucket), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Create(ctx, nil); err != nil {
		t.Fatalf("create Azure container: %v", err)
	}
	return s
}

func newServer(t testing.TB, kind string) *StorageServer {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &StorageServer{Kind: kind, Port: port, Dir: ShortTempDir(t)}
	t.Cleanup(s.Stop)
	return s
}

func (s *StorageServer) mustStart(t testing.TB) {
	t.Helper()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
}

// Start starts (or restarts) the server on its port and data directory
// and waits until it accepts connections.
func (s *StorageServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("%s server already running", s.Kind)
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.argv[0], err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
			s.cmd = nil
			return fmt.Errorf("%s server exited during start:\n%s", s.Kind, lastLines(string(b), 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s server did not listen on port %d within 60s", s.Kind, s.Port)
}

// Stop kills the server (its whole process group) and waits for it.
func (s *StorageServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Package harness starts real, throw-away MariaDB servers for tests and for
// the `make run` sandbox: each instance has its own data directory, loopback
// port, socket, binlogs (ROW, GTID strict mode) and relay log paths, and is
// stopped by its PID. It also drives a load generator that records table
// checksums and GTID positions at points in time, for later comparison with
// restores.
//
// It owns only the processes and directories it creates. It must never touch
// a system MariaDB (it always passes its own --defaults-file first), never
// listen beyond loopback, and never import myhoard's own packages, so that
// every package's tests may use it.
package harness

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Tools are the MariaDB programs the harness and myhoard need.
type Tools struct {
	Mariadbd, InstallDB, Mariabackup, Mbstream, Client, Binlog string
}

// toolPackages names the Debian package of each program, for the error
// message when one is missing.
var toolPackages = []struct {
	names []string
	pkg   string
	field func(*Tools) *string
}{
	{[]string{"mariadbd"}, "mariadb-server", func(t *Tools) *string { return &t.Mariadbd }},
	{[]string{"mariadb-install-db", "mysql_install_db"}, "mariadb-server", func(t *Tools) *string { return &t.InstallDB }},
	{[]string{"mariabackup", "mariadb-backup"}, "mariadb-backup", func(t *Tools) *string { return &t.Mariabackup }},
	{[]string{"mbstream"}, "mariadb-backup", func(t *Tools) *string { return &t.Mbstream }},
	{[]string{"mariadb"}, "mariadb-client", func(t *Tools) *string { return &t.Client }},
	{[]string{"mariadb-binlog", "mysqlbinlog"}, "mariadb-client", func(t *Tools) *string { return &t.Binlog }},
}

// FindTools locates the MariaDB programs in PATH and in /usr/sbin and
// /usr/bin (a normal user's PATH often lacks /usr/sbin). The error names
// every missing program and the Debian package that provides it.
func FindTools() (Tools, error) {
	return findTools(exec.LookPath, []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"})
}

func findTools(lookPath func(string) (string, error), dirs []string) (Tools, error) {
	var t Tools
	var missing []string
	for _, tp := range toolPackages {
		found := ""
		for _, name := range tp.names {
			if p, err := lookPath(name); err == nil {
				found = p
				break
			}
			for _, dir := range dirs {
				p := filepath.Join(dir, name)
				if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
					found = p
					break
				}
			}
			if found != "" {
				break
			}
		}
		if found == "" {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", tp.names[0], tp.pkg))
		}
		*tp.field(&t) = found
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("MariaDB tools not found: %s; install them with "+
			"`apt-get install -y mariadb-server mariadb-backup mariadb-client` (make test does this)",
			strings.Join(missing, ", "))
	}
	return t, nil
}

// Options configure one instance.
type Options struct {
	// Dir is the instance directory; it is created and must be empty or
	// missing.
	Dir string
	// ServerID is the server_id (default 1).
	ServerID uint32
	// Port is the TCP port on 127.0.0.1 (default: a free port).
	Port int
	// DomainID is gtid_domain_id (default 0).
	DomainID uint32
	// Extra holds additional [mysqld] option lines such as
	// "read_only=ON".
	Extra []string
	// User is the OS user mariadbd runs as when the harness runs as root
	// (default root). Ignored for a normal user, who runs it as themself.
	User string
	// NoInit leaves the data directory empty (a restore target).
	NoInit bool
	// KeepData reuses a data directory that is already initialised
	// (the `make run` sandbox keeps its data between runs).
	KeepData bool
}

// Instance is one MariaDB server.
type Instance struct {
	Dir, DataDir, BinlogDir, RelayDir, TmpDir string
	Socket, ConfigFile, ErrorLog, PIDFile     string
	Port                                      int
	ServerID                                  uint32
	tools                                     Tools
	// autoPort: the port was picked free, and is picked again when
	// another process took it before mariadbd could bind it.
	autoPort bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// handedOut are the ports FreePort returned in this process: the kernel
// may offer a port again once its probe socket is closed, before the test
// that got it first binds it, and parallel tests then collide.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a port on 127.0.0.1 that was free for TCP and UDP a
// moment ago (gossip binds both) and that this process never handed out
// before.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, uerr := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if uerr != nil {
			continue
		}
		u.Close()
		if handedOut.ports[port] {
			continue
		}
		handedOut.ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("find a free port: no new one in 100 tries")
}

// NewInstance writes the instance's my.cnf and initialises its data
// directory (unless NoInit). It does not start the server.
//
// It is long because it writes the whole my.cnf of a test server, option by
// option.
func NewInstance(ctx context.Context, opts Options) (*Instance, error) {
	tools, err := FindTools()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("instance dir %s: %w", opts.Dir, err)
	}
	if opts.ServerID == 0 {
		opts.ServerID = 1
	}
	autoPort := opts.Port == 0
	if autoPort {
		if opts.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	in := &Instance{autoPort: autoPort,
		Dir: dir, DataDir: filepath.Join(dir, "data"), BinlogDir: filepath.Join(dir, "binlog"),
		RelayDir: filepath.Join(dir, "relay"), TmpDir: filepath.Join(dir, "tmp"),
		Socket: filepath.Join(dir, "mysqld.sock"), ConfigFile: filepath.Join(dir, "my.cnf"),
		ErrorLog: filepath.Join(dir, "error.log"), PIDFile: filepath.Join(dir, "mysqld.pid"),
		Port: opts.Port, ServerID: opts.ServerID, tools: tools,
	}
	if len(in.Socket) > 100 {
		return nil, fmt.Errorf("instance dir %s is too long for a unix socket path (%d > 100 bytes): use a shorter base directory", dir, len(in.Socket))
	}
	for _, d := range []string{in.DataDir, in.BinlogDir, in.RelayDir, in.TmpDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	runAs, err := runAsUser(opts.User)
	if err != nil {
		return nil, err
	}
	cnf := fmt.Sprintf(`[client]
socket=%[1]s
port=%[2]d
user=root

[mysqld]
user=%[3]s
datadir=%[4]s
tmpdir=%[5]s
socket=%[1]s
pid_file=%[6]s
log_error=%[7]s
port=%[2]d
bind_address=127.0.0.1
skip_name_resolve=ON
server_id=%[8]d
gtid_domain_id=%[9]d
log_bin=%[10]s/binlog
log_bin_index=%[10]s/binlog.index
binlog_format=ROW
log_slave_updates=ON
gtid_strict_mode=ON
relay_log=%[11]s/relay
relay_log_index=%[11]s/relay.index
relay_log_recovery=OFF
skip_slave_start=ON
max_binlog_size=16M
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
%[12]s
`, in.Socket, in.Port, runAs, in.DataDir, in.TmpDir, in.PIDFile, in.ErrorLog, in.ServerID,
		opts.DomainID, in.BinlogDir, in.RelayDir, strings.Join(opts.Extra, "\n"))
	if err := os.WriteFile(in.ConfigFile, []byte(cnf), 0o644); err != nil {
		return nil, fmt.Errorf("write %s: %w", in.ConfigFile, err)
	}
	if runAs != currentUserName() {
		if err := chownTree(dir, runAs); err != nil {
			return nil, err
		}
	}
	if opts.NoInit {
		return in, nil
	}
	if _, err := os.Stat(filepath.Join(in.DataDir, "mysql")); err == nil && opts.KeepData {
		return in, nil
	}
	cmd := exec.CommandContext(ctx, tools.InstallDB, "--defaults-file="+in.ConfigFile,
		"--auth-root-authentication-method=normal", "--skip-test-db")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db for %s: %w\n%s", dir, err, lastLines(string(out), 20))
	}
	return in, nil
}

// Start starts mariadbd and waits until it answers over its socket.
func (in *Instance) Start(ctx context.Context, extraArgs ...string) error {
	for attempt := 1; ; attempt++ {
		err := in.start(ctx, extraArgs...)
		// A free port is free only until somebody binds it: a parallel
		// test process's connection can take it before mariadbd does.
		if err == nil || !in.autoPort || attempt == 3 || !strings.Contains(err.Error(), "Address already in use") {
			return err
		}
		if err := in.newPort(); err != nil {
			return err
		}
	}
}

// newPort moves the instance to another free port.
func (in *Instance) newPort() error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	cnf, err := os.ReadFile(in.ConfigFile)
	if err != nil {
		return err
	}
	old := fmt.Sprintf("port=%d\n", in.Port)
	if !strings.Contains(string(cnf), old) {
		return fmt.Errorf("%s has no %q line", in.ConfigFile, strings.TrimSpace(old))
	}
	in.mu.Lock()
	in.Port = port
	in.mu.Unlock()
	return os.WriteFile(in.ConfigFile, []byte(strings.ReplaceAll(string(cnf), old, fmt.Sprintf("port=%d\n", port))), 0o644)
}

func (in *Instance) start(ctx context.Context, extraArgs ...string) error {
	in.mu.Lock()
	if in.cmd != nil {
		in.mu.Unlock()
		return fmt.Errorf("instance %s is already running", in.Dir)
	}
	args := append([]string{"--defaults-file=" + in.ConfigFile}, extraArgs...)
	cmd := exec.Command(in.tools.Mariadbd, args...)
	logf, err := os.OpenFile(filepath.Join(in.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		in.mu.Unlock()
		return fmt.Errorf("open stdout log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so that a Ctrl-C in `make run` reaches the
	// daemon first and the harness stops the server in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		in.mu.Unlock()
		return fmt.Errorf("start mariadbd for %s: %w", in.Dir, err)
	}
	done := make(chan struct{})
	in.cmd, in.done = cmd, done
	in.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		in.mu.Lock()
		in.waitErr = err
		in.mu.Unlock()
		close(done)
	}()
	_ = os.WriteFile(filepath.Join(in.Dir, "mariadbd.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)

	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := in.Open()
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-done:
			in.mu.Lock()
			in.cmd = nil
			in.mu.Unlock()
			return fmt.Errorf("mariadbd for %s exited during start (%v):\n%s", in.Dir, in.waitErrLocked(), in.errorLogTail(30))
		case <-ctx.Done():
			_ = in.Kill()
			return fmt.Errorf("start mariadbd for %s: %w", in.Dir, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = in.Kill()
			return fmt.Errorf("mariadbd for %s did not answer within 60s:\n%s", in.Dir, in.errorLogTail(30))
		}
	}
}

func (in *Instance) waitErrLocked() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.waitErr
}

// Running reports whether the server process is alive.
func (in *Instance) Running() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return false
	}
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

// PID is the server's process id (0 when not running).
func (in *Instance) PID() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return 0
	}
	return in.cmd.Process.Pid
}

// Stop shuts the server down with SIGTERM and waits for it (SIGKILL after
// the context ends or 60 s).
func (in *Instance) Stop(ctx context.Context) error {
	return in.signal(ctx, syscall.SIGTERM)
}

// Kill stops the server with SIGKILL, as a crash would.
func (in *Instance) Kill() error {
	return in.signal(context.Background(), syscall.SIGKILL)
}

func (in *Instance) signal(ctx context.Context, sig syscall.Signal) error {
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-done
	}
	in.mu.Lock()
	in.cmd = nil
	in.mu.Unlock()
	_ = os.Remove(filepath.Join(in.Dir, "mariadbd.pid"))
	return nil
}

// DSN is the go-sql-driver DSN for root over the socket.
func (in *Instance) DSN(database string) string {
	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "unix"
	cfg.Addr = in.Socket
	cfg.DBName = database
	cfg.MultiStatements = true
	cfg.InterpolateParams = true
	cfg.Timeout = 5 * time.Second
	return cfg.FormatDSN()
}

// Open opens a connection pool to the instance as root over its socket.
func (in *Instance) Open() (*sql.DB, error) {
	db, err := sql.Open("mysql", in.DSN(""))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", in.Socket, err)
	}
	return db, nil
}

// BinlogPrefix is the full path and prefix of the binlogs (mysql.binlog_prefix).
func (in *Instance) BinlogPrefix() string { return filepath.Join(in.BinlogDir, "binlog") }

// RelayLogPrefix is the relay log prefix (mysql.relay_log_prefix).
func (in *Instance) RelayLogPrefix() string { return filepath.Join(in.RelayDir, "relay") }

// RelayLogIndex is the relay log index file (mysql.relay_log_index_file).
func (in *Instance) RelayLogIndex() string { return filepath.Join(in.RelayDir, "relay.index") }

// ReplicateFrom makes this instance a GTID replica of primary and waits
// until its replication threads run.
func (in *Instance) ReplicateFrom(ctx context.Context, primary *Instance) error {
	db, err := in.Open()
	if err != nil {
		return err
	}
	defer db.Close()
	stmts := []string{
		"STOP SLAVE",
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', "+
			"MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", primary.Port),
		"START SLAVE",
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s on %s: %w", q, in.Dir, err)
		}
	}
	return nil
}

// WaitForGTID waits until the instance has executed the MariaDB position
// gtid (MASTER_GTID_WAIT), failing early when a replication thread stops
// with an error.
func (in *Instance) WaitForGTID(ctx context.Context, gtid string) error {
	db, err := in.Open()
	if err != nil {
		return err
	}
	defer db.Close()
	for {
		var res sql.NullInt64
		if err := db.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 1)", gtid).Scan(&res); err != nil {
			return fmt.Errorf("wait for %s on %s: %w", gtid, in.Dir, err)
		}
		if res.Valid && res.Int64 == 0 {
			return nil
		}
		rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
		if err == nil {
			st, _ := scanRowMap(rows)
			rows.Close()
			if st["Last_SQL_Error"] != "" || st["Last_IO_Error"] != "" {
				return fmt.Errorf("replica %s stopped: SQL: %q IO: %q", in.Dir, st["Last_SQL_Error"], st["Last_IO_Error"])
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for %s on %s: %w", gtid, in.Dir, ctx.Err())
		}
	}
}

func scanRowMap(rows *sql.Rows) (map[string]string, error) {
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if !rows.Next() {
		return out, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	for i, c := range cols {
		out[c] = vals[i].String
	}
	return out, nil
}

func (in *Instance) errorLogTail(n int) string {
	b, err := os.ReadFile(in.ErrorLog)
	if err != nil {
		return fmt.Sprintf("(no error log: %v)", err)
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func currentUserName() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Getuid())
}

func runAsUser(want string) (string, error) {
	if os.Getuid() != 0 || want == "" {
		return currentUserName(), nil
	}
	if _, err := user.Lookup(want); err != nil {
		return "", fmt.Errorf("run mariadbd as %q: %w", want, err)
	}
	return want, nil
}

func chownTree(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("chown %s to %s: %w", dir, name, err)
	}
	return nil
}

// MyhoardMySQLConfig is the "mysql" block of a myhoard config for this
// instance (root over TCP, flavor auto).
func (in *Instance) MyhoardMySQLConfig() map[string]any {
	return map[string]any{
		"flavor":               "auto",
		"binlog_prefix":        in.BinlogPrefix(),
		"relay_log_prefix":     in.RelayLogPrefix(),
		"relay_log_index_file": in.RelayLogIndex(),
		"data_directory":       in.DataDir,
		"config_file_name":     in.ConfigFile,
		"client_params":        map[string]any{"host": "127.0.0.1", "port": in.Port, "user": "root", "password": ""},
	}
}

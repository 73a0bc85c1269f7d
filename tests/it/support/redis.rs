//! Real Redis servers for integration tests: a single `redis-server` on a
//! unix socket in its own temp dir ([`RedisServer`]), and a three-master
//! Redis Cluster on loopback TCP ports ([`RedisCluster`]).
//!
//! Binaries come from `JITID_TEST_REDIS_SERVER` / `JITID_TEST_REDIS_CLI`
//! (default `redis-server` / `redis-cli` on `PATH`). A missing binary is a
//! loud failure with an install hint, never a skip.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a single server may take to answer its first `PING`.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a cluster may take to report `cluster_state:ok` on every node.
const CLUSTER_OK_DEADLINE: Duration = Duration::from_secs(20);
/// How long `redis-cli --cluster create` may run.
const CLUSTER_CREATE_DEADLINE: Duration = Duration::from_secs(30);
/// Read/write timeout for one command round trip.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between polls inside a deadline loop.
const POLL: Duration = Duration::from_millis(10);
/// Whole-cluster start attempts (a picked port can be taken before use).
const CLUSTER_ATTEMPTS: usize = 3;
/// `sun_path` is 108 bytes including the NUL on Linux.
const MAX_SOCKET_PATH: usize = 107;

fn redis_server_bin() -> OsString {
    std::env::var_os("JITID_TEST_REDIS_SERVER").unwrap_or_else(|| "redis-server".into())
}

fn redis_cli_bin() -> OsString {
    std::env::var_os("JITID_TEST_REDIS_CLI").unwrap_or_else(|| "redis-cli".into())
}

/// Spawns `cmd`, turning a missing binary into the install hint.
fn spawn(cmd: &mut Command, what: &str, env_var: &str) -> Child {
    match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{what} not found: install it with `apt-get install redis-server` \
             (or run scripts/test, which does), or set {env_var} \
             (tried {:?})",
            cmd.get_program()
        ),
        Err(e) => panic!("cannot start {:?}: {e}", cmd.get_program()),
    }
}

/// Output of a child process: stdout and stderr both appended to `log`.
fn log_stdio(log: &Path) -> (Stdio, Stdio) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
    let err = file.try_clone().unwrap();
    (Stdio::from(file), Stdio::from(err))
}

/// The last `n` lines of a log file, for failure messages.
fn tail(log: &Path, n: usize) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", log.display()),
    }
}

/// Kills (SIGKILL) and reaps a child; ignores one that already exited.
fn kill_and_wait(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------
// Minimal RESP client
// ---------------------------------------------------------------------------

/// Encodes a command as a RESP array of bulk strings.
fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one `\r\n`-terminated line, without the terminator.
fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    if !line.ends_with("\r\n") {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("unterminated RESP line {line:?}"),
        ));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// Reads one reply: simple strings and integers as their text, errors with
/// their leading `-` (e.g. `-ERR unknown command`), bulk strings as their
/// payload, and a null bulk string as `(nil)`. Arrays are not supported.
fn read_reply(reader: &mut impl BufRead) -> io::Result<String> {
    let line = read_line(reader)?;
    let Some(kind) = line.chars().next() else {
        return Err(io::Error::new(ErrorKind::InvalidData, "empty RESP line"));
    };
    let rest = &line[1..];
    match kind {
        '+' | ':' => Ok(rest.to_owned()),
        '-' => Ok(line),
        '$' => {
            let len: i64 = rest.parse().map_err(|_| {
                io::Error::new(ErrorKind::InvalidData, format!("bad bulk length {line:?}"))
            })?;
            let Ok(len) = usize::try_from(len) else {
                return Ok("(nil)".to_owned());
            };
            let mut payload = vec![0; len + 2];
            reader.read_exact(&mut payload)?;
            if !payload.ends_with(b"\r\n") {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "bulk string not terminated by CRLF",
                ));
            }
            payload.truncate(len);
            Ok(String::from_utf8_lossy(&payload).into_owned())
        }
        _ => Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("unsupported RESP reply type in {line:?}"),
        )),
    }
}

/// One command over an already-connected stream.
fn round_trip<S: Read + Write>(stream: S, args: &[&str]) -> io::Result<String> {
    let mut reader = BufReader::new(stream);
    reader.get_mut().write_all(&encode_command(args))?;
    reader.get_mut().flush()?;
    read_reply(&mut reader)
}

fn unix_round_trip(socket: &Path, args: &[&str]) -> io::Result<String> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    round_trip(stream, args)
}

fn tcp_round_trip(port: u16, args: &[&str]) -> io::Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    round_trip(stream, args)
}

/// Sends one command to a cluster node (or any Redis) on a loopback TCP port
/// and returns the reply as [`RedisServer::command`] does.
pub fn tcp_command(port: u16, args: &[&str]) -> String {
    tcp_round_trip(port, args)
        .unwrap_or_else(|e| panic!("redis command {args:?} on 127.0.0.1:{port} failed: {e}"))
}

/// Why a server did not come up.
enum StartError {
    /// The process exited (e.g. it could not bind its port).
    Exited(std::process::ExitStatus),
    /// It was still running but never answered `PING` in time.
    Timeout(String),
}

/// Polls `ping` until it answers `PONG` or the deadline passes, failing early
/// if the process exits.
fn wait_until_up(
    child: &mut Child,
    deadline: Duration,
    ping: impl Fn() -> io::Result<String>,
) -> Result<(), StartError> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartError::Exited(status));
        }
        let last = match ping() {
            Ok(reply) if reply == "PONG" => return Ok(()),
            Ok(reply) => format!("PING answered {reply:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= until {
            return Err(StartError::Timeout(last));
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------
// Single server on a unix socket
// ---------------------------------------------------------------------------

/// A redis-server process on a unix socket in its own temp dir.
pub struct RedisServer {
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` (binary from `JITID_TEST_REDIS_SERVER`, default
    /// `redis-server`) without TCP or persistence, listening on
    /// `<tmp>/redis.sock`, and waits until it answers `PING`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jitid-redis-")
            .tempdir()
            .expect("create temp dir for redis-server");
        let socket = dir.path().join("redis.sock");
        assert!(
            socket.as_os_str().len() <= MAX_SOCKET_PATH,
            "unix socket path {} is too long for sun_path; set TMPDIR to a shorter directory",
            socket.display()
        );
        let log = dir.path().join("redis.log");
        let mut server = Self {
            dir,
            socket,
            log,
            child: None,
        };
        server.launch();
        server
    }

    /// URL for the redis crate: `unix://<socket path>`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills the process (SIGKILL) and waits for it; the socket stops
    /// answering. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_wait(&mut child);
        }
    }

    /// Starts a fresh, empty redis-server on the same socket path (as after
    /// a restart without persistence) and waits for `PING`. Stops the
    /// running one first if needed.
    pub fn restart_empty(&mut self) {
        self.stop();
        self.launch();
    }

    /// Sends one command over a new unix-socket connection and returns the
    /// reply: simple strings and integers as their text (`"OK"`, `"0"`),
    /// errors with their leading `-`, bulk strings as their payload, a null
    /// bulk string as `"(nil)"`. Array replies are not supported.
    pub fn command(&self, args: &[&str]) -> String {
        unix_round_trip(&self.socket, args).unwrap_or_else(|e| {
            panic!(
                "redis command {args:?} on {} failed: {e}",
                self.socket.display()
            )
        })
    }

    fn launch(&mut self) {
        // A SIGKILLed server leaves its socket file behind.
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove stale {}: {e}", self.socket.display()),
        }
        let (out, err) = log_stdio(&self.log);
        let mut cmd = Command::new(redis_server_bin());
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(["--unixsocketperm", "700"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = spawn(&mut cmd, "redis-server", "JITID_TEST_REDIS_SERVER");
        let socket = self.socket.clone();
        let outcome = wait_until_up(&mut child, START_DEADLINE, || {
            unix_round_trip(&socket, &["PING"])
        });
        match outcome {
            Ok(()) => self.child = Some(child),
            Err(why) => {
                kill_and_wait(&mut child);
                let why = match why {
                    StartError::Exited(status) => format!("exited with {status}"),
                    StartError::Timeout(last) => {
                        format!("did not answer PING within {START_DEADLINE:?} ({last})")
                    }
                };
                panic!(
                    "redis-server on {} {why}; last lines of {}:\n{}",
                    self.socket.display(),
                    self.log.display(),
                    tail(&self.log, 30)
                );
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// Three-master cluster on loopback TCP
// ---------------------------------------------------------------------------

/// One cluster node: its client port, log file and process.
struct ClusterNode {
    port: u16,
    log: PathBuf,
    child: Child,
}

/// A three-master Redis Cluster on loopback TCP ports, for the cluster
/// conformance run.
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Starts three cluster-enabled `redis-server`s on free loopback ports
    /// (retrying the whole start up to three times if a port was taken),
    /// joins them with `redis-cli --cluster create ... --cluster-replicas 0`,
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jitid-redis-cluster-")
            .tempdir()
            .expect("create temp dir for the redis cluster");
        let mut failures = Vec::new();
        for attempt in 1..=CLUSTER_ATTEMPTS {
            match start_nodes(dir.path(), attempt) {
                Ok(nodes) => {
                    let mut cluster = Self { dir, nodes };
                    cluster.create(attempt);
                    cluster.wait_until_ok();
                    return cluster;
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "redis cluster did not start in {CLUSTER_ATTEMPTS} attempts:\n{}",
            failures.join("\n\n")
        );
    }

    /// `redis://127.0.0.1:<port>/`, one per node, for
    /// `redis::cluster::ClusterClient`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port))
            .collect()
    }

    /// The nodes' client ports, in the order of [`Self::urls`].
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Runs `redis-cli --cluster create` over the running nodes.
    fn create(&mut self, attempt: usize) {
        let out_path = self
            .dir
            .path()
            .join(format!("cluster-create-{attempt}.log"));
        let (out, err) = log_stdio(&out_path);
        let mut cmd = Command::new(redis_cli_bin());
        cmd.args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = spawn(&mut cmd, "redis-cli", "JITID_TEST_REDIS_CLI");
        let until = Instant::now() + CLUSTER_CREATE_DEADLINE;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= until => {
                    kill_and_wait(&mut child);
                    break None;
                }
                Ok(None) => thread::sleep(POLL),
                Err(e) => panic!("waiting for redis-cli: {e}"),
            }
        };
        if status.is_none_or(|s| !s.success()) {
            let how = status.map_or_else(
                || format!("did not finish within {CLUSTER_CREATE_DEADLINE:?}"),
                |s| format!("failed with {s}"),
            );
            panic!(
                "redis-cli --cluster create {how}; its output:\n{}",
                tail(&out_path, 40)
            );
        }
    }

    fn wait_until_ok(&self) {
        let until = Instant::now() + CLUSTER_OK_DEADLINE;
        for node in &self.nodes {
            let mut last;
            loop {
                last = match tcp_round_trip(node.port, &["CLUSTER", "INFO"]) {
                    Ok(info) if info.lines().any(|l| l.trim() == "cluster_state:ok") => break,
                    Ok(info) => info,
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= until {
                    panic!(
                        "redis cluster node 127.0.0.1:{} not cluster_state:ok within \
                         {CLUSTER_OK_DEADLINE:?}; CLUSTER INFO:\n{last}\nlast lines of {}:\n{}",
                        node.port,
                        node.log.display(),
                        tail(&node.log, 30)
                    );
                }
                thread::sleep(POLL);
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
        }
        for node in &mut self.nodes {
            let _ = node.child.wait();
        }
    }
}

/// Picks `n` distinct free loopback ports (held together so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Starts three cluster-enabled nodes and waits for each to answer `PING`.
/// On any failure kills them all and reports why, with their logs.
fn start_nodes(root: &Path, attempt: usize) -> Result<Vec<ClusterNode>, String> {
    // Client ports plus explicit bus ports: the default bus port is
    // port + 10000, which overflows for ephemeral ports above 55535.
    let ports = free_ports(6);
    let mut nodes: Vec<ClusterNode> = Vec::new();
    let mut failure = None;
    for (&port, &bus_port) in ports[..3].iter().zip(&ports[3..]) {
        let dir = root.join(format!("attempt-{attempt}-node-{port}"));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let log = dir.join("redis.log");
        let (out, err) = log_stdio(&log);
        let mut cmd = Command::new(redis_server_bin());
        cmd.args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn(&mut cmd, "redis-server", "JITID_TEST_REDIS_SERVER");
        nodes.push(ClusterNode { port, log, child });
    }
    for node in &mut nodes {
        let port = node.port;
        if let Err(why) = wait_until_up(&mut node.child, START_DEADLINE, || {
            tcp_round_trip(port, &["PING"])
        }) {
            let why = match why {
                StartError::Exited(status) => format!("exited with {status}"),
                StartError::Timeout(last) => {
                    format!("did not answer PING within {START_DEADLINE:?} ({last})")
                }
            };
            failure = Some(format!(
                "attempt {attempt}: cluster node 127.0.0.1:{port} {why}; last lines of {}:\n{}",
                node.log.display(),
                tail(&node.log, 20)
            ));
            break;
        }
    }
    match failure {
        None => Ok(nodes),
        Some(failure) => {
            for node in &mut nodes {
                kill_and_wait(&mut node.child);
            }
            Err(failure)
        }
    }
}

mod harness_tests {
    use super::{RedisCluster, RedisServer, tcp_command};

    #[test]
    fn server_sets_gets_and_restarts_empty() {
        let mut server = RedisServer::start();
        assert!(server.socket().exists());
        assert_eq!(
            server.url(),
            format!("unix://{}", server.socket().display())
        );

        assert_eq!(server.command(&["SET", "k", "v"]), "OK");
        assert_eq!(server.command(&["GET", "k"]), "v");
        assert_eq!(server.command(&["GET", "missing"]), "(nil)");
        assert_eq!(server.command(&["DBSIZE"]), "1");
        assert!(server.command(&["NOSUCHCOMMAND"]).starts_with("-ERR"));
        assert!(server.command(&["INFO", "memory"]).contains("used_memory:"));

        server.stop();
        assert!(
            std::os::unix::net::UnixStream::connect(server.socket()).is_err(),
            "socket still answers after stop()"
        );

        server.restart_empty();
        assert_eq!(server.command(&["DBSIZE"]), "0");
        assert_eq!(server.command(&["GET", "k"]), "(nil)");
    }

    #[test]
    fn cluster_reaches_ok_on_every_node() {
        let cluster = RedisCluster::start();
        let urls = cluster.urls();
        assert_eq!(urls.len(), 3);
        for (url, port) in urls.iter().zip(cluster.ports()) {
            assert_eq!(url, &format!("redis://127.0.0.1:{port}/"));
            let info = tcp_command(port, &["CLUSTER", "INFO"]);
            assert!(info.contains("cluster_state:ok"), "{url}: {info}");
            assert!(info.contains("cluster_known_nodes:3"), "{url}: {info}");
            assert!(
                info.contains("cluster_slots_assigned:16384"),
                "{url}: {info}"
            );
        }
    }
}

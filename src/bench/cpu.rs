//! CPU time of processes on this host, from `/proc/<pid>/stat`, and
//! finding the process that listens on a local port: how `jitid bench`
//! reports the server's CPU per request when it runs on the same host.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A process whose CPU time a run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/<pid>/comm`).
    pub name: String,
}

impl Process {
    /// What it is in a benchmark: `load generator` for this process (the
    /// one running `jitid bench`), `server` for any other.
    pub fn role(&self) -> &'static str {
        if self.pid == std::process::id() {
            "load generator"
        } else {
            "server"
        }
    }

    /// The process `pid`, if it exists.
    pub fn new(pid: u32) -> Option<Self> {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some(Self {
            pid,
            name: name.trim().to_owned(),
        })
    }

    /// This process.
    pub fn current() -> Option<Self> {
        Self::new(std::process::id())
    }

    /// Resident memory now (`VmRSS`) and its peak so far (`VmHWM`), in
    /// bytes.
    pub fn memory(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        memory_from_status(&status)
    }

    /// User plus system CPU time of every thread so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        cpu_time_from_stat(&stat)
    }
}

/// utime + stime from the text of `/proc/<pid>/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn cpu_time_from_stat(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    if ticks == 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

fn memory_from_status(status: &str) -> Option<(u64, u64)> {
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(field))?;
        line[field.len()..]
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    Some((kib("VmRSS:")? * 1024, kib("VmHWM:")? * 1024))
}

/// The process listening on `addr`'s TCP port, when `addr` is on this
/// host (a loopback address). `None` when it cannot be told (another
/// host, or `/proc` not readable).
pub fn listener_of(addr: SocketAddr) -> Option<Process> {
    if !addr.ip().is_loopback() {
        return None;
    }
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|table| listening_inode(&table, addr.port()))?;
    let socket = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if holds(&entry.path().join("fd"), &socket) {
            return Process::new(pid);
        }
    }
    None
}

/// The inode of the socket listening on `port` in a `/proc/net/tcp`
/// table (`local_address` is `HEXIP:HEXPORT`, state `0A` is LISTEN).
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let local_port = fields.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == "0A")
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

fn holds(fd_dir: &Path, socket: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_past_a_name_with_parentheses() {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        let time = cpu_time_from_stat(stat).unwrap();
        assert!((time.as_secs_f64() - 300.0 / ticks).abs() < 1e-9);
        assert_eq!(cpu_time_from_stat("garbage"), None);
    }

    #[test]
    fn finds_the_listening_socket_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:24CB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n\
   1: 0100007F:24CB 0100007F:D3F2 01 00000000:00000000 00:00000000 00000000     0        0 6666 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_inode(table, 0x24CB), Some(5555));
        assert_eq!(listening_inode(table, 80), None);
    }

    #[test]
    fn finds_this_process_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let found = listener_of(listener.local_addr().unwrap()).unwrap();
        assert_eq!(found.pid, std::process::id());
        let me = Process::current().unwrap();
        assert!(me.cpu_time().is_some());
        let (rss, peak) = me.memory().unwrap();
        assert!(rss > 0 && peak >= rss);
        assert_eq!(
            memory_from_status("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"),
            Some((1024 * 1024, 2048 * 1024))
        );
    }
}

//! The anchors beside portcullis, and what the benchmark reads off every
//! server process: peak resident memory and CPU time.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::free_port;
use crate::support::process::Watched;

/// nginx serving files under a root, sendfile on: the near-physical limit
/// for serving the same bytes.
pub struct Nginx {
    dir: tempfile::TempDir,
    proc: Watched,
    pub host: String,
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-bench-nginx-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let host = format!("127.0.0.1:{}", free_port().unwrap());
        let d = dir.path().display();
        // One line per request, as the other servers log.
        let conf = format!(
            "daemon off;\nmaster_process on;\nuser root;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  keepalive_requests 1000000;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
             client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
             server {{ listen {host}; root {d}/root; }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let proc = Watched::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-p")
                .arg(dir.path()),
        )
        .expect("nginx (apt-get install nginx-light)");
        // nginx logs nothing on a good start: wait until it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start:\n{}",
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { dir, proc, host }
    }

    /// Serve `file`'s bytes at `url_path`.
    pub fn serve(&self, url_path: &str, file: &Path) {
        let target = self
            .dir
            .path()
            .join("root")
            .join(url_path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::hard_link(file, &target)
            .or_else(|_| std::fs::copy(file, &target).map(|_| ()))
            .unwrap();
    }

    /// Master and workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.proc.pid();
        let out = Command::new("pgrep")
            .args(["-P", &master.to_string()])
            .output()
            .unwrap();
        let workers = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect::<Vec<u32>>();
        std::iter::once(master).chain(workers).collect()
    }
}

impl Drop for Nginx {
    /// Killing the master alone (as its `Watched` does when dropped)
    /// leaves the workers running, and a master that sees a worker die
    /// starts another: note the workers, end the master, then them.
    fn drop(&mut self) {
        // The master comes first in the list.
        for pid in self.pids() {
            // SAFETY: kill has no memory preconditions; a pid that is gone
            // already gets ESRCH.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Peak resident set (VmHWM) of processes, summed, in MiB.
pub fn peak_rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        })
        .sum()
}

/// User + system CPU time of processes so far, summed, in seconds.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name (which may hold spaces).
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 of stat(5): 11 and 12 here.
            (t(11) + t(12)) / ticks
        })
        .sum()
}

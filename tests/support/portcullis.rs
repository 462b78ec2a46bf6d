//! Runs the real `portcullis` binary as a child process.
//!
//! Each instance gets its own data directory and config file in a tempdir
//! and listens on `127.0.0.1:0`; readiness is the `listening` line of its JSON
//! log (no sleeping), which also tells the port. `kill9` sends SIGKILL,
//! `terminate` SIGTERM; `restart` starts again on the same data directory
//! and config.

use super::{Result, err, http_get};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    listening: Option<String>,
    exited: bool,
}

/// The config file: `listen`, `data_dir = "data"` (unless `extra` sets
/// its own `data_dir` in a line of its own), then `extra`.
fn config_text(extra: &str) -> String {
    let own_data_dir = extra
        .lines()
        .any(|l| l.trim_start().starts_with("data_dir"));
    let data_dir = if own_data_dir {
        ""
    } else {
        "data_dir = \"data\"\n"
    };
    format!("listen = \"127.0.0.1:0\"\n{data_dir}{extra}\n")
}

/// Run `portcullis COMMAND --config CONFIG ARGS...` (export, import, warm,
/// verify) to its end.
pub fn cli(command: &str, config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg(command)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("portcullis runs")
}

/// A running portcullis.
pub struct Portcullis {
    child: Option<Child>,
    /// The executable (this build's, unless a benchmark compares another).
    bin: PathBuf,
    dir: tempfile::TempDir,
    addr: String,
    log: Arc<(Mutex<Log>, Condvar)>,
}

impl Portcullis {
    /// Start with `extra` appended to a config that sets `listen` and
    /// `data_dir` (so `extra` holds `[cache]`, `[[upstream]]`, `offline`...).
    pub fn start(extra: &str) -> Result<Portcullis> {
        Portcullis::start_with_files(extra, &[])
    }

    /// Like [`Portcullis::start`], with `(name, content)` files written next
    /// to the config first (password files, certificates).
    pub fn start_with_files(extra: &str, files: &[(&str, &str)]) -> Result<Portcullis> {
        Portcullis::start_binary(Path::new(env!("CARGO_BIN_EXE_portcullis")), extra, files)
    }

    /// Like [`Portcullis::start_with_files`], running the executable `bin`
    /// (benchmarks compare another build this way).
    pub fn start_binary(bin: &Path, extra: &str, files: &[(&str, &str)]) -> Result<Portcullis> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-test-")
            .tempdir()
            .map_err(|e| err!("tempdir: {e}"))?;
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)
                .map_err(|e| err!("writing {name}: {e}"))?;
        }
        std::fs::write(dir.path().join("portcullis.toml"), config_text(extra))
            .map_err(|e| err!("writing config: {e}"))?;
        let mut p = Portcullis {
            child: None,
            bin: bin.to_owned(),
            dir,
            addr: String::new(),
            log: Arc::default(),
        };
        p.spawn()?;
        Ok(p)
    }

    /// Replace the config's extra part (takes effect at the next restart).
    pub fn rewrite_config(&self, extra: &str) -> Result<()> {
        std::fs::write(self.dir.path().join("portcullis.toml"), config_text(extra))
            .map_err(|e| err!("writing config: {e}"))
    }

    /// Directory that holds the config file; relative paths resolve here.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(self.dir.path().join("portcullis.toml"))
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err!("starting portcullis: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log: Arc<(Mutex<Log>, Condvar)> = Arc::default();
        let log2 = log.clone();
        let verbose = std::env::var_os("PORTCULLIS_TEST_VERBOSE").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if verbose {
                    eprintln!("[portcullis] {line}");
                }
                let (m, cv) = &*log2;
                let mut g = m.lock().unwrap();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "listening"
                {
                    g.listening = v["addr"].as_str().map(str::to_owned);
                }
                g.lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*log2;
            m.lock().unwrap().exited = true;
            cv.notify_all();
        });
        self.child = Some(child);
        self.log = log;
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(addr) = &g.listening {
                self.addr = addr.clone();
                return Ok(());
            }
            if g.exited {
                return Err(err!(
                    "portcullis exited before listening:\n{}",
                    g.lines.join("\n")
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(err!(
                    "portcullis did not listen within {READY_TIMEOUT:?}:\n{}",
                    g.lines.join("\n")
                ));
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> &str {
        &self.addr
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Files under the object store (published objects).
    pub fn stored_objects(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir().join("objects"), &mut out);
        out
    }

    /// Files left in the store's temp directory.
    pub fn partial_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.data_dir().join("tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Is the object with this digest (`sha256:<hex>`) stored?
    pub fn has_object(&self, digest: &str) -> bool {
        let (alg, hex) = digest.split_once(':').expect("algorithm:hex");
        self.data_dir()
            .join("objects")
            .join(alg)
            .join(&hex[..2])
            .join(hex)
            .exists()
    }

    /// Wait (bounded) until no blob fill is running. A client's response
    /// completes as soon as its bytes verify; the fill publishes and indexes
    /// them right after, so check the store only once this returns.
    pub fn wait_fills_settled(&self) -> Result<()> {
        self.wait_for_metric("portcullis_fills_in_flight", |v| v == 0.0)
            .map(|_| ())
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    /// Wait (bounded) until a log line satisfies `pred`, and return it. Log
    /// lines travel through a pipe, so they may trail the responses.
    pub fn wait_for_log(&self, pred: impl Fn(&str) -> bool) -> Result<String> {
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.lines.iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || g.exited {
                return Err(err!("no such log line in:\n{}", g.lines.join("\n")));
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// Make sure the log lines of every request answered so far have
    /// arrived: send a marker request and wait for its access-log line.
    pub fn flush_logs(&self) -> Result<Vec<String>> {
        let n = self.log.0.lock().unwrap().lines.len();
        let marker = format!("/healthz?flush={n}");
        http_get(&format!("{}{marker}", self.url()), &[])?;
        self.wait_for_log(|l| l.contains(&marker))?;
        Ok(self.logs())
    }

    /// Send SIGTERM: the graceful shutdown.
    pub fn terminate(&self) -> Result<()> {
        super::run(Command::new("kill").args(["-TERM", &self.pid().to_string()]))?;
        Ok(())
    }

    /// Wait (bounded) until the process has exited and closed its log;
    /// returns its exit status.
    pub fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut g = m.lock().unwrap();
        while !g.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(err!("portcullis did not exit:\n{}", g.lines.join("\n")));
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
        drop(g);
        let mut child = self.child.take().ok_or_else(|| err!("not running"))?;
        child
            .wait()
            .map_err(|e| err!("waiting for portcullis: {e}"))
    }

    /// Kill with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().map_err(|e| err!("kill -9 portcullis: {e}"))?;
            c.wait().map_err(|e| err!("waiting for portcullis: {e}"))?;
        }
        Ok(())
    }

    /// Start again on the same data directory and config (new port); after
    /// [`Portcullis::wait_exit`] too.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn()
    }

    /// The value of one metric series, e.g. `portcullis_cache_evictions_total`
    /// or `portcullis_cache_requests_total{result="hit"}` (0 when absent).
    pub fn metric(&self, series: &str) -> Result<f64> {
        let r = http_get(&format!("{}/metrics", self.url()), &[])?;
        let text = String::from_utf8_lossy(&r.body);
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Poll a metric until `ok` holds (bounded): for effects that happen in
    /// the background, like eviction.
    pub fn wait_for_metric(&self, series: &str, ok: impl Fn(f64) -> bool) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.metric(series)?;
            if ok(v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(err!("{series} stayed at {v}\n{}", self.logs().join("\n")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Portcullis {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// portcullis run inside the test process, deciding by a clock the test
/// drives (`clock.advance`), for behaviour that depends on time passing:
/// tag freshness, verdict lifetimes, the upstream breaker's hold.
pub struct InProcess {
    addr: String,
    pub clock: portcullis::clock::Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Start with `extra` (as for [`Portcullis::start`]) and a manual clock.
    pub fn start(extra: &str) -> Result<InProcess> {
        InProcess::start_with_files(extra, &[])
    }

    /// [`InProcess::start`] with files written next to the config first
    /// (as for [`Portcullis::start_with_files`]).
    pub fn start_with_files(extra: &str, files: &[(&str, &str)]) -> Result<InProcess> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-test-")
            .tempdir()
            .map_err(|e| err!("tempdir: {e}"))?;
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content)
                .map_err(|e| err!("writing {name}: {e}"))?;
        }
        let text = format!("shutdown_grace = \"1s\"\n{}", config_text(extra));
        let config = portcullis::config::Config::parse(&text, "test config", dir.path())
            .map_err(|e| err!("config: {e:?}"))?;
        let clock = portcullis::clock::Clock::manual(std::time::SystemTime::now());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = clock.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                match portcullis::server::bind_with(&config, c).await {
                    Ok(bound) => {
                        let _ = addr_tx.send(Ok(bound.local_addr().to_string()));
                        bound
                            .run(async {
                                let _ = stopped.await;
                            })
                            .await;
                    }
                    Err(e) => {
                        let _ = addr_tx.send(Err(portcullis::error::chain(&e)));
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(READY_TIMEOUT)
            .map_err(|e| err!("portcullis did not start: {e}"))?
            .map_err(|e| err!("portcullis did not start: {e}"))?;
        Ok(InProcess {
            addr,
            clock,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn host(&self) -> &str {
        &self.addr
    }

    /// The value of one metric series (0 when absent).
    pub fn metric(&self, series: &str) -> Result<f64> {
        let r = http_get(&format!("{}/metrics", self.url()), &[])?;
        Ok(String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

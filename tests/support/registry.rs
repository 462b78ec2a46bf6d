//! A real upstream registry: Debian's `docker-registry` (CNCF distribution
//! 2.8) as a child process on 127.0.0.1, with storage in a tempdir.
//!
//! Output: the access log (Apache combined format) goes to the process's
//! **stdout**, one line per answered request, e.g.
//! `127.0.0.1 - - [25/Nov/2026:04:52:17 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`;
//! the logrus text log (`time=... level=info msg="listening on 127.0.0.1:P"`,
//! one `response completed` line per request) goes to **stderr**.
//! The access-log line is written after the handler returns, so it can reach
//! the pipe a little after the client saw the response: use
//! [`Registry::settle`] (implied by [`Registry::count`] and
//! [`Registry::requests`]) before counting.

use super::{Result, err, free_port, http_get};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long to wait for the registry to listen, or for a marker line.
const DEADLINE: Duration = Duration::from_secs(30);
/// Path prefix of the marker requests sent by [`Registry::settle`].
const MARKER: &str = "/v2/?marker=";

/// `auth.token` settings of a registry (see `TokenServer::registry_auth`).
#[derive(Clone, Debug)]
pub struct TokenAuth {
    /// Where clients get tokens, e.g. `http://127.0.0.1:P/token`.
    pub realm: String,
    /// The `service` (JWT `aud`).
    pub service: String,
    /// The JWT `iss` the registry accepts.
    pub issuer: String,
    /// PEM certificate(s) the token signer's `x5c` must chain to.
    pub rootcertbundle: PathBuf,
}

/// How a [`Registry`] is configured.
#[derive(Clone, Debug)]
pub enum Mode {
    /// No authentication; pushes and pulls open to all.
    Plain,
    /// Bearer-token authentication against a token server.
    Token(TokenAuth),
    /// HTTP Basic authentication against an htpasswd file (bcrypt entries).
    Htpasswd(PathBuf),
    /// distribution's own pull-through cache of `remoteurl` (refuses pushes).
    Proxy {
        /// Upstream URL, e.g. `http://127.0.0.1:P`.
        remoteurl: String,
        /// Optional upstream credentials (`username`, `password`).
        creds: Option<(String, String)>,
    },
}

/// An S3 bucket for distribution's `s3` storage driver instead of files.
#[derive(Clone, Debug)]
pub struct S3Storage {
    /// e.g. `http://127.0.0.1:P` (Garage).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Key prefix, e.g. `/distribution`.
    pub root: String,
}

/// One parsed access-log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Request target as sent: path plus query, e.g. `/v2/a/b/manifests/v1`.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Response body bytes written.
    pub bytes: u64,
    /// The client's User-Agent.
    pub user_agent: String,
}

/// Which output stream a captured line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (the access log).
    Stdout,
    /// Standard error (the application log).
    Stderr,
}

#[derive(Default)]
struct LogInner {
    lines: Vec<(Stream, String)>,
    access: Vec<AccessEntry>,
    markers: HashSet<String>,
    listening: bool,
    open_streams: usize,
}

#[derive(Default)]
struct LogState {
    inner: Mutex<LogInner>,
    cv: Condvar,
}

/// A running (or stopped) `docker-registry serve` on 127.0.0.1.
/// Drop kills the process; the storage tempdir lives as long as this value.
pub struct Registry {
    mode: Mode,
    s3: Option<S3Storage>,
    port: u16,
    dir: tempfile::TempDir,
    log: Arc<LogState>,
    child: Option<Child>,
    readers: Vec<JoinHandle<()>>,
    marker: AtomicU64,
}

impl Registry {
    /// Starts a registry in `mode` on a free port with fresh storage, and
    /// returns once it listens.
    pub fn start(mode: Mode) -> Result<Registry> {
        Registry::start_on(mode, None)
    }

    /// [`Registry::start`] with its storage in an S3 bucket (`s3`), or in
    /// files (`None`).
    pub fn start_on(mode: Mode, s3: Option<S3Storage>) -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-registry-")
            .tempdir()
            .map_err(|e| err!("creating registry tempdir: {e}"))?;
        std::fs::create_dir(dir.path().join("data")).map_err(|e| err!("mkdir data: {e}"))?;
        let mut reg = Registry {
            mode,
            s3,
            port: free_port()?,
            dir,
            log: Arc::default(),
            child: None,
            readers: Vec::new(),
            marker: AtomicU64::new(0),
        };
        // The free port may be taken between probing and binding: retry.
        for attempt in 0.. {
            match reg.spawn() {
                Err(e) if attempt < 2 && e.0.contains("address already in use") => {
                    reg.port = free_port()?;
                }
                other => return other.map(|()| reg),
            }
        }
        unreachable!()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage root (`storage.filesystem.rootdirectory`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The generated `config.yml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// Whether the process is running (not stopped and not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process and waits for it and for all its output. Storage is
    /// kept; [`Registry::start_again`] brings it back on the same port.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child
                .wait()
                .map_err(|e| err!("waiting for docker-registry: {e}"))?;
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ok(())
    }

    /// Starts the process again on the same port with the same storage and
    /// configuration. The captured log continues (counts accumulate).
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Err(err!(
                "start_again: registry on {} is still running",
                self.host()
            ));
        }
        self.spawn()
    }

    /// Barrier: sends `GET /v2/?marker=N` and waits until its access-log
    /// line is captured, so lines of all requests answered before this call
    /// are captured too. Marker requests are left out of counts. No-op when
    /// stopped (all output was read by `stop`).
    pub fn settle(&self) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        let n = self.marker.fetch_add(1, Ordering::SeqCst);
        let target = format!("{MARKER}{n}");
        http_get(&format!("{}{target}", self.url()), &[])
            .map_err(|e| err!("settle: marker request failed: {e}\n{}", self.output()))?;
        let deadline = Instant::now() + DEADLINE;
        let mut g = self.log.inner.lock().unwrap();
        while !g.markers.contains(&target) {
            let now = Instant::now();
            if now >= deadline || g.open_streams == 0 {
                drop(g);
                return Err(err!(
                    "settle: no access-log line for {target}\n{}",
                    self.output()
                ));
            }
            g = self.log.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        Ok(())
    }

    /// All access-log entries so far (after [`Registry::settle`]), markers
    /// excluded. Panics if settling fails.
    pub fn requests(&self) -> Vec<AccessEntry> {
        self.settle().unwrap_or_else(|e| panic!("{e}"));
        self.log.inner.lock().unwrap().access.clone()
    }

    /// Number of access-log entries with this method whose request target
    /// contains `path_contains` (after [`Registry::settle`]). Panics if
    /// settling fails.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        let matches = |e: &AccessEntry| e.method == method && e.path.contains(path_contains);
        self.requests().iter().filter(|e| matches(e)).count()
    }

    /// Settles, then forgets all access-log entries captured so far (e.g.
    /// the traffic of pushing test images). Output lines are kept.
    pub fn clear_requests(&self) -> Result<()> {
        self.settle()?;
        self.log.inner.lock().unwrap().access.clear();
        Ok(())
    }

    /// Every captured output line, stdout and stderr, in arrival order
    /// (prefixed `out| ` / `err| `), for failure messages.
    pub fn output(&self) -> String {
        let g = self.log.inner.lock().unwrap();
        let mut s = String::new();
        for (stream, line) in &g.lines {
            s.push_str(if *stream == Stream::Stdout {
                "out| "
            } else {
                "err| "
            });
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    fn write_config(&self) -> Result<()> {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let mut y = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  formatter: text",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            &match &self.s3 {
                None => format!(
                    "  filesystem:\n    rootdirectory: {}",
                    q(&self.data_dir().to_string_lossy())
                ),
                Some(s) => format!(
                    // Blobs through the registry, not redirects to the bucket.
                    "  s3:\n    accesskey: {}\n    secretkey: {}\n    region: {}\n    regionendpoint: {}\n    bucket: {}\n    rootdirectory: {}\n  redirect:\n    disable: true",
                    q(&s.access_key),
                    q(&s.secret_key),
                    q(&s.region),
                    q(&s.endpoint),
                    q(&s.bucket),
                    q(&s.root)
                ),
            },
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            &format!("  addr: {}", q(&self.host())),
            "  secret: portcullis-test-secret",
            "",
        ]
        .join("\n");
        match &self.mode {
            Mode::Plain => {}
            Mode::Token(t) => {
                y += &format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    q(&t.realm),
                    q(&t.service),
                    q(&t.issuer),
                    q(&t.rootcertbundle.to_string_lossy())
                );
            }
            Mode::Htpasswd(path) => {
                y += &format!(
                    "auth:\n  htpasswd:\n    realm: portcullis-test\n    path: {}\n",
                    q(&path.to_string_lossy())
                );
            }
            Mode::Proxy { remoteurl, creds } => {
                y += &format!("proxy:\n  remoteurl: {}\n", q(remoteurl));
                if let Some((u, p)) = creds {
                    y += &format!("  username: {}\n  password: {}\n", q(u), q(p));
                }
            }
        }
        std::fs::write(self.config_path(), y).map_err(|e| err!("writing registry config: {e}"))
    }

    fn spawn(&mut self) -> Result<()> {
        self.write_config()?;
        {
            let mut g = self.log.inner.lock().unwrap();
            g.listening = false;
            g.open_streams = 2;
        }
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(self.config_path());
        // The AWS SDK in distribution refuses a custom CA bundle on its
        // transport ("HTTPClient's transport unsupported type").
        cmd.env_remove("AWS_CA_BUNDLE");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            err!("could not run docker-registry: {e} (apt-get install docker-registry)")
        })?;
        let out = child.stdout.take().unwrap();
        let errs = child.stderr.take().unwrap();
        self.readers
            .push(reader(out, Stream::Stdout, self.log.clone()));
        self.readers
            .push(reader(errs, Stream::Stderr, self.log.clone()));
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        let mut g = self.log.inner.lock().unwrap();
        while !g.listening {
            let now = Instant::now();
            if now >= deadline || g.open_streams == 0 {
                drop(g);
                let why = if now >= deadline {
                    "did not listen within 30 s"
                } else {
                    "exited"
                };
                let _ = self.stop();
                return Err(err!(
                    "docker-registry on {} {why}; config:\n{}\noutput:\n{}",
                    self.host(),
                    std::fs::read_to_string(self.config_path()).unwrap_or_default(),
                    self.output()
                ));
            }
            g = self.log.cv.wait_timeout(g, deadline - now).unwrap().0;
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Reads `src` line by line into `log` until EOF.
fn reader(src: impl Read + Send + 'static, stream: Stream, log: Arc<LogState>) -> JoinHandle<()> {
    let verbose = std::env::var_os("PORTCULLIS_TEST_VERBOSE").is_some();
    std::thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if verbose {
                eprintln!("[docker-registry {stream:?}] {line}");
            }
            let mut g = log.inner.lock().unwrap();
            if stream == Stream::Stderr && line.contains("msg=\"listening on ") {
                g.listening = true;
            }
            if let Some(e) = (stream == Stream::Stdout)
                .then(|| parse_access(&line))
                .flatten()
            {
                if e.path.starts_with(MARKER) {
                    g.markers.insert(e.path);
                } else {
                    g.access.push(e);
                }
            }
            g.lines.push((stream, line));
            drop(g);
            log.cv.notify_all();
        }
        log.inner.lock().unwrap().open_streams -= 1;
        log.cv.notify_all();
    })
}

/// Parses `HOST - USER [TIME] "METHOD TARGET PROTO" STATUS BYTES "REFERER" "UA"`.
pub fn parse_access(line: &str) -> Option<AccessEntry> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let (method, path) = (req.next()?.to_string(), req.next()?.to_string());
    let mut nums = rest.split_whitespace();
    let status = nums.next()?.parse().ok()?;
    let bytes = nums.next()?.parse().unwrap_or(0);
    let user_agent = rest
        .trim_end()
        .strip_suffix('"')?
        .rsplit_once('"')?
        .1
        .to_string();
    Some(AccessEntry {
        method,
        path,
        status,
        bytes,
        user_agent,
    })
}

/// Convenience: the data dir's repository folder for `repo`
/// (`docker/registry/v2/repositories/<repo>`).
pub fn repository_dir(data_dir: &Path, repo: &str) -> PathBuf {
    data_dir.join("docker/registry/v2/repositories").join(repo)
}

//! A long-running child process (a daemon the tests start) whose stdout and
//! stderr lines are captured, so a test can wait for a line such as "booted"
//! instead of sleeping, and show the output when something fails.
//!
//! The process is killed on drop. Output is echoed to stderr when
//! `PORTCULLIS_TEST_VERBOSE` is set.

use super::{Result, command_line, err};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    open_streams: usize,
}

/// A running child with captured output.
pub struct Watched {
    name: String,
    child: Option<Child>,
    log: Arc<(Mutex<Lines>, Condvar)>,
}

impl Watched {
    /// Start `cmd` with stdout and stderr captured; `name` prefixes echoed
    /// lines and error messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Watched> {
        let line = command_line(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err!("could not run `{line}`: {e} (CI installs it with apt-get)"))?;
        let log: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout is piped")),
            Box::new(child.stderr.take().expect("stderr is piped")),
        ];
        log.0.lock().unwrap().open_streams = streams.len();
        let verbose = std::env::var_os("PORTCULLIS_TEST_VERBOSE").is_some();
        for stream in streams {
            let (log, name) = (log.clone(), name.to_owned());
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines() {
                    let Ok(l) = l else { break };
                    if verbose {
                        eprintln!("[{name}] {l}");
                    }
                    log.0.lock().unwrap().lines.push(l);
                    log.1.notify_all();
                }
                log.0.lock().unwrap().open_streams -= 1;
                log.1.notify_all();
            });
        }
        Ok(Watched {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// Wait until an output line satisfies `pred` and return it; fails if
    /// the process closes its output first or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let (m, cv) = &*self.log;
        let deadline = Instant::now() + timeout;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.lines.iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || g.open_streams == 0 {
                let why = if left.is_zero() {
                    "timed out"
                } else {
                    "exited"
                };
                return Err(err!(
                    "{} {why} before the awaited line:\n{}",
                    self.name,
                    g.lines.join("\n")
                ));
            }
            g = cv.wait_timeout(g, left).unwrap().0;
        }
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Every captured line so far.
    pub fn output(&self) -> String {
        self.log.0.lock().unwrap().lines.join("\n")
    }

    /// Kill (SIGKILL) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Garage (the Rust S3-compatible distributed store, `cargo install garage
//! --locked`) as a single node on 127.0.0.1, with one bucket and one key
//! made by its own CLI, as ../shared/notes/real-components.md describes.

use super::process::Watched;
use super::{Result, err, free_port, run};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Garage {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    config: PathBuf,
    server: Option<Watched>,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// A node with a layout, bucket `portcullis` and a key allowed on it.
    pub fn start() -> Result<Garage> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-garage-")
            .tempdir()
            .map_err(|e| err!("garage tempdir: {e}"))?;
        let d = dir.path();
        let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + rpc as usize) % 256))
            .collect();
        let config = d.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{m}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                m = d.join("meta").display(),
                data = d.join("data").display(),
            ),
        )
        .map_err(|e| err!("garage config: {e}"))?;
        let server = Watched::spawn(
            "garage",
            Command::new("garage").arg("-c").arg(&config).arg("server"),
        )?;
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "portcullis".into(),
            key_id: String::new(),
            secret: String::new(),
            config,
            server: Some(server),
            _dir: dir,
        };
        // The node answers its CLI once it is up: its id is the status's
        // first 16-hex field.
        let deadline = Instant::now() + Duration::from_secs(30);
        let node = loop {
            if let Ok(out) = g.cli(&["status"])
                && let Some(id) = out
                    .split_whitespace()
                    .find(|w| w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                break id.to_owned();
            }
            if Instant::now() > deadline {
                return Err(err!("garage did not come up: {}", g.output()));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        g.cli(&["layout", "apply", "--version", "1"])?;
        g.cli(&["bucket", "create", "portcullis"])?;
        let key = g.cli(&["key", "create", "portcullis-key"])?;
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
                .ok_or_else(|| err!("`garage key create` printed no {name}: {key}"))
        };
        g.key_id = field("Key ID:")?;
        g.secret = field("Secret key:")?;
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "portcullis",
            "--key",
            "portcullis-key",
        ])?;
        Ok(g)
    }

    /// `garage -c CONFIG ARGS`: its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn output(&self) -> String {
        self.server
            .as_ref()
            .map(Watched::output)
            .unwrap_or_default()
    }

    /// Stop the node (its data stays for [`Garage::start_again`]).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }

    /// Start the stopped node again on the same data and ports.
    pub fn start_again(&mut self) -> Result<()> {
        self.server = Some(Watched::spawn(
            "garage",
            Command::new("garage")
                .arg("-c")
                .arg(&self.config)
                .arg("server"),
        )?);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.cli(&["status"]).is_err() {
            if Instant::now() > deadline {
                return Err(err!("garage did not come back: {}", self.output()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

//! A private containerd daemon (Debian's `containerd` 1.6) and its `ctr`
//! client, for pulling through portcullis the way Kubernetes nodes do.
//!
//! The daemon gets its own root, state and sockets in a tempdir, the native
//! snapshotter, and no CRI plugin. Registry hosts are configured the way
//! nodes configure them: `certs.d/<registry>/hosts.toml`, passed to
//! `ctr images pull --hosts-dir`. Needs root (CI runs as root).

use super::process::Watched;
use super::{Result, err, run};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The namespace the tests pull into.
const NAMESPACE: &str = "portcullis-test";

/// A running containerd with an empty content store.
pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: Watched,
}

impl Containerd {
    /// Start a daemon and wait until it says it booted.
    pub fn start() -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-containerd-")
            .tempdir()
            .map_err(|e| err!("containerd tempdir: {e}"))?;
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[metrics]
  address = ""
"#
        );
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).map_err(|e| err!("writing containerd config: {e}"))?;
        std::fs::create_dir(dir.path().join("certs.d")).map_err(|e| err!("mkdir certs.d: {e}"))?;
        let daemon = Watched::spawn(
            "containerd",
            Command::new("containerd").arg("--config").arg(&path),
        )?;
        daemon.wait_for(Duration::from_secs(30), |l| {
            l.contains("containerd successfully booted")
        })?;
        Ok(Containerd { dir, daemon })
    }

    fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    /// Write `certs.d/<registry>/hosts.toml`.
    pub fn set_hosts(&self, registry: &str, hosts_toml: &str) -> Result<()> {
        let dir = self.hosts_dir().join(registry);
        std::fs::create_dir_all(&dir).map_err(|e| err!("mkdir {}: {e}", dir.display()))?;
        std::fs::write(dir.join("hosts.toml"), hosts_toml).map_err(|e| err!("hosts.toml: {e}"))
    }

    /// `ctr --address SOCK -n NAMESPACE`; add the subcommand.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("c.sock"))
            .args(["-n", NAMESPACE]);
        cmd
    }

    /// `ctr images pull --hosts-dir certs.d --snapshotter native EXTRA IMAGE`.
    pub fn pull(&self, image: &str, extra: &[&str]) -> Result<Output> {
        let mut cmd = self.ctr();
        cmd.args(["images", "pull", "--hosts-dir"])
            .arg(self.hosts_dir())
            .args(["--snapshotter", "native"])
            .args(extra)
            .arg(image);
        run(&mut cmd).map_err(|e| err!("{e}\n--- containerd ---\n{}", self.daemon.output()))
    }

    /// Like [`Containerd::pull`], expecting failure: returns ctr's stderr.
    pub fn pull_fails(&self, image: &str) -> Result<String> {
        match self.pull(image, &[]) {
            Ok(out) => Err(err!(
                "ctr pulled {image}, which should have failed:\n{}",
                String::from_utf8_lossy(&out.stdout)
            )),
            Err(e) => Ok(e.0),
        }
    }

    /// Digests in the content store (`sha256:<hex>`).
    pub fn content(&self) -> Result<Vec<String>> {
        let out = run(self.ctr().args(["content", "ls", "-q"]))?;
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        Ok(v)
    }

    /// The bytes of one content-store blob.
    pub fn content_bytes(&self, digest: &str) -> Result<Vec<u8>> {
        Ok(run(self.ctr().args(["content", "get", digest]))?.stdout)
    }

    /// `ctr images check` output for `image`: `(status, unpacked)`, e.g.
    /// `("complete (3/3)", "true")` (unpacked into the native snapshotter).
    pub fn check(&self, image: &str) -> Result<(String, String)> {
        let out = run(self
            .ctr()
            .args(["images", "check", "--snapshotter", "native"]))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(image))
            .ok_or_else(|| err!("{image} not in `ctr images check`:\n{text}"))?;
        // REF TYPE DIGEST STATUS SIZE UNPACKED, where STATUS is e.g.
        // "complete (3/3)" and SIZE e.g. "3.0 MiB/3.0 MiB".
        let fields: Vec<&str> = line.split_whitespace().collect();
        let status = fields
            .iter()
            .position(|f| f.starts_with('('))
            .map(|i| fields[i - 1..=i].join(" "))
            .ok_or_else(|| err!("no status in {line:?}"))?;
        let unpacked = fields.last().copied().unwrap_or_default().to_owned();
        Ok((status, unpacked))
    }

    /// The daemon's log so far.
    pub fn output(&self) -> String {
        self.daemon.output()
    }

    /// Where the daemon keeps everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

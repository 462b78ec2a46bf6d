//! podman (Debian's 4.3, the same containers/image library CRI-O uses) in a
//! private setup: its own `registries.conf`, vfs storage under a tempdir, no
//! events, cgroupfs, and a permissive signature policy (portcullis is the
//! gate under test). Needs root (CI runs as root).

use super::{Result, err, run};
use std::process::{Command, Output};

/// A podman with its own configuration and storage.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Set up with `registries` as the whole `registries.conf`.
    pub fn new(registries: &str) -> Result<Podman> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-podman-")
            .tempdir()
            .map_err(|e| err!("podman tempdir: {e}"))?;
        let d = dir.path();
        let w = |name: &str, body: &str| {
            std::fs::write(d.join(name), body).map_err(|e| err!("writing podman {name}: {e}"))
        };
        w("registries.conf", registries)?;
        w(
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n",
                d.display()
            ),
        )?;
        w(
            "containers.conf",
            "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n",
        )?;
        w("auth.json", r#"{"auths":{}}"#)?;
        w(
            "policy.json",
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        for sub in ["tmp", "home"] {
            std::fs::create_dir(d.join(sub)).map_err(|e| err!("mkdir {sub}: {e}"))?;
        }
        Ok(Podman { dir })
    }

    /// `podman` with the private configuration; add the subcommand.
    pub fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .env("TMPDIR", d.join("tmp"))
            .env("HOME", d.join("home"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        cmd
    }

    /// `podman pull EXTRA IMAGE`.
    pub fn pull(&self, image: &str, extra: &[&str]) -> Result<Output> {
        let policy = self.dir.path().join("policy.json");
        run(self
            .command()
            .arg("pull")
            .arg("--signature-policy")
            .arg(policy)
            .args(extra)
            .arg(image))
    }

    /// `podman image inspect IMAGE` as JSON (the first image).
    pub fn inspect(&self, image: &str) -> Result<serde_json::Value> {
        let out = run(self.command().args(["image", "inspect", image]))?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| err!("podman image inspect output: {e}"))?;
        Ok(v[0].clone())
    }
}

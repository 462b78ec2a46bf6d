//! Docker Content Trust for the tests: Debian's real `notary-server`
//! (memory storage, local signing, TLS with a throwaway CA made by
//! `openssl`) and the real `notary` client (`init`, `addhash`, `publish`,
//! `delegation add`, `key rotate`), as `../shared/notes/real-components.md`
//! records them. Also a fake Notary (plain HTTP, serving whatever files the
//! test gives it) for what a real server never does: roll back.

use super::process::Watched;
use super::{Result, err, free_port, run};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").current_dir(dir).args(args)).map(|_| ())
}

fn tempdir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| err!("tempdir: {e}"))
}

/// A self-signed P-256 certificate `cert` with its key `key` in `dir`.
fn self_signed(dir: &Path, key: &str, cert: &str, subject: &str) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            subject,
        ],
    )
}

/// A running notary-server on 127.0.0.1 with its own CA.
pub struct NotaryServer {
    dir: tempfile::TempDir,
    port: u16,
    proc: Option<Watched>,
    /// Token auth (distribution's `auth.token`), with the client's `user:password`.
    auth: Option<(super::registry::TokenAuth, String)>,
}

impl NotaryServer {
    pub fn start() -> Result<NotaryServer> {
        NotaryServer::start_with(None)
    }

    /// A server that requires bearer tokens from `auth`'s token server;
    /// clients made by [`NotaryServer::client`] log in as `creds` (`user:password`).
    pub fn start_with_token(auth: super::registry::TokenAuth, creds: &str) -> Result<NotaryServer> {
        NotaryServer::start_with(Some((auth, creds.to_owned())))
    }

    fn start_with(auth: Option<(super::registry::TokenAuth, String)>) -> Result<NotaryServer> {
        let dir = tempdir("notary-server-")?;
        let d = dir.path();
        self_signed(d, "ca.key", "ca.crt", "/CN=portcullis test notary CA")?;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        )?;
        std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            .map_err(|e| err!("ext: {e}"))?;
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext",
            ],
        )?;
        let port = free_port()?;
        let mut server = NotaryServer {
            dir,
            port,
            proc: None,
            auth,
        };
        server.start_again()?;
        Ok(server)
    }

    /// Start the server (again, after [`NotaryServer::stop`]: its memory
    /// storage starts empty).
    pub fn start_again(&mut self) -> Result<()> {
        let d = self.dir.path();
        let config = format!(
            r#"{{"server":{{"http_addr":"127.0.0.1:{}"{}}},
 "trust_service":{{"type":"local","hostname":"","port":"","key_algorithm":"ecdsa"}},
 "storage":{{"backend":"memory"}},"logging":{{"level":"info"}}{}}}"#,
            self.port,
            // The test token server speaks plain HTTP, and portcullis never
            // sends credentials to a plain-HTTP realm of an HTTPS server: a
            // server with token auth is plain HTTP too.
            if self.auth.is_some() {
                ""
            } else {
                r#","tls_key_file":"server.key","tls_cert_file":"server.crt""#
            },
            match &self.auth {
                None => String::new(),
                Some((a, _)) => format!(
                    r#","auth":{{"type":"token","options":{{"realm":"{}","service":"{}","issuer":"{}","rootcertbundle":"{}"}}}}"#,
                    a.realm,
                    a.service,
                    a.issuer,
                    a.rootcertbundle.display()
                ),
            }
        );
        std::fs::write(d.join("server.json"), config).map_err(|e| err!("config: {e}"))?;
        let proc = Watched::spawn(
            "notary-server",
            Command::new("notary-server")
                .current_dir(d)
                .args(["-config", "server.json"]),
        )?;
        self.proc = Some(proc);
        super::wait_until("notary-server listens", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        Ok(())
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    pub fn url(&self) -> String {
        let scheme = if self.auth.is_some() { "http" } else { "https" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA the server's certificate chains to (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    /// A client with a trust directory of its own.
    pub fn client(&self) -> Result<NotaryClient> {
        let dir = tempdir("notary-client-")?;
        std::fs::copy(self.dir.path().join("ca.crt"), dir.path().join("ca.crt"))
            .map_err(|e| err!("ca: {e}"))?;
        let config = format!(
            r#"{{"trust_dir":"trust","remote_server":{{"url":"{}","root_ca":"ca.crt"}}}}"#,
            self.url()
        );
        std::fs::write(dir.path().join("client.json"), config).map_err(|e| err!("{e}"))?;
        Ok(NotaryClient {
            dir,
            creds: self.auth.as_ref().map(|(_, c)| c.clone()),
        })
    }
}

/// The `notary` client with its own trust directory (and so its own keys).
pub struct NotaryClient {
    dir: tempfile::TempDir,
    /// `user:password` for a server with token auth (`NOTARY_AUTH`).
    creds: Option<String>,
}

impl NotaryClient {
    fn notary(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new("notary");
        cmd.current_dir(self.dir.path())
            .args(["-c", "client.json"])
            .args(args);
        for role in ["ROOT", "TARGETS", "SNAPSHOT", "DELEGATION"] {
            cmd.env(format!("NOTARY_{role}_PASSPHRASE"), "test-passphrase");
        }
        if let Some(c) = &self.creds {
            use base64::Engine as _;
            cmd.env(
                "NOTARY_AUTH",
                base64::engine::general_purpose::STANDARD.encode(c),
            );
        }
        match stdin {
            None => Ok(String::from_utf8_lossy(&run(&mut cmd)?.stdout).into_owned()),
            Some(input) => {
                let mut child = cmd
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| err!("notary: {e}"))?;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().map_err(|e| err!("notary: {e}"))?;
                if !out.status.success() {
                    return Err(err!(
                        "notary {args:?} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        }
    }

    /// `notary init GUN` and publish it (root, targets, snapshot; the
    /// server keeps the timestamp key).
    pub fn init(&self, gun: &str) -> Result<()> {
        self.notary(&["init", gun], None)?;
        self.publish(gun)
    }

    /// Sign `tag` for the manifest `raw` (sha256 and length) in `roles`
    /// (the top-level targets when empty), and publish.
    pub fn sign(&self, gun: &str, tag: &str, raw: &[u8], roles: &[&str]) -> Result<()> {
        let hex = super::hex(&sha2::Sha256::digest(raw));
        let len = raw.len().to_string();
        let mut args = vec!["addhash", gun, tag, len.as_str(), "--sha256", hex.as_str()];
        for r in roles {
            args.extend(["--roles", r]);
        }
        self.notary(&args, None)?;
        self.publish(gun)
    }

    pub fn publish(&self, gun: &str) -> Result<()> {
        self.notary(&["publish", gun], None).map(|_| ())
    }

    /// Add the delegation `role` (all paths) with a fresh key this client
    /// holds, and publish.
    pub fn add_delegation(&self, gun: &str, role: &str) -> Result<()> {
        let d = self.dir.path();
        let name = role.replace('/', "_");
        let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
        self_signed(d, &key, &cert, "/CN=releaser")?;
        self.notary(
            &["delegation", "add", gun, role, &cert, "--all-paths"],
            None,
        )?;
        self.publish(gun)?;
        self.notary(&["key", "import", &key, "--role", role], None)?;
        Ok(())
    }

    /// `notary key rotate GUN root`: a new root key, the new root signed by
    /// the old key and the new one.
    pub fn rotate_root(&self, gun: &str) -> Result<()> {
        self.notary(&["key", "rotate", gun, "root"], Some("yes\n"))
            .map(|_| ())
    }

    /// The root.json this client holds for `gun`.
    pub fn root_json(&self, gun: &str) -> Vec<u8> {
        std::fs::read(self.metadata(gun).join("root.json")).unwrap()
    }

    fn metadata(&self, gun: &str) -> PathBuf {
        self.dir.path().join("trust/tuf").join(gun).join("metadata")
    }

    /// The PEM public key of the root role's key in root.json (the docs'
    /// recipe: the certificate's public key).
    pub fn root_public_key_pem(&self, gun: &str) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.root_json(gun)).unwrap();
        let id = v["signed"]["roles"]["root"]["keyids"][0].as_str().unwrap();
        let public = v["signed"]["keys"][id]["keyval"]["public"]
            .as_str()
            .unwrap();
        use base64::Engine as _;
        let cert = base64::engine::general_purpose::STANDARD
            .decode(public)
            .unwrap();
        let d = self.dir.path();
        std::fs::write(d.join("root.crt"), cert).unwrap();
        let out = run(Command::new("openssl")
            .current_dir(d)
            .args(["x509", "-in", "root.crt", "-pubkey", "-noout"]))
        .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }
}

use sha2::Digest as _;

/// A fake Notary server over plain HTTP: serves the files it is given at
/// `/v2/<gun>/_trust/tuf/<role>.json`, 404 for anything else.
pub struct FakeNotary {
    port: u16,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    served: Arc<Mutex<Vec<String>>>,
}

impl FakeNotary {
    pub fn start() -> Result<FakeNotary> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| err!("bind: {e}"))?;
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let served: Arc<Mutex<Vec<String>>> = Arc::default();
        let (all, log) = (files.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (files, log) = (all.clone(), log.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    log.lock().unwrap().push(path.clone());
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                            break;
                        }
                    }
                    let body = files.lock().unwrap().get(&path).cloned();
                    let (status, body) = match body {
                        Some(b) => ("200 OK", b),
                        None => ("404 Not Found", b"{}".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                });
            }
        });
        Ok(FakeNotary {
            port,
            files,
            served,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests for paths ending in `suffix` so far.
    pub fn requests(&self, suffix: &str) -> usize {
        self.served
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ends_with(suffix))
            .count()
    }

    /// Serve `files` (role → bytes) for `gun`, replacing what was served.
    pub fn serve(&self, gun: &str, files: &[(String, Vec<u8>)]) {
        let mut served = self.files.lock().unwrap();
        served.clear();
        for (role, bytes) in files {
            served.insert(format!("/v2/{gun}/_trust/tuf/{role}.json"), bytes.clone());
        }
    }
}

/// Every role file the real server serves for `gun` now (`delegations`
/// named), as the fake serves them.
pub fn snapshot_of(
    server: &NotaryServer,
    gun: &str,
    delegations: &[&str],
) -> Vec<(String, Vec<u8>)> {
    let roles = ["root", "timestamp", "snapshot", "targets"]
        .iter()
        .copied()
        .chain(delegations.iter().copied());
    roles
        .map(|role| {
            let out = run(Command::new("curl").args([
                "-sf",
                "--cacert",
                server.dir.path().join("ca.crt").to_str().unwrap(),
                &format!("{}/v2/{gun}/_trust/tuf/{role}.json", server.url()),
            ]))
            .unwrap();
            (role.to_owned(), out.stdout)
        })
        .collect()
}

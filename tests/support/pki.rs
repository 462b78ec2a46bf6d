//! A throwaway CA made with `openssl`: a server certificate for 127.0.0.1
//! and client certificates with a chosen subject CN, all in one directory.

use super::run;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// `ca.pem`/`ca.key` and a server certificate `leaf.pem`/`leaf.key`
    /// for `IP:127.0.0.1`.
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pki-")
            .tempdir()
            .unwrap();
        let pki = Pki { dir };
        pki.sh(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=portcullis-test-ca -keyout ca.key -out ca.pem 2>&1",
        );
        pki.sh(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
            -keyout leaf.key -out leaf.csr 2>&1",
        );
        pki.sh(
            "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && \
            openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out leaf.pem 2>&1",
        );
        pki
    }

    fn sh(&self, script: &str) {
        run(Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path()))
        .unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// A client certificate `<name>.pem`/`<name>.key` with subject `CN=cn`,
    /// signed by this CA (or, with `foreign`, by a CA of its own).
    pub fn client(&self, name: &str, cn: &str, foreign: bool) -> (PathBuf, PathBuf) {
        let ca = if foreign {
            self.sh(&format!(
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                -subj /CN=other-ca -keyout {name}-ca.key -out {name}-ca.pem 2>&1"
            ));
            format!("{name}-ca")
        } else {
            "ca".to_owned()
        };
        self.sh(&format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={cn} \
            -keyout {name}.key -out {name}.csr 2>&1 && \
            printf 'extendedKeyUsage=clientAuth\\n' > {name}.cnf && \
            openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 \
            -extfile {name}.cnf -out {name}.pem 2>&1"
        ));
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }
}

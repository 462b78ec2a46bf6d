//! A layout as one `.tar` file: packed from a layout directory with every
//! file streamed from disk (never all in memory), unpacked into a directory
//! accepting only what a layout holds. An archive is not trusted: only
//! regular files named `oci-layout`, `index.json`, `portcullis.json` or
//! `blobs/<alg>/<hex>` are written (nothing absolute, no `..`, no links),
//! and [`super::import`] checks every object afterwards. Blocking I/O:
//! call from a blocking thread.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Component, Path};

use super::layout::{EXTRA, INDEX, OCI_LAYOUT};

/// Is `path` (inside an archive) a file a layout may hold?
fn allowed(path: &Path) -> bool {
    let parts: Vec<&str> = path
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().unwrap_or("/"),
            _ => "/",
        })
        .collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [name] => [OCI_LAYOUT, INDEX, EXTRA].contains(name),
        ["blobs", "sha256", h] => hex(h, 64),
        ["blobs", "sha512", h] => hex(h, 128),
        _ => false,
    }
}

/// Pack the layout directory `dir` into `out` (written to a temporary
/// name, then renamed).
pub fn pack(dir: &Path, out: &Path) -> std::io::Result<()> {
    let tmp = out.with_extension("tar.partial");
    let result = (|| {
        let mut builder = tar::Builder::new(BufWriter::new(File::create(&tmp)?));
        builder.mode(tar::HeaderMode::Deterministic);
        for name in [OCI_LAYOUT, INDEX, EXTRA] {
            builder.append_path_with_name(dir.join(name), name)?;
        }
        for alg in ["sha256", "sha512"] {
            let blobs = dir.join("blobs").join(alg);
            let Ok(entries) = std::fs::read_dir(&blobs) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| allowed(&Path::new("blobs").join(alg).join(n)))
                .collect();
            names.sort();
            for n in names {
                builder.append_path_with_name(blobs.join(&n), format!("blobs/{alg}/{n}"))?;
            }
        }
        let mut w = builder.into_inner()?;
        w.flush()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match result {
        Ok(()) => std::fs::rename(&tmp, out),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Unpack the layout archive `tar` into the directory `dst` (created).
pub fn unpack(tar: &Path, dst: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dst.join("blobs").join("sha256"))
        .and_then(|()| std::fs::create_dir_all(dst.join("blobs").join("sha512")))
        .map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
    let file = File::open(tar).map_err(|e| format!("cannot open {}: {e}", tar.display()))?;
    let mut archive = tar::Archive::new(file);
    let entries = archive
        .entries()
        .map_err(|e| format!("{} is not a tar archive: {e}", tar.display()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("{}: a damaged entry: {e}", tar.display()))?;
        let path = entry
            .path()
            .map_err(|e| format!("{}: an entry with a bad name: {e}", tar.display()))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() || !allowed(&path) {
            return Err(format!(
                "{}: {} is not a file an image layout holds",
                tar.display(),
                path.display()
            ));
        }
        let mut out = File::create(dst.join(&path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        std::io::copy(&mut entry, &mut out)
            .map_err(|e| format!("{}: reading {} failed: {e}", tar.display(), path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_layout_files_are_allowed() {
        let h = "a".repeat(64);
        for ok in [
            "oci-layout",
            "index.json",
            "portcullis.json",
            &format!("blobs/sha256/{h}"),
        ] {
            assert!(allowed(Path::new(ok)), "{ok}");
        }
        for bad in [
            "../index.json",
            "/index.json",
            "blobs/sha256/../../x",
            "blobs/sha256/abc",
            &format!("blobs/md5/{h}"),
            &format!("x/blobs/sha256/{h}"),
            "other.json",
        ] {
            assert!(!allowed(Path::new(bad)), "{bad}");
        }
    }
}

//! A TCP proxy on 127.0.0.1 that cuts one connection mid-response: the
//! fault of a network dropping a download, which no real registry produces
//! on demand. Every byte passes through unchanged until the first connection
//! has carried `cut_after` bytes towards the client; that connection is then
//! shut down in both directions. Later connections pass untouched.

use super::{Result, err};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A running proxy; stops accepting on drop.
pub struct CutProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl CutProxy {
    /// Proxy to `target` (`127.0.0.1:PORT`).
    pub fn start(target: &str, cut_after: usize) -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| err!("cut proxy bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| err!("cut proxy addr: {e}"))?
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (target, stop2, cuts2) = (target.to_owned(), stop.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(&target)) else {
                    continue;
                };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                std::thread::spawn(move || pump(c2, s2, None));
                let cuts = cuts2.clone();
                std::thread::spawn(move || pump(server, client, Some((cut_after, cuts))));
            }
        });
        Ok(CutProxy { addr, stop, cuts })
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// How many connections were cut (0 or 1).
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Copy `from` → `to`. With `cut`, shut both down once `cut.0` bytes have
/// passed, if no connection was cut before.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: Option<(usize, Arc<AtomicUsize>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut passed = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((limit, cuts)) = &cut
            && passed + n > *limit
            && cuts
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let _ = to.write_all(&buf[..limit - passed]);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
        passed += n;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

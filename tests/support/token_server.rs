//! A tiny token server for distribution's `auth.token` (the Docker registry
//! v2 token flow): `GET /token?service=S&scope=repository:NAME:pull,push`
//! with HTTP Basic credentials (or the OAuth2 `POST /token` password grant)
//! answers `{"token": JWT, "access_token": JWT, "expires_in": N}`.
//! JWTs are ES256, with the self-signed certificate in the header's `x5c`;
//! key and certificate are made with the `openssl` CLI.
//!
//! The server runs on its own thread with its own tokio runtime, so it keeps
//! answering while a test thread blocks (e.g. in `skopeo`), from `#[test]`
//! and `#[tokio::test]` alike.

use super::registry::TokenAuth;
use super::{Result, err, run};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Settings of a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenServerOptions {
    /// The one valid user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Whether requests without credentials get a token (pull access only).
    pub allow_anonymous: bool,
    /// `service` / JWT `aud`.
    pub service: String,
    /// JWT `iss`.
    pub issuer: String,
    /// Token lifetime (`exp - iat`, `expires_in`), seconds.
    pub ttl_secs: u64,
}

impl Default for TokenServerOptions {
    fn default() -> Self {
        TokenServerOptions {
            username: "testuser".into(),
            password: "testpass".into(),
            allow_anonymous: false,
            service: "portcullis-upstream".into(),
            issuer: "portcullis-test-issuer".into(),
            ttl_secs: 300,
        }
    }
}

/// One request the token server answered.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Basic (or form) user name sent, if any.
    pub user: Option<String>,
    /// Whether the credentials were valid.
    pub authenticated: bool,
    /// Requested scopes, e.g. `repository:ns/repo:pull`.
    pub scopes: Vec<String>,
    /// The HTTP status answered (200 or 401).
    pub status: u16,
}

struct State {
    opts: Mutex<TokenServerOptions>,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    x5c: String,
    log: Mutex<Vec<TokenRequest>>,
}

/// A running token server on 127.0.0.1. Drop stops it.
pub struct TokenServer {
    port: u16,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl TokenServer {
    /// Generates a P-256 key and self-signed certificate with `openssl`,
    /// binds 127.0.0.1:0 and starts serving. Ready on return.
    pub fn start(opts: TokenServerOptions) -> Result<TokenServer> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-token-")
            .tempdir();
        let dir = dir.map_err(|e| err!("creating token tempdir: {e}"))?;
        let p = |n: &str| dir.path().join(n);
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(p("key.pem")))?;
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(p("key.pem"))
            .arg("-out")
            .arg(p("key.der")))?;
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-new",
                "-subj",
                "/CN=portcullis-test-token-issuer",
                "-days",
                "3650",
                "-key",
            ])
            .arg(p("key.pem"))
            .arg("-out")
            .arg(p("cert.pem")))?;
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(p("cert.pem"))
            .arg("-out")
            .arg(p("cert.der")))?;
        let read = |n: &str| std::fs::read(p(n)).map_err(|e| err!("reading {n}: {e}"));
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &read("key.der")?, &rng)
                .map_err(|e| err!("ring rejected the openssl key: {e}"))?;
        let state = Arc::new(State {
            opts: Mutex::new(opts),
            key,
            rng,
            x5c: STANDARD.encode(read("cert.der")?),
            log: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| err!("token server bind: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err!("token server nonblocking: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| err!("token server addr: {e}"))?
            .port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let rt = rt.map_err(|e| err!("token server runtime: {e}"))?;
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("token-server".into())
            .spawn(move || rt.block_on(serve(listener, st, rx)))
            .map_err(|e| err!("token server thread: {e}"))?;
        Ok(TokenServer {
            port,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
            dir,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The realm: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("{}/token", self.url())
    }

    /// The service name (JWT `aud`).
    pub fn service(&self) -> String {
        self.state.opts.lock().unwrap().service.clone()
    }

    /// The issuer (JWT `iss`).
    pub fn issuer(&self) -> String {
        self.state.opts.lock().unwrap().issuer.clone()
    }

    /// The signing certificate (PEM): the registry's `rootcertbundle`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// `auth.token` settings for a registry that trusts this server.
    pub fn registry_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm(),
            service: self.service(),
            issuer: self.issuer(),
            rootcertbundle: self.cert_path(),
        }
    }

    /// Valid credentials as `user:password` (for `--dest-creds`/`--src-creds`).
    pub fn creds(&self) -> String {
        let o = self.state.opts.lock().unwrap();
        format!("{}:{}", o.username, o.password)
    }

    /// Changes the valid credentials (e.g. to simulate a rotated password).
    pub fn set_credentials(&self, username: &str, password: &str) {
        let mut o = self.state.opts.lock().unwrap();
        o.username = username.into();
        o.password = password.into();
    }

    /// Switches anonymous (pull-only) tokens on or off.
    pub fn set_allow_anonymous(&self, allow: bool) {
        self.state.opts.lock().unwrap().allow_anonymous = allow;
    }

    /// Every token request answered so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().unwrap().clone()
    }

    /// Number of token requests answered so far.
    pub fn request_count(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }

    /// Number of token requests that carried valid credentials.
    pub fn authenticated_count(&self) -> usize {
        self.state
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.authenticated)
            .count()
    }

    /// Mints a token for `sub` granting `scopes` (`type:name:actions`)
    /// exactly as requested, without an HTTP round trip.
    pub fn issue_token(&self, sub: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        sign_token(&self.state, sub, &scopes, true)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("token server listener");
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
        };
        let st = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&st, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let mut params = parse_query(req.uri().query().unwrap_or(""));
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let decoded = STANDARD.decode(v.strip_prefix("Basic ")?.trim()).ok()?;
            let s = String::from_utf8(decoded).ok()?;
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let mut creds = basic;
    if method == "POST" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let form = parse_query(&String::from_utf8_lossy(&body));
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(u), Some(p)) = (get("username"), get("password")) {
            creds = Some((u, p));
        }
        params.extend(form);
    }
    // Scopes may come as several params, each possibly space-separated.
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let (authenticated, allow_anonymous, ttl) = {
        let o = st.opts.lock().unwrap();
        let ok = creds
            .as_ref()
            .is_some_and(|(u, p)| *u == o.username && *p == o.password);
        (ok, o.allow_anonymous, o.ttl_secs)
    };
    let user = creds.as_ref().map(|(u, _)| u.clone());
    let granted = authenticated || (creds.is_none() && allow_anonymous);
    st.log.lock().unwrap().push(TokenRequest {
        method,
        user: user.clone(),
        authenticated,
        scopes: scopes.clone(),
        status: if granted { 200 } else { 401 },
    });
    if !granted {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"portcullis-test-token\"")
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
    }
    let token = sign_token(st, user.as_deref().unwrap_or(""), &scopes, authenticated);
    let body = json!({"token": token, "access_token": token, "expires_in": ttl});
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Signs a JWT granting `scopes`; anonymous callers get only `pull`.
fn sign_token(st: &State, sub: &str, scopes: &[String], authenticated: bool) -> String {
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| authenticated || *a == "pull")
                .collect();
            Some(json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let o = st.opts.lock().unwrap().clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut jti = [0u8; 16];
    st.rng.fill(&mut jti).expect("random jti");
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [st.x5c]});
    let claims = json!({
        "iss": o.issuer, "sub": sub, "aud": o.service,
        "exp": now + o.ttl_secs, "nbf": now.saturating_sub(10), "iat": now,
        "jti": super::hex(&jti), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = st
        .key
        .sign(&st.rng, signing_input.as_bytes())
        .expect("ES256 signing");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Parses `a=b&c=d` with percent- and `+`-decoding.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! The listeners: accepting connections, TLS, HTTP/1.1 and h2, graceful
//! shutdown, and assembling the request path.
//!
//! Owns start-up order (upstream clients, cache open and reconcile, then
//! bind), the tower stack around the application (access log, panic
//! isolation), the connection cap (`max_connections`: over it, health
//! checks are still answered and everything else gets 503), the connection
//! itself ([`conn`]: timeouts from accept, protocol), and draining on shutdown: `/readyz` turns 503, the listener
//! closes, in-flight requests get a grace period, access times are flushed.
//! This module must not interpret requests.

pub mod access_log;
mod conn;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{App, Body};
use crate::cache::{Cache, CacheError};
use crate::clock::Clock;
use crate::config::Config;
use crate::gate::Gate;
use crate::metrics::Metrics;
use crate::router::Router;
use crate::upstream::{UpstreamError, Upstreams};
use access_log::AccessLogLayer;

/// Connections answered while the main listener is over `max_connections`
/// (health checks are served; anything else gets 503), at most.
const OVERFLOW_CONNECTIONS: usize = 64;
/// How long an over-the-cap connection has to say what it wants.
const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin listener connections at once.
const ADMIN_CONNECTIONS: usize = 64;
/// At most one log line per this long about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot set up upstream clients")]
    Upstream(#[source] UpstreamError),
    #[error("cannot open the cache")]
    Cache(#[source] CacheError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS certificate or key")]
    Tls(#[source] rustls::Error),
    #[error("invalid policy")]
    Policy(#[source] crate::policy::PolicyError),
    #[error("cannot set up client authentication")]
    Auth(#[source] crate::auth::SetupError),
    #[error("a start-up task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Which connections a service answers.
#[derive(Clone, Copy)]
enum Kind {
    /// The main listener: everything.
    Main,
    /// The admin listener: health and metrics; and, for callers on the
    /// loopback, `POST /admin/import`.
    Admin { local: bool },
    /// Main-listener connections over `max_connections`: health checks, and
    /// 503 for the rest.
    Overflow,
}

/// The application as a tower service.
#[derive(Clone)]
struct AppService {
    app: Arc<App>,
    kind: Kind,
}

impl Service<Request<Incoming>> for AppService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (app, kind) = (self.app.clone(), self.kind);
        Box::pin(async move {
            Ok(match kind {
                Kind::Main => app.handle(req).await,
                Kind::Admin { local } => app.handle_admin(req, local).await,
                Kind::Overflow => app.handle_overflow(req).await,
            })
        })
    }
}

/// A server with its sockets bound, not yet serving.
pub struct Bound {
    app: Arc<App>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    /// How long in-flight requests may run after shutdown begins.
    grace: Duration,
    header_read_timeout: Duration,
    max_connections: usize,
}

/// Open the cache, build upstream clients and bind the listeners.
pub async fn bind(config: &Config) -> Result<Bound, ServerError> {
    bind_with(config, Clock::system()).await
}

/// [`bind`], deciding by `clock` (a manual clock drives time in tests).
pub async fn bind_with(config: &Config, clock: Clock) -> Result<Bound, ServerError> {
    let metrics = Metrics::new();
    let upstreams =
        Upstreams::new(&config.upstreams, &metrics, &clock).map_err(ServerError::Upstream)?;
    let cache = Cache::open(config, upstreams, metrics.clone(), clock.clone())
        .await
        .map_err(ServerError::Cache)?;
    let router = Arc::new(Router::new(&config.upstreams));
    let gate = match &config.policy {
        None => None,
        Some(path) => {
            let policy = crate::policy::Policy::load(path, &config.upstreams)
                .map_err(ServerError::Policy)?;
            tracing::info!(
                policy = %path.display(),
                fingerprint = %policy.fingerprint,
                rules = policy.rules.len(),
                "policy loaded"
            );
            let gate = Arc::new(
                Gate::over_cache(
                    policy,
                    path,
                    config,
                    &cache,
                    router.clone(),
                    metrics.clone(),
                    clock.clone(),
                )
                .await,
            );
            crate::gate::spawn_reloader(gate.clone());
            Some(gate)
        }
    };
    let auth = match &config.auth {
        None => {
            warn_if_open(config);
            None
        }
        Some(cfg) => {
            let (cfg, upstreams, tls, m, c) = (
                cfg.clone(),
                config.upstreams.clone(),
                config.tls.is_some(),
                metrics.clone(),
                clock.clone(),
            );
            let auth = tokio::task::spawn_blocking(move || {
                crate::auth::Auth::new(&cfg, &upstreams, tls, m, c)
            })
            .await
            .map_err(ServerError::Task)?
            .map_err(ServerError::Auth)?;
            auth.spawn_reloader();
            tracing::info!(
                users = auth.users(),
                client_certificates = !cfg_client_ca(config).is_empty(),
                "client authentication on"
            );
            Some(Arc::new(auth))
        }
    };
    let app = Arc::new(App::new(router, cache, gate, auth, metrics));
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::acceptor(t, cfg_client_ca(config)))
        .transpose()
        .map_err(ServerError::Tls)?;
    let listen = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })
    };
    let listener = listen(config.listen).await?;
    let admin = match config.admin_listen {
        Some(a) => Some(listen(a).await?),
        None => None,
    };
    Ok(Bound {
        app,
        listener,
        admin,
        tls,
        grace: config.shutdown_grace,
        header_read_timeout: config.header_read_timeout,
        max_connections: config
            .max_connections
            .unwrap_or_else(conn::default_max_connections),
    })
}

fn cfg_client_ca(config: &Config) -> &[rustls::pki_types::CertificateDer<'static>] {
    config.auth.as_ref().map_or(&[], |a| a.client_ca.as_slice())
}

/// Without `[auth]`, anyone who reaches the port pulls with the upstreams'
/// credentials: the upstreams to name when that is more than this machine.
fn open_to_others(config: &Config) -> Option<Vec<String>> {
    let private: Vec<String> = config
        .upstreams
        .iter()
        .filter(|u| u.credentials.is_some())
        .map(|u| u.name.to_string())
        .collect();
    (config.auth.is_none() && !config.listen.ip().is_loopback() && !private.is_empty())
        .then_some(private)
}

fn warn_if_open(config: &Config) {
    if let Some(private) = open_to_others(config) {
        tracing::warn!(
            listen = %config.listen,
            upstreams = %private.join(","),
            "no [auth]: every client that reaches this address pulls with these upstreams' credentials; add [auth] (docs/auth.md)"
        );
    }
}

impl Bound {
    /// The address of the main listener (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `shutdown` resolves, then drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Bound {
            app,
            listener,
            admin,
            tls,
            grace,
            header_read_timeout,
            max_connections,
        } = self;
        let stack = |kind: Kind| {
            TowerToHyperService::new(
                ServiceBuilder::new()
                    .layer(AccessLogLayer::new(app.metrics().clone()))
                    .layer(CatchPanicLayer::new())
                    .service(AppService {
                        app: app.clone(),
                        kind,
                    }),
            )
        };
        let (main_service, overflow_service) = (stack(Kind::Main), stack(Kind::Overflow));
        let (admin_local, admin_remote) = (
            stack(Kind::Admin { local: true }),
            stack(Kind::Admin { local: false }),
        );
        let limits = conn::Limits {
            header_read_timeout,
            keep_alive: true,
        };
        let overflow_limits = conn::Limits {
            header_read_timeout: OVERFLOW_TIMEOUT.min(header_read_timeout),
            keep_alive: false,
        };
        let slots = Arc::new(Semaphore::new(max_connections));
        let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
        let admin_slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
        let mut last_refusal_log: Option<tokio::time::Instant> = None;
        let graceful = GracefulShutdown::new();
        tracing::info!(
            addr = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            tls = tls.is_some(),
            offline = app.cache().is_offline(),
            max_connections,
            "listening"
        );
        if let Some(admin) = &admin {
            tracing::info!(addr = %admin.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "admin listening");
        }
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a.map(|(s, _)| (s, None)),
                a = accept_opt(admin.as_ref()) => a.map(|(s, peer)| (s, Some(peer))),
                () = &mut shutdown => break,
            };
            let (stream, admin_peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let watcher = graceful.watcher();
            if let Some(peer) = admin_peer {
                let Ok(slot) = admin_slots.clone().try_acquire_owned() else {
                    continue;
                };
                let service = if peer.ip().is_loopback() {
                    admin_local.clone()
                } else {
                    admin_remote.clone()
                };
                tokio::spawn(async move {
                    conn::serve(stream, None, service, limits, watcher).await;
                    drop(slot);
                });
                continue;
            }
            let tls = tls.clone();
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let service = main_service.clone();
                    let open = app.metrics().connection();
                    tokio::spawn(async move {
                        conn::serve(stream, tls, service, limits, watcher).await;
                        drop((slot, open));
                    });
                }
                Err(_) => {
                    app.metrics().connection_refused();
                    let now = tokio::time::Instant::now();
                    if last_refusal_log.is_none_or(|t| now >= t + REFUSAL_LOG_EVERY) {
                        last_refusal_log = Some(now);
                        tracing::warn!(
                            max_connections,
                            "max_connections reached: new connections get 503 (health checks are still answered) until others close"
                        );
                    }
                    // A few are answered (health checks served, the rest 503);
                    // beyond that they are closed at once.
                    let Ok(slot) = overflow.clone().try_acquire_owned() else {
                        continue;
                    };
                    let service = overflow_service.clone();
                    tokio::spawn(async move {
                        conn::serve(stream, tls, service, overflow_limits, watcher).await;
                        drop(slot);
                    });
                }
            }
        }
        app.start_draining();
        let deadline = tokio::time::Instant::now() + grace;
        drop(listener);
        drop(admin);
        tracing::info!(
            connections = graceful.count(),
            grace_s = grace.as_secs_f64(),
            "shutting down: stopped accepting, draining connections"
        );
        if tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown_grace is over; closing the remaining connections");
        }
        // A fill may still be publishing bytes its clients have already
        // received, or downloading for clients that hung up.
        if tokio::time::timeout_at(deadline, app.cache().fills_settled())
            .await
            .is_err()
        {
            tracing::warn!("shutdown_grace is over; cutting the remaining blob fills");
        }
        app.cache().close().await;
        tracing::info!("stopped");
    }
}

async fn accept_opt(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed
/// when this is called, not when the future is first polled: a SIGTERM that
/// arrives just after "listening" is logged must still shut down cleanly,
/// not kill the process. Call from within the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_mirror_with_private_credentials_is_flagged_off_the_loopback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "secret\n").unwrap();
        std::fs::write(
            dir.path().join("htpasswd"),
            "alice:$2y$04$Vw6bm6n4xOUaQy0i1W2nEOJ1F2fq3i7n8m1c8b3m4i0y4cC6JgYtS\n",
        )
        .unwrap();
        let config = |listen: &str, auth: &str| {
            let text = format!(
                "listen = \"{listen}\"\n[[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io\"\nusername = \"bot\"\npassword_file = \"pw\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n{auth}"
            );
            Config::parse(&text, "test", dir.path()).unwrap()
        };
        assert_eq!(
            open_to_others(&config("0.0.0.0:5000", "")),
            Some(vec!["ghcr.io".to_owned()])
        );
        assert_eq!(open_to_others(&config("127.0.0.1:5000", "")), None);
        let auth = "[auth]\nhtpasswd = \"htpasswd\"\n";
        assert_eq!(open_to_others(&config("0.0.0.0:5000", auth)), None);
    }
}

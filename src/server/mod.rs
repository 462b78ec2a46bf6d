//! The listeners: accepting connections, TLS, HTTP/1.1 and h2, graceful
//! shutdown, and assembling the request path.
//!
//! Owns start-up order (upstream clients, cache open and reconcile, then
//! bind), the tower stack around the application (access log, panic
//! isolation), connection-level limits (TLS handshake and header read
//! timeouts), and draining on shutdown: `/readyz` turns 503, the listener
//! closes, in-flight requests get a grace period, access times are flushed.
//! This module must not interpret requests.

pub mod access_log;
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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{App, Body};
use crate::cache::{Cache, CacheError};
use crate::clock::Clock;
use crate::config::Config;
use crate::gate::{Gate, GateParts};
use crate::metrics::Metrics;
use crate::router::Router;
use crate::upstream::{UpstreamError, Upstreams};
use access_log::AccessLogLayer;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
}

/// The application as a tower service. On the admin listener only health
/// and metrics are answered.
#[derive(Clone)]
struct AppService {
    app: Arc<App>,
    admin: bool,
}

impl Service<Request<Incoming>> for AppService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (app, admin) = (self.app.clone(), self.admin);
        Box::pin(async move {
            Ok(if admin {
                app.handle_admin(req).await
            } else {
                app.handle(req).await
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
            // The build's identity keys verdicts; it reads the executable.
            let _ = tokio::task::spawn_blocking(crate::gate::build_id).await;
            let gate = Arc::new(Gate::new(GateParts {
                policy,
                policy_path: path.clone(),
                upstreams: config.upstreams.clone(),
                source: Arc::new(cache.clone()),
                verdicts: Arc::new(cache.clone()),
                router: router.clone(),
                metrics: metrics.clone(),
                clock: clock.clone(),
            }));
            crate::gate::spawn_reloader(gate.clone());
            Some(gate)
        }
    };
    let app = Arc::new(App::new(router, cache, gate, metrics));
    let tls = config
        .tls
        .as_ref()
        .map(tls::acceptor)
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
    })
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
        } = self;
        let stack = |admin: bool| {
            TowerToHyperService::new(
                ServiceBuilder::new()
                    .layer(AccessLogLayer::new(app.metrics().clone()))
                    .layer(CatchPanicLayer::new())
                    .service(AppService {
                        app: app.clone(),
                        admin,
                    }),
            )
        };
        let (main_service, admin_service) = (stack(false), stack(true));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        tracing::info!(
            addr = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            tls = tls.is_some(),
            offline = app.cache().is_offline(),
            "listening"
        );
        if let Some(admin) = &admin {
            tracing::info!(addr = %admin.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "admin listening");
        }
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a.map(|(s, _)| (s, tls.clone(), main_service.clone())),
                a = accept_opt(admin.as_ref()) => a.map(|s| (s, None, admin_service.clone())),
                () = &mut shutdown => break,
            };
            let (stream, tls, service) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (builder, watcher) = (builder.clone(), graceful.watcher());
            tokio::spawn(async move {
                match tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                        else {
                            return;
                        };
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                }
            });
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

async fn accept_opt(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

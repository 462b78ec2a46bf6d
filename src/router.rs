//! Turns a request line into a [`Route`]: which endpoint, which upstream, which
//! repository.
//!
//! Owns the URL layout of the pull API, the three ways a client names the
//! registry (containerd's `?ns=`, a first path segment naming an upstream for
//! podman/CRI-O mirrors, nothing at all for Docker's `registry-mirrors`), and
//! Docker Hub's `library/` rule. Every name is validated by
//! [`crate::reference`] before it leaves this module, and nothing is decoded
//! from the path: a percent-escape in a name fails the grammar. This module
//! must not perform I/O or know how content is fetched.

use std::collections::HashMap;
use std::fmt;

use http::{Method, Uri};

use crate::config::UpstreamConfig;
use crate::digest::{Digest, DigestError};
use crate::reference::{NameError, Reference, RegistryHost, RepoName, Tag};

/// Index of an upstream in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamId(pub usize);

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    /// `GET /v2/`
    ApiBase,
    /// `GET /token`: the token endpoint of `[auth]`.
    Token,
    Manifest(Reference),
    Blob(Digest),
    TagsList,
    Referrers(Digest),
}

/// The repository a request is about, resolved to an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub upstream: UpstreamId,
    /// The upstream's canonical registry name, e.g. `docker.io`.
    pub registry: RegistryHost,
    /// The repository on that upstream, normalized (`library/alpine`).
    pub repo: RepoName,
    /// The name as it appeared in the client's path (for `Link` headers and
    /// the `name` field of tag lists).
    pub client_name: String,
    /// The `ns` query value the client sent, echoed as `OCI-Namespace`.
    pub ns: Option<RegistryHost>,
}

impl Target {
    /// The normalized reference, e.g. `docker.io/library/alpine`: what policy
    /// patterns are matched against.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }
}

/// Query parameters the pull API uses, decoded and bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `n` for tag listing.
    pub n: Option<usize>,
    /// `last` for tag listing.
    pub last: Option<Tag>,
    /// `artifactType` filter for referrers.
    pub artifact_type: Option<String>,
}

/// A routed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    /// `None` for endpoints that are not about a repository.
    pub target: Option<Target>,
    pub query: Query,
}

/// Why a request could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint")]
    NotFound,
    #[error("method {0} is not supported: portcullis is a read-only mirror")]
    MethodNotAllowed(Method),
    #[error("pushing is not supported: portcullis is a read-only mirror")]
    Upload,
    #[error("invalid repository name")]
    BadName(#[source] NameError),
    #[error("invalid tag")]
    BadTag(#[source] NameError),
    #[error("invalid digest")]
    BadDigest(#[source] DigestError),
    #[error("invalid ns parameter")]
    BadNamespace(#[source] NameError),
    #[error("invalid query parameter {0}")]
    BadQuery(&'static str),
    #[error("registry {0} is not configured on this mirror")]
    UnknownRegistry(String),
    #[error(
        "no default upstream is configured: name the registry with ?ns= or as the first path segment"
    )]
    NoDefault,
}

struct UpstreamEntry {
    registry: RegistryHost,
    docker_hub: bool,
}

/// Maps registry names to upstreams. Built once from the configuration.
pub struct Router {
    by_name: HashMap<RegistryHost, UpstreamId>,
    upstreams: Vec<UpstreamEntry>,
    default: Option<UpstreamId>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Longest query value accepted before decoding.
const MAX_QUERY_VALUE: usize = 1024;

impl Router {
    pub fn new(upstreams: &[UpstreamConfig]) -> Router {
        let mut by_name = HashMap::new();
        let mut entries = Vec::new();
        let mut default = None;
        for (i, u) in upstreams.iter().enumerate() {
            let id = UpstreamId(i);
            for name in std::iter::once(&u.name).chain(&u.aliases) {
                by_name.insert(name.clone(), id);
            }
            if u.default {
                default = Some(id);
            }
            entries.push(UpstreamEntry {
                registry: u.name.clone(),
                docker_hub: u.is_docker_hub(),
            });
        }
        Router {
            by_name,
            upstreams: entries,
            default,
        }
    }

    /// Route a request.
    pub fn route(&self, method: &Method, uri: &Uri) -> Result<Route, RouteError> {
        let path = uri.path();
        let query = uri.query().unwrap_or("");
        let read_only = |m: &Method| {
            if m == Method::GET || m == Method::HEAD {
                Ok(())
            } else {
                Err(RouteError::MethodNotAllowed(m.clone()))
            }
        };
        let simple = |endpoint| {
            read_only(method)?;
            Ok(Route {
                endpoint,
                target: None,
                query: Query::default(),
            })
        };
        match path {
            "/healthz" => return simple(Endpoint::Healthz),
            "/readyz" => return simple(Endpoint::Readyz),
            "/metrics" => return simple(Endpoint::Metrics),
            "/v2" | "/v2/" => return simple(Endpoint::ApiBase),
            // Clients try OAuth2's POST first and take 404 as "use GET".
            "/token" if method == Method::POST => return Err(RouteError::NotFound),
            "/token" => return simple(Endpoint::Token),
            _ => {}
        }
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.windows(2).any(|w| w == ["blobs", "uploads"]) {
            return Err(RouteError::Upload);
        }
        let n = segments.len();
        if n < 3 {
            return Err(RouteError::NotFound);
        }
        let (name, endpoint) = match (segments[n - 2], segments[n - 1]) {
            ("tags", "list") => (&segments[..n - 2], Endpoint::TagsList),
            ("manifests", r) => {
                let reference = match r.parse::<Reference>() {
                    Ok(r) => r,
                    Err(NameError::BadReference(e)) => return Err(RouteError::BadDigest(e)),
                    Err(e) => return Err(RouteError::BadTag(e)),
                };
                (&segments[..n - 2], Endpoint::Manifest(reference))
            }
            ("blobs", d) => (
                &segments[..n - 2],
                Endpoint::Blob(d.parse().map_err(RouteError::BadDigest)?),
            ),
            ("referrers", d) => (
                &segments[..n - 2],
                Endpoint::Referrers(d.parse().map_err(RouteError::BadDigest)?),
            ),
            _ => return Err(RouteError::NotFound),
        };
        read_only(method)?;
        let params = parse_query(query)?;
        let target = self.resolve(name, params.ns)?;
        Ok(Route {
            endpoint,
            target: Some(target),
            query: params.query,
        })
    }

    /// Resolve an image reference as people write it (`alpine`,
    /// `ghcr.io/acme/app:v1`, `registry.test/x@sha256:...`) the way
    /// Docker does: a first component with `.` or `:` (or `localhost`) is the
    /// registry, which must be configured; otherwise the default upstream.
    pub fn resolve_image(&self, image: &str) -> Result<(Target, Option<Reference>), RouteError> {
        let (name, reference) = match image.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Reference::Digest(d.parse().map_err(RouteError::BadDigest)?)),
            ),
            None => match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                Some((n, t)) => (
                    n,
                    Some(Reference::Tag(t.parse().map_err(RouteError::BadTag)?)),
                ),
                None => (image, None),
            },
        };
        let segments: Vec<&str> = name.split('/').collect();
        Ok((self.resolve(&segments, None)?, reference))
    }

    /// Choose the upstream and the upstream-side repository name.
    fn resolve(&self, name: &[&str], ns: Option<RegistryHost>) -> Result<Target, RouteError> {
        let client_name = name.join("/");
        let first_host = name.first().and_then(|f| f.parse::<RegistryHost>().ok());
        // Every name is validated against the grammar before it is used.
        let (id, repo): (UpstreamId, RepoName) = if let Some(ns) = &ns {
            let id = *self
                .by_name
                .get(ns)
                .ok_or_else(|| RouteError::UnknownRegistry(ns.to_string()))?;
            (id, client_name.parse().map_err(RouteError::BadName)?)
        } else if let (Some(host), true) = (&first_host, name.len() > 1) {
            match self.by_name.get(host) {
                Some(id) => (
                    *id,
                    name[1..].join("/").parse().map_err(RouteError::BadName)?,
                ),
                // Docker's rule: a first component with '.' or ':' or
                // `localhost` names a registry. One we do not know is
                // refused, never guessed.
                None if looks_like_registry(host.as_str()) => {
                    return Err(RouteError::UnknownRegistry(host.to_string()));
                }
                None => (
                    self.default.ok_or(RouteError::NoDefault)?,
                    client_name.parse().map_err(RouteError::BadName)?,
                ),
            }
        } else {
            (
                self.default.ok_or(RouteError::NoDefault)?,
                client_name.parse().map_err(RouteError::BadName)?,
            )
        };
        let entry = &self.upstreams[id.0];
        let repo = if entry.docker_hub && !repo.as_str().contains('/') {
            repo.with_prefix("library").map_err(RouteError::BadName)?
        } else {
            repo
        };
        Ok(Target {
            upstream: id,
            registry: entry.registry.clone(),
            repo,
            client_name,
            ns,
        })
    }
}

fn looks_like_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

struct Params {
    ns: Option<RegistryHost>,
    query: Query,
}

fn parse_query(query: &str) -> Result<Params, RouteError> {
    let mut ns = None;
    let mut q = Query::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let known = matches!(k, "ns" | "n" | "last" | "artifactType");
        if !known {
            continue;
        }
        let name: &'static str = match k {
            "ns" => "ns",
            "n" => "n",
            "last" => "last",
            _ => "artifactType",
        };
        if v.len() > MAX_QUERY_VALUE {
            return Err(RouteError::BadQuery(name));
        }
        let v = percent_decode(v).ok_or(RouteError::BadQuery(name))?;
        // The first occurrence wins, as in Go's url.Values.Get.
        match name {
            "ns" if ns.is_none() => {
                ns = Some(v.parse().map_err(RouteError::BadNamespace)?);
            }
            "n" if q.n.is_none() => {
                let n: usize = v.parse().map_err(|_| RouteError::BadQuery("n"))?;
                q.n = Some(n);
            }
            "last" if q.last.is_none() => {
                q.last = Some(v.parse().map_err(|_| RouteError::BadQuery("last"))?);
            }
            "artifactType" if q.artifact_type.is_none() => {
                let ok = !v.is_empty()
                    && v.len() <= 255
                    && v.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
                if !ok {
                    return Err(RouteError::BadQuery("artifactType"));
                }
                q.artifact_type = Some(v);
            }
            _ => {}
        }
    }
    Ok(Params { ns, query: q })
}

/// Decode `application/x-www-form-urlencoded` text; `None` if malformed or not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn router() -> Router {
        let c = Config::parse(
            r#"
            [[upstream]]
            name = "docker.io"
            url = "https://registry-1.docker.io"
            aliases = ["index.docker.io", "registry-1.docker.io"]
            default = true
            [[upstream]]
            name = "ghcr.io"
            url = "https://ghcr.io"
            [[upstream]]
            name = "127.0.0.1:5001"
            url = "http://127.0.0.1:5001"
            "#,
            "t",
            Path::new("/"),
        )
        .unwrap();
        Router::new(&c.upstreams)
    }

    fn get(path: &str) -> Result<Route, RouteError> {
        router().route(&Method::GET, &path.parse().unwrap())
    }

    fn target(path: &str) -> Target {
        get(path).unwrap().target.unwrap()
    }

    #[test]
    fn routes_by_ns_parameter() {
        let t = target("/v2/acme/app/manifests/v1?ns=ghcr.io");
        assert_eq!((t.upstream, t.repo.as_str()), (UpstreamId(1), "acme/app"));
        assert_eq!(t.reference(), "ghcr.io/acme/app");
        assert_eq!(t.ns.unwrap().as_str(), "ghcr.io");
        // containerd escapes ':' in the host.
        let t = target("/v2/test/img/manifests/v1?ns=127.0.0.1%3A5001");
        assert_eq!(t.upstream, UpstreamId(2));
        // Aliases normalize to the canonical name, and Docker Hub's library rule applies.
        let t = target("/v2/alpine/manifests/latest?ns=index.docker.io");
        assert_eq!(t.reference(), "docker.io/library/alpine");
    }

    #[test]
    fn routes_by_first_path_segment() {
        let t = target(&format!("/v2/ghcr.io/acme/app/blobs/{DIGEST}"));
        assert_eq!(t.reference(), "ghcr.io/acme/app");
        assert_eq!(t.client_name, "ghcr.io/acme/app");
        let t = target("/v2/docker.io/alpine/manifests/3");
        assert_eq!(t.reference(), "docker.io/library/alpine");
        let t = target("/v2/127.0.0.1:5001/test/img/tags/list");
        assert_eq!((t.upstream, t.repo.as_str()), (UpstreamId(2), "test/img"));
    }

    #[test]
    fn plain_paths_go_to_the_default_upstream() {
        let t = target("/v2/library/alpine/manifests/latest");
        assert_eq!(t.reference(), "docker.io/library/alpine");
        let t = target("/v2/alpine/manifests/latest");
        assert_eq!(t.reference(), "docker.io/library/alpine");
        assert!(t.ns.is_none());
        // A one-segment name equal to an upstream is a repository, not a prefix.
        let t = target("/v2/ghcr.io/manifests/latest");
        assert_eq!(t.upstream, UpstreamId(0));
    }

    #[test]
    fn unknown_registries_are_refused_never_guessed() {
        assert!(matches!(
            get("/v2/x/manifests/v1?ns=quay.io"),
            Err(RouteError::UnknownRegistry(r)) if r == "quay.io"
        ));
        assert!(matches!(
            get("/v2/quay.io/x/manifests/v1"),
            Err(RouteError::UnknownRegistry(r)) if r == "quay.io"
        ));
        assert!(matches!(
            get("/v2/localhost/x/manifests/v1"),
            Err(RouteError::UnknownRegistry(_))
        ));
        let no_default = Router {
            default: None,
            ..router()
        };
        assert!(matches!(
            no_default.route(
                &Method::GET,
                &"/v2/library/alpine/tags/list".parse().unwrap()
            ),
            Err(RouteError::NoDefault)
        ));
    }

    #[test]
    fn resolves_image_references_like_docker() {
        let r = router();
        let (t, reference) = r.resolve_image("alpine").unwrap();
        assert_eq!(
            (t.reference(), reference),
            ("docker.io/library/alpine".to_owned(), None)
        );
        let (t, reference) = r.resolve_image("ghcr.io/acme/app:v1").unwrap();
        assert_eq!(t.reference(), "ghcr.io/acme/app");
        assert_eq!(reference, Some(Reference::Tag("v1".parse().unwrap())));
        let (t, reference) = r
            .resolve_image(&format!("127.0.0.1:5001/test/img@{DIGEST}"))
            .unwrap();
        assert_eq!(t.upstream, UpstreamId(2));
        assert!(matches!(reference, Some(Reference::Digest(_))));
        assert!(matches!(
            r.resolve_image("quay.io/x/y:1"),
            Err(RouteError::UnknownRegistry(_))
        ));
        assert!(r.resolve_image("ghcr.io/Acme/app").is_err());
    }

    #[test]
    fn endpoints() {
        assert_eq!(get("/v2/").unwrap().endpoint, Endpoint::ApiBase);
        assert_eq!(get("/healthz").unwrap().endpoint, Endpoint::Healthz);
        assert!(matches!(
            get(&format!("/v2/a/manifests/{DIGEST}")).unwrap().endpoint,
            Endpoint::Manifest(Reference::Digest(_))
        ));
        assert!(matches!(
            get(&format!("/v2/a/referrers/{DIGEST}?artifactType=application%2Fvnd.dev.cosign%2Bjson"))
                .unwrap(),
            Route { endpoint: Endpoint::Referrers(_), query: Query { artifact_type: Some(a), .. }, .. }
                if a == "application/vnd.dev.cosign+json"
        ));
        let r = get("/v2/a/b/tags/list?n=10&last=v1").unwrap();
        assert_eq!(
            (r.query.n, r.query.last.unwrap().as_str()),
            (Some(10), "v1")
        );
        // A repository may itself contain a component called "manifests".
        let t = target("/v2/a/manifests/b/manifests/latest");
        assert_eq!(t.repo.as_str(), "a/manifests/b");
    }

    #[test]
    fn writes_are_refused() {
        let r = router();
        for (m, p) in [
            (Method::PUT, "/v2/a/manifests/v1"),
            (Method::DELETE, &format!("/v2/a/blobs/{DIGEST}")),
            (Method::POST, "/v2/a/blobs/uploads/"),
            (Method::PATCH, "/v2/a/blobs/uploads/1234"),
        ] {
            let e = r.route(&m, &p.parse().unwrap()).unwrap_err();
            assert!(
                matches!(e, RouteError::MethodNotAllowed(_) | RouteError::Upload),
                "{m} {p}: {e:?}"
            );
        }
    }

    #[test]
    fn bad_input_is_refused_before_use() {
        for p in [
            "/v2/../etc/manifests/v1",
            "/v2/a/%2e%2e/manifests/v1",
            "/v2/A/manifests/v1",
            "/v2/a//b/manifests/v1",
            "/v2/a/manifests/..",
            "/v2/a/manifests/sha256:abc",
            "/v2/a/blobs/latest",
            "/v2/a/manifests/v1?ns=evil.io%0d%0aX:1",
            "/v2/a/manifests/v1?ns=a%2Fb",
            "/v2/a/tags/list?n=-1",
            "/v2/a/tags/list?last=..",
            "/v2/a/manifests/v1?ns=%zz",
        ] {
            assert!(get(p).is_err(), "accepted {p}");
        }
        assert!(matches!(
            get("/v2/a/manifests/sha256:abc"),
            Err(RouteError::BadDigest(_))
        ));
        assert!(matches!(get("/v3/a"), Err(RouteError::NotFound)));
        assert!(matches!(get("/v2/a/unknown/x"), Err(RouteError::NotFound)));
        let long = format!("/v2/{}/manifests/v1", "a".repeat(300));
        assert!(matches!(
            get(&long),
            Err(RouteError::BadName(NameError::NameTooLong))
        ));
    }
}

//! Admin API changes as audit events: every request that would change something (`POST`,
//! `PUT`, `PATCH`, `DELETE` on a known route), made or refused, is one `admin.changed` event.
//! The action is the route (`POST /v1/clusters/{id}/scram-users`), the resource the path of
//! what changed (for a creation, the new thing's path), the principal `admin` once the admin
//! token was accepted. Bodies are never read here: what they carry (passwords, policies) stays
//! out of the log; a creation's handler names what it made with [`Changed`].

use std::borrow::Cow;

use hyper::{Method, Response, StatusCode};
use uuid::Uuid;

use super::event::{Event, EventType, Reason, SecretFree};
use super::Audit;

/// Every route that changes something, as `(method, path template)`; `{…}` is one segment.
pub const CHANGES: [(&str, &str); 13] = [
    ("POST", "/v1/tenants"),
    ("POST", "/v1/clusters"),
    ("PATCH", "/v1/clusters/{id}"),
    ("DELETE", "/v1/clusters/{id}"),
    ("POST", "/v1/tokens"),
    ("DELETE", "/v1/tokens/{jti}"),
    ("POST", "/v1/clusters/{id}/scram-users"),
    ("DELETE", "/v1/clusters/{id}/scram-users/{username}"),
    ("POST", "/v1/clusters/{id}/access-keys"),
    ("DELETE", "/v1/clusters/{id}/access-keys/{key}"),
    ("POST", "/v1/clusters/{id}/certificate-principals"),
    (
        "DELETE",
        "/v1/clusters/{id}/certificate-principals/{principal}",
    ),
    ("PUT", "/v1/pool/policy"),
];

/// The action names of [`CHANGES`]: `METHOD template`.
const ACTIONS: [&str; 13] = [
    "POST /v1/tenants",
    "POST /v1/clusters",
    "PATCH /v1/clusters/{id}",
    "DELETE /v1/clusters/{id}",
    "POST /v1/tokens",
    "DELETE /v1/tokens/{jti}",
    "POST /v1/clusters/{id}/scram-users",
    "DELETE /v1/clusters/{id}/scram-users/{username}",
    "POST /v1/clusters/{id}/access-keys",
    "DELETE /v1/clusters/{id}/access-keys/{key}",
    "POST /v1/clusters/{id}/certificate-principals",
    "DELETE /v1/clusters/{id}/certificate-principals/{principal}",
    "PUT /v1/pool/policy",
];

/// What a handler adds to its answer for the audit log (in the response's extensions): what it
/// made, and whose, when the path does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// The id or name of what a `POST` made: the last segment of its path.
    pub created: Option<String>,
    pub cluster: Option<Uuid>,
    pub tenant: Option<String>,
}

/// `response` with `changed` attached.
pub fn tag<B>(mut response: Response<B>, changed: Changed) -> Response<B> {
    response.extensions_mut().insert(changed);
    response
}

/// An HTTP status as a reason: `409 Conflict`.
struct Status(StatusCode);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.0.as_u16(),
            self.0.canonical_reason().unwrap_or("")
        )
    }
}

/// A status code and its standard phrase.
impl SecretFree for Status {}

fn is_change(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The index in [`CHANGES`] of the route `method path` takes.
fn route(method: &Method, path: &str) -> Option<usize> {
    let segments: Vec<&str> = path.split('/').collect();
    CHANGES.iter().position(|(m, template)| {
        let parts: Vec<&str> = template.split('/').collect();
        *m == method.as_str()
            && parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| p.starts_with('{') && !s.is_empty() || p == s)
    })
}

/// Percent-encodes what may not stand in a path segment as it is.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The most of a request path an event keeps: every route's own path is far shorter (a
/// cluster id, a user name of at most 256 bytes, a principal).
const MAX_RESOURCE: usize = 512;

fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Emits the `admin.changed` event of an admin API request that was (or tried to be) a
/// change: `peer` is the HTTP client's address. Reads and unknown paths that were refused are
/// not events.
///
/// The event names a cluster (and so reaches that tenant's view) only when the caller held the
/// admin token and the cluster exists (`exists`): anyone can send a request, and an
/// unauthenticated one must not write into a tenant's view nor make a view for a made-up id.
pub fn record<B>(
    audit: &Audit,
    method: &Method,
    path: &str,
    peer: Option<std::net::IpAddr>,
    response: &Response<B>,
    exists: impl Fn(&Uuid) -> bool,
) {
    if !is_change(method) {
        return;
    }
    let status = response.status();
    let granted = status.is_success();
    let action: Cow<'static, str> = match route(method, path) {
        Some(i) => Cow::Borrowed(ACTIONS[i]),
        // A change on a route this table does not know yet is still recorded.
        None if granted => Cow::Owned(format!("{method} {path}")),
        None => return,
    };
    let changed = response.extensions().get::<Changed>();
    // A path is the caller's to choose, up to hyper's limit: what an event keeps of it is not.
    let mut resource = truncated(path, MAX_RESOURCE).to_owned();
    if let Some(created) = changed.and_then(|c| c.created.as_deref()) {
        resource.push('/');
        resource.push_str(&segment(created));
    }
    let mut event = Event::new(EventType::AdminChange, action)
        .with_resource(resource.clone())
        .with_granted(granted);
    // Whose: the cluster in the path (or the one made), or what the handler said.
    let segments: Vec<&str> = resource.split('/').collect();
    let authenticated = status != StatusCode::UNAUTHORIZED;
    event.cluster = match segments.as_slice() {
        ["", "v1", "clusters", id, ..] => Uuid::parse_str(id).ok(),
        _ => None,
    }
    .or(changed.and_then(|c| c.cluster))
    .filter(|id| authenticated && exists(id));
    event.tenant = match segments.as_slice() {
        ["", "v1", "tenants", id, ..] if granted => Some((*id).to_owned()),
        _ => None,
    }
    .or(changed.and_then(|c| c.tenant.clone()));
    if authenticated {
        event.principal = Some("admin".to_owned());
    }
    event.client_address = peer.map(|p| p.to_string());
    if !granted {
        event.reason = Some(Reason::of(&Status(status)));
    }
    audit.emit(event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::audit::event::Record;

    fn answer(status: StatusCode, changed: Option<Changed>) -> Response<()> {
        let mut r = Response::new(());
        *r.status_mut() = status;
        match changed {
            Some(c) => tag(r, c),
            None => r,
        }
    }

    type Seen = tokio::sync::mpsc::Receiver<std::sync::Arc<Record>>;

    /// The event the request makes, if any, as the sinks would get it.
    fn one(
        (audit, seen): &mut (Audit, Seen),
        method: Method,
        path: &str,
        response: Response<()>,
    ) -> Option<Record> {
        let peer = "192.0.2.10".parse().ok();
        record(audit, &method, path, peer, &response, |_| true);
        let event = seen.try_recv().ok().map(|r| Record::clone(&r));
        assert!(seen.try_recv().is_err(), "one event at most");
        event
    }

    #[test]
    fn every_route_has_its_action() {
        for ((method, template), action) in CHANGES.iter().zip(ACTIONS) {
            assert_eq!(format!("{method} {template}"), action);
        }
    }

    #[test]
    fn changes_are_events_and_reads_are_not() {
        let mut audit = Audit::capturing(10);
        let cluster = Uuid::new_v4();
        let made = one(
            &mut audit,
            Method::POST,
            "/v1/clusters",
            answer(
                StatusCode::CREATED,
                Some(Changed {
                    created: Some(cluster.to_string()),
                    cluster: Some(cluster),
                    tenant: Some("acme".into()),
                }),
            ),
        )
        .unwrap();
        assert_eq!(made.action, "POST /v1/clusters");
        assert_eq!(
            made.resource.as_deref(),
            Some(format!("/v1/clusters/{cluster}").as_str())
        );
        assert_eq!(made.cluster, Some(cluster));
        assert_eq!(made.tenant.as_deref(), Some("acme"));
        assert_eq!(made.principal.as_deref(), Some("admin"));
        assert_eq!(made.client_address.as_deref(), Some("192.0.2.10"));
        assert!(made.granted);
        assert!(made.reason.is_none());

        let user = one(
            &mut audit,
            Method::DELETE,
            &format!("/v1/clusters/{cluster}/scram-users/alice"),
            answer(StatusCode::NO_CONTENT, None),
        )
        .unwrap();
        assert_eq!(
            user.action,
            "DELETE /v1/clusters/{id}/scram-users/{username}"
        );
        assert_eq!(user.cluster, Some(cluster));

        let principal = one(
            &mut audit,
            Method::POST,
            &format!("/v1/clusters/{cluster}/certificate-principals"),
            answer(
                StatusCode::CREATED,
                Some(Changed {
                    created: Some("CN=alice,O=Acme Corp".into()),
                    ..Changed::default()
                }),
            ),
        )
        .unwrap();
        assert_eq!(
            principal.resource.as_deref(),
            Some(
                format!(
                    "/v1/clusters/{cluster}/certificate-principals/CN%3Dalice%2CO%3DAcme%20Corp"
                )
                .as_str()
            )
        );

        let tenant = one(
            &mut audit,
            Method::POST,
            "/v1/tenants",
            answer(
                StatusCode::CREATED,
                Some(Changed {
                    created: Some("acme".into()),
                    ..Changed::default()
                }),
            ),
        )
        .unwrap();
        assert_eq!(tenant.tenant.as_deref(), Some("acme"));
        assert_eq!(tenant.cluster, None);

        for (method, path) in [
            (Method::GET, "/v1/clusters".to_owned()),
            (Method::GET, format!("/v1/clusters/{cluster}/scram-users")),
            (Method::POST, "/v1/nothing-here".to_owned()),
        ] {
            let status = if method == Method::GET {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert!(
                one(&mut audit, method, &path, answer(status, None)).is_none(),
                "{path}"
            );
        }
    }

    #[test]
    fn refused_changes_are_events_with_their_status() {
        let mut audit = Audit::capturing(10);
        let refused = one(
            &mut audit,
            Method::POST,
            "/v1/tokens",
            answer(StatusCode::UNAUTHORIZED, None),
        )
        .unwrap();
        assert!(!refused.granted);
        assert_eq!(refused.principal, None, "the admin token was not given");
        assert_eq!(refused.reason.unwrap().as_str(), "401 Unauthorized");
        let conflict = one(
            &mut audit,
            Method::POST,
            "/v1/tenants",
            answer(StatusCode::CONFLICT, None),
        )
        .unwrap();
        assert_eq!(conflict.principal.as_deref(), Some("admin"));
        assert_eq!(conflict.reason.unwrap().as_str(), "409 Conflict");
        assert_eq!(conflict.tenant, None, "nothing was made");
        let policy = one(
            &mut audit,
            Method::PUT,
            "/v1/pool/policy",
            answer(StatusCode::OK, None),
        )
        .unwrap();
        assert_eq!(policy.action, "PUT /v1/pool/policy");
        assert_eq!(policy.cluster, None);
    }

    #[test]
    fn unauthenticated_or_unknown_clusters_reach_no_tenant_and_paths_are_cut() {
        let (audit, mut seen) = Audit::capturing(10);
        let live = Uuid::new_v4();
        let long = "x".repeat(60_000);
        let peer = "192.0.2.10".parse().ok();
        let mut cluster_of = |status, id: Uuid| {
            let path = format!("/v1/clusters/{id}/scram-users/{long}");
            let response = answer(status, None);
            record(&audit, &Method::DELETE, &path, peer, &response, |c| {
                *c == live
            });
            let event = seen.try_recv().unwrap();
            assert!(event.resource.as_ref().unwrap().len() <= MAX_RESOURCE);
            event.cluster
        };
        // Without the admin token, even a real cluster's id does not reach its tenant.
        assert_eq!(cluster_of(StatusCode::UNAUTHORIZED, live), None);
        // With it, a made-up id makes no tenant's view; a real one does.
        assert_eq!(cluster_of(StatusCode::NOT_FOUND, Uuid::new_v4()), None);
        assert_eq!(cluster_of(StatusCode::NOT_FOUND, live), Some(live));
        assert_eq!(truncated("ab\u{e9}cd", 3), "ab");
    }
}

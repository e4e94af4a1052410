//! The audit event: what an emitter knows ([`Event`]), and the versioned record every sink and
//! the tenant's view carry ([`Record`], schema version [`SCHEMA_VERSION`], documented in
//! README.md "Audit events" and `deploy/audit-event.schema.json`).
//!
//! No field can hold a credential: the principal is a name, the action an API or route name,
//! the resource an ARN or an admin path, and the reason a [`Reason`], which is made only from
//! fixed text or from a type whose messages are known to carry no secret ([`SecretFree`]).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

/// The CloudEvents version the envelope follows.
pub const SPEC_VERSION: &str = "1.0";
/// The schema the event's fields follow; raised whenever a field is added, removed or changes
/// meaning, so a reader can tell which document describes a line.
pub const SCHEMA_VERSION: u32 = 1;
/// `dataschema`: the `$id` of `deploy/audit-event.schema.json`.
pub const DATA_SCHEMA: &str = "urn:tollgate:audit-event:1";

/// What happened, as the event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A client authenticated (SASL or certificate).
    AuthenticationSucceeded,
    /// A client's authentication failed.
    AuthenticationFailed,
    /// A request was refused by the principal's policy.
    AuthorizationDenied,
    /// The admin API changed something (tenant, cluster, credential, quota, token, policy), or
    /// was asked to and refused.
    AdminChange,
    /// A quota refused or throttled a client.
    QuotaBreached,
    /// The pool's autoscaler scaled (or decided to).
    PoolScaled,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::AuthenticationSucceeded,
        EventType::AuthenticationFailed,
        EventType::AuthorizationDenied,
        EventType::AdminChange,
        EventType::QuotaBreached,
        EventType::PoolScaled,
    ];

    /// The `type` field.
    pub fn name(self) -> &'static str {
        match self {
            EventType::AuthenticationSucceeded => "tollgate.authentication.succeeded",
            EventType::AuthenticationFailed => "tollgate.authentication.failed",
            EventType::AuthorizationDenied => "tollgate.authorization.denied",
            EventType::AdminChange => "tollgate.admin.changed",
            EventType::QuotaBreached => "tollgate.quota.breached",
            EventType::PoolScaled => "tollgate.pool.scaled",
        }
    }

    /// Its index in [`EventType::ALL`], for per-type counters.
    pub(super) fn slot(self) -> usize {
        self as usize
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Text whose every message the audit log may carry: it never includes a token, password,
/// secret key, signature or SCRAM proof. Implemented only for types whose messages have been
/// read through for that (a new variant must keep it).
pub trait SecretFree: std::fmt::Display {}

/// Every message quotes at most what the client sent besides its credential (a mechanism, an
/// algorithm, a region, a principal, its own address) or what the gateway decided; the token,
/// password, proof and signature themselves are never part of a message, since the same text
/// is sent back to the client in SaslAuthenticate.
impl SecretFree for crate::identity::sasl::AuthError {}
impl SecretFree for crate::identity::sigv4::SigV4Error {}
impl SecretFree for crate::identity::scram::ScramError {}

/// Why an event happened, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Reason(Cow<'static, str>);

impl Reason {
    pub const fn fixed(text: &'static str) -> Reason {
        Reason(Cow::Borrowed(text))
    }

    /// The message of something [`SecretFree`].
    pub fn of(what: &(impl SecretFree + ?Sized)) -> Reason {
        Reason(Cow::Owned(what.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One event as its emitter knows it; the handle adds id, time and source.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventType,
    /// The tenant owning `cluster`; filled in from the registry when the emitter names only
    /// the cluster.
    pub tenant: Option<String>,
    pub cluster: Option<Uuid>,
    pub principal: Option<String>,
    /// `ip:port` (or `ip`) of the client, as the listener saw it (after PROXY protocol).
    pub client_address: Option<String>,
    /// What was attempted: an IAM action (`kafka-cluster:WriteData`), a SASL mechanism, an
    /// admin route (`POST /v1/clusters`), a quota's name, `resize`.
    pub action: Cow<'static, str>,
    /// What it was attempted on (a topic ARN, an admin path), if anything.
    pub resource: Option<String>,
    pub granted: bool,
    pub reason: Option<Reason>,
}

impl Event {
    /// An event of `kind` about `action`, granted only if it is a successful authentication;
    /// the `with_` methods fill in the rest.
    pub fn new(kind: EventType, action: impl Into<Cow<'static, str>>) -> Event {
        Event {
            kind,
            tenant: None,
            cluster: None,
            principal: None,
            client_address: None,
            action: action.into(),
            resource: None,
            granted: kind == EventType::AuthenticationSucceeded,
            reason: None,
        }
    }

    pub fn with_cluster(mut self, cluster: Uuid) -> Event {
        self.cluster = Some(cluster);
        self
    }

    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Event {
        self.tenant = Some(tenant.into());
        self
    }

    pub fn with_principal(mut self, principal: impl Into<String>) -> Event {
        self.principal = Some(principal.into());
        self
    }

    pub fn with_client_address(mut self, address: impl Into<String>) -> Event {
        self.client_address = Some(address.into());
        self
    }

    pub fn with_resource(mut self, resource: impl Into<String>) -> Event {
        self.resource = Some(resource.into());
        self
    }

    pub fn with_granted(mut self, granted: bool) -> Event {
        self.granted = granted;
        self
    }

    pub fn with_reason(mut self, reason: Reason) -> Event {
        self.reason = Some(reason);
        self
    }
}

/// An event as delivered: one JSON object per line. Fields with nothing to say are `null`,
/// never absent, so every line has the same shape.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub specversion: &'static str,
    pub id: Uuid,
    /// `tollgate/<instance>`: which gateway instance saw it.
    #[serde(serialize_with = "shared_str")]
    pub source: Arc<str>,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// RFC 3339, UTC, milliseconds.
    #[serde(serialize_with = "rfc3339_millis")]
    pub time: i64,
    pub dataschema: &'static str,
    pub schema_version: u32,
    pub tenant: Option<String>,
    pub cluster: Option<Uuid>,
    pub principal: Option<String>,
    pub client_address: Option<String>,
    pub action: Cow<'static, str>,
    pub resource: Option<String>,
    pub granted: bool,
    pub reason: Option<Reason>,
}

/// Every field of a record, in order: the schema file and the README list the same.
pub const FIELDS: [&str; 15] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "dataschema",
    "schema_version",
    "tenant",
    "cluster",
    "principal",
    "client_address",
    "action",
    "resource",
    "granted",
    "reason",
];

impl Record {
    /// `event` as it happened at `time_ms` (milliseconds since the Unix epoch) on `source`.
    pub fn new(event: Event, source: Arc<str>, time_ms: i64) -> Record {
        Record {
            specversion: SPEC_VERSION,
            id: Uuid::new_v4(),
            source,
            kind: event.kind,
            time: time_ms,
            dataschema: DATA_SCHEMA,
            schema_version: SCHEMA_VERSION,
            tenant: event.tenant,
            cluster: event.cluster,
            principal: event.principal,
            client_address: event.client_address,
            action: event.action,
            resource: event.resource,
            granted: event.granted,
            reason: event.reason,
        }
    }

    /// The record as one JSON line, newline included.
    pub fn line(&self) -> Vec<u8> {
        // Every field is a string, a number, a bool, a UUID or null: it always serializes.
        let mut line = serde_json::to_vec(self).expect("an audit record serializes");
        line.push(b'\n');
        line
    }
}

/// `2024-05-01T12:00:00.123Z`.
pub fn format_time(time_ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        // Only for times past year 9999: still a time, never a panic.
        .unwrap_or_else(|| format!("{time_ms}"))
}

fn shared_str<S: serde::Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

fn rfc3339_millis<S: serde::Serializer>(time_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*time_ms))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_record() -> Record {
        let event = Event::new(EventType::AuthorizationDenied, "kafka-cluster:WriteData")
            .with_tenant("acme")
            .with_cluster(Uuid::nil())
            .with_principal("alice")
            .with_client_address("10.0.0.7:50123")
            .with_resource("arn:tollgate:kafka:us-east-1:acme:topic/c/x/orders")
            .with_reason(Reason::fixed("the policy does not allow it"));
        Record::new(event, "tollgate/test".into(), 1_714_564_800_123)
    }

    #[test]
    fn every_field_is_on_every_line_in_order() {
        let line = full_record().line();
        assert_eq!(line.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut expected = FIELDS.to_vec();
        expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["type"], "tollgate.authorization.denied");
        assert_eq!(value["time"], "2024-05-01T12:00:00.123Z");
        assert_eq!(value["dataschema"], DATA_SCHEMA);
        assert_eq!(value["schema_version"], 1);
        assert_eq!(value["source"], "tollgate/test");
        assert_eq!(value["tenant"], "acme");
        assert_eq!(value["cluster"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(value["principal"], "alice");
        assert_eq!(value["client_address"], "10.0.0.7:50123");
        assert_eq!(value["action"], "kafka-cluster:WriteData");
        assert_eq!(value["granted"], false);
        assert_eq!(value["reason"], "the policy does not allow it");
        let id = Uuid::parse_str(value["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4);

        // Nothing known is null, not absent.
        let bare = Record::new(Event::new(EventType::PoolScaled, "resize"), "s".into(), 0);
        let value: serde_json::Value = serde_json::from_slice(&bare.line()).unwrap();
        assert_eq!(value.as_object().unwrap().len(), FIELDS.len());
        for field in [
            "tenant",
            "cluster",
            "principal",
            "client_address",
            "resource",
            "reason",
        ] {
            assert!(value[field].is_null(), "{field}");
        }
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn no_field_is_made_for_a_credential() {
        for field in FIELDS {
            for word in [
                "token",
                "password",
                "secret",
                "signature",
                "proof",
                "key",
                "credential",
            ] {
                assert!(!field.contains(word), "{field} looks made for a credential");
            }
        }
        assert_eq!(
            FIELDS.len(),
            15,
            "a new field needs the schema version raised"
        );
    }

    #[test]
    fn the_schema_file_describes_exactly_these_fields() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../../deploy/audit-event.schema.json"))
                .unwrap();
        assert_eq!(schema["$id"], DATA_SCHEMA);
        assert_eq!(schema["additionalProperties"], false);
        let mut properties: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        properties.sort_unstable();
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        let mut fields = FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(properties, fields);
        assert_eq!(required, fields);
        let types: Vec<&str> = schema["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let names: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(types, names);
        assert_eq!(
            schema["properties"]["schema_version"]["const"],
            SCHEMA_VERSION
        );
    }

    #[test]
    fn every_type_has_its_slot() {
        for (i, t) in EventType::ALL.iter().enumerate() {
            assert_eq!(t.slot(), i);
        }
    }

    #[test]
    fn reasons_come_from_fixed_text_or_secret_free_errors() {
        assert_eq!(Reason::fixed("over quota").as_str(), "over quota");
        let e = crate::identity::sasl::AuthError::ConnectDenied;
        assert!(Reason::of(&e).as_str().contains("kafka-cluster:Connect"));
    }
}

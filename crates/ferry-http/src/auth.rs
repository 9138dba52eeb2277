//! Authentication and permissions on the HTTP API, and the routes that manage users,
//! tokens and ACLs (`/v1/users`, `/v1/tokens`, `/v1/acls`, `/v1/whoami`).
//!
//! With authentication on (`ferry serve --auth`), every API route passes [`guard`]: it
//! finds who is calling (a bearer token, HTTP Basic, or a verified client certificate),
//! answers 401 when none succeeded, and checks the route's permission ([`permission`])
//! against the ACLs, answering 403 when it is missing. With authentication off there is
//! no guard: every caller is `User:ANONYMOUS` and may do everything, and credentials are
//! not read. Routes whose permission depends on the body (creating
//! a topic or a subscription) or that list resources (each listed only if the caller may
//! describe it) check in their handlers, with the [`Caller`] the guard leaves in the
//! request. `/healthz`, `/readyz`, `/v1/openapi.json` and the console's static files
//! need no credentials; the console's calls to the API do.

use crate::problem::Problem;
use crate::server::Peer;
use crate::{json_body, AppState};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use ferry_auth::acl::{AclFilter, PatternFilter, CLUSTER_NAME};
use ferry_auth::{Acl, AuthError, Operation, PatternType, Permission, Principal, ResourceType};
use serde::Deserialize;
use serde_json::{json, Value};

/// Who made a request, as the guard found: left in the request's extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The client's IP address, as ACLs name hosts.
    pub host: String,
}

impl Caller {
    /// Whether the caller may do `op` on a resource.
    pub fn may(&self, state: &AppState, op: Operation, rtype: ResourceType, name: &str) -> bool {
        state
            .auth
            .authorize(&self.principal, &self.host, op, rtype, name)
    }

    /// As [`Caller::may`], as a problem when not.
    pub fn check(
        &self,
        state: &AppState,
        op: Operation,
        rtype: ResourceType,
        name: &str,
    ) -> Result<(), Problem> {
        if self.may(state, op, rtype, name) {
            Ok(())
        } else {
            Err(forbidden(&self.principal, op, rtype, name))
        }
    }
}

/// 403: the principal lacks a permission; says which ACL would grant it.
pub fn forbidden(principal: &Principal, op: Operation, rtype: ResourceType, name: &str) -> Problem {
    let target = if rtype == ResourceType::Cluster {
        "--cluster".to_string()
    } else {
        format!("--{} {name}", rtype.as_str().replace('_', "-"))
    };
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Not allowed",
        format!(
            "{principal} may not {} {} {name:?}; an ACL must allow it, e.g. `ferry acl create --principal {principal} --operation {} {target}`",
            op.as_str(),
            rtype.as_str(),
            op.as_str(),
        ),
    )
    .with("principal", principal.to_string())
    .with("operation", op.as_str())
    .with("resource_type", rtype.as_str())
    .with("resource_name", name)
}

/// What a 401 offers, one `WWW-Authenticate` header each: browsers (Chromium) read one
/// challenge per header, and answer Basic with the user's password.
const CHALLENGES: [&str; 2] = [
    "Basic realm=\"ferry\", charset=\"UTF-8\"",
    "Bearer realm=\"ferry\"",
];

fn unauthenticated(slug: &'static str, detail: &str) -> Response {
    let mut r = Problem::new(
        StatusCode::UNAUTHORIZED,
        slug,
        "Authentication required",
        detail,
    )
    .into_response();
    for c in CHALLENGES {
        r.headers_mut()
            .append(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    r
}

/// Longest `Authorization` header read.
const AUTHORIZATION_BYTES_MAX: usize = 1024;

/// Who the request's credentials name: `Ok(None)` when it carries none, `Err` when they
/// are malformed or wrong (the failure is counted against the client's address).
async fn authenticate(
    state: &AppState,
    authorization: Option<HeaderValue>,
    host: &str,
) -> Result<Option<Principal>, Response> {
    let Some(value) = authorization else {
        return Ok(None);
    };
    let bad = |why: &'static str| unauthenticated("invalid-credentials", why);
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(bad("the Authorization header is too long"));
    }
    let Ok(value) = value.to_str() else {
        return Err(bad("the Authorization header is not ASCII"));
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    let found = if scheme.eq_ignore_ascii_case("bearer") {
        state.auth.verify_token(rest).map(|p| (p, "token"))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(bad("Basic credentials are base64 of user:password"));
        };
        let (auth, user, password) = (state.auth.clone(), user.to_string(), password.to_string());
        // A password check is a PBKDF2 (milliseconds) unless remembered: off the async
        // threads.
        tokio::task::spawn_blocking(move || auth.verify_password(&user, &password))
            .await
            .ok()
            .flatten()
            .map(|p| (p, "password"))
    } else {
        return Err(bad("the Authorization scheme must be Bearer or Basic"));
    };
    match found {
        Some((p, _)) => {
            state.auth.limiter.succeeded(host);
            Ok(Some(p))
        }
        None if !state.auth.required() => Err(bad("not checked")),
        None => {
            let delay = state.auth.limiter.failed(host);
            tracing::warn!(peer = %host, scheme, "HTTP authentication failed.");
            tokio::time::sleep(delay).await;
            Err(bad("the token or the user and password are not valid"))
        }
    }
}

/// Authenticates the request and checks its route's permission (see the module). Also
/// correct with authentication off (credentials optional, everything allowed), though
/// the router then leaves it out.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let required = state.auth.required();
    let peer = req.extensions().get::<Peer>();
    let cert_principal = peer.and_then(|p| p.cert_principal.clone());
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    if !required && authorization.is_none() && cert_principal.is_none() {
        return next.run(req).await;
    }
    let host = peer.map_or_else(|| "unknown".to_string(), |p| p.addr.ip().to_string());
    let principal = match authenticate(&state, authorization, &host).await {
        // With authentication off, wrong credentials are no reason to refuse a request
        // anyone may make: the caller is anonymous (`/v1/whoami` shows it).
        Err(_) if !required => Principal::anonymous(),
        Err(r) => return r,
        Ok(Some(p)) => p,
        Ok(None) => match cert_principal {
            Some(p) => p,
            None if required => {
                return unauthenticated(
                    "unauthenticated",
                    "this server requires authentication: send Authorization: Bearer <token> (see `ferry token create`) or HTTP Basic with a user and password",
                )
            }
            None => Principal::anonymous(),
        },
    };
    let caller = Caller { principal, host };
    if required {
        let route = req.extensions().get::<axum::extract::MatchedPath>();
        if let Some((op, rtype, key)) = route.and_then(|r| permission(req.method(), r.as_str())) {
            let name = match (key, route) {
                (Some(k), Some(r)) => path_param(r.as_str(), req.uri().path(), k),
                _ => CLUSTER_NAME.to_string(),
            };
            if let Err(p) = caller.check(&state, op, rtype, &name) {
                return p.into_response();
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The value of the parameter `{name}` of the route pattern `route` in `path`,
/// percent-decoded as axum decodes path parameters.
fn path_param(route: &str, path: &str, name: &str) -> String {
    let at = route
        .split('/')
        .position(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) == Some(name));
    debug_assert!(at.is_some(), "{route} has no parameter {name}");
    at.and_then(|i| path.split('/').nth(i))
        .map(|raw| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// The permission a route needs, checked by the guard: operation, resource type, and
/// the path parameter naming the resource (`None`: the cluster). `None` for routes that
/// check in their handlers (listings, creations) or need nothing beyond authentication.
pub fn permission(
    method: &Method,
    route: &str,
) -> Option<(Operation, ResourceType, Option<&'static str>)> {
    use Operation::*;
    use ResourceType::*;
    let topic = Some("topic");
    let sub = Some("name");
    Some(match (method.as_str(), route) {
        ("GET", "/metrics") => (Describe, Cluster, None),
        ("GET", "/v1/topics/{topic}") => (Describe, Topic, topic),
        ("PATCH", "/v1/topics/{topic}") => (AlterConfigs, Topic, topic),
        ("DELETE", "/v1/topics/{topic}") => (Delete, Topic, topic),
        ("POST", "/v1/topics/{topic}/records") => (Write, Topic, topic),
        ("GET", "/v1/topics/{topic}/partitions/{partition}/records") => (Read, Topic, topic),
        ("GET", "/v1/topics/{topic}/partitions/{partition}/offsets") => (Read, Topic, topic),
        // As Kafka's DeleteRecords: Delete on the topic.
        ("POST", "/v1/topics/{topic}/partitions/{partition}/delete-records") => {
            (Delete, Topic, topic)
        }
        ("GET", "/v1/subscriptions/{name}") => (Describe, Subscription, sub),
        ("GET", "/v1/subscriptions/{name}/deliveries") => (Describe, Subscription, sub),
        ("PATCH", "/v1/subscriptions/{name}") => (Alter, Subscription, sub),
        ("DELETE", "/v1/subscriptions/{name}") => (Delete, Subscription, sub),
        ("POST", "/v1/subscriptions/{name}/pull")
        | ("POST", "/v1/subscriptions/{name}/ack")
        | ("POST", "/v1/subscriptions/{name}/nack")
        | ("POST", "/v1/subscriptions/{name}/extend")
        | ("GET", "/v1/subscriptions/{name}/events") => (Read, Subscription, sub),
        ("POST", "/v1/subscriptions/{name}/seek")
        | ("POST", "/v1/subscriptions/{name}/purge")
        | ("POST", "/v1/subscriptions/{name}/redrive")
        | ("POST", "/v1/subscriptions/{name}/pause")
        | ("POST", "/v1/subscriptions/{name}/resume")
        | ("POST", "/v1/subscriptions/{name}/retry")
        | ("POST", "/v1/subscriptions/{name}/rotate-secret") => (Alter, Subscription, sub),
        ("GET", "/v1/groups/{group}") => (Describe, Group, Some("group")),
        ("GET", "/v1/users")
        | ("GET", "/v1/users/{name}")
        | ("GET", "/v1/acls")
        | ("GET", "/v1/sources")
        | ("GET", "/v1/sources/{name}") => (Describe, Cluster, None),
        // A source writes into whatever topics its tables name: cluster-wide power.
        ("POST", "/v1/sources")
        | ("PATCH", "/v1/sources/{name}")
        | ("DELETE", "/v1/sources/{name}")
        | ("POST", "/v1/sources/{name}/pause")
        | ("POST", "/v1/sources/{name}/resume")
        | ("POST", "/v1/sources/{name}/backfills")
        | ("DELETE", "/v1/sources/{name}/backfills/{id}") => (Alter, Cluster, None),
        ("POST", "/v1/users")
        | ("DELETE", "/v1/users/{name}")
        | ("POST", "/v1/acls")
        | ("DELETE", "/v1/acls") => (Alter, Cluster, None),
        _ => return None,
    })
}

/// The caller the guard left in the request; the anonymous one if the route was not
/// guarded (tests that build the router without it).
pub fn caller(req_caller: Option<axum::Extension<Caller>>) -> Caller {
    req_caller.map_or_else(
        || Caller {
            principal: Principal::anonymous(),
            host: "unknown".into(),
        },
        |axum::Extension(c)| c,
    )
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(d) => Problem::bad_request("invalid-request", d),
            AuthError::NotFound(d) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", d)
            }
            AuthError::Conflict(d) => {
                Problem::new(StatusCode::CONFLICT, "already-exists", "Already exists", d)
            }
            AuthError::Storage(d) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage-unavailable",
                "Storage unavailable",
                d,
            ),
        }
    }
}

// --- /v1/whoami ---

pub async fn whoami(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    peer: Option<axum::Extension<Peer>>,
) -> Json<Value> {
    let mut c = caller(c);
    if let Some(axum::Extension(p)) = peer {
        c.host = p.addr.ip().to_string();
    }
    let super_user = state
        .auth
        .settings()
        .super_users
        .contains(&c.principal.kafka_name());
    Json(json!({
        "principal": c.principal.to_string(),
        "host": c.host,
        "authentication_required": state.auth.required(),
        "super_user": super_user,
    }))
}

// --- /v1/users ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    password: String,
}

/// Runs a store change (a PBKDF2 per mechanism, then a synced write) off the async
/// threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, Problem> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal-error",
                "Internal error",
                e.to_string(),
            )
        })?
        .map_err(Problem::from)
}

pub async fn create_user(State(state): State<AppState>, body: Bytes) -> Result<Response, Problem> {
    let u: NewUser = json_body(&body, &[])?;
    let auth = state.auth.clone();
    let info = blocking(move || auth.create_user(&u.name, &u.password)).await?;
    let location = format!("/v1/users/{}", info.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(info),
    )
        .into_response())
}

pub async fn list_users(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "users": state.auth.users() }))
}

pub async fn describe_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    let u = state
        .auth
        .user(&name)
        .ok_or_else(|| Problem::from(AuthError::NotFound(format!("no user named {name:?}"))))?;
    Ok(Json(json!(u)))
}

/// A user may change its own password; another's needs `alter` on the cluster.
pub async fn update_user(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Problem> {
    let c = caller(c);
    if c.principal.name != name || c.principal == Principal::anonymous() {
        c.check(
            &state,
            Operation::Alter,
            ResourceType::Cluster,
            CLUSTER_NAME,
        )?;
    }
    let u: UserUpdate = json_body(&body, &[])?;
    let auth = state.auth.clone();
    let info = blocking(move || auth.set_password(&name, &u.password)).await?;
    Ok(Json(json!(info)))
}

pub async fn delete_user(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    let auth = state.auth.clone();
    blocking(move || auth.delete_user(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- /v1/tokens ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    expires_at_ms: Option<u64>,
}

/// Whether the caller may manage `user`'s tokens: its own, or anyone's with `alter` on
/// the cluster.
fn may_manage_tokens_of(state: &AppState, c: &Caller, user: &str) -> Result<(), Problem> {
    if c.principal.name == user && c.principal != Principal::anonymous() {
        return Ok(());
    }
    c.check(state, Operation::Alter, ResourceType::Cluster, CLUSTER_NAME)
}

pub async fn create_token(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<Response, Problem> {
    let c = caller(c);
    let t: NewToken = json_body(&body, &[])?;
    may_manage_tokens_of(&state, &c, &t.user)?;
    let auth = state.auth.clone();
    let (info, token) =
        blocking(move || auth.create_token(&t.user, &t.description, t.expires_at_ms)).await?;
    let mut body = json!(info);
    body["token"] = Value::from(token);
    let location = format!("/v1/tokens/{}", info.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// Every token with `describe` on the cluster; else the caller's own.
pub async fn list_tokens(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
) -> Json<Value> {
    let c = caller(c);
    let all = c.may(
        &state,
        Operation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let tokens: Vec<_> = state
        .auth
        .tokens()
        .into_iter()
        .filter(|t| all || t.user == c.principal.name)
        .collect();
    Json(json!({ "tokens": tokens }))
}

pub async fn delete_token(
    State(state): State<AppState>,
    c: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let c = caller(c);
    let owner = state.auth.tokens().into_iter().find(|t| t.id == id);
    let Some(owner) = owner else {
        return Err(AuthError::NotFound(format!("no token with id {id:?}")).into());
    };
    may_manage_tokens_of(&state, &c, &owner.user)?;
    let auth = state.auth.clone();
    blocking(move || auth.delete_token(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- /v1/acls ---

/// An ACL as a request writes it: host, pattern type and permission have defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAcl {
    principal: String,
    #[serde(default = "any_host")]
    host: String,
    resource_type: ResourceType,
    #[serde(default)]
    resource_name: Option<String>,
    #[serde(default = "literal")]
    pattern_type: PatternType,
    operation: Operation,
    #[serde(default = "allow")]
    permission: Permission,
}

fn any_host() -> String {
    "*".into()
}
fn literal() -> PatternType {
    PatternType::Literal
}
fn allow() -> Permission {
    Permission::Allow
}

impl NewAcl {
    fn into_acl(self) -> Result<Acl, Problem> {
        let resource_name = match (self.resource_type, self.resource_name) {
            (ResourceType::Cluster, None) => CLUSTER_NAME.to_string(),
            (_, Some(n)) => n,
            (t, None) => {
                return Err(Problem::invalid_json(format!(
                    "resource_name is required for a {} ACL",
                    t.as_str()
                )))
            }
        };
        let acl = Acl {
            principal: self.principal,
            host: self.host,
            resource_type: self.resource_type,
            resource_name,
            pattern_type: self.pattern_type,
            operation: self.operation,
            permission: self.permission,
        };
        acl.validate()
            .map_err(|e| Problem::bad_request("invalid-acl", e))?;
        Ok(acl)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAcls {
    acls: Vec<NewAcl>,
}

/// Most ACLs one request may create.
const ACLS_PER_REQUEST_MAX: usize = 1000;

pub async fn create_acls(State(state): State<AppState>, body: Bytes) -> Result<Response, Problem> {
    let req: NewAcls = json_body(&body, &["acls.[]"])?;
    if req.acls.is_empty() || req.acls.len() > ACLS_PER_REQUEST_MAX {
        return Err(Problem::invalid_json(format!(
            "acls must hold 1 to {ACLS_PER_REQUEST_MAX} ACLs"
        )));
    }
    let acls = req
        .acls
        .into_iter()
        .map(NewAcl::into_acl)
        .collect::<Result<Vec<_>, _>>()?;
    let auth = state.auth.clone();
    let created = acls.clone();
    blocking(move || auth.create_acls(acls)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "acls": created }))).into_response())
}

/// Query parameters selecting ACLs; each absent one matches anything.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AclQuery {
    principal: Option<String>,
    host: Option<String>,
    resource_type: Option<ResourceType>,
    resource_name: Option<String>,
    pattern_type: Option<PatternFilter>,
    operation: Option<Operation>,
    permission: Option<Permission>,
    /// DELETE only: with no other parameter, delete every ACL.
    all: Option<bool>,
}

impl AclQuery {
    fn filter(self) -> AclFilter {
        AclFilter {
            principal: self.principal,
            host: self.host,
            resource_type: self.resource_type,
            resource_name: self.resource_name,
            pattern_type: self.pattern_type,
            operation: self.operation,
            permission: self.permission,
        }
    }
}

fn acl_query(
    q: Result<Query<AclQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AclQuery, Problem> {
    q.map(|Query(q)| q)
        .map_err(|e| Problem::invalid_parameter(e.body_text()))
}

pub async fn list_acls(
    State(state): State<AppState>,
    q: Result<Query<AclQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let filter = acl_query(q)?.filter();
    Ok(Json(json!({ "acls": state.auth.acls(&filter) })))
}

pub async fn delete_acls(
    State(state): State<AppState>,
    q: Result<Query<AclQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let q = acl_query(q)?;
    let all = q.all == Some(true);
    let filter = q.filter();
    if filter == AclFilter::default() && !all {
        return Err(Problem::invalid_parameter(
            "name the ACLs to delete (principal, resource_type, resource_name, ...), or pass all=true to delete every ACL",
        ));
    }
    let auth = state.auth.clone();
    let deleted = blocking(move || auth.delete_acls(&filter)).await?;
    Ok(Json(json!({ "deleted": deleted })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_found_and_decoded() {
        let r = "/v1/topics/{topic}/partitions/{partition}/records";
        assert_eq!(
            path_param(r, "/v1/topics/a%20b/partitions/3/records", "topic"),
            "a b"
        );
        assert_eq!(
            path_param(r, "/v1/topics/t/partitions/3/records", "partition"),
            "3"
        );
        assert_eq!(
            path_param("/v1/groups/{group}", "/v1/groups/g%2F1", "group"),
            "g/1"
        );
    }

    #[test]
    fn every_guarded_route_names_a_parameter_it_has() {
        for (m, route) in [
            ("GET", "/v1/topics/{topic}"),
            ("POST", "/v1/topics/{topic}/records"),
            (
                "POST",
                "/v1/topics/{topic}/partitions/{partition}/delete-records",
            ),
            ("GET", "/v1/subscriptions/{name}/events"),
            ("GET", "/v1/groups/{group}"),
        ] {
            let (_, _, key) = permission(&m.parse().unwrap(), route).unwrap();
            let key = key.unwrap();
            assert!(route.contains(&format!("{{{key}}}")), "{route} {key}");
        }
        assert!(permission(&Method::GET, "/v1/topics").is_none());
        assert_eq!(
            permission(&Method::GET, "/metrics"),
            Some((Operation::Describe, ResourceType::Cluster, None))
        );
    }
}

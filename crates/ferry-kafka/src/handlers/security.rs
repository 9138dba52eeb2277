//! The security admin APIs: CreateAcls, DescribeAcls, DeleteAcls (Alter on the cluster to
//! change, Describe to read) and DescribeUserScramCredentials, AlterUserScramCredentials
//! (Describe and Alter on the cluster), over the store in `ferry_auth`, which keeps
//! every change in the data folder.
//!
//! Kafka names resource types, operations, permissions and pattern types by code; the
//! enums of `ferry_auth::acl` map them. Ferry's own subscription ACLs have no Kafka code:
//! they are never listed or deleted here (the HTTP API and the CLI manage them).

use super::{Ctx, Session};
use ferry_auth::acl::{Acl, AclFilter, PatternFilter, PatternType};
use ferry_auth::scram::{self, Mechanism, ScramCredential};
use ferry_auth::{Auth, AuthError, Operation, Permission, ResourceType};
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, CreateAclsRequest,
    CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;

/// Kafka's code for "any" in filters (resource type, pattern type, operation,
/// permission), and MATCH for pattern types.
const ANY: i8 = 1;
const MATCH: i8 = 2;

/// The resource types Kafka can name, which a filter for ANY covers.
const KAFKA_TYPES: [ResourceType; 4] = [
    ResourceType::Topic,
    ResourceType::Group,
    ResourceType::Cluster,
    ResourceType::TransactionalId,
];

/// An error code and its message, for one item of a request.
type ItemError = (i16, String);

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn invalid(message: String) -> ItemError {
    (ResponseError::InvalidRequest.code(), message)
}

fn cluster_denied(what: &str) -> ItemError {
    (
        ResponseError::ClusterAuthorizationFailed.code(),
        format!("not allowed to {what}"),
    )
}

fn storage_error(e: &AuthError) -> ItemError {
    match e {
        AuthError::Invalid(m) => invalid(m.clone()),
        AuthError::NotFound(m) => (ResponseError::ResourceNotFound.code(), m.clone()),
        AuthError::Conflict(m) | AuthError::Storage(m) => {
            (ResponseError::UnknownServerError.code(), m.clone())
        }
    }
}

/// Runs a store change (a synced write of `auth.json`, and for credentials nothing more
/// costly) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ItemError> + Send + 'static,
) -> Result<T, ItemError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err((
            ResponseError::UnknownServerError.code(),
            format!("the change failed: {e}"),
        ))
    })
}

fn resource_type(code: i8) -> Result<ResourceType, ItemError> {
    ResourceType::from_kafka_code(code)
        .ok_or_else(|| invalid(format!("resource type {code} is not one Ferry has")))
}

fn operation(code: i8) -> Result<Operation, ItemError> {
    Operation::from_kafka_code(code)
        .ok_or_else(|| invalid(format!("operation {code} is not one Ferry has")))
}

fn permission(code: i8) -> Result<Permission, ItemError> {
    Permission::from_kafka_code(code)
        .ok_or_else(|| invalid(format!("permission type {code} must be ALLOW or DENY")))
}

fn pattern_type(code: i8) -> Result<PatternType, ItemError> {
    PatternType::from_kafka_code(code).ok_or_else(|| {
        invalid(format!(
            "pattern type {code} must be LITERAL (3) or PREFIXED (4)"
        ))
    })
}

/// A binding as CreateAcls sends it, checked.
fn acl_from(c: &AclCreation) -> Result<Acl, ItemError> {
    let acl = Acl {
        principal: c.principal.to_string(),
        host: c.host.to_string(),
        resource_type: resource_type(c.resource_type)?,
        resource_name: c.resource_name.to_string(),
        pattern_type: pattern_type(c.resource_pattern_type)?,
        operation: operation(c.operation)?,
        permission: permission(c.permission_type)?,
    };
    acl.validate().map_err(invalid)?;
    Ok(acl)
}

pub async fn create_acls(
    ctx: &Ctx,
    req: CreateAclsRequest,
    session: &Session,
) -> CreateAclsResponse {
    let allowed = session.may_on_cluster(&ctx.auth, Operation::Alter);
    let mut outcomes: Vec<Result<Acl, ItemError>> = req
        .creations
        .iter()
        .map(|c| {
            if allowed {
                acl_from(c)
            } else {
                Err(cluster_denied("create ACLs"))
            }
        })
        .collect();
    let valid: Vec<Acl> = outcomes.iter().filter_map(|o| o.clone().ok()).collect();
    if !valid.is_empty() {
        let auth = Arc::clone(&ctx.auth);
        match blocking(move || auth.create_acls(valid).map_err(|e| storage_error(&e))).await {
            Ok(()) => {
                for acl in outcomes.iter().flatten() {
                    tracing::info!(peer = %session.peer, principal = ?session.principal.as_ref().map(|p| p.to_string()), acl = %acl, "ACL created over Kafka.");
                }
            }
            Err(err) => {
                for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *o = Err(err.clone());
                }
            }
        }
    }
    let results = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(_) => AclCreationResult::default(),
            Err((code, message)) => AclCreationResult::default()
                .with_error_code(code)
                .with_error_message(Some(s(message))),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// A filter's fields, as DescribeAcls and DeleteAcls send them.
struct KafkaFilter<'a> {
    resource_type: i8,
    resource_name: Option<&'a StrBytes>,
    pattern_type: i8,
    principal: Option<&'a StrBytes>,
    host: Option<&'a StrBytes>,
    operation: i8,
    permission: i8,
}

/// The filters for one Kafka filter: one per resource type it covers (ANY covers the
/// four Kafka has, never subscriptions).
fn filters_from(f: KafkaFilter<'_>) -> Result<Vec<AclFilter>, ItemError> {
    let types: Vec<ResourceType> = if f.resource_type == ANY {
        KAFKA_TYPES.to_vec()
    } else {
        vec![resource_type(f.resource_type)?]
    };
    let pattern_type = match f.pattern_type {
        ANY => None,
        MATCH => Some(PatternFilter::Match),
        3 => Some(PatternFilter::Literal),
        4 => Some(PatternFilter::Prefixed),
        other => {
            return Err(invalid(format!(
                "pattern type filter {other} must be ANY, MATCH, LITERAL or PREFIXED"
            )))
        }
    };
    let operation = match f.operation {
        ANY => None,
        code => Some(operation(code)?),
    };
    let permission = match f.permission {
        ANY => None,
        code => Some(permission(code)?),
    };
    Ok(types
        .into_iter()
        .map(|t| AclFilter {
            principal: f.principal.map(|p| p.to_string()),
            host: f.host.map(|h| h.to_string()),
            resource_type: Some(t),
            resource_name: f.resource_name.map(|n| n.to_string()),
            pattern_type,
            operation,
            permission,
        })
        .collect())
}

/// Kafka's code for a stored binding's resource type; Ferry's filters never select a
/// subscription binding here, so the fallback is never sent.
fn type_code(t: ResourceType) -> i8 {
    t.kafka_code().unwrap_or(0)
}

pub fn describe_acls(
    ctx: &Ctx,
    req: DescribeAclsRequest,
    session: &Session,
) -> DescribeAclsResponse {
    if !session.may_on_cluster(&ctx.auth, Operation::Describe) {
        let (code, message) = cluster_denied("describe ACLs");
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)));
    }
    let filters = match filters_from(KafkaFilter {
        resource_type: req.resource_type_filter,
        resource_name: req.resource_name_filter.as_ref(),
        pattern_type: req.pattern_type_filter,
        principal: req.principal_filter.as_ref(),
        host: req.host_filter.as_ref(),
        operation: req.operation,
        permission: req.permission_type,
    }) {
        Ok(f) => f,
        Err((code, message)) => {
            return DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(Some(s(message)))
        }
    };
    // Bindings grouped by resource, in the order first seen.
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for acl in filters.iter().flat_map(|f| ctx.auth.acls(f)) {
        let description = AclDescription::default()
            .with_principal(s(acl.principal.clone()))
            .with_host(s(acl.host.clone()))
            .with_operation(acl.operation.kafka_code())
            .with_permission_type(acl.permission.kafka_code());
        let (t, p) = (type_code(acl.resource_type), acl.pattern_type.kafka_code());
        match resources.iter_mut().find(|r| {
            r.resource_type == t
                && r.pattern_type == p
                && r.resource_name.as_str() == acl.resource_name
        }) {
            Some(r) => r.acls.push(description),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(t)
                    .with_resource_name(s(acl.resource_name.clone()))
                    .with_pattern_type(p)
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

fn matching(acl: &Acl) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(type_code(acl.resource_type))
        .with_resource_name(s(acl.resource_name.clone()))
        .with_pattern_type(acl.pattern_type.kafka_code())
        .with_principal(s(acl.principal.clone()))
        .with_host(s(acl.host.clone()))
        .with_operation(acl.operation.kafka_code())
        .with_permission_type(acl.permission.kafka_code())
}

async fn delete_one(ctx: &Ctx, f: &DeleteAclsFilter) -> Result<Vec<Acl>, ItemError> {
    let filters = filters_from(KafkaFilter {
        resource_type: f.resource_type_filter,
        resource_name: f.resource_name_filter.as_ref(),
        pattern_type: f.pattern_type_filter,
        principal: f.principal_filter.as_ref(),
        host: f.host_filter.as_ref(),
        operation: f.operation,
        permission: f.permission_type,
    })?;
    let auth = Arc::clone(&ctx.auth);
    blocking(move || {
        let mut gone = Vec::new();
        for filter in &filters {
            gone.extend(auth.delete_acls(filter).map_err(|e| storage_error(&e))?);
        }
        Ok(gone)
    })
    .await
}

pub async fn delete_acls(
    ctx: &Ctx,
    req: DeleteAclsRequest,
    session: &Session,
) -> DeleteAclsResponse {
    let allowed = session.may_on_cluster(&ctx.auth, Operation::Alter);
    let mut filter_results = Vec::with_capacity(req.filters.len());
    for f in &req.filters {
        let outcome = if allowed {
            delete_one(ctx, f).await
        } else {
            Err(cluster_denied("delete ACLs"))
        };
        filter_results.push(match outcome {
            Ok(gone) => {
                for acl in &gone {
                    tracing::info!(peer = %session.peer, principal = ?session.principal.as_ref().map(|p| p.to_string()), acl = %acl, "ACL deleted over Kafka.");
                }
                DeleteAclsFilterResult::default()
                    .with_matching_acls(gone.iter().map(matching).collect())
            }
            Err((code, message)) => DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(Some(s(message))),
        });
    }
    DeleteAclsResponse::default().with_filter_results(filter_results)
}

pub fn describe_user_scram_credentials(
    ctx: &Ctx,
    req: DescribeUserScramCredentialsRequest,
    session: &Session,
) -> DescribeUserScramCredentialsResponse {
    if !session.may_on_cluster(&ctx.auth, Operation::Describe) {
        let (code, message) = cluster_denied("describe SCRAM credentials");
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(s(message)));
    }
    let described = |info: ferry_auth::store::UserInfo| {
        DescribeUserScramCredentialsResult::default()
            .with_user(s(info.name))
            .with_credential_infos(
                info.mechanisms
                    .iter()
                    .map(|m| {
                        CredentialInfo::default()
                            .with_mechanism(m.mechanism.kafka_code())
                            .with_iterations(m.iterations as i32)
                    })
                    .collect(),
            )
    };
    let results = match req.users {
        None => ctx.auth.users().into_iter().map(described).collect(),
        Some(users) if users.is_empty() => ctx.auth.users().into_iter().map(described).collect(),
        Some(users) => {
            let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
            let mut results = Vec::new();
            for (i, name) in names.iter().enumerate() {
                if names[..i].contains(name) {
                    continue;
                }
                let failed = |code: ResponseError, message: String| {
                    DescribeUserScramCredentialsResult::default()
                        .with_user(s(*name))
                        .with_error_code(code.code())
                        .with_error_message(Some(s(message)))
                };
                results.push(if names[i + 1..].contains(name) {
                    failed(
                        ResponseError::DuplicateResource,
                        format!("user {name:?} is named more than once"),
                    )
                } else {
                    match ctx.auth.user(name) {
                        Some(info) => described(info),
                        None => failed(
                            ResponseError::ResourceNotFound,
                            format!("no SCRAM credentials for user {name:?}"),
                        ),
                    }
                });
            }
            results
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One change asked for by AlterUserScramCredentials.
enum ScramChange {
    Delete(Mechanism),
    Upsert(Mechanism, ScramCredential),
}

fn unacceptable(message: String) -> ItemError {
    (ResponseError::UnacceptableCredential.code(), message)
}

fn mechanism(code: i8) -> Result<Mechanism, ItemError> {
    Mechanism::from_kafka_code(code).ok_or_else(|| {
        (
            ResponseError::UnsupportedSaslMechanism.code(),
            format!(
                "mechanism {code} is not one Ferry has: SCRAM-SHA-256 (1) or SCRAM-SHA-512 (2)"
            ),
        )
    })
}

/// Checks an upsertion as Kafka does: a name, a known mechanism, iterations within
/// bounds, a salt, and a salted password of the hash's length.
fn upsertion(
    name: &str,
    mechanism_code: i8,
    iterations: i32,
    salt: &[u8],
    salted_password: &[u8],
) -> Result<ScramChange, ItemError> {
    ferry_auth::check_user_name(name).map_err(unacceptable)?;
    let m = mechanism(mechanism_code)?;
    let range = scram::ITERATIONS_MIN as i32..=scram::ITERATIONS_MAX as i32;
    if !range.contains(&iterations) {
        return Err(unacceptable(format!(
            "iterations must be between {} and {}, got {iterations}",
            scram::ITERATIONS_MIN,
            scram::ITERATIONS_MAX
        )));
    }
    if salt.is_empty() || salt.len() > 1024 {
        return Err(unacceptable("a salt has 1 to 1024 bytes".into()));
    }
    if salted_password.len() != m.output_len() {
        return Err(unacceptable(format!(
            "a {} salted password has {} bytes, got {}",
            m.name(),
            m.output_len(),
            salted_password.len()
        )));
    }
    let credential =
        ScramCredential::from_salted_password(m, salted_password, salt.to_vec(), iterations as u32);
    Ok(ScramChange::Upsert(m, credential))
}

/// Applies one user's changes in order; the first failure is the user's result (the
/// changes before it stay made).
fn apply(auth: &Auth, name: &str, changes: Vec<ScramChange>) -> Result<(), ItemError> {
    for change in changes {
        match change {
            ScramChange::Delete(m) => auth.delete_scram(name, m),
            ScramChange::Upsert(m, c) => auth.upsert_scram(name, m, c),
        }
        .map_err(|e| match e {
            AuthError::Invalid(m) => unacceptable(m),
            other => storage_error(&other),
        })?;
    }
    Ok(())
}

pub async fn alter_user_scram_credentials(
    ctx: &Ctx,
    req: AlterUserScramCredentialsRequest,
    session: &Session,
) -> AlterUserScramCredentialsResponse {
    let allowed = session.may_on_cluster(&ctx.auth, Operation::Alter);
    // Each user's changes, checked, in the order users first appear.
    let mut users: Vec<(String, Result<Vec<ScramChange>, ItemError>)> = Vec::new();
    let mut add = |name: &str, change: Result<ScramChange, ItemError>| {
        let i = match users.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                users.push((name.to_string(), Ok(Vec::new())));
                users.len() - 1
            }
        };
        let entry = &mut users[i].1;
        match (entry.as_mut(), change) {
            (Err(_), _) => {}
            (Ok(_), Err(e)) => *entry = Err(e),
            (Ok(list), Ok(c)) => {
                let m = match &c {
                    ScramChange::Delete(m) | ScramChange::Upsert(m, _) => *m,
                };
                let twice = list.iter().any(
                    |c| matches!(c, ScramChange::Delete(x) | ScramChange::Upsert(x, _) if *x == m),
                );
                if twice {
                    *entry = Err((
                        ResponseError::DuplicateResource.code(),
                        format!("{} is changed more than once for user {name:?}", m.name()),
                    ));
                } else {
                    list.push(c);
                }
            }
        }
    };
    for d in &req.deletions {
        let change = if d.name.is_empty() {
            Err(unacceptable("a user name cannot be empty".into()))
        } else {
            mechanism(d.mechanism).map(ScramChange::Delete)
        };
        add(&d.name, change);
    }
    for u in &req.upsertions {
        let change = upsertion(
            &u.name,
            u.mechanism,
            u.iterations,
            &u.salt,
            &u.salted_password,
        );
        add(&u.name, change);
    }
    let mut results = Vec::with_capacity(users.len());
    for (name, changes) in users {
        let outcome = match (allowed, changes) {
            (false, _) => Err(cluster_denied("alter SCRAM credentials")),
            (true, Err(e)) => Err(e),
            (true, Ok(changes)) => {
                let (auth, user) = (Arc::clone(&ctx.auth), name.clone());
                blocking(move || apply(&auth, &user, changes)).await
            }
        };
        let result = AlterUserScramCredentialsResult::default().with_user(s(name.clone()));
        results.push(match outcome {
            Ok(()) => {
                tracing::info!(peer = %session.peer, user = ?name, "SCRAM credentials changed over Kafka.");
                result
            }
            Err((code, message)) => result
                .with_error_code(code)
                .with_error_message(Some(s(message))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

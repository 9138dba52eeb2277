//! `ferry user`, `ferry token` and `ferry acl`: through a running server's API, or
//! straight on a data folder no server uses (`--data-dir`, for the first user).

use crate::cli::{
    AclCommand, AclFilterArgs, AclResource, AdminArgs, PasswordArgs, TokenCommand, UserCommand,
};
use crate::output;
use anyhow::{bail, Context};
use ferry_auth::acl::{AclFilter, PatternFilter, CLUSTER_NAME};
use ferry_auth::{Acl, Auth, Operation, PatternType, Permission, ResourceType};
use ferry_client::Client;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;

/// Where changes go.
enum Backend {
    Folder(Arc<Auth>),
    Server(Client),
}

fn backend(a: &AdminArgs) -> anyhow::Result<Backend> {
    Ok(match &a.data_dir {
        Some(dir) => Backend::Folder(Auth::open_offline(dir).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => Backend::Server(a.client.client()?),
    })
}

fn local<T: serde::Serialize>(r: Result<T, ferry_auth::AuthError>) -> anyhow::Result<Value> {
    let v = r.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(serde_json::to_value(v)?)
}

/// Percent-encodes a path segment or query value.
pub(crate) fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn read_password(p: &PasswordArgs) -> anyhow::Result<String> {
    let pw = match (&p.password, p.password_stdin) {
        (Some(pw), _) => pw.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

fn user_line(u: &Value) -> Vec<String> {
    let mechanisms: Vec<String> = u["mechanisms"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{} ({} iterations)",
                        m["mechanism"].as_str().unwrap_or_default(),
                        m["iterations"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        u["name"].as_str().unwrap_or_default().to_string(),
        output::rfc3339_ms(u["created_at_ms"].as_u64().unwrap_or(0)),
        mechanisms.join(", "),
    ]
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            name,
            password,
            admin,
        } => {
            let pw = read_password(&password)?;
            let u = match backend(&admin)? {
                Backend::Folder(a) => local(a.create_user(&name, &pw))?,
                Backend::Server(c) => {
                    let body = json!({"name": name, "password": pw});
                    c.call(Method::POST, "/v1/users", Some(&body)).await?
                }
            };
            output::answer_line(admin.client.json, &u, || format!("Created user {name}."))
        }
        UserCommand::List(admin) => {
            let v = match backend(&admin)? {
                Backend::Folder(a) => json!({"users": a.users()}),
                Backend::Server(c) => c.call(Method::GET, "/v1/users", None).await?,
            };
            output::answer(admin.client.json, &v, || {
                let rows: Vec<Vec<String>> = v["users"]
                    .as_array()
                    .map(|us| us.iter().map(user_line).collect())
                    .unwrap_or_default();
                Ok(output::table(&["USER", "CREATED", "MECHANISMS"], &rows)?)
            })
        }
        UserCommand::Describe { name, admin } => {
            let v = match backend(&admin)? {
                Backend::Folder(a) => local(a.user(&name).ok_or_else(|| {
                    ferry_auth::AuthError::NotFound(format!("no user named {name:?}"))
                }))?,
                Backend::Server(c) => {
                    c.call(Method::GET, &format!("/v1/users/{}", q(&name)), None)
                        .await?
                }
            };
            output::answer(admin.client.json, &v, || {
                Ok(output::table(
                    &["USER", "CREATED", "MECHANISMS"],
                    &[user_line(&v)],
                )?)
            })
        }
        UserCommand::Passwd {
            name,
            password,
            admin,
        } => {
            let pw = read_password(&password)?;
            let v = match backend(&admin)? {
                Backend::Folder(a) => local(a.set_password(&name, &pw))?,
                Backend::Server(c) => {
                    let body = json!({"password": pw});
                    c.call(
                        Method::PATCH,
                        &format!("/v1/users/{}", q(&name)),
                        Some(&body),
                    )
                    .await?
                }
            };
            output::answer_line(admin.client.json, &v, || {
                format!("Changed the password of {name}.")
            })
        }
        UserCommand::Delete { name, admin } => {
            match backend(&admin)? {
                Backend::Folder(a) => {
                    local(a.delete_user(&name))?;
                }
                Backend::Server(c) => {
                    c.call(Method::DELETE, &format!("/v1/users/{}", q(&name)), None)
                        .await?;
                }
            }
            output::answer_line(admin.client.json, &json!({"deleted": name}), || {
                format!("Deleted user {name} and its tokens.")
            })
        }
    }
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            user,
            description,
            expires_in_ms,
            admin,
        } => {
            let expires_at_ms = expires_in_ms.map(|ms| ferry_broker::now_ms().saturating_add(ms));
            let v = match backend(&admin)? {
                Backend::Folder(a) => {
                    let (info, token) = a
                        .create_token(&user, &description, expires_at_ms)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    let mut v = serde_json::to_value(info)?;
                    v["token"] = Value::from(token);
                    v
                }
                Backend::Server(c) => {
                    let body = json!({"user": user, "description": description, "expires_at_ms": expires_at_ms});
                    c.call(Method::POST, "/v1/tokens", Some(&body)).await?
                }
            };
            output::answer(admin.client.json, &v, || {
                output::line(&format!(
                    "Token {} for {user} (shown once; keep it secret):",
                    v["id"].as_str().unwrap_or_default()
                ))?;
                Ok(output::line(v["token"].as_str().unwrap_or_default())?)
            })
        }
        TokenCommand::List(admin) => {
            let v = match backend(&admin)? {
                Backend::Folder(a) => json!({"tokens": a.tokens()}),
                Backend::Server(c) => c.call(Method::GET, "/v1/tokens", None).await?,
            };
            output::answer(admin.client.json, &v, || {
                let rows: Vec<Vec<String>> = v["tokens"]
                    .as_array()
                    .map(|ts| {
                        ts.iter()
                            .map(|t| {
                                vec![
                                    t["id"].as_str().unwrap_or_default().to_string(),
                                    t["user"].as_str().unwrap_or_default().to_string(),
                                    output::rfc3339_ms(t["created_at_ms"].as_u64().unwrap_or(0)),
                                    t["expires_at_ms"]
                                        .as_u64()
                                        .map_or_else(|| "never".into(), output::rfc3339_ms),
                                    t["description"].as_str().unwrap_or_default().to_string(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(output::table(
                    &["ID", "USER", "CREATED", "EXPIRES", "DESCRIPTION"],
                    &rows,
                )?)
            })
        }
        TokenCommand::Delete { id, admin } => {
            match backend(&admin)? {
                Backend::Folder(a) => {
                    local(a.delete_token(&id))?;
                }
                Backend::Server(c) => {
                    c.call(Method::DELETE, &format!("/v1/tokens/{}", q(&id)), None)
                        .await?;
                }
            }
            output::answer_line(admin.client.json, &json!({"deleted": id}), || {
                format!("Revoked token {id}.")
            })
        }
    }
}

/// The resource type and name the flags give, if any.
fn resource(r: &AclResource) -> Option<(ResourceType, String)> {
    let named = [
        (ResourceType::Topic, &r.topic),
        (ResourceType::Group, &r.group),
        (ResourceType::Subscription, &r.subscription),
        (ResourceType::TransactionalId, &r.transactional_id),
    ];
    if r.cluster {
        return Some((ResourceType::Cluster, CLUSTER_NAME.to_string()));
    }
    named
        .into_iter()
        .find_map(|(t, n)| n.as_ref().map(|n| (t, n.clone())))
}

fn filter(f: &AclFilterArgs) -> anyhow::Result<AclFilter> {
    let (resource_type, resource_name) = match resource(&f.resource) {
        Some((t, n)) => (Some(t), Some(n)),
        None => (None, None),
    };
    Ok(AclFilter {
        principal: f.principal.clone(),
        host: f.host.clone(),
        resource_type,
        resource_name,
        pattern_type: f.prefixed.then_some(PatternFilter::Prefixed),
        operation: f
            .operation
            .as_deref()
            .map(str::parse::<Operation>)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--operation: {e}"))?,
        permission: None,
    })
}

fn filter_query(f: &AclFilter, all: bool) -> String {
    let mut parts = Vec::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            parts.push(format!("{k}={}", q(v)));
        }
    };
    put("principal", f.principal.as_deref());
    put("host", f.host.as_deref());
    put("resource_type", f.resource_type.map(|t| t.as_str()));
    put("resource_name", f.resource_name.as_deref());
    put("pattern_type", f.pattern_type.map(|_| "prefixed"));
    put("operation", f.operation.map(|o| o.as_str()));
    if all {
        put("all", Some("true"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn acl_rows(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .map(|acls| {
            acls.iter()
                .map(|a| {
                    [
                        "permission",
                        "principal",
                        "operation",
                        "resource_type",
                        "pattern_type",
                        "resource_name",
                        "host",
                    ]
                    .iter()
                    .map(|k| a[*k].as_str().unwrap_or_default().to_string())
                    .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

const ACL_HEADERS: [&str; 7] = [
    "PERMISSION",
    "PRINCIPAL",
    "OPERATION",
    "RESOURCE",
    "PATTERN",
    "NAME",
    "HOST",
];

pub async fn acl(cmd: AclCommand) -> anyhow::Result<()> {
    match cmd {
        AclCommand::Create {
            principal,
            operations,
            host,
            deny,
            prefixed,
            resource: r,
            admin,
        } => {
            let Some((resource_type, resource_name)) = resource(&r) else {
                bail!("name the resource: --topic, --group, --subscription, --transactional-id or --cluster");
            };
            let acls = operations
                .iter()
                .map(|op| {
                    let acl = Acl {
                        principal: principal.clone(),
                        host: host.clone(),
                        resource_type,
                        resource_name: resource_name.clone(),
                        pattern_type: if prefixed {
                            PatternType::Prefixed
                        } else {
                            PatternType::Literal
                        },
                        operation: op
                            .parse()
                            .map_err(|e| anyhow::anyhow!("--operation: {e}"))?,
                        permission: if deny {
                            Permission::Deny
                        } else {
                            Permission::Allow
                        },
                    };
                    acl.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(acl)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let v = match backend(&admin)? {
                Backend::Folder(a) => {
                    local(a.create_acls(acls.clone()))?;
                    json!({"acls": acls})
                }
                Backend::Server(c) => {
                    c.call(Method::POST, "/v1/acls", Some(&json!({"acls": acls})))
                        .await?
                }
            };
            output::answer(admin.client.json, &v, || {
                Ok(output::table(&ACL_HEADERS, &acl_rows(&v["acls"]))?)
            })
        }
        AclCommand::List { filter: f, admin } => {
            let f = filter(&f)?;
            let v = match backend(&admin)? {
                Backend::Folder(a) => json!({"acls": a.acls(&f)}),
                Backend::Server(c) => {
                    c.call(
                        Method::GET,
                        &format!("/v1/acls{}", filter_query(&f, false)),
                        None,
                    )
                    .await?
                }
            };
            output::answer(admin.client.json, &v, || {
                Ok(output::table(&ACL_HEADERS, &acl_rows(&v["acls"]))?)
            })
        }
        AclCommand::Delete {
            filter: f,
            all,
            admin,
        } => {
            let f = filter(&f)?;
            if f == AclFilter::default() && !all {
                bail!("name the ACLs to delete (--principal, --topic, --operation, ...), or pass --all to delete every ACL");
            }
            let v = match backend(&admin)? {
                Backend::Folder(a) => json!({"deleted": local(a.delete_acls(&f))?}),
                Backend::Server(c) => {
                    c.call(
                        Method::DELETE,
                        &format!("/v1/acls{}", filter_query(&f, all)),
                        None,
                    )
                    .await?
                }
            };
            output::answer(admin.client.json, &v, || {
                Ok(output::table(&ACL_HEADERS, &acl_rows(&v["deleted"]))?)
            })
        }
    }
}

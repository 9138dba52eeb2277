//! Authentication and ACLs on the HTTP API, through the real binary (docs/security.md).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Makes a user in a data folder no server uses, as an operator does before turning
/// authentication on.
fn make_user(data: &Path, name: &str, password: &str) {
    let out = Command::new(BIN)
        .args(["user", "create", name, "--password", password, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server with authentication on and `admin` (password `admin-pw`) as super user.
fn secured(dir: &Path) -> Server {
    make_user(dir, "admin", "admin-pw");
    Server::start(dir, &["--auth", "--super-users", "User:admin"])
}

fn admin(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.basic_auth("admin", Some("admin-pw"))
}

async fn grant(s: &Server, acl: Value) {
    let (status, body) =
        call(admin(http().post(format!("{}/v1/acls", s.url))).json(&json!({"acls": [acl]}))).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn with_authentication_on_a_request_needs_a_token_or_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let s = secured(dir.path());

    // Nothing: 401 with a challenge naming both schemes.
    let r = http()
        .get(format!("{}/v1/topics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge: Vec<&str> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let challenge = challenge.join(" | ");
    assert!(
        challenge.contains("Bearer") && challenge.contains("Basic"),
        "{challenge}"
    );
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:ferry:problem:unauthenticated");

    // Health, readiness and the API document stay open to probes.
    for path in ["/healthz", "/readyz", "/v1/openapi.json"] {
        let (status, _) = call(http().get(format!("{}{path}", s.url))).await;
        assert_eq!(status, 200, "{path}");
    }

    // A wrong password and a made-up token: 401 invalid-credentials.
    let (status, p) = call(
        http()
            .get(format!("{}/v1/topics", s.url))
            .basic_auth("admin", Some("nope")),
    )
    .await;
    assert_eq!(
        (status, p["type"].as_str()),
        (401, Some("urn:ferry:problem:invalid-credentials"))
    );
    let (status, _) = call(
        http()
            .get(format!("{}/v1/topics", s.url))
            .bearer_auth("ferry_000000000000_forged"),
    )
    .await;
    assert_eq!(status, 401);

    // Basic with the right password.
    let (status, me) = call(admin(http().get(format!("{}/v1/whoami", s.url)))).await;
    assert_eq!(status, 200);
    assert_eq!(me["principal"], "User:admin");
    assert_eq!(me["super_user"], true);

    // A token, shown once, then working as the user; listings never show its text.
    let (status, t) = call(
        admin(http().post(format!("{}/v1/tokens", s.url)))
            .json(&json!({"user": "admin", "description": "ci"})),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let token = t["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ferry_"));
    let (status, me) = call(
        http()
            .get(format!("{}/v1/whoami", s.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        (status, me["principal"].as_str()),
        (200, Some("User:admin"))
    );
    let (_, list) = call(
        http()
            .get(format!("{}/v1/tokens", s.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(list["tokens"][0]["id"], t["id"]);
    assert!(!list.to_string().contains(&token[20..]), "{list}");
    let (_, users) = call(
        http()
            .get(format!("{}/v1/users", s.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(users["users"][0]["name"], "admin");
    assert!(!users.to_string().contains("stored_key"), "{users}");

    // Revoked: refused at once.
    let id = t["id"].as_str().unwrap();
    let (status, _) = call(
        http()
            .delete(format!("{}/v1/tokens/{id}", s.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        http()
            .get(format!("{}/v1/whoami", s.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 401);

    // The users, tokens and ACLs file holds no secret and only its owner may read it.
    let text = std::fs::read_to_string(dir.path().join("auth.json")).unwrap();
    assert!(!text.contains("admin-pw") && !text.contains(&token));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn acls_decide_what_a_user_may_do_with_topics() {
    let dir = tempfile::tempdir().unwrap();
    let s = secured(dir.path());
    let (status, _) = call(
        admin(http().post(format!("{}/v1/users", s.url)))
            .json(&json!({"name": "alice", "password": "alice-pw"})),
    )
    .await;
    assert_eq!(status, 201);
    for t in ["orders", "payroll"] {
        let (status, _) =
            call(admin(http().post(format!("{}/v1/topics", s.url))).json(&json!({"name": t})))
                .await;
        assert_eq!(status, 201);
    }
    let alice = |req: reqwest::RequestBuilder| req.basic_auth("alice", Some("alice-pw"));
    let produce = || {
        alice(http().post(format!("{}/v1/topics/orders/records", s.url)))
            .json(&json!({"records": [{"value": "one"}]}))
    };

    // Nothing allowed yet: 403 naming the missing permission; listings are empty.
    let (status, p) = call(produce()).await;
    assert_eq!(status, 403, "{p}");
    assert_eq!(p["type"], "urn:ferry:problem:forbidden");
    assert_eq!(
        (p["operation"].as_str(), p["resource_name"].as_str()),
        (Some("write"), Some("orders"))
    );
    assert!(
        p["detail"].as_str().unwrap().contains("ferry acl create"),
        "{p}"
    );
    let (_, list) = call(alice(http().get(format!("{}/v1/topics", s.url)))).await;
    assert_eq!(list["topics"], json!([]));

    // Write on orders: produce works, reading does not, and only orders is listed.
    grant(&s, json!({"principal": "User:alice", "resource_type": "topic", "resource_name": "orders", "operation": "write"})).await;
    let (status, body) = call(produce()).await;
    assert_eq!(status, 200, "{body}");
    // Deleting records needs delete on the topic, as Kafka's DeleteRecords.
    let (status, p) = call(
        alice(http().post(format!(
            "{}/v1/topics/orders/partitions/0/delete-records",
            s.url
        )))
        .json(&json!({"before_offset": "latest"})),
    )
    .await;
    assert_eq!(status, 403, "{p}");
    assert_eq!(p["operation"], "delete");
    let (status, _) = call(alice(
        http().get(format!("{}/v1/topics/orders/partitions/0/records", s.url)),
    ))
    .await;
    assert_eq!(status, 403);
    let (_, list) = call(alice(http().get(format!("{}/v1/topics", s.url)))).await;
    let names: Vec<&str> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["orders"]);

    // A prefixed read ACL, then a deny that beats it.
    grant(&s, json!({"principal": "User:alice", "resource_type": "topic", "resource_name": "ord", "pattern_type": "prefixed", "operation": "read"})).await;
    let (status, _) = call(alice(
        http().get(format!("{}/v1/topics/orders/partitions/0/records", s.url)),
    ))
    .await;
    assert_eq!(status, 200);
    grant(&s, json!({"principal": "User:*", "resource_type": "topic", "resource_name": "orders", "operation": "read", "permission": "deny"})).await;
    let (status, _) = call(alice(
        http().get(format!("{}/v1/topics/orders/partitions/0/records", s.url)),
    ))
    .await;
    assert_eq!(status, 403);

    // Creating and deleting topics.
    let (status, _) = call(
        alice(http().post(format!("{}/v1/topics", s.url))).json(&json!({"name": "alice.events"})),
    )
    .await;
    assert_eq!(status, 403);
    grant(&s, json!({"principal": "User:alice", "resource_type": "topic", "resource_name": "alice.", "pattern_type": "prefixed", "operation": "all"})).await;
    let (status, _) = call(
        alice(http().post(format!("{}/v1/topics", s.url))).json(&json!({"name": "alice.events"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(alice(http().delete(format!("{}/v1/topics/payroll", s.url)))).await;
    assert_eq!(status, 403);
    let (status, _) = call(alice(
        http().delete(format!("{}/v1/topics/alice.events", s.url)),
    ))
    .await;
    assert_eq!(status, 204);

    // Administration needs the cluster: alice may not make users or ACLs.
    let (status, _) = call(
        alice(http().post(format!("{}/v1/users", s.url)))
            .json(&json!({"name": "eve", "password": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(alice(http().get(format!("{}/v1/acls", s.url)))).await;
    assert_eq!(status, 403);
    let (status, _) = call(alice(http().get(format!("{}/metrics", s.url)))).await;
    assert_eq!(status, 403);
    // But she may make a token for herself, and it acts as her.
    let (status, t) =
        call(alice(http().post(format!("{}/v1/tokens", s.url))).json(&json!({"user": "alice"})))
            .await;
    assert_eq!(status, 201, "{t}");
    let (_, me) = call(
        http()
            .get(format!("{}/v1/whoami", s.url))
            .bearer_auth(t["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(me["principal"], "User:alice");
    let (status, _) =
        call(alice(http().post(format!("{}/v1/tokens", s.url))).json(&json!({"user": "admin"})))
            .await;
    assert_eq!(status, 403);
    // And change her own password, but not another user's.
    let (status, _) = call(
        alice(http().patch(format!("{}/v1/users/admin", s.url)))
            .json(&json!({"password": "mine-now"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = call(
        alice(http().patch(format!("{}/v1/users/alice", s.url)))
            .json(&json!({"password": "alice-pw-2"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(alice(http().get(format!("{}/v1/whoami", s.url)))).await;
    assert_eq!(status, 401, "the old password no longer works");
    let (status, _) = call(
        http()
            .patch(format!("{}/v1/users/alice", s.url))
            .basic_auth("alice", Some("alice-pw-2"))
            .json(&json!({"password": "alice-pw"})),
    )
    .await;
    assert_eq!(status, 200);

    // ACLs survive a restart (kill -9: every change was synced before it was answered).
    drop(s);
    let s = Server::start(dir.path(), &["--auth", "--super-users", "User:admin"]);
    let (status, _) = call(
        http()
            .post(format!("{}/v1/topics/orders/records", s.url))
            .basic_auth("alice", Some("alice-pw"))
            .json(&json!({"records": [{"value": "two"}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, acls) = call(admin(http().get(format!(
        "{}/v1/acls?principal=User:alice&resource_type=topic",
        s.url
    ))))
    .await;
    assert_eq!(acls["acls"].as_array().unwrap().len(), 3, "{acls}");
    // Deleting needs a filter; with one, only what it names goes.
    let (status, _) = call(admin(http().delete(format!("{}/v1/acls", s.url)))).await;
    assert_eq!(status, 400);
    let (status, gone) = call(admin(http().delete(format!(
        "{}/v1/acls?principal=User:alice&operation=write",
        s.url
    ))))
    .await;
    assert_eq!(
        (status, gone["deleted"].as_array().unwrap().len()),
        (200, 1),
        "{gone}"
    );
}

#[tokio::test]
async fn subscriptions_need_read_to_consume_and_write_to_push() {
    let dir = tempfile::tempdir().unwrap();
    let s = secured(dir.path());
    let (status, _) = call(
        admin(http().post(format!("{}/v1/users", s.url)))
            .json(&json!({"name": "worker", "password": "worker-pw"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) =
        call(admin(http().post(format!("{}/v1/topics", s.url))).json(&json!({"name": "jobs"})))
            .await;
    assert_eq!(status, 201);
    let worker = |req: reqwest::RequestBuilder| req.basic_auth("worker", Some("worker-pw"));
    let new_sub = json!({"name": "jobs-worker", "topic": "jobs"});

    // Creating a subscription needs create on it and read on its topic.
    let (status, p) =
        call(worker(http().post(format!("{}/v1/subscriptions", s.url))).json(&new_sub)).await;
    assert_eq!(
        (status, p["resource_type"].as_str()),
        (403, Some("subscription"))
    );
    grant(&s, json!({"principal": "User:worker", "resource_type": "subscription", "resource_name": "jobs-", "pattern_type": "prefixed", "operation": "create"})).await;
    let (status, p) =
        call(worker(http().post(format!("{}/v1/subscriptions", s.url))).json(&new_sub)).await;
    assert_eq!((status, p["resource_type"].as_str()), (403, Some("topic")));
    grant(&s, json!({"principal": "User:worker", "resource_type": "topic", "resource_name": "jobs", "operation": "read"})).await;
    let (status, body) =
        call(worker(http().post(format!("{}/v1/subscriptions", s.url))).json(&new_sub)).await;
    assert_eq!(status, 201, "{body}");

    let (status, _) = call(
        admin(http().post(format!("{}/v1/topics/jobs/records", s.url)))
            .json(&json!({"records": [{"value": "j1"}]})),
    )
    .await;
    assert_eq!(status, 200);
    // Pulling needs read on the subscription itself.
    let pull = || {
        worker(http().post(format!("{}/v1/subscriptions/jobs-worker/pull", s.url)))
            .json(&json!({"max_records": 1, "wait_ms": 0}))
    };
    let (status, _) = call(pull()).await;
    assert_eq!(status, 403);
    grant(&s, json!({"principal": "User:worker", "resource_type": "subscription", "resource_name": "jobs-worker", "operation": "read"})).await;
    let (status, body) = call(pull()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"][0]["value"], "j1", "{body}");
    let (status, _) = call(worker(
        http().post(format!("{}/v1/subscriptions/jobs-worker/purge", s.url)),
    ))
    .await;
    assert_eq!(status, 403, "purging is alter");

    // A push subscription sends records out of Ferry: it needs write on the subscription.
    let push = json!({"name": "jobs-hook", "topic": "jobs", "mode": "push", "push": {"url": "https://example.com/hook"}});
    let (status, p) =
        call(worker(http().post(format!("{}/v1/subscriptions", s.url))).json(&push)).await;
    assert_eq!(
        (status, p["operation"].as_str()),
        (403, Some("write")),
        "{p}"
    );
    let (_, subs) = call(worker(http().get(format!("{}/v1/subscriptions", s.url)))).await;
    let names: Vec<&str> = subs["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jobs-worker"]);
}

#[test]
fn a_non_loopback_address_without_authentication_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--http-addr",
            "0.0.0.0:0",
            "--kafka-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--auth") && err.contains("--allow-anonymous"),
        "{err}"
    );
    // Knowingly open: it starts (and is stopped at once).
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--http-addr",
            "0.0.0.0:0",
            "--kafka-addr",
            "127.0.0.1:0",
            "--allow-anonymous",
            "--data-dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "it should still run");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn the_first_user_is_made_on_the_folder_and_not_while_a_server_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    make_user(dir.path(), "root", "pw");
    let out = Command::new(BIN)
        .args(["user", "create", "root", "--password", "x", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let s = Server::start(dir.path(), &[]);
    let out = Command::new(BIN)
        .args(["user", "create", "other", "--password", "x", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is using"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Through the server instead, with the CLI's credentials flags.
    let out = Command::new(BIN)
        .args([
            "user",
            "list",
            "--json",
            "--url",
            &s.url,
            "--auth-user",
            "root",
            "--auth-password",
            "pw",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["users"][0]["name"], "root");
}

/// `ferry acl` and `ferry token` through a server, with a token from the environment.
#[test]
fn acls_and_tokens_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    make_user(dir.path(), "admin", "admin-pw");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // An ACL made on the folder before the server runs.
    let data = dir.path().to_str().unwrap();
    let (ok, _, err) = run(
        &[
            "acl",
            "create",
            "--principal",
            "User:ci",
            "--operation",
            "write",
            "--operation",
            "describe",
            "--topic",
            "builds.",
            "--prefixed",
            "--data-dir",
            data,
        ],
        &[],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &[
            "acl",
            "create",
            "--principal",
            "ci",
            "--operation",
            "read",
            "--topic",
            "x",
            "--data-dir",
            data,
        ],
        &[],
    );
    assert!(!ok && err.contains("User:<name>"), "{err}");
    let (ok, out, _) = run(
        &[
            "token",
            "create",
            "--user",
            "admin",
            "--json",
            "--data-dir",
            data,
        ],
        &[],
    );
    assert!(ok);
    let token: Value = serde_json::from_str(&out).unwrap();
    let token = token["token"].as_str().unwrap().to_string();

    let s = Server::start(dir.path(), &["--auth", "--super-users", "User:admin"]);
    let env = [
        ("FERRY_URL", s.url.as_str()),
        ("FERRY_TOKEN", token.as_str()),
    ];
    let (ok, out, err) = run(&["acl", "list", "--principal", "User:ci", "--json"], &env);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["acls"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["acls"][0]["pattern_type"], "prefixed");
    let (ok, out, _) = run(&["acl", "list"], &env);
    assert!(
        ok && out.contains("builds.") && out.contains("PRINCIPAL"),
        "{out}"
    );
    let (ok, _, err) = run(&["acl", "delete"], &env);
    assert!(!ok && err.contains("--all"), "{err}");
    let (ok, out, err) = run(
        &["acl", "delete", "--operation", "describe", "--json"],
        &env,
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"].as_array().unwrap().len(), 1, "{v}");
    // Without the token the server refuses, and the CLI says what happened.
    let (ok, _, err) = run(&["topic", "list"], &[("FERRY_URL", s.url.as_str())]);
    assert!(!ok && err.contains("requires authentication"), "{err}");
    let (ok, out, _) = run(&["token", "list"], &env);
    assert!(ok && out.contains("admin"), "{out}");
}

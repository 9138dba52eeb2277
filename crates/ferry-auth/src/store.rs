//! Users, API tokens and ACLs, kept in `<data>/auth.json` (mode 0600, replaced
//! atomically on every change) or, in shared mode, in a [`StateBackend`] every node
//! shares (Postgres), and the two questions asked of them: who is this client, and may
//! it do this.
//!
//! # Secrets at rest
//!
//! A user's password is kept only as SCRAM credentials (salt, iterations, StoredKey,
//! ServerKey per mechanism), from which PLAIN and HTTP Basic are checked too. A token is
//! kept as the SHA-256 of its text: tokens carry 256 random bits, so a fast hash does not
//! help a search. Neither can be read back; `describe` and listings never show them.
//!
//! # Cost
//!
//! Checking a password costs a PBKDF2 of the credential's iterations (milliseconds).
//! HTTP Basic sends the password with every request, so a successful check is
//! remembered (by a hash of user and password, at most [`VERIFIED_CACHE_MAX`] entries)
//! until the user's credentials change.

use crate::acl::{self, Acl, AclFilter, Operation, ResourceType};
use crate::scram::{self, Mechanism, ScramCredential};
use crate::Principal;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Remembered successful password checks, at most.
pub const VERIFIED_CACHE_MAX: usize = 4096;
/// Most users, tokens and ACLs each the store keeps: the file is rewritten whole on
/// every change, so it stays small.
pub const ENTRIES_MAX: usize = 10_000;
/// Longest token description, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 256;

/// Compares two secrets in time that depends on their lengths only.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// How the server applies authentication and ACLs.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Every client must authenticate, and ACLs decide what it may do. Off: every client
    /// is `User:ANONYMOUS` and may do everything (the embedded default on loopback).
    pub required: bool,
    /// Principals (`User:<name>`) allowed everything, whatever the ACLs say.
    pub super_users: Vec<String>,
    /// What a request on a resource no ACL names gets: allowed (`true`) or denied.
    pub no_acl_allows: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The change could not be made durable; nothing changed.
    #[error("{0}")]
    Storage(String),
}

#[derive(Clone, Serialize, Deserialize)]
struct User {
    created_at_ms: u64,
    scram: BTreeMap<Mechanism, ScramCredential>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Token {
    user: String,
    #[serde(default)]
    description: String,
    created_at_ms: u64,
    #[serde(default)]
    expires_at_ms: Option<u64>,
    /// SHA-256 of the token's whole text, base64url.
    hash: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct State {
    version: u32,
    /// Derives the salts shown for unknown users (see `scram`).
    decoy_key: String,
    #[serde(default)]
    users: BTreeMap<String, User>,
    /// By token id.
    #[serde(default)]
    tokens: BTreeMap<String, Token>,
    #[serde(default)]
    acls: Vec<Acl>,
}

const STATE_VERSION: u32 = 1;

impl State {
    fn new() -> Self {
        let mut key = [0u8; 32];
        scram::fill_random(&mut key);
        State {
            version: STATE_VERSION,
            decoy_key: B64URL.encode(key),
            users: BTreeMap::new(),
            tokens: BTreeMap::new(),
            acls: Vec::new(),
        }
    }

    /// Checks what was read from the disk.
    fn check(&self) -> Result<(), String> {
        if self.version != STATE_VERSION {
            return Err(format!(
                "version {} is not one this Ferry reads ({STATE_VERSION})",
                self.version
            ));
        }
        for (name, user) in &self.users {
            crate::check_user_name(name)?;
            for (m, c) in &user.scram {
                c.check(*m).map_err(|e| format!("user {name:?}: {e}"))?;
            }
        }
        for acl in &self.acls {
            acl.validate().map_err(|e| format!("ACL {acl}: {e}"))?;
        }
        Ok(())
    }
}

/// A user as listings show it: no secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub created_at_ms: u64,
    pub mechanisms: Vec<MechanismInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MechanismInfo {
    pub mechanism: Mechanism,
    pub iterations: u32,
}

/// A token as listings show it: no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub description: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

fn user_info(name: &str, u: &User) -> UserInfo {
    UserInfo {
        name: name.to_string(),
        created_at_ms: u.created_at_ms,
        mechanisms: u
            .scram
            .iter()
            .map(|(m, c)| MechanismInfo {
                mechanism: *m,
                iterations: c.iterations,
            })
            .collect(),
    }
}

fn token_info(id: &str, t: &Token) -> TokenInfo {
    TokenInfo {
        id: id.to_string(),
        user: t.user.clone(),
        description: t.description.clone(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
    }
}

/// Where tokens begin: lets secret scanners and people tell a Ferry token at a glance.
pub const TOKEN_PREFIX: &str = "ferry_";

fn token_hash(token: &str) -> String {
    B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// The id part of `ferry_<id>_<secret>`.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && !secret.is_empty()).then_some(id)
}

/// Where a store keeps its state instead of a file: in shared mode, Postgres, so that
/// every node has the same users, tokens and ACLs. Its calls block; the store makes
/// them off the async threads (changes run on the blocking pool, and so must
/// [`Auth::refresh`]).
pub trait StateBackend: Send + Sync {
    /// The stored state (JSON) and its version, when newer than `version`; `None` when
    /// it is not (or nothing is stored yet).
    fn load_newer(&self, version: i64) -> Result<Option<(i64, Vec<u8>)>, String>;
    /// Stores `bytes` as version `version + 1` if the stored version is still `version`
    /// (0: nothing stored yet); false, with nothing written, when another node changed
    /// it first.
    fn store(&self, version: i64, bytes: &[u8]) -> Result<bool, String>;
}

/// Users, tokens and ACLs, and the checks made with them. One per server.
pub struct Auth {
    settings: AuthSettings,
    /// `None`: kept in memory only (tests), or in `backend`.
    path: Option<PathBuf>,
    /// Shared mode: where the state is kept.
    backend: Option<Arc<dyn StateBackend>>,
    /// The state, and its version in `backend` (0 without one): read and replaced
    /// together, so that a change is stored on the version it was made from.
    state: RwLock<(i64, Arc<State>)>,
    /// Serializes changes, so that each is written whole before the next starts.
    writing: Mutex<()>,
    /// Hash of (user, password) → the StoredKey it matched.
    verified: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    pub limiter: crate::limiter::Limiter,
    /// Held by an offline edit (the CLI with --data-dir), so that no server runs.
    _lock: Option<std::fs::File>,
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store's file in a data folder.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth.json")
}

impl Auth {
    /// Opens the store of a data folder whose lock the caller (the broker) holds.
    pub fn open(data_dir: &Path, settings: AuthSettings) -> Result<Arc<Auth>, AuthError> {
        Self::open_with(data_dir, settings, None)
    }

    /// Opens the store of a data folder no server is using, taking the folder's lock
    /// (for `ferry user … --data-dir`).
    pub fn open_offline(data_dir: &Path) -> Result<Arc<Auth>, AuthError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            AuthError::Storage(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let lock_path = data_dir.join("ferry.lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| AuthError::Storage(format!("opening {}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuthError::Conflict(format!(
                    "a Ferry server is using {}; change users, tokens and ACLs through it (--url, with a super user's --token), or stop it first",
                    data_dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(AuthError::Storage(format!(
                    "locking {}: {e}",
                    lock_path.display()
                )))
            }
        }
        Self::open_with(data_dir, AuthSettings::default(), Some(file))
    }

    fn open_with(
        data_dir: &Path,
        settings: AuthSettings,
        lock: Option<std::fs::File>,
    ) -> Result<Arc<Auth>, AuthError> {
        let path = store_path(data_dir);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).map_err(|e| {
                    AuthError::Invalid(format!("{} is not valid: {e}", path.display()))
                })?;
                state.check().map_err(|e| {
                    AuthError::Invalid(format!("{} is not valid: {e}", path.display()))
                })?;
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(),
            Err(e) => {
                return Err(AuthError::Storage(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(Arc::new(Auth {
            settings,
            path: Some(path),
            backend: None,
            state: RwLock::new((0, Arc::new(state))),
            writing: Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            limiter: Default::default(),
            _lock: lock,
        }))
    }

    /// A store kept in memory only, for tests.
    pub fn in_memory(settings: AuthSettings) -> Arc<Auth> {
        Arc::new(Auth {
            settings,
            path: None,
            backend: None,
            state: RwLock::new((0, Arc::new(State::new()))),
            writing: Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            limiter: Default::default(),
            _lock: None,
        })
    }

    /// Opens the store every node of shared mode shares, kept in `backend`. When
    /// nothing is stored there yet, the data folder's `auth.json` (the first user, made
    /// with `ferry user create --data-dir` before the server ran), or an empty store,
    /// becomes the shared one; after that the folder's file is not read.
    pub fn open_shared(
        data_dir: &Path,
        settings: AuthSettings,
        backend: Arc<dyn StateBackend>,
    ) -> Result<Arc<Auth>, AuthError> {
        let seed = Self::open_with(data_dir, AuthSettings::default(), None)?.snapshot();
        let auth = Arc::new(Auth {
            settings,
            path: None,
            backend: Some(Arc::clone(&backend)),
            state: RwLock::new((0, Arc::clone(&seed))),
            writing: Mutex::new(()),
            verified: Mutex::new(HashMap::new()),
            limiter: Default::default(),
            _lock: None,
        });
        if !auth.refresh()? {
            let bytes = encode(&seed)?;
            let _writing = lock(&auth.writing);
            if backend.store(0, &bytes).map_err(AuthError::Storage)? {
                auth.state.write().unwrap_or_else(|e| e.into_inner()).0 = 1;
            } else {
                // Another node stored its own first: take that one.
                drop(_writing);
                auth.refresh()?;
            }
        }
        Ok(auth)
    }

    /// Shared mode: takes the stored state if another node changed it (blocking: call
    /// it off the async threads). True when it was newer; always false with a file.
    pub fn refresh(&self) -> Result<bool, AuthError> {
        let Some(backend) = &self.backend else {
            return Ok(false);
        };
        let known = read_lock(&self.state).0;
        let Some((version, bytes)) = backend.load_newer(known).map_err(AuthError::Storage)? else {
            return Ok(false);
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| {
            AuthError::Invalid(format!(
                "the shared users, tokens and ACLs are not valid: {e}"
            ))
        })?;
        state.check().map_err(|e| {
            AuthError::Invalid(format!(
                "the shared users, tokens and ACLs are not valid: {e}"
            ))
        })?;
        let mut current = self.state.write().unwrap_or_else(|e| e.into_inner());
        // A change made here meanwhile may have installed a newer version already.
        if version > current.0 {
            *current = (version, Arc::new(state));
        }
        Ok(true)
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.settings.required
    }

    fn snapshot(&self) -> Arc<State> {
        Arc::clone(&read_lock(&self.state).1)
    }

    /// Applies `change` to a copy of the state, writes it, then puts it in place.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        let _writing = lock(&self.writing);
        // Shared mode: the change applies to the newest state any node stored, and is
        // stored only if that is still the newest.
        self.refresh()?;
        let (version, current) = {
            let state = read_lock(&self.state);
            (state.0, Arc::clone(&state.1))
        };
        let mut next = (*current).clone();
        let out = change(&mut next)?;
        debug_assert!(next.check().is_ok(), "a change left the store invalid");
        if let Some(backend) = &self.backend {
            if !backend
                .store(version, &encode(&next)?)
                .map_err(AuthError::Storage)?
            {
                // Retriable, as an unavailable store is (HTTP 503).
                return Err(AuthError::Storage(
                    "another node changed the users, tokens or ACLs at the same moment; nothing changed here: try again".into(),
                ));
            }
            let mut current = self.state.write().unwrap_or_else(|e| e.into_inner());
            if version + 1 > current.0 {
                *current = (version + 1, Arc::new(next));
            }
            return Ok(out);
        }
        if let Some(path) = &self.path {
            let bytes = serde_json::to_vec_pretty(&next)
                .map_err(|e| AuthError::Storage(format!("encoding the store: {e}")))?;
            ferry_broker::fsutil::replace_private_file(path, &bytes).map_err(AuthError::Storage)?;
        }
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (0, Arc::new(next));
        Ok(out)
    }

    // --- users ---

    pub fn users(&self) -> Vec<UserInfo> {
        let s = self.snapshot();
        s.users.iter().map(|(n, u)| user_info(n, u)).collect()
    }

    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.snapshot().users.get(name).map(|u| user_info(name, u))
    }

    /// Creates a user with credentials for both SCRAM mechanisms made from `password`.
    pub fn create_user(&self, name: &str, password: &str) -> Result<UserInfo, AuthError> {
        crate::check_user_name(name).map_err(AuthError::Invalid)?;
        check_password(password)?;
        let scram = credentials_for(password);
        self.change(|s| {
            if s.users.contains_key(name) {
                return Err(AuthError::Conflict(format!("user {name:?} already exists")));
            }
            if s.users.len() >= ENTRIES_MAX {
                return Err(AuthError::Invalid(format!(
                    "Ferry keeps at most {ENTRIES_MAX} users"
                )));
            }
            let user = User {
                created_at_ms: ferry_broker::now_ms(),
                scram,
            };
            let info = user_info(name, &user);
            s.users.insert(name.to_string(), user);
            Ok(info)
        })
    }

    /// Replaces a user's password (every mechanism's credential).
    pub fn set_password(&self, name: &str, password: &str) -> Result<UserInfo, AuthError> {
        check_password(password)?;
        let scram = credentials_for(password);
        self.change(|s| {
            let user = s
                .users
                .get_mut(name)
                .ok_or_else(|| AuthError::NotFound(format!("no user named {name:?}")))?;
            user.scram = scram;
            Ok(user_info(name, user))
        })
    }

    /// Sets one mechanism's credential, creating the user if it does not exist (Kafka's
    /// AlterUserScramCredentials upsertion).
    pub fn upsert_scram(
        &self,
        name: &str,
        mechanism: Mechanism,
        credential: ScramCredential,
    ) -> Result<(), AuthError> {
        crate::check_user_name(name).map_err(AuthError::Invalid)?;
        credential.check(mechanism).map_err(AuthError::Invalid)?;
        self.change(|s| {
            if !s.users.contains_key(name) && s.users.len() >= ENTRIES_MAX {
                return Err(AuthError::Invalid(format!(
                    "Ferry keeps at most {ENTRIES_MAX} users"
                )));
            }
            let user = s.users.entry(name.to_string()).or_insert_with(|| User {
                created_at_ms: ferry_broker::now_ms(),
                scram: BTreeMap::new(),
            });
            user.scram.insert(mechanism, credential);
            Ok(())
        })
    }

    /// Removes one mechanism's credential; a user left with none is removed, with its
    /// tokens (as Kafka has no user without credentials).
    pub fn delete_scram(&self, name: &str, mechanism: Mechanism) -> Result<(), AuthError> {
        self.change(|s| {
            let user = s
                .users
                .get_mut(name)
                .ok_or_else(|| AuthError::NotFound(format!("no user named {name:?}")))?;
            if user.scram.remove(&mechanism).is_none() {
                return Err(AuthError::NotFound(format!(
                    "user {name:?} has no {} credential",
                    mechanism.name()
                )));
            }
            if user.scram.is_empty() {
                s.users.remove(name);
                s.tokens.retain(|_, t| t.user != name);
            }
            Ok(())
        })
    }

    /// Removes a user and its tokens. ACLs naming it stay (as in Kafka), so that a user
    /// made again under the name gets them back: remove them with `acl delete`.
    pub fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        self.change(|s| {
            s.users
                .remove(name)
                .ok_or_else(|| AuthError::NotFound(format!("no user named {name:?}")))?;
            s.tokens.retain(|_, t| t.user != name);
            Ok(())
        })
    }

    pub fn scram_credential(&self, name: &str, m: Mechanism) -> Option<ScramCredential> {
        self.snapshot()
            .users
            .get(name)
            .and_then(|u| u.scram.get(&m).cloned())
    }

    /// The secret unknown users' salts are derived from.
    pub fn decoy_key(&self) -> Vec<u8> {
        self.snapshot().decoy_key.clone().into_bytes()
    }

    /// Checks a user's password (PLAIN, HTTP Basic). A name that is no user costs the
    /// same PBKDF2 as one that is, so timing does not tell who exists.
    pub fn verify_password(&self, name: &str, password: &str) -> Option<Principal> {
        let key = cache_key(name, password);
        let state = self.snapshot();
        let user = state.users.get(name);
        let (m, cred) = match user.and_then(|u| u.scram.iter().next()) {
            Some((m, c)) => (*m, c.clone()),
            None => {
                let decoy = ScramCredential::from_salted_password(
                    Mechanism::Sha256,
                    &[0u8; 32],
                    vec![0u8; 16],
                    scram::ITERATIONS_DEFAULT,
                );
                let _ = decoy.verify_password(Mechanism::Sha256, password);
                return None;
            }
        };
        if lock(&self.verified)
            .get(&key)
            .is_some_and(|stored| same_secret(stored, &cred.stored_key))
        {
            return Some(Principal::user(name));
        }
        if !cred.verify_password(m, password) {
            return None;
        }
        let mut verified = lock(&self.verified);
        if verified.len() >= VERIFIED_CACHE_MAX {
            verified.clear();
        }
        verified.insert(key, cred.stored_key.clone());
        Some(Principal::user(name))
    }

    // --- tokens ---

    /// Makes a token acting as `user`; its text is returned once and never again.
    pub fn create_token(
        &self,
        user: &str,
        description: &str,
        expires_at_ms: Option<u64>,
    ) -> Result<(TokenInfo, String), AuthError> {
        if description.chars().count() > DESCRIPTION_CHARS_MAX {
            return Err(AuthError::Invalid(format!(
                "a description has at most {DESCRIPTION_CHARS_MAX} characters"
            )));
        }
        if expires_at_ms.is_some_and(|t| t <= ferry_broker::now_ms()) {
            return Err(AuthError::Invalid("expires_at_ms is in the past".into()));
        }
        let mut id = [0u8; 6];
        scram::fill_random(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut secret = [0u8; 32];
        scram::fill_random(&mut secret);
        let text = format!("{TOKEN_PREFIX}{id}_{}", B64URL.encode(secret));
        debug_assert_eq!(token_id(&text), Some(id.as_str()));
        let token = Token {
            user: user.to_string(),
            description: description.to_string(),
            created_at_ms: ferry_broker::now_ms(),
            expires_at_ms,
            hash: token_hash(&text),
        };
        let info = token_info(&id, &token);
        self.change(|s| {
            if !s.users.contains_key(user) {
                return Err(AuthError::NotFound(format!(
                    "no user named {user:?}; a token acts as an existing user: create it first with `ferry user create`"
                )));
            }
            if s.tokens.len() >= ENTRIES_MAX {
                return Err(AuthError::Invalid(format!(
                    "Ferry keeps at most {ENTRIES_MAX} tokens"
                )));
            }
            s.tokens.insert(id.clone(), token);
            Ok(())
        })?;
        Ok((info, text))
    }

    pub fn tokens(&self) -> Vec<TokenInfo> {
        let s = self.snapshot();
        s.tokens.iter().map(|(id, t)| token_info(id, t)).collect()
    }

    pub fn delete_token(&self, id: &str) -> Result<(), AuthError> {
        self.change(|s| {
            s.tokens
                .remove(id)
                .map(|_| ())
                .ok_or_else(|| AuthError::NotFound(format!("no token with id {id:?}")))
        })
    }

    /// The principal a token acts as, if the token is valid and not expired.
    pub fn verify_token(&self, text: &str) -> Option<Principal> {
        let id = token_id(text)?;
        let state = self.snapshot();
        let token = state.tokens.get(id)?;
        if !same_secret(token_hash(text).as_bytes(), token.hash.as_bytes()) {
            return None;
        }
        if token
            .expires_at_ms
            .is_some_and(|t| t <= ferry_broker::now_ms())
        {
            return None;
        }
        // A token outlives nothing: its user was removed with it, but check anyway.
        state
            .users
            .contains_key(&token.user)
            .then(|| Principal::user(&token.user))
    }

    // --- ACLs ---

    pub fn acls(&self, filter: &AclFilter) -> Vec<Acl> {
        let s = self.snapshot();
        s.acls
            .iter()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect()
    }

    /// Adds bindings (one already present is not added twice). All or none: one
    /// invalid binding refuses the lot.
    pub fn create_acls(&self, acls: Vec<Acl>) -> Result<(), AuthError> {
        for a in &acls {
            a.validate().map_err(AuthError::Invalid)?;
        }
        self.change(|s| {
            for a in acls {
                if !s.acls.contains(&a) {
                    s.acls.push(a);
                }
            }
            if s.acls.len() > ENTRIES_MAX {
                return Err(AuthError::Invalid(format!(
                    "Ferry keeps at most {ENTRIES_MAX} ACLs"
                )));
            }
            Ok(())
        })
    }

    /// Removes the bindings `filter` matches and returns them.
    pub fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<Acl>, AuthError> {
        self.change(|s| {
            let (gone, kept) = s.acls.drain(..).partition(|a| filter.matches(a));
            s.acls = kept;
            Ok(gone)
        })
    }

    /// Whether `principal`, connected from `host`, may do `op` on a resource.
    pub fn authorize(
        &self,
        principal: &Principal,
        host: &str,
        op: Operation,
        rtype: ResourceType,
        name: &str,
    ) -> bool {
        if !self.settings.required {
            return true;
        }
        let who = principal.kafka_name();
        if self.settings.super_users.contains(&who) {
            return true;
        }
        let state = self.snapshot();
        acl::allowed(
            &state.acls,
            &who,
            host,
            op,
            rtype,
            name,
            self.settings.no_acl_allows,
        )
    }

    /// Whether `principal` may do `op` on any resource of `rtype` at all (an allow
    /// binding for it exists, or it is a super user): Kafka lets a producer that may
    /// write to some topic be idempotent.
    pub fn allowed_somewhere(
        &self,
        principal: &Principal,
        host: &str,
        op: Operation,
        rtype: ResourceType,
    ) -> bool {
        if !self.settings.required {
            return true;
        }
        let who = principal.kafka_name();
        if self.settings.super_users.contains(&who) {
            return true;
        }
        let state = self.snapshot();
        state.acls.iter().any(|a| {
            a.resource_type == rtype
                && a.permission == acl::Permission::Allow
                && (a.operation == op || a.operation == Operation::All)
                && (a.principal == "User:*" || a.principal == who)
                && (a.host == "*" || a.host == host)
                && acl::allowed(
                    &state.acls,
                    &who,
                    host,
                    op,
                    rtype,
                    &a.resource_name,
                    self.settings.no_acl_allows,
                )
        })
    }
}

/// Longest password accepted, in characters (SASL PLAIN carries at most 255 bytes of
/// it: a longer password in UTF-8 works with SCRAM and HTTP Basic only).
pub const PASSWORD_CHARS_MAX: usize = 255;

/// The state as a backend keeps it.
fn encode(state: &State) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(state).map_err(|e| AuthError::Storage(format!("encoding the store: {e}")))
}

fn check_password(p: &str) -> Result<(), AuthError> {
    let n = p.chars().count();
    if n == 0 || n > PASSWORD_CHARS_MAX {
        return Err(AuthError::Invalid(format!(
            "a password has 1 to {PASSWORD_CHARS_MAX} characters"
        )));
    }
    Ok(())
}

fn credentials_for(password: &str) -> BTreeMap<Mechanism, ScramCredential> {
    Mechanism::ALL
        .into_iter()
        .map(|m| {
            (
                m,
                ScramCredential::from_password(m, password, scram::ITERATIONS_DEFAULT),
            )
        })
        .collect()
}

fn cache_key(name: &str, password: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(&[0]);
    ctx.update(password.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{PatternType, Permission};

    fn on() -> AuthSettings {
        AuthSettings {
            required: true,
            super_users: vec!["User:root".into()],
            no_acl_allows: false,
        }
    }

    #[test]
    fn users_tokens_and_acls_survive_a_reopen_and_hold_no_secret_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(dir.path(), on()).unwrap();
        auth.create_user("alice", "wonderland").unwrap();
        let (info, token) = auth.create_token("alice", "ci", None).unwrap();
        assert!(token.starts_with("ferry_"));
        auth.create_acls(vec![Acl {
            principal: "User:alice".into(),
            host: "*".into(),
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            operation: Operation::Read,
            permission: Permission::Allow,
        }])
        .unwrap();
        drop(auth);
        let text = std::fs::read_to_string(store_path(dir.path())).unwrap();
        assert!(!text.contains("wonderland") && !text.contains(&token[13..]));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let auth = Auth::open(dir.path(), on()).unwrap();
        assert_eq!(
            auth.verify_password("alice", "wonderland"),
            Some(Principal::user("alice"))
        );
        assert_eq!(
            auth.verify_password("alice", "wonderland"),
            Some(Principal::user("alice")),
            "cached"
        );
        assert_eq!(auth.verify_password("alice", "wonderlanc"), None);
        assert_eq!(auth.verify_password("bob", "wonderland"), None);
        assert_eq!(auth.verify_token(&token), Some(Principal::user("alice")));
        let mut forged = token.clone();
        forged.pop();
        forged.push('x');
        assert_eq!(auth.verify_token(&forged), None);
        assert_eq!(auth.tokens()[0].id, info.id);
        let alice = Principal::user("alice");
        assert!(auth.authorize(
            &alice,
            "1.2.3.4",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        ));
        assert!(auth.authorize(
            &alice,
            "1.2.3.4",
            Operation::Describe,
            ResourceType::Topic,
            "orders"
        ));
        assert!(!auth.authorize(
            &alice,
            "1.2.3.4",
            Operation::Write,
            ResourceType::Topic,
            "orders"
        ));
        assert!(auth.authorize(
            &Principal::user("root"),
            "h",
            Operation::Delete,
            ResourceType::Cluster,
            "kafka-cluster"
        ));

        // A new password invalidates the remembered check; removing the user ends its tokens.
        auth.set_password("alice", "looking-glass").unwrap();
        assert_eq!(auth.verify_password("alice", "wonderland"), None);
        auth.delete_user("alice").unwrap();
        assert_eq!(auth.verify_token(&token), None);
        assert!(auth.tokens().is_empty());
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let auth = Auth::in_memory(on());
        assert!(matches!(
            auth.create_user("a,b", "pw"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.create_user("a", ""),
            Err(AuthError::Invalid(_))
        ));
        auth.create_user("a", "pw").unwrap();
        assert!(matches!(
            auth.create_user("a", "pw"),
            Err(AuthError::Conflict(_))
        ));
        assert!(matches!(
            auth.create_token("nobody", "", None),
            Err(AuthError::NotFound(_))
        ));
        let bad = Acl {
            principal: "alice".into(),
            host: "*".into(),
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern_type: PatternType::Literal,
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        let good = Acl {
            principal: "User:a".into(),
            ..bad.clone()
        };
        assert!(auth.create_acls(vec![good, bad]).is_err());
        assert!(
            auth.acls(&AclFilter::default()).is_empty(),
            "all or nothing"
        );
        assert!(!auth.authorize(
            &Principal::user("a"),
            "h",
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
    }

    #[test]
    fn with_authentication_off_everything_is_allowed() {
        let auth = Auth::in_memory(AuthSettings::default());
        assert!(auth.authorize(
            &Principal::anonymous(),
            "h",
            Operation::Delete,
            ResourceType::Topic,
            "t"
        ));
    }

    /// A backend in memory: a version and the bytes stored with it.
    #[derive(Default)]
    struct Shared(Mutex<(i64, Vec<u8>)>);

    impl StateBackend for Shared {
        fn load_newer(&self, version: i64) -> Result<Option<(i64, Vec<u8>)>, String> {
            let s = lock(&self.0);
            Ok((s.0 > version).then(|| (s.0, s.1.clone())))
        }

        fn store(&self, version: i64, bytes: &[u8]) -> Result<bool, String> {
            let mut s = lock(&self.0);
            if s.0 != version {
                return Ok(false);
            }
            *s = (version + 1, bytes.to_vec());
            Ok(true)
        }
    }

    #[test]
    fn nodes_sharing_a_backend_see_each_others_changes_and_never_lose_one() {
        let backend = Arc::new(Shared::default());
        // The first node's folder holds the first user: it seeds the backend.
        let seeded = tempfile::tempdir().unwrap();
        Auth::open_offline(seeded.path())
            .unwrap()
            .create_user("admin", "rabbit-hole")
            .unwrap();
        let a = Auth::open_shared(seeded.path(), on(), backend.clone()).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let b = Auth::open_shared(empty.path(), on(), backend.clone()).unwrap();
        assert!(b.verify_password("admin", "rabbit-hole").is_some());
        assert_eq!(a.decoy_key(), b.decoy_key(), "one store, one decoy key");

        a.create_user("alice", "wonderland").unwrap();
        assert!(
            b.verify_password("alice", "wonderland").is_none(),
            "not taken yet"
        );
        assert!(b.refresh().unwrap());
        assert!(b.verify_password("alice", "wonderland").is_some());
        assert!(!b.refresh().unwrap(), "nothing newer");
        // A change on a node that has not taken the last one applies on top of it.
        a.create_user("bob", "looking-glass").unwrap();
        b.create_acls(vec![Acl {
            principal: "User:bob".into(),
            host: "*".into(),
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            pattern_type: crate::PatternType::Literal,
            operation: Operation::Write,
            permission: crate::Permission::Allow,
        }])
        .unwrap();
        a.refresh().unwrap();
        assert_eq!(a.users().len(), 3);
        assert_eq!(a.acls(&AclFilter::default()).len(), 1);
        // Another node stores between this node's refresh and its write: the write is
        // refused (to be tried again), and neither change is lost.
        let racing = Arc::new(Racing {
            inner: Shared::default(),
            other: Mutex::new(None),
        });
        let c = Auth::open_shared(empty.path(), on(), racing.clone()).unwrap();
        let d = Auth::open_shared(empty.path(), on(), racing.clone()).unwrap();
        d.create_user("dina", "cheshire-cat").unwrap();
        c.refresh().unwrap();
        *lock(&racing.other) = Some(lock(&racing.inner.0).1.clone());
        let err = c.create_user("carl", "mock-turtle").unwrap_err();
        assert!(matches!(err, AuthError::Storage(_)), "{err}");
        assert!(c.user("carl").is_none(), "a refused change is not kept");
        c.create_user("carl", "mock-turtle").unwrap();
        d.refresh().unwrap();
        assert!(d.user("carl").is_some() && d.user("dina").is_some());
    }

    /// A backend where another node's write lands just before the next one's.
    struct Racing {
        inner: Shared,
        other: Mutex<Option<Vec<u8>>>,
    }

    impl StateBackend for Racing {
        fn load_newer(&self, version: i64) -> Result<Option<(i64, Vec<u8>)>, String> {
            self.inner.load_newer(version)
        }

        fn store(&self, version: i64, bytes: &[u8]) -> Result<bool, String> {
            if let Some(other) = lock(&self.other).take() {
                let current = lock(&self.inner.0).0;
                assert!(self.inner.store(current, &other)?);
            }
            self.inner.store(version, bytes)
        }
    }

    #[test]
    fn an_offline_edit_is_refused_while_the_folder_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let held = Auth::open_offline(dir.path()).unwrap();
        assert!(matches!(
            Auth::open_offline(dir.path()),
            Err(AuthError::Conflict(_))
        ));
        drop(held);
        Auth::open_offline(dir.path()).unwrap();
    }
}

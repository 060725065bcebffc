//! Who is calling, and what they may see.
//!
//! With users configured, [`authenticate`] runs before every route but the open ones (`/version`,
//! `/health`, `/ready`, which the router matches before it reaches authentication): a bearer token (its SHA-256 looked up) or HTTP Basic credentials (the password checked
//! against the user's Argon2 hash once, then remembered by the SHA-256 of the header) identify a
//! [`Caller`]; anything else is 401. It then hides other users' sessions and batches: a route
//! under `/sessions/{id}` or `/batches/{id}` that the caller may not see answers 404, exactly as
//! for a session that does not exist. Listings filter the same way ([`Caller::can_see`]). Session
//! names are per user: `/sessions/{name}` is the caller's own session of that name (the path is
//! rewritten to its id before the routes run, so the middleware wraps the router).
//! Without users, every caller is an anonymous admin.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tilegate_sessions::Access;

use crate::AppState;
use crate::config::UserConfig;
use crate::error::ApiError;

/// A configured user.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) admin: bool,
    password_hash: Option<String>,
    pub(crate) max_sessions: Option<usize>,
    pub(crate) max_active_statements: Option<usize>,
    pub(crate) cpu_seconds_per_day: Option<u64>,
}

/// The configured users, and the Basic credentials already verified.
#[derive(Debug, Default)]
pub(crate) struct Users {
    by_name: HashMap<String, Arc<User>>,
    by_token: HashMap<[u8; 32], Arc<User>>,
    verified: DashMap<[u8; 32], Arc<User>>,
}

/// The caller of a request. `user` is `None` when authentication is off: then it sees everything.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) user: Option<Arc<User>>,
}

impl Caller {
    /// The name sessions and batches it creates belong to.
    pub(crate) fn name(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.name.as_str())
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.user.as_ref().is_none_or(|u| u.admin)
    }

    /// Admins see everything; a user sees what they own or what runs as them (`proxyUser`).
    pub(crate) fn can_see(&self, access: &Access) -> bool {
        match &self.user {
            None => true,
            Some(u) => {
                u.admin || access.owner.as_deref() == Some(&u.name) || access.proxy_user.as_deref() == Some(&u.name)
            }
        }
    }

    /// `proxyUser` is honoured for admins only (anyone may name themselves).
    pub(crate) fn check_proxy_user(&self, proxy_user: Option<&str>) -> Result<(), ApiError> {
        match (proxy_user, &self.user) {
            (Some(proxy), Some(u)) if !u.admin && proxy != u.name => {
                Err(ApiError::Forbidden(format!("User '{}' may not impersonate '{proxy}'.", u.name)))
            }
            _ => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // `authenticate` puts it there for every route that needs it; a route without it is a bug,
        // and must not run as anyone.
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Internal)
    }
}

impl Users {
    /// The users of the configuration.
    ///
    /// # Errors
    /// A duplicate name, a token hash that is not 64 hex digits, a password hash that is not a
    /// PHC string, or a user with no way to sign in.
    pub(crate) fn new(config: &[UserConfig]) -> Result<Self, String> {
        let mut users = Self::default();
        for u in config {
            if u.name.is_empty() || u.name.chars().any(|c| tilegate_sessions::hidden_char(c) || c == ':') {
                return Err(format!(
                    "user name {:?} must be non-empty, without ':', control, invisible or text-reordering characters",
                    u.name
                ));
            }
            if u.token_sha256.is_empty() && u.password_hash.is_none() {
                return Err(format!("user '{}' needs token_sha256 or password_hash", u.name));
            }
            if let Some(hash) = &u.password_hash {
                PasswordHash::new(hash).map_err(|e| {
                    format!("user '{}': password_hash is not a hash from `tilegate hash-password` ({e})", u.name)
                })?;
            }
            let user = Arc::new(User {
                name: u.name.clone(),
                admin: u.admin,
                password_hash: u.password_hash.clone(),
                max_sessions: u.max_sessions,
                max_active_statements: u.max_active_statements,
                cpu_seconds_per_day: u.cpu_seconds_per_day,
            });
            for hex in &u.token_sha256 {
                let digest = parse_hex(hex).ok_or_else(|| {
                    format!("user '{}': token_sha256 '{hex}' is not 64 hex digits (`tilegate hash-token`)", u.name)
                })?;
                if users.by_token.insert(digest, user.clone()).is_some() {
                    return Err(format!("user '{}': a token is given to two users", u.name));
                }
            }
            if users.by_name.insert(u.name.clone(), user).is_some() {
                return Err(format!("user '{}' is configured twice", u.name));
            }
        }
        Ok(users)
    }

    pub(crate) fn enabled(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// The user the `Authorization` header names, if its secret is right.
    fn identify(&self, headers: &HeaderMap) -> Option<Arc<User>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, credentials) = value.split_once(' ')?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self.by_token.get(&sha256(credentials.as_bytes())).cloned();
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let key = sha256(value.as_bytes());
        if let Some(user) = self.verified.get(&key) {
            return Some(user.clone());
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        let user = self.by_name.get(name)?;
        let hash = PasswordHash::new(user.password_hash.as_deref()?).ok()?;
        argon2::Argon2::default().verify_password(password.as_bytes(), &hash).ok()?;
        self.verified.insert(key, user.clone());
        Some(user.clone())
    }
}

/// Identifies the caller (401 when authentication is on and it fails) and hides sessions and
/// batches the caller may not see (404).
pub(crate) async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let caller = if app.users.enabled() {
        let users = app.users.clone();
        let headers = req.headers().clone();
        // Argon2 takes milliseconds of CPU: off the reactor (only the first time per credentials).
        let user = match tokio::task::spawn_blocking(move || users.identify(&headers)).await {
            Ok(Some(user)) => user,
            _ => return ApiError::Unauthorized.into_response(),
        };
        Caller { user: Some(user) }
    } else {
        Caller { user: None }
    };
    if let Some(id) = own_session_named(&app, &caller, &path) {
        rename_session_segment(&mut req, id);
    }
    if let Some(hidden) = hidden(&app, &caller, req.uri().path()) {
        return hidden.into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// With users, session names are the caller's own (two users may both have a session `analysis`):
/// the id of the caller's session named in `/sessions/{name}/...`, if any; for an admin without
/// one of that name, the one session of anyone's that has it.
fn own_session_named(app: &AppState, caller: &Caller, path: &str) -> Option<u64> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (kind, key) = (segments.next()?, percent_decode(segments.next()?));
    if kind != "sessions" || key.parse::<u64>().is_ok() {
        return None;
    }
    if let Some(id) = app.engine.session_named(Some(caller.name()?), &key) {
        return Some(id);
    }
    if !caller.is_admin() {
        return None;
    }
    match app.engine.sessions_named_by_anyone(&key)[..] {
        [id] => Some(id),
        _ => None,
    }
}

/// `/sessions/{name}/rest?query` → `/sessions/{id}/rest?query`, before the routes see it.
fn rename_session_segment(req: &mut Request, id: u64) {
    let path = req.uri().path();
    let rest = path.trim_start_matches('/').splitn(3, '/').nth(2).map(|r| format!("/{r}")).unwrap_or_default();
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut parts = req.uri().clone().into_parts();
    if let Ok(renamed) = format!("/sessions/{id}{rest}{query}").parse() {
        parts.path_and_query = Some(renamed);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// The 404 for a session or batch in `path` that exists but is not the caller's.
fn hidden(app: &AppState, caller: &Caller, path: &str) -> Option<ApiError> {
    let mut segments = path.trim_start_matches('/').split('/');
    let (kind, key) = (segments.next()?, segments.next()?);
    let key = percent_decode(key);
    let access = match kind {
        "sessions" => {
            let access = app.engine.session_access(&key).ok()?;
            tracing::Span::current().record("session", access.id);
            access
        }
        "batches" => app.engine.batch_access(&key).ok()?,
        _ => return None,
    };
    if caller.can_see(&access) {
        return None;
    }
    Some(match kind {
        "sessions" => ApiError::Engine(tilegate_sessions::Error::SessionNotFound(key)),
        _ => ApiError::Engine(tilegate_sessions::Error::BatchNotFound(key)),
    })
}

/// Path segments as axum's `Path` decodes them (session names may hold any printable character).
fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).ok()?;
    Some(out)
}

/// `token_sha256` for a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(sha256(token.trim().as_bytes()))
}

/// `password_hash` for a password: Argon2id with a random salt, as a PHC string.
///
/// # Errors
/// When hashing fails (it does not, for any password).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes()).map_err(|e| e.to_string())?;
    let hash = argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| e.to_string())?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        Users::new(&[
            UserConfig { name: "ann".into(), token_sha256: vec![hash_token("t-ann")], ..Default::default() },
            UserConfig {
                name: "bob".into(),
                password_hash: Some(hash_password("secret").unwrap()),
                ..Default::default()
            },
        ])
        .unwrap()
    }

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        header(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))))
    }

    #[test]
    fn tokens_and_passwords_identify_users_and_nothing_else_does() {
        let users = users();
        assert_eq!(users.identify(&header("Bearer t-ann")).unwrap().name, "ann");
        assert_eq!(users.identify(&header("bearer  t-ann ")).unwrap().name, "ann");
        assert_eq!(users.identify(&basic("bob", "secret")).unwrap().name, "bob");
        assert_eq!(users.identify(&basic("bob", "secret")).unwrap().name, "bob", "remembered");
        for bad in [header("Bearer t-bob"), basic("bob", "Secret"), basic("ann", "t-ann"), header("Digest x")] {
            assert!(users.identify(&bad).is_none(), "{bad:?}");
        }
        assert!(users.identify(&HeaderMap::new()).is_none());
    }

    #[test]
    fn bad_user_configs_are_refused() {
        let token = vec![hash_token("x")];
        let cases = [
            vec![UserConfig { name: "a".into(), ..Default::default() }],
            vec![UserConfig { name: "a".into(), token_sha256: vec!["abc".into()], ..Default::default() }],
            vec![UserConfig { name: "a".into(), password_hash: Some("plain".into()), ..Default::default() }],
            vec![UserConfig { name: "a:b".into(), token_sha256: token.clone(), ..Default::default() }],
            vec![
                UserConfig { name: "a".into(), token_sha256: token.clone(), ..Default::default() },
                UserConfig { name: "b".into(), token_sha256: token.clone(), ..Default::default() },
            ],
        ];
        for case in cases {
            assert!(Users::new(&case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn path_segments_decode_like_axum() {
        assert_eq!(percent_decode("my%20session"), "my session");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
    }
}

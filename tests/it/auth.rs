//! Authentication and ownership: bearer tokens and HTTP Basic, 401 without them, other users'
//! sessions and batches answered 404 on every route and left out of listings, admins seeing all,
//! `proxyUser` for admins only, per-user limits.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use tilegate_gateway::{UserConfig, hash_password, hash_token};
use tilegate_sdk::{Client, StatementState};

use crate::{Gateway, fixture, test_config};

/// A gateway with ann (token, at most 2 sessions, results up to 100 bytes), bob (token and password, at most 1 active
/// statement) and root (admin).
async fn gateway() -> Gateway {
    Gateway::start_with(tilegate_gateway::Config { users: users(), ..test_config() }).await
}

/// ann, bob and root as [`gateway`] has them.
fn users() -> Vec<UserConfig> {
    let user = |name: &str, token: &str| UserConfig {
        name: name.into(),
        token_sha256: vec![hash_token(token)],
        ..Default::default()
    };
    vec![
        UserConfig { max_sessions: Some(2), max_result_bytes: Some(100), ..user("ann", "ann-token") },
        UserConfig {
            password_hash: Some(hash_password("bob's password").unwrap()),
            max_active_statements: Some(1),
            ..user("bob", "bob-token")
        },
        UserConfig { admin: true, ..user("root", "root-token") },
    ]
}

/// A request with `authorization` (none when `None`): status and JSON body.
async fn call(gw: &Gateway, auth: Option<&str>, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gw.http.request(method, format!("{}{path}", gw.url));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
}

const ANN: Option<&str> = Some("Bearer ann-token");
const BOB: Option<&str> = Some("Bearer bob-token");
const ROOT: Option<&str> = Some("Bearer root-token");

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_credentials_except_version_and_health() {
    let gw = gateway().await;
    for path in ["/version", "/health", "/ready"] {
        let (status, body) = call(&gw, None, Method::GET, path, None).await;
        // `/ready` is 503 until the prelude is built: open, not necessarily ready.
        assert!(status == 200 || (path == "/ready" && status == 503), "{path}: {status} {body}");
    }
    let routes = [
        (Method::GET, "/sessions"),
        (Method::POST, "/sessions"),
        (Method::GET, "/sessions/0"),
        (Method::DELETE, "/sessions/0"),
        (Method::GET, "/sessions/0/statements"),
        (Method::POST, "/sessions/0/statements"),
        (Method::GET, "/batches"),
        (Method::POST, "/batches"),
        (Method::GET, "/datasets"),
        (Method::POST, "/datasets"),
        (Method::GET, "/metrics"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/no/such/route"),
    ];
    let wrong = [None, Some("Bearer nope".to_owned()), Some(basic("bob", "guess")), Some(basic("ann", "ann-token"))];
    for (method, path) in routes {
        for auth in &wrong {
            let response = gw
                .http
                .request(method.clone(), format!("{}{path}", gw.url))
                .header("authorization", auth.clone().unwrap_or_default())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 401, "{method} {path} with {auth:?}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
            assert!(challenge.contains("Basic"), "{challenge}");
            let body: Value = response.json().await.unwrap();
            assert!(body["msg"].as_str().unwrap().contains("Authentication required"), "{body}");
        }
    }
    // Both schemes work; the session belongs to whoever created it.
    let (status, s) = call(&gw, Some(&basic("bob", "bob's password")), Method::POST, "/sessions", None).await;
    assert_eq!((status, &s["owner"]), (201, &json!("bob")), "{s}");
    let (status, s) = call(&gw, BOB, Method::GET, &format!("/sessions/{}", s["id"]), None).await;
    assert_eq!((status, &s["owner"]), (200, &json!("bob")), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_sessions_and_batches_do_not_exist_for_them() {
    let gw = gateway().await;
    let (_, mine) = call(&gw, ANN, Method::POST, "/sessions", Some(json!({"name": "ann's work"}))).await;
    let id = mine["id"].as_u64().unwrap();
    let code = json!({"code": fixture!("answer"), "kind": "wasm"});
    let (status, _) = call(&gw, ANN, Method::POST, &format!("/sessions/{id}/statements"), Some(code.clone())).await;
    assert_eq!(status, 201);
    wait(&gw, "ann-token", id, 0, StatementState::Available).await;
    let (_, batch) =
        call(&gw, ANN, Method::POST, "/batches", Some(json!({"code": fixture!("answer"), "kind": "wasm"}))).await;
    let batch = batch["id"].as_u64().unwrap();
    let (_, bobs) = call(&gw, BOB, Method::POST, "/sessions", None).await;

    // Every route of ann's session and batch, by id and by name (percent-encoded): 404 for bob,
    // exactly as for a session that does not exist.
    let routes: Vec<(Method, String, Option<Value>)> = ["0", "ann%27s%20work"]
        .iter()
        .flat_map(|key| {
            let key = if *key == "0" { id.to_string() } else { (*key).to_owned() };
            [
                (Method::GET, format!("/sessions/{key}"), None),
                (Method::GET, format!("/sessions/{key}/state"), None),
                (Method::GET, format!("/sessions/{key}/log"), None),
                (Method::GET, format!("/sessions/{key}/statements"), None),
                (Method::POST, format!("/sessions/{key}/statements"), Some(code.clone())),
                (Method::GET, format!("/sessions/{key}/statements/0"), None),
                (Method::POST, format!("/sessions/{key}/statements/0/cancel"), None),
                (Method::GET, format!("/sessions/{key}/statements/0/result"), None),
                (Method::DELETE, format!("/sessions/{key}"), None),
            ]
        })
        .chain([
            (Method::GET, format!("/batches/{batch}"), None),
            (Method::GET, format!("/batches/{batch}/state"), None),
            (Method::GET, format!("/batches/{batch}/log"), None),
            (Method::DELETE, format!("/batches/{batch}"), None),
        ])
        .collect();
    for (method, path, body) in &routes {
        let (status, answer) = call(&gw, BOB, method.clone(), path, body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert!(answer["msg"].as_str().unwrap().contains("not found"), "{answer}");
    }
    // Listings leave them out; the admin sees everything.
    let ids = |list: &Value| -> Vec<u64> {
        list["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect()
    };
    assert_eq!(ids(&call(&gw, BOB, Method::GET, "/sessions", None).await.1), vec![bobs["id"].as_u64().unwrap()]);
    assert_eq!(call(&gw, BOB, Method::GET, "/sessions", None).await.1["total"], 1);
    assert_eq!(ids(&call(&gw, BOB, Method::GET, "/batches", None).await.1), Vec::<u64>::new());
    assert_eq!(ids(&call(&gw, ANN, Method::GET, "/sessions", None).await.1), vec![id]);
    assert_eq!(ids(&call(&gw, ROOT, Method::GET, "/sessions", None).await.1).len(), 2);
    assert_eq!(ids(&call(&gw, ROOT, Method::GET, "/batches", None).await.1), vec![batch]);
    // The owner and the admin can use every route; ann's session still works after bob's tries.
    for auth in [ANN, ROOT] {
        for (method, path, body) in routes.iter().filter(|(m, _, _)| *m == Method::GET) {
            let (status, answer) = call(&gw, auth, method.clone(), path, body.clone()).await;
            let expected = if path.ends_with("/result") { 404 } else { 200 }; // not an sql statement
            assert_eq!(status, expected, "{auth:?} {method} {path}: {answer}");
        }
    }
    let (_, statement) = call(&gw, ANN, Method::GET, &format!("/sessions/{id}/statements/0"), None).await;
    assert_eq!(statement["output"]["data"]["text/plain"], "42");
    let (status, _) = call(&gw, ROOT, Method::DELETE, &format!("/sessions/{id}"), None).await;
    assert_eq!(status, 200, "admins manage every session");
}

/// Polls with the SDK, signed in with `token`, until the statement is in state `want`.
async fn wait(gw: &Gateway, token: &str, session: u64, statement: u64, want: StatementState) {
    let client = Client::with_token(&gw.url, token).unwrap();
    for _ in 0..3000 {
        if client.statement(session, statement).await.unwrap().state == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("statement {statement} never became {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_user_is_for_admins_and_datasets_are_registered_by_admins() {
    let gw = gateway().await;
    let (status, answer) = call(&gw, ANN, Method::POST, "/sessions", Some(json!({"proxyUser": "bob"}))).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("may not impersonate"), "{answer}");
    let (status, _) = call(&gw, ANN, Method::POST, "/batches", Some(json!({"code": "1", "proxyUser": "root"}))).await;
    assert_eq!(status, 403);
    let (status, _) = call(&gw, ANN, Method::POST, "/sessions", Some(json!({"proxyUser": "ann"}))).await;
    assert_eq!(status, 201, "naming yourself is fine");
    // An admin starts a session as bob: bob sees and uses it; ann does not.
    let (status, s) = call(&gw, ROOT, Method::POST, "/sessions", Some(json!({"proxyUser": "bob"}))).await;
    assert_eq!((status, &s["owner"], &s["proxyUser"]), (201, &json!("root"), &json!("bob")), "{s}");
    let path = format!("/sessions/{}", s["id"]);
    assert_eq!(call(&gw, BOB, Method::GET, &path, None).await.0, 200);
    assert_eq!(call(&gw, ANN, Method::GET, &path, None).await.0, 404);

    let body = json!({"name": "x", "path": "/nonexistent"});
    let (status, answer) = call(&gw, ANN, Method::POST, "/datasets", Some(body.clone())).await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = call(&gw, ROOT, Method::POST, "/datasets", Some(body)).await;
    assert_eq!(status, 400, "an admin gets as far as the path: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limits_answer_429_and_free_up() {
    let gw = gateway().await;
    for _ in 0..2 {
        assert_eq!(call(&gw, ANN, Method::POST, "/sessions", None).await.0, 201);
    }
    let (status, answer) = call(&gw, ANN, Method::POST, "/sessions", None).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("2 live sessions"), "{answer}");
    assert_eq!(call(&gw, BOB, Method::POST, "/sessions", None).await.0, 201, "limits are per user");
    assert_eq!(call(&gw, ANN, Method::DELETE, "/sessions/0", None).await.0, 200);
    assert_eq!(call(&gw, ANN, Method::POST, "/sessions", None).await.0, 201, "a deleted session frees its place");

    // bob: one statement waiting or running at a time.
    let bob_session = 2;
    let spin = json!({"code": fixture!("spin"), "kind": "wasm"});
    let path = format!("/sessions/{bob_session}/statements");
    assert_eq!(call(&gw, BOB, Method::POST, &path, Some(spin.clone())).await.0, 201);
    let (status, answer) = call(&gw, BOB, Method::POST, &path, Some(spin)).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("waiting or running"), "{answer}");
    let cancel = format!("/sessions/{bob_session}/statements/0/cancel");
    assert_eq!(call(&gw, BOB, Method::POST, &cancel, None).await.0, 200);
    wait(&gw, "bob-token", bob_session, 0, StatementState::Cancelled).await;
    let answer = json!({"code": fixture!("answer"), "kind": "wasm"});
    assert_eq!(call(&gw, BOB, Method::POST, &path, Some(answer.clone())).await.0, 201, "free again");

    // ann: results up to 100 bytes; a 1 MiB print is an error, a small answer is not.
    let ann_session = 1;
    let path = format!("/sessions/{ann_session}/statements");
    let big = json!({"code": fixture!("print_1mib"), "kind": "wasm"});
    assert_eq!(call(&gw, ANN, Method::POST, &path, Some(big)).await.0, 201);
    assert_eq!(call(&gw, ANN, Method::POST, &path, Some(answer)).await.0, 201);
    wait(&gw, "ann-token", ann_session, 1, StatementState::Available).await;
    let (_, big) = call(&gw, ANN, Method::GET, &format!("{path}/0"), None).await;
    assert_eq!(big["output"]["ename"], "ResultTooLarge", "{}", &big.to_string()[..300.min(big.to_string().len())]);
    assert!(big["output"]["evalue"].as_str().unwrap().contains("limit of 100"), "{big}");
    let (_, small) = call(&gw, ANN, Method::GET, &format!("{path}/1"), None).await;
    assert_eq!(small["output"]["data"]["text/plain"], "42", "{small}");
}

/// Nothing tells one user about another's sessions: session names are per user (bob may name a
/// session like ann's, and a name routes to the caller's own), bob's probes of ann's session are
/// not its heartbeat, names cannot hide or reorder characters, and where a dataset lives on the
/// server is for admins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_probes_and_dataset_paths_reveal_nothing_of_other_users() {
    let config = tilegate_gateway::Config { users: users(), demo_dataset: true, ..test_config() };
    let gw = Gateway::start_with(config).await;
    let named = |name: &str, heartbeat: u64| Some(json!({"name": name, "heartbeatTimeoutInSecond": heartbeat}));
    let (status, ann) = call(&gw, ANN, Method::POST, "/sessions", named("analysis", 2)).await;
    assert_eq!(status, 201, "{ann}");
    let (status, bob) = call(&gw, BOB, Method::POST, "/sessions", named("analysis", 0)).await;
    assert_eq!(status, 201, "ann's session name is not taken for bob: {bob}");
    let (status, again) = call(&gw, ANN, Method::POST, "/sessions", named("analysis", 0)).await;
    assert_eq!(status, 400, "a user's own names stay unique: {again}");
    assert!(again["msg"].as_str().unwrap().contains("Duplicate session name"), "{again}");
    for (auth, mine) in [(ANN, &ann), (BOB, &bob)] {
        let (status, found) = call(&gw, auth, Method::GET, "/sessions/analysis", None).await;
        assert_eq!((status, &found["id"]), (200, &mine["id"]), "{auth:?}: {found}");
        let (status, _) = call(&gw, auth, Method::GET, "/sessions/analysis/statements?from=0", None).await;
        assert_eq!(status, 200, "{auth:?}: a query string survives the name's rewrite");
    }

    // bob polls ann's session (by id) for longer than its heartbeat timeout: it still expires.
    let path = format!("/sessions/{}", ann["id"]);
    let clock = std::time::Instant::now();
    while clock.elapsed() < std::time::Duration::from_secs(4) {
        assert_eq!(call(&gw, BOB, Method::GET, &path, None).await.0, 404);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, expired) = call(&gw, ANN, Method::GET, &path, None).await;
    assert_eq!(expired["state"], "dead", "bob's probes kept ann's session alive: {expired}");

    // Control, bidirectional and zero-width characters in names are refused.
    for name in ["invoice\u{202E}fdp.exe", "ad\u{200B}min", "tab\there", "\u{2066}x\u{2069}"] {
        let (status, answer) = call(&gw, ANN, Method::POST, "/sessions", named(name, 0)).await;
        assert_eq!(status, 400, "{name:?}: {answer}");
        let batch = json!({"name": name, "code": fixture!("answer"), "kind": "wasm"});
        let (status, answer) = call(&gw, ANN, Method::POST, "/batches", Some(batch)).await;
        assert_eq!(status, 400, "batch {name:?}: {answer}");
    }

    // The demo dataset's server path: for root, not for ann.
    let (_, list) = call(&gw, ROOT, Method::GET, "/datasets", None).await;
    assert!(list["datasets"][0]["path"].as_str().is_some_and(|p| p.contains("sst")), "{list}");
    for path in ["/datasets", "/datasets/sst"] {
        let (status, answer) = call(&gw, ANN, Method::GET, path, None).await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            !answer.to_string().contains(gw.data_dir.to_str().unwrap()),
            "{path} shows ann the server's paths: {answer}"
        );
    }
    let (_, one) = call(&gw, ANN, Method::GET, "/datasets/sst", None).await;
    assert!(one.get("path").is_none() && one["variables"].is_array(), "{one}");
}

/// A running batch counts as one of its owner's sessions and active statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_count_against_per_user_limits() {
    let gw = gateway().await;
    let spin = json!({"code": fixture!("spin"), "kind": "wasm"});
    // bob: one active statement; a running batch is it.
    let (status, batch) = call(&gw, BOB, Method::POST, "/batches", Some(spin.clone())).await;
    assert_eq!(status, 201, "{batch}");
    let (_, session) = call(&gw, BOB, Method::POST, "/sessions", None).await;
    let path = format!("/sessions/{}/statements", session["id"]);
    let (status, answer) = call(&gw, BOB, Method::POST, &path, Some(spin.clone())).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("batches included"), "{answer}");
    let (status, answer) = call(&gw, BOB, Method::POST, "/batches", Some(spin.clone())).await;
    assert_eq!(status, 429, "a second batch: {answer}");
    assert_eq!(call(&gw, BOB, Method::DELETE, &format!("/batches/{}", batch["id"]), None).await.0, 200);
    assert_eq!(call(&gw, BOB, Method::POST, &path, Some(spin.clone())).await.0, 201, "free again");

    // ann: two sessions at most; one session and one running batch are two.
    assert_eq!(call(&gw, ANN, Method::POST, "/sessions", None).await.0, 201);
    assert_eq!(call(&gw, ANN, Method::POST, "/batches", Some(spin)).await.0, 201);
    let (status, answer) = call(&gw, ANN, Method::POST, "/sessions", None).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("running batches"), "{answer}");
}

/// Running batches together are capped by `max_sessions` (authentication or not), and a stopped
/// gateway cancels them rather than waiting for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_batches_are_capped_by_max_sessions() {
    let gw = Gateway::start_with(tilegate_gateway::Config { max_sessions: 2, ..test_config() }).await;
    let spin = json!({"code": fixture!("spin"), "kind": "wasm"});
    for _ in 0..2 {
        assert_eq!(call(&gw, None, Method::POST, "/batches", Some(spin.clone())).await.0, 201);
    }
    let (status, answer) = call(&gw, None, Method::POST, "/batches", Some(spin.clone())).await;
    assert_eq!(status, 429, "{answer}");
    assert!(answer["msg"].as_str().unwrap().contains("batches are running"), "{answer}");
    assert_eq!(call(&gw, None, Method::DELETE, "/batches/0", None).await.0, 200);
    assert_eq!(call(&gw, None, Method::POST, "/batches", Some(spin)).await.0, 201, "free again");
}

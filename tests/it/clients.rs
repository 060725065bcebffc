//! Existing Livy clients, unmodified, from PyPI (`tests/requirements.txt`): pylivy runs a `shared`
//! session whose statements choose their own kind (`rust`, `sql`), and a `spark` session whose
//! statements default to `rust`, as a sparkmagic user's would.

use crate::jobs::gateway_with_sst;
use crate::{python, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pylivy_runs_rust_and_sql_statements() {
    let gw = gateway_with_sst(None, test_config()).await;
    // pylivy's StatementKind has no `rust`: a duck-typed kind (anything with `.value`) passes it.
    let script = r#"
import sys, time
from livy import LivySession, SessionKind
from livy.client import LivyClient
from livy.models import StatementState

class Kind:
    def __init__(self, value):
        self.value = value

def finished(client, session, statement):
    while True:
        st = client.get_statement(session, statement.statement_id)
        if st.state not in (StatementState.WAITING, StatementState.RUNNING):
            return st
        time.sleep(0.05)

client = LivyClient(sys.argv[1])
shared = client.create_session(SessionKind.SHARED)
series = sys.argv[2]
rows = finished(client, shared.session_id, client.create_statement(shared.session_id, series, kind=Kind("rust"))).output
rows.raise_for_status()
print(len(rows.json), rows.json[0]["cnt"])
query = finished(client, shared.session_id, client.create_statement(shared.session_id, "SELECT COUNT(*) AS n FROM result_0", kind=Kind("sql"))).output
query.raise_for_status()
print(query.json["data"][0][0])
listed = [s.session_id for s in client.list_sessions()]
print(shared.session_id in listed)
client.delete_session(shared.session_id)

with LivySession.create(sys.argv[1], kind=SessionKind.SPARK, echo=False) as spark:
    spark.run("spark")
    print(spark.run("6 * 7").json)
"#;
    let series = "dataset(\"sst\").bbox(-150.0, 45.0, -120.0, 60.0).time(\"2008-09-01\", \"2008-09-16\")\n    \
                  .map(|tile| tile.stats_by_time())\n    .reduce_by_key(Stats::merge)";
    let (python, url, series) = (python().to_owned(), gw.url.clone(), series.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).args(["-c", script, &url, &series]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pylivy failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["16 238", "16", "True", "42"], "{stdout}");
}

/// pylivy against a gateway with authentication: HTTP Basic through `requests`' own auth object,
/// a bearer token through a requests session; each user sees only their sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pylivy_signs_in_with_basic_and_bearer() {
    use tilegate_gateway::{UserConfig, hash_password, hash_token};
    let users = vec![
        UserConfig { name: "ann".into(), password_hash: Some(hash_password("pw").unwrap()), ..Default::default() },
        UserConfig { name: "bob".into(), token_sha256: vec![hash_token("bob-token")], ..Default::default() },
    ];
    let gw = crate::Gateway::start_with(tilegate_gateway::Config { users, ..test_config() }).await;
    let script = r#"
import sys
import requests
from livy import LivySession, SessionKind
from livy.client import LivyClient

url = sys.argv[1]
with LivySession.create(url, kind=SessionKind.SPARK, auth=requests.auth.HTTPBasicAuth("ann", "pw"), echo=False) as ann:
    ann.run("spark")
    print(ann.run("6 * 7").json)
    bearer = requests.Session()
    bearer.headers["Authorization"] = "Bearer bob-token"
    bob = LivyClient(url, requests_session=bearer)
    print(len(bob.list_sessions()))
    print(bob.get_session(ann.session_id))
    try:
        LivyClient(url).list_sessions()
    except requests.HTTPError as e:
        print(e.response.status_code)
"#;
    let (python, url) = (python().to_owned(), gw.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).args(["-c", script, &url]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pylivy failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["42", "0", "None", "401"], "{stdout}");
}

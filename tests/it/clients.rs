//! Existing Livy clients, unmodified, from PyPI (`tests/requirements.txt`): pylivy runs a `shared`
//! session whose statements choose their own kind (`rust`, `sql`), and a `spark` session whose
//! statements default to `rust`, as a sparkmagic user's would.

use crate::jobs::gateway_with_sst;
use crate::{python, run_script, test_config};

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
    let stdout = run_script(python(), script, &[&gw.url, series]).await;
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
    let stdout = run_script(python(), script, &[&gw.url]).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["42", "0", "None", "401"], "{stdout}");
}

/// sparkmagic 0.23.0 from PyPI, unmodified, in a real IPython shell: `%spark add` for Scala,
/// Python and R sessions, a plain cell, and `%%spark -c sql -o q`, whose Spark-flavoured SQL
/// wrapper the gateway answers with the query's rows as sparkmagic parses them (a pandas
/// DataFrame), the same as a `sql` statement gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkmagic_runs_cells_and_sql_into_dataframes() {
    let gw = gateway_with_sst(None, test_config()).await;
    let script = r#"
import sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "sparkmagic.magics")
query = "SELECT COUNT(*) AS n, MIN(time) AS first FROM sst WHERE time < '2008-09-03'"
for lang in ["scala", "python", "r"]:
    ip.run_line_magic("spark", f"add -s s_{lang} -l {lang} -u {sys.argv[1]} -t None")
    ip.run_cell_magic("spark", f"-s s_{lang}", "6 * 7")
    ip.run_cell_magic("spark", f"-s s_{lang} -c sql -o q", query)
    q = ip.user_ns["q"]
    print(lang, list(q.columns), int(q["n"][0]), str(q["first"][0])[:10])
ip.run_line_magic("spark", "cleanup")
# A gateway with authentication, through sparkmagic's Basic_Access.
ip.run_line_magic("spark", f"add -s authed -l python -u {sys.argv[2]} -t Basic_Access -a ann -p pw")
ip.run_cell_magic("spark", "-s authed", "6 * 7")
"#;
    use tilegate_gateway::{UserConfig, hash_password};
    let users = vec![UserConfig {
        name: "ann".into(),
        password_hash: Some(hash_password("pw").unwrap()),
        ..Default::default()
    }];
    let authed = crate::Gateway::start_with(tilegate_gateway::Config { users, ..test_config() }).await;
    let stdout = run_script(crate::sparkmagic_python(), script, &[&gw.url, &authed.url]).await;
    // The count from the gateway's own SQL, for the comparison.
    let s = gw.client.create_session(&Default::default()).await.unwrap();
    let sql = "SELECT COUNT(*) AS n FROM sst WHERE time < '2008-09-03'";
    let expected: Vec<serde_json::Value> = gw.client.sql(s.id, sql).await.unwrap();
    let n = expected[0]["n"].as_i64().unwrap();
    let lines: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("scala ") || l.starts_with("python ") || l.starts_with("r ")).collect();
    let want: Vec<String> =
        ["scala", "python", "r"].iter().map(|l| format!("{l} ['n', 'first'] {n} 2008-09-01")).collect();
    assert_eq!(lines, want, "{stdout}");
    let answers = stdout.lines().filter(|l| *l == "42").count();
    assert_eq!(answers, 4, "each plain cell (three sessions, and one with Basic auth) printed 42:\n{stdout}");
    // sparkmagic deleted its sessions.
    assert_eq!(gw.client.list_sessions(0, 100).await.unwrap().total, 1);
}

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

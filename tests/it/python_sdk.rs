//! The Python package (`sdk/python`): its client without IPython, then its IPython magics in a
//! real `InteractiveShell`, against a real gateway on the demo dataset.

use std::path::Path;

use crate::jobs::gateway_with_sst;
use crate::{python, test_config};

const SCRIPT: &str = r#"
import sys
sys.path.insert(0, sys.argv[2])
url = sys.argv[1]
series = """dataset("sst").bbox(-150.0, 45.0, -120.0, 60.0).time("2008-09-01", "2008-09-16")
    .map(|tile| tile.stats_by_time())
    .reduce_by_key(Stats::merge)"""
query = "SELECT time, COUNT(sst) AS cnt FROM sst WHERE lat BETWEEN 45 AND 60 AND lon BETWEEN -150 AND -120 AND time BETWEEN '2008-09-01' AND '2008-09-16' GROUP BY time ORDER BY time"

from tilegate import Client, StatementError
assert "IPython" not in sys.modules, "the client must not need IPython"
client = Client(url)
s = client.create_session()
assert client.run(s, "6 * 7").json == 42
seen = []
rows = client.run(s, series, on_progress=seen.append)
assert len(rows.json) == 16 and seen[-1] == 1.0, (rows.json, seen)
try:
    client.run(s, "let a = 1;\nlet b: i32 = \"two\";")
    raise SystemExit("expected a compile error")
except StatementError as e:
    assert e.ename == "CompileError" and "--> cell:2:" in e.render(), e.render()
frame = client.sql(s, query)
assert list(frame.columns) == ["time", "cnt"] and len(frame) == 16 and int(frame["cnt"].sum()) == 16 * 238
client.delete_session(s)

from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "tilegate")
ip.run_line_magic("tilegate", "connect " + url)
ip.run_cell_magic("rust", "-o answer", "6 * 7")
assert ip.user_ns["answer"] == 42
ip.run_cell_magic("rust", "-o days", series)
days = ip.user_ns["days"]
assert len(days) == 16 and "mean" in days.columns, days
ip.run_cell_magic("sql", "-o table", query)
assert len(ip.user_ns["table"]) == 16
ip.run_cell_magic("rust", "-o broken", "let x: u8 = \"no\";")
assert "broken" not in ip.user_ns
assert ip.run_line_magic("tilegate", "info")["state"] == "idle"
ip.run_line_magic("tilegate", "cleanup")
print("python sdk ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_and_magics_run_statements() {
    let gw = gateway_with_sst(None, test_config()).await;
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python");
    let (python, url, package) = (python().to_owned(), gw.url.clone(), package.display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).args(["-c", SCRIPT, &url, &package]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python sdk ok"), "{stdout}");
    assert!(stderr.contains("CompileError") && stderr.contains("cell:1:"), "the magic shows the error: {stderr}");
}

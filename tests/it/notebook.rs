//! The example notebook (`examples/tilegate.ipynb`) executed top to bottom by nbclient in a real
//! IPython kernel against a real gateway on the demo dataset; any failing cell fails the test.

use std::path::Path;

use crate::jobs::gateway_with_sst;
use crate::{python, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_notebook_runs() {
    let gw = gateway_with_sst(None, test_config()).await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let notebook = root.join("examples/tilegate.ipynb").display().to_string();
    let package = root.join("sdk/python").display().to_string();
    let script = "import sys, nbformat\nfrom nbclient import NotebookClient\n\
                  nb = nbformat.read(sys.argv[1], as_version=4)\n\
                  NotebookClient(nb, timeout=300, kernel_name='python3').execute()\n\
                  print('executed', sum(c.cell_type == 'code' for c in nb.cells), 'code cells')";
    let (python, url) = (python().to_owned(), gw.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &notebook])
            .env("TILEGATE_URL", url)
            .env("PYTHONPATH", package)
            .env("MPLBACKEND", "Agg")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the notebook failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("executed 8 code cells"), "{stdout}");
}

//! A worker that breaks the frame protocol is killed with a clear error, its callers get a
//! 502 at once, the server keeps running, and the replica is restarted.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferroserve::{BackendConfig, BackendFactory, PythonBackend};

use common::{base_url, client, serve, serve_backend, status_and_text};

#[tokio::test]
async fn a_frame_over_the_limits_kills_the_worker_not_the_server() {
    let serve = serve().await;
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"));
    let rogue = BackendFactory::python(PythonBackend::new("rogue:Rogue").working_dir(dir));
    serve_backend(
        &serve,
        "rogue",
        rogue,
        BackendConfig::default(),
        "/rogue",
        &[],
    )
    .await;
    let url = format!("{}/rogue", base_url(&serve));
    let http = client();
    let (status, body) =
        status_and_text(http.get(&url).header("X-SERVE-CALL-METHOD", "huge_frame")).await;
    assert_eq!(status, 502);
    assert!(
        body.contains("a frame body of 4294967295 bytes, over the limit of 1073741824"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = status_and_text(http.get(&url)).await;
        if status == 200 {
            assert_eq!(body, "fine");
            break;
        }
        assert!(Instant::now() < deadline, "not restarted: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.shutdown().await;
}

//! Autoscaling end to end (issue 15): a backend with `autoscaling_config` scales up under a
//! step of load once `upscale_delay_s` has passed, and back down after `downscale_delay_s`
//! once the load is gone, with no failed request; the YAML key is checked like the others.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{base_url, client, serve, serve_sleeper};
use ferroserve::{
    AppConfig, AutoscalingConfig, BackendConfig, BackendFactory, EndpointConfig, PythonBackend,
    Registry,
};

/// The count of `backend`'s replicas the status shows: (target, running).
fn replicas_of(serve: &ferroserve::Serve, backend: &str) -> (usize, usize) {
    let status = serve.status();
    let b = &status.backends[backend];
    (b.target_replicas, b.running_replicas)
}

/// The count of `slow`'s replicas: (target, running).
fn replicas(serve: &ferroserve::Serve) -> (usize, usize) {
    replicas_of(serve, "slow")
}

/// What a step of load saw.
struct Step {
    /// From the load's start until `peak` replicas ran.
    up: Duration,
    /// From the load's end until one replica was left.
    down: Duration,
    ok: usize,
    failed: Vec<String>,
}

/// `clients` clients GET `url` in a loop until `backend` runs `peak` replicas (within
/// `within`), and 2 s more; then nothing until it is back to 1 replica.
async fn step_of_load(
    serve: &ferroserve::Serve,
    backend: &str,
    url: &str,
    clients: usize,
    peak: usize,
    within: Duration,
) -> Step {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, url, http) = (stop.clone(), url.to_owned(), client());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => ok += 1,
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let loaded = Instant::now();
    while replicas_of(serve, backend) != (peak, peak) {
        assert!(
            loaded.elapsed() < within,
            "not {peak} replicas of {backend} under load: {:?}",
            replicas_of(serve, backend)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = loaded.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replicas_of(serve, backend),
        (peak, peak),
        "it holds under a steady load"
    );
    stop.store(true, Ordering::Relaxed);
    let idle = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    for task in tasks {
        let (o, f) = task.await.expect("client task");
        ok += o;
        failed.extend(f);
    }
    while replicas_of(serve, backend).0 != 1 {
        assert!(
            idle.elapsed() < Duration::from_secs(20),
            "{backend} not back to 1 replica: {:?}",
            replicas_of(serve, backend)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Step {
        up,
        down: idle.elapsed(),
        ok,
        failed,
    }
}

/// Up within 1 s, down within 3 s, over a 2 s look-back.
fn quick(max_replicas: usize) -> AutoscalingConfig {
    AutoscalingConfig {
        min_replicas: 1,
        max_replicas,
        target_ongoing_requests: 1.0,
        upscale_delay_s: 1.0,
        downscale_delay_s: 3.0,
        look_back_period_s: 2.0,
        ..AutoscalingConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_load_scales_up_then_back_down_without_a_failure() {
    let serve = serve().await;
    let config = BackendConfig {
        max_concurrent_queries: Some(1),
        autoscaling_config: Some(quick(4)),
        ..BackendConfig::default()
    };
    serve_sleeper(&serve, config).await;
    assert_eq!(replicas(&serve), (1, 1));
    // 4 clients, each request 50 ms: 4 requests running or queued, 4× the target.
    let url = format!("{}/slow?ms=50", base_url(&serve));
    let step = step_of_load(&serve, "slow", &url, 4, 4, Duration::from_secs(15)).await;
    eprintln!(
        "FIGURE autoscaling (Rust): 1 -> 4 replicas after {:?} of load, back to 1 after {:?} idle; {} requests ok, {} failed",
        step.up,
        step.down,
        step.ok,
        step.failed.len()
    );
    assert!(
        step.up >= Duration::from_millis(900),
        "not before the 1 s delay: {:?}",
        step.up
    );
    assert!(
        step.down >= Duration::from_secs(3),
        "not before the 3 s delay: {:?}",
        step.down
    );
    assert!(step.failed.is_empty(), "failed: {:?}", step.failed);
    assert!(step.ok > 50, "the load ran: {}", step.ok);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_backend_scales_with_its_load() {
    let serve = serve().await;
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"));
    let sleeper = BackendFactory::python(PythonBackend::new("sleepy:Sleeper").working_dir(dir));
    let config = BackendConfig {
        max_concurrent_queries: Some(1),
        autoscaling_config: Some(quick(3)),
        ..BackendConfig::default()
    };
    serve
        .create_backend("sleepy", sleeper, config)
        .await
        .expect("backend");
    serve
        .create_endpoint("sleepy", EndpointConfig::backend("sleepy").route("/sleepy"))
        .await
        .expect("endpoint");
    // 3 clients, each request 100 ms in Python: 3× the target; new workers take a moment
    // to start, and requests wait in the queue meanwhile.
    let url = format!("{}/sleepy", base_url(&serve));
    let step = step_of_load(&serve, "sleepy", &url, 3, 3, Duration::from_secs(30)).await;
    eprintln!(
        "FIGURE autoscaling (Python): 1 -> 3 workers after {:?} of load, back to 1 after {:?} idle; {} requests ok, {} failed",
        step.up,
        step.down,
        step.ok,
        step.failed.len()
    );
    assert!(step.failed.is_empty(), "failed: {:?}", step.failed);
    assert!(step.ok > 20, "the load ran: {}", step.ok);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_it_scales_to_zero_and_the_next_request_waits_for_a_cold_start() {
    let serve = serve().await;
    let autoscaling = AutoscalingConfig {
        min_replicas: 0,
        max_replicas: 2,
        target_ongoing_requests: 1.0,
        upscale_delay_s: 1.0,
        downscale_delay_s: 1.0,
        look_back_period_s: 1.0,
        ..AutoscalingConfig::default()
    };
    let config = BackendConfig {
        autoscaling_config: Some(autoscaling),
        ..BackendConfig::default()
    };
    serve_sleeper(&serve, config).await;
    let idle = Instant::now();
    while replicas(&serve) != (0, 0) {
        assert!(
            idle.elapsed() < Duration::from_secs(15),
            "not scaled to zero: {:?}",
            replicas(&serve)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = client();
    let ready = http
        .get(format!("{}/-/ready", base_url(&serve)))
        .send()
        .await
        .expect("answers");
    assert_eq!(ready.status(), 200, "scaled to zero is ready");
    // The first request waits in the queue while a replica starts.
    let cold = Instant::now();
    let answer = http
        .get(format!("{}/slow?ms=1", base_url(&serve)))
        .send()
        .await
        .expect("answers");
    let took = cold.elapsed();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    assert_eq!(replicas(&serve), (1, 1));
    eprintln!(
        "FIGURE autoscaling: scaled to zero after {:?} idle; a cold start answered in {took:?}",
        cold.duration_since(idle)
    );
    serve.shutdown().await;
}

#[test]
fn the_docs_example_parses_with_rays_keys() {
    let yaml = common::doc_yaml("autoscaling.md", "");
    let app = AppConfig::from_yaml(&yaml, "docs/autoscaling.md", &Registry::new())
        .expect("the example parses");
    let config = &app.spec.backends[0].config;
    let autoscaling = config.autoscaling_config.as_ref().expect("autoscaling");
    assert_eq!((autoscaling.min_replicas, autoscaling.max_replicas), (1, 8));
    assert_eq!(autoscaling.downscale_delay_s, 600.0);
    assert_eq!(config.num_replicas, 1);
}

#[test]
fn the_yaml_key_is_checked_with_its_line() {
    let registry = Registry::new();
    let app = AppConfig::from_yaml(
        "backends:\n  m:\n    builtin: echo\n    autoscaling_config: {min_replicas: 2, max_replicas: 5}\n",
        "app.yaml",
        &registry,
    )
    .expect("parses");
    let config = &app.spec.backends[0].config;
    assert_eq!(config.num_replicas, 2, "starts with its fewest");
    assert_eq!(
        config.autoscaling_config.as_ref().map(|a| a.max_replicas),
        Some(5)
    );
    let both = AppConfig::from_yaml(
        "backends:\n  m:\n    builtin: echo\n    num_replicas: 3\n    autoscaling_config: {max_replicas: 5}\n",
        "app.yaml",
        &registry,
    )
    .expect_err("both refused");
    assert_eq!(
        (both.line, both.key.as_str()),
        (4, "backends.m.num_replicas"),
        "{both}"
    );
    let bad = AppConfig::from_yaml(
        "backends:\n  m:\n    builtin: echo\n    autoscaling_config:\n      min_replicas: 3\n      max_replicas: 2\n",
        "app.yaml",
        &registry,
    )
    .expect_err("max below min");
    assert_eq!(
        bad.key, "backends.m.autoscaling_config.max_replicas",
        "{bad}"
    );
    // The line where the block of its keys starts.
    assert_eq!(bad.line, 5, "{bad}");
}

//! The chaos suite: the release `ferroserve` binary under overload, a killed worker,
//! SIGTERM under load, slowloris, bad HTTP, mutated app files, a worker that breaks the
//! frame protocol, and a soak. Every scenario is ignored by default: `bench/chaos.sh` runs
//! them (`cargo test --release --test chaos -- --ignored --nocapture --test-threads 1`) and
//! writes their `CHAOS|scenario|what|figures|verdict` lines into docs/RELIABILITY.md.

mod common;

#[path = "chaos/abuse.rs"]
mod abuse;
#[path = "chaos/kit.rs"]
mod kit;
#[path = "chaos/load.rs"]
mod load;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn a1_overload_2x() {
    load::overload("a. overload 2x", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn a2_overload_10x() {
    load::overload("a. overload 10x", 10.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn b_kill_one_of_two_workers() {
    load::kill_worker("b. kill -9 a worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn c_sigterm_under_load() {
    load::sigterm_under_load("c. SIGTERM under load").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn d_slowloris() {
    abuse::slowloris("d. slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn e_bad_http() {
    abuse::bad_http("e. bad HTTP").await;
}

#[test]
#[ignore = "chaos suite: run bench/chaos.sh"]
fn f_config_fuzz() {
    abuse::config_fuzz("f. config fuzz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn g_worker_protocol_fuzz() {
    abuse::worker_protocol_fuzz("g. worker protocol fuzz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos suite: run bench/chaos.sh"]
async fn h_soak() {
    load::soak("h. soak").await;
}

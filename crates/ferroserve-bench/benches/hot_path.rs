//! Criterion micro-benchmarks of the request path's pieces: route lookup, traffic choice,
//! replica choice, and request/response conversion.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ferroserve::Response;
use ferroserve::internals::{Replicas, Routes, Traffic, request_from_http, response_to_http};

fn route_lookup(c: &mut Criterion) {
    let few = Routes::new(&["/noop", "/api", "/api/v2"]);
    let many: Vec<String> = (0..1000).map(|i| format!("/models/m{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let many = Routes::new(&many);
    c.bench_function("route lookup: exact, 3 routes", |b| {
        b.iter(|| few.lookup(black_box("/noop")));
    });
    c.bench_function("route lookup: prefix /api/v2/a/b, 3 routes", |b| {
        b.iter(|| few.lookup(black_box("/api/v2/a/b")));
    });
    c.bench_function("route lookup: prefix, 1000 routes", |b| {
        b.iter(|| many.lookup(black_box("/models/m999/predict")));
    });
    c.bench_function("route lookup: miss, 1000 routes", |b| {
        b.iter(|| many.lookup(black_box("/nope/x/y")));
    });
}

fn traffic_choice(c: &mut Criterion) {
    let single = Traffic::new(&[1.0]);
    let split = Traffic::new(&[0.7, 0.2, 0.1]);
    c.bench_function("traffic choice: one backend", |b| {
        b.iter(|| single.choose());
    });
    c.bench_function("traffic choice: three weights", |b| {
        b.iter(|| split.choose());
    });
}

fn replica_choice(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for n in [1, 2, 8] {
        let replicas = runtime.block_on(Replicas::new(n, 100)).expect("replicas");
        c.bench_function(
            &format!("replica choice: p2c acquire+release, {n} replicas"),
            |b| b.iter(|| replicas.acquire_release()),
        );
    }
}

fn conversion(c: &mut Criterion) {
    let request = || {
        http::Request::builder()
            .method("POST")
            .uri("/api/v2/predict?x=1")
            .header("host", "localhost")
            .header("user-agent", "wrk")
            .header("x-serve-call-method", "predict")
            .body(())
            .expect("request")
            .into_parts()
            .0
    };
    c.bench_function("request conversion: http parts -> Request", |b| {
        b.iter_batched(
            request,
            |parts| request_from_http(parts, Bytes::from_static(b"{\"x\": 1}")),
            criterion::BatchSize::SmallInput,
        );
    });
    c.bench_function("response conversion: Response -> http::Response", |b| {
        b.iter(|| response_to_http(Response::static_text("ok")));
    });
}

criterion_group!(
    benches,
    route_lookup,
    traffic_choice,
    replica_choice,
    conversion
);
criterion_main!(benches);

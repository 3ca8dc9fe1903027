//! A bounded closed-loop HTTP load generator for `make bench` (section serve-http): C workers, each with its
//! own keep-alive connection, POST JSON bodies (cycled from a file, one per line) to one URL on 127.0.0.1
//! until N requests in all or D seconds, whichever comes first. Prints one JSON line: requests, errors,
//! seconds, requests/s, latency p50/p90/p99 in ms.
//!
//! Usage: http_load URL BODIES.jsonl CONCURRENCY REQUESTS MAX_SECONDS [WARMUP]
//! Only loopback URLs are accepted: the benchmark never sends traffic anywhere else.

use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: http_load URL BODIES.jsonl CONCURRENCY REQUESTS MAX_SECONDS [WARMUP]");
        std::process::exit(2);
    }
    let url = a[1].clone();
    let host = url.strip_prefix("http://").and_then(|r| r.split(['/', ':']).next()).unwrap_or("");
    if host != "127.0.0.1" && host != "localhost" {
        eprintln!("http_load: only http://127.0.0.1 URLs are allowed, got {url}");
        std::process::exit(2);
    }
    let bodies: Vec<String> =
        std::fs::read_to_string(&a[2]).unwrap().lines().filter(|l| !l.trim().is_empty()).map(String::from).collect();
    assert!(!bodies.is_empty(), "no bodies in {}", a[2]);
    let conc: usize = a[3].parse().unwrap();
    let total: usize = a[4].parse().unwrap();
    let max = Duration::from_secs_f64(a[5].parse().unwrap());
    let warmup: usize = a.get(6).map(|w| w.parse().unwrap()).unwrap_or(conc * 2);

    let agent_for = || {
        ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        )
    };
    let post = |agent: &ureq::Agent, body: &str| -> bool {
        match agent.post(&url).header("content-type", "application/json").send(body) {
            Ok(mut r) => {
                let ok = r.status().as_u16() == 200;
                let _ = r.body_mut().read_to_string();
                ok
            }
            Err(_) => false,
        }
    };
    {
        let agent = agent_for();
        for i in 0..warmup {
            post(&agent, &bodies[i % bodies.len()]);
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conc)
            .map(|_| {
                let (next, bodies, post) = (&next, &bodies, &post);
                let agent = agent_for();
                s.spawn(move || {
                    let (mut lat, mut errors) = (Vec::new(), 0usize);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total || start.elapsed() > max {
                            break;
                        }
                        let t = Instant::now();
                        if post(&agent, &bodies[i % bodies.len()]) {
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let errors: usize = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<f64> = results.into_iter().flat_map(|r| r.0).collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] };
    println!(
        "{}",
        serde_json::json!({
            "concurrency": conc, "requests": lat.len(), "errors": errors, "seconds": seconds,
            "rps": lat.len() as f64 / seconds, "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99),
        })
    );
}

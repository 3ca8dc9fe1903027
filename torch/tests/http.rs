//! `coltrast serve`: the real server on a free loopback port, over the tiny random model's artifacts. Every
//! route, every error, auth, batching parity, a hot swap under a looping client, graceful shutdown, timeouts,
//! and a fuzz of the JSON routes. (The Ray worker's engines: tests/http.rs.)

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use coltrast_testkit::server::{self, Server};
use coltrast_testkit::tiny::*;
use coltrast_testkit::*;
use serde_json::{json, Value};

/// The tiny pipeline, every sentence its own chunk, serving the base model (so the model stays the same when
/// the data changes).
fn served_project() -> Project {
    let p = tiny_project("epochs = 1");
    let mut toml = std::fs::read_to_string(p.path().join("pipeline.toml")).unwrap();
    toml = toml.replace("[chunk]\n", "[chunk]\nstrategy = \"semantic\"\nsimilarity_threshold = 1.0\n");
    toml.push_str("[export]\nmodel = \"base\"\n");
    p.write("pipeline.toml", toml);
    p.run(&["run", "index"]).ok();
    p
}

fn cli_json(p: &Project, args: &[&str]) -> Value {
    let out = p.run(args).ok();
    serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout()))
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Scores equal within float noise (the server batches, the CLI does not), everything else exactly.
fn assert_same_hits(a: &Value, b: &Value, what: &str) {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        for f in ["project_id", "chunk_id", "text"] {
            assert_eq!(x[f], y[f], "{what}: {f}");
        }
        assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-4, "{what}: {x} {y}");
    }
}

#[test]
fn every_route_answers_and_the_query_routes_agree_with_the_cli() {
    let p = served_project();
    let s = Server::start(&p, &[], &[]);

    assert_eq!(s.get("/healthz", None).json()["status"], "ok");
    assert_eq!(s.get("/readyz", None).json()["status"], "ready");

    let info = s.get("/v1/info", None);
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["model"]["served"], "base");
    assert_eq!(info["model"]["dim"], 32);
    assert!(info["model"]["max_seq_length"].as_u64().unwrap() > 0);
    assert_eq!(info["index"]["factory"], "Flat");
    let chunks = info["index"]["size"].as_u64().unwrap();
    assert!(chunks > 9, "{info}");
    assert_eq!(info["generation"]["number"], 1);
    let index_fp = std::fs::read_to_string(p.path().join("artifacts/index/latest")).unwrap();
    assert_eq!(info["generation"]["fingerprints"]["index"], index_fp.trim());

    // search, ask, explore, compare: the CLI's --json answers
    let q = "Which project trades crypto coins?";
    let r = s.post("/v1/search", &json!({"query": q, "k": 4}).to_string());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-coltrast-generation"), Some("1"));
    assert!(r.header("x-request-id").is_some());
    let hits = r.json();
    assert!(hits["took_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(hits["hits"].as_array().unwrap().len(), 4);
    assert_same_hits(&hits["hits"], &cli_json(&p, &["search", q, "-k", "4", "--json"])["chunks"], "search");
    let reranked = s.post_json("/v1/search", json!({"query": q, "k": 3, "rerank": true, "project": "gamma"}));
    let cli = cli_json(&p, &["search", q, "-k", "3", "--rerank", "--project", "gamma", "--json"]);
    assert_same_hits(&reranked["hits"], &cli["chunks"], "search --rerank --project");
    assert!(reranked["hits"].as_array().unwrap().iter().all(|h| h["project_id"] == "gamma"));

    let ask = s.post_json("/v1/ask", json!({"query": q}));
    let cli = cli_json(&p, &["ask", q, "--json"]);
    assert_eq!(ask["top_project"], cli["top_project"]);
    assert!((ask["confidence"].as_f64().unwrap() - cli["confidence"].as_f64().unwrap()).abs() < 1e-4);
    assert_same_hits(&ask["chunks"], &cli["chunks"], "ask");

    let explore = s.post_json("/v1/explore", json!({"query": "Gamma trading", "project": "gamma"}));
    let cli = cli_json(&p, &["explore", "Gamma trading", "--project", "gamma", "--json"]);
    assert_eq!(explore["project_id"], cli["project_id"]);
    assert_eq!(explore["categories"].as_array().unwrap().len(), 8);
    for (a, b) in explore["categories"].as_array().unwrap().iter().zip(cli["categories"].as_array().unwrap()) {
        assert_eq!((&a["category"], &a["chunk_id"]), (&b["category"], &b["chunk_id"]));
    }
    let compare = s.post_json("/v1/compare", json!({"query": q, "k": 3}));
    let cli = cli_json(&p, &["compare", q, "-k", "3", "--json"]);
    assert_eq!(compare["query"], q);
    let ids = |v: &Value| -> Vec<Value> { v.as_array().unwrap().iter().map(|p| p["project_id"].clone()).collect() };
    assert_eq!(ids(&compare["projects"]), ids(&cli["projects"]));

    // batch search: the same hits as one query at a time
    let qs = ["Which loss does training use?", "What does Beta classify?", "What stops the agent?"];
    let batch = s.post_json("/v1/search/batch", json!({"queries": qs, "k": 3}));
    for (i, q) in qs.iter().enumerate() {
        assert_eq!(batch["results"][i]["query"], *q);
        let one = s.post_json("/v1/search", json!({"query": q, "k": 3}));
        assert_same_hits(&batch["results"][i]["hits"], &one["hits"], q);
    }

    // OpenAI embeddings: one text or many, float or base64; unit vectors; an over-long text is truncated
    let e = s.post_json("/v1/embeddings", json!({"input": "Alpha detects tumors", "model": "m"}));
    assert_eq!((&e["object"], &e["model"]), (&json!("list"), &json!("m")));
    let v = floats(&e["data"][0]["embedding"]);
    assert_eq!(v.len(), 32);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4);
    assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() >= 3);
    let long = "tumors ".repeat(5000);
    let many = s.post_json(
        "/v1/embeddings",
        json!({"input": ["Alpha detects tumors", long], "model": "m", "encoding_format": "base64"}),
    );
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(many["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let b: Vec<f64> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect();
    assert!(cosine(&v, &b) > 0.9999, "base64 and float differ");
    assert_eq!(many["data"][1]["index"], 1);

    // the page, the OpenAPI document (generated: every route is in it), metrics
    let page = s.get("/", None);
    assert!(page.body.contains("<form id=\"form\"") && page.body.contains("/v1/ask"), "{}", page.body);
    let api = s.get("/openapi.json", None).json();
    for route in
        ["/v1/search", "/v1/search/batch", "/v1/ask", "/v1/explore", "/v1/compare", "/v1/embeddings", "/v1/info"]
    {
        assert!(api["paths"][route].is_object(), "{route} missing from openapi.json");
    }
    assert!(api["components"]["schemas"]["SearchRequest"]["properties"]["query"].is_object(), "{api}");
    let m = s.get("/metrics", None).body;
    for needle in [
        "coltrast_http_requests_total{route=\"/v1/search\",status=\"200\"}",
        "coltrast_http_request_duration_seconds_bucket",
        "coltrast_batch_size_count",
        "coltrast_queue_depth 0",
        &format!("coltrast_index_vectors {chunks}"),
        "coltrast_reloads_total{result=\"swapped\"} 1",
        "coltrast_generation 1",
    ] {
        assert!(m.contains(needle), "{needle} not in /metrics:\n{m}");
    }
    assert!(s.terminate().success());
}

#[test]
fn errors_are_json_with_the_right_status_and_the_cli_checks_the_same() {
    let p = served_project();
    let s = Server::start(&p, &["--body-limit", "2000"], &[]);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/search", "{\"query\": \"x\",".into(), 400, "malformed JSON"),
        ("/v1/search", "not json".into(), 400, "malformed JSON"),
        ("/v1/search", json!({"query": 5}).to_string(), 422, "query"),
        ("/v1/search", json!({"query": "x", "k": "five"}).to_string(), 422, "k"),
        ("/v1/search", json!({"k": 3}).to_string(), 422, "query"),
        ("/v1/search", json!({"query": "x", "k": 0}).to_string(), 422, "k"),
        ("/v1/search", json!({"query": "x", "k": 101}).to_string(), 422, "k"),
        ("/v1/search", json!({"query": "x", "k": -1}).to_string(), 422, "k"),
        ("/v1/search", json!({"query": "   "}).to_string(), 422, "query"),
        ("/v1/search", json!({"query": "x", "limit": 3}).to_string(), 422, "limit"),
        ("/v1/search", json!({"query": "x", "project": "nope"}).to_string(), 422, "nope"),
        ("/v1/search", json!({"query": "x".repeat(3000)}).to_string(), 413, "limit"),
        ("/v1/search/batch", json!({"queries": []}).to_string(), 422, "queries"),
        ("/v1/search/batch", json!({"queries": ["a", ""]}).to_string(), 422, "queries[1]"),
        ("/v1/ask", json!({"query": ""}).to_string(), 422, "query"),
        ("/v1/explore", json!({"query": "x", "project": 3}).to_string(), 422, "project"),
        ("/v1/compare", json!({"query": "x", "rerank": "yes"}).to_string(), 422, "rerank"),
        ("/v1/embeddings", json!({"input": [1, 2, 3]}).to_string(), 422, "input"),
        ("/v1/embeddings", json!({"input": ""}).to_string(), 422, "input[0]"),
        ("/v1/embeddings", json!({"input": "x", "encoding_format": "hex"}).to_string(), 422, "encoding_format"),
        ("/v1/embeddings", json!({"input": "x", "dimensions": 7}).to_string(), 422, "dimensions"),
        ("/v1/admin/reload", String::new(), 403, "API key"),
        ("/v1/nothing", "{}".into(), 404, "/v1/nothing"),
    ];
    for (path, body, status, needle) in cases {
        let r = s.post(path, &body);
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        let e = r.json();
        let message = e["error"]["message"].as_str().unwrap_or_else(|| panic!("{path}: no error.message: {e}"));
        assert!(e["error"]["code"].is_string(), "{e}");
        assert!(message.contains(needle), "{path} {body}: {needle:?} not in {message:?}");
    }
    let r = s.get("/v1/search", None);
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("GET"));
    let r = s.get("/nowhere", None);
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (404, json!("not_found")));

    // the CLI: an empty query or k out of range is one line and exit 1, before anything is loaded
    for args in [&["search", ""][..], &["search", "x", "-k", "0"], &["ask", "  "], &["compare", "x", "-k", "101"]] {
        let out = p.run(args);
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stdout());
        assert_eq!(out.stderr().trim().lines().count(), 1, "{args:?}: {}", out.stderr());
        assert!(out.stdout().is_empty(), "{args:?}: {}", out.stdout());
    }
    assert!(s.terminate().success());
}

#[test]
fn the_api_key_guards_every_route_but_health_and_comes_only_from_the_environment() {
    let p = served_project();
    let key = "s3cret-key-for-tests";
    let s = Server::start(&p, &["--api-key-env", "MY_KEY"], &[("MY_KEY", key)]);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(s.get(path, None).status, 200, "{path}");
    }
    for path in ["/", "/v1/info", "/metrics", "/openapi.json"] {
        assert_eq!(s.get(path, None).status, 401, "{path}");
        assert_eq!(s.get(path, Some("wrong")).status, 401, "{path}");
        assert_eq!(s.get(path, Some(&format!("{key}x"))).status, 401, "{path}");
        assert_eq!(s.get(path, Some(key)).status, 200, "{path}");
    }
    let body = json!({"query": "Alpha"}).to_string();
    let r = s.post("/v1/search", &body);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(s.post_with("/v1/search", &body, Some(key)).status, 200);
    // the admin reload needs the key, and swaps even when nothing changed
    assert_eq!(s.post("/v1/admin/reload", "").status, 401);
    let r = s.post_with("/v1/admin/reload", "", Some(key));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"result": "swapped", "generation": 2}));
    assert_eq!(s.get("/v1/info", Some(key)).json()["generation"]["number"], 2);
    assert!(s.terminate().success());

    // a key variable that is named but not set is one line, exit 1; a key is never taken from argv
    let out = p.run(&["serve", "--port", "0", "--api-key-env", "NOT_SET_ANYWHERE"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(out.stderr().contains("NOT_SET_ANYWHERE"), "{}", out.stderr());
    let out = p.run(&["serve", "--api-key", key]);
    assert_ne!(out.code(), 0);
}

#[test]
fn concurrent_queries_are_batched_and_get_the_vectors_they_get_alone() {
    let p = served_project();
    // a long wait, so concurrent requests surely share batches
    let s = Server::start(&p, &["--max-batch-wait-ms", "50"], &[]);
    let texts: Vec<String> = QA.iter().map(|(_, q, _)| q.to_string()).collect();
    let alone: Vec<Vec<f64>> = texts
        .iter()
        .map(|t| floats(&s.post_json("/v1/embeddings", json!({"input": t}))["data"][0]["embedding"]))
        .collect();
    let before = batches(&s);
    let together: Vec<Vec<f64>> = std::thread::scope(|sc| {
        let handles: Vec<_> = texts
            .iter()
            .map(|t| {
                let s = &s;
                sc.spawn(move || floats(&s.post_json("/v1/embeddings", json!({"input": t}))["data"][0]["embedding"]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = batches(&s);
    for ((t, a), b) in texts.iter().zip(&alone).zip(&together) {
        assert!(cosine(a, b) >= 0.9999, "{t}: cosine {}", cosine(a, b));
    }
    // 12 requests at once ran in fewer ONNX Runtime calls than requests
    let (runs, texts_run) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(texts_run, texts.len() as f64, "{before:?} {after:?}");
    assert!(runs < texts.len() as f64, "no batching: {runs} runs for {} requests", texts.len());
    // and the batched searches rank as the single ones do
    let q = "What does the agent observe?";
    let one = s.post_json("/v1/search", json!({"query": q, "k": 5, "rerank": true}));
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| sc.spawn(|| s.post_json("/v1/search", json!({"query": q, "k": 5, "rerank": true}))))
            .collect();
        for h in hs {
            assert_same_hits(&h.join().unwrap()["hits"], &one["hits"], "batched search");
        }
    });
    assert!(s.terminate().success());
}

/// (calls, texts) of the batcher so far, from /metrics.
fn batches(s: &Server) -> (f64, f64) {
    let m = s.get("/metrics", None).body;
    let get = |name: &str| -> f64 {
        m.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
    };
    (get("coltrast_batch_size_count "), get("coltrast_batch_size_sum "))
}

#[test]
fn a_new_index_is_swapped_in_under_load_with_no_error_and_no_mixed_generation() {
    let p = served_project();
    let s = Server::start(&p, &["--watch-interval-ms", "100"], &[]);
    let all_chunks = |s: &Server| -> (u64, std::collections::BTreeSet<String>) {
        let r = s.post("/v1/search", &json!({"query": "dashboard", "k": 100}).to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let g: u64 = r.header("x-coltrast-generation").unwrap().parse().unwrap();
        let ids =
            r.json()["hits"].as_array().unwrap().iter().map(|h| h["chunk_id"].as_str().unwrap().to_string()).collect();
        (g, ids)
    };
    let (g1, first) = all_chunks(&s);
    assert_eq!(g1, 1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|sc| {
        let client = sc.spawn(|| {
            let mut seen = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(all_chunks(&s));
            }
            seen
        });
        // the data changes: one README gains a sentence, so the index gains a chunk
        let mut data: Value = serde_json::from_str(&tiny_dataset()).unwrap();
        let readme = data["projects"][1]["readme_content"].as_str().unwrap().to_string();
        data["projects"][1]["readme_content"] = format!("{readme}\n\nBeta also ships a dashboard.").into();
        p.write("data.json", data.to_string());
        p.run(&["run", "index"]).ok();
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.get("/v1/info", None).json()["generation"]["number"] != 2 {
            assert!(Instant::now() < deadline, "no swap; stderr: {}", s.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().unwrap()
    });
    let (g2, second) = all_chunks(&s);
    assert_eq!(g2, 2);
    assert_eq!(second.len(), first.len() + 1, "the new chunk is served");
    assert!(first.is_subset(&second));
    let (mut n1, mut n2) = (0, 0);
    for (g, ids) in &seen {
        match g {
            1 => {
                assert_eq!(ids, &first, "a generation-1 response with other chunks");
                n1 += 1;
            }
            2 => {
                assert_eq!(ids, &second, "a generation-2 response with other chunks");
                n2 += 1;
            }
            g => panic!("generation {g}"),
        }
    }
    assert!(n1 > 0 && n2 > 0, "the client saw both generations: {n1} then {n2}");
    // every response of the loop after the swap is from the new generation
    let swap = seen.iter().position(|(g, _)| *g == 2).unwrap();
    assert!(seen[swap..].iter().all(|(g, _)| *g == 2));
    // SIGHUP reloads too
    s.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get("/v1/info", None).json()["generation"]["number"] != 3 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload; stderr: {}", s.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = s.get("/metrics", None).body;
    assert!(m.contains("coltrast_reloads_total{result=\"swapped\"} 3"), "{m}");
    assert!(s.terminate().success());
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let p = served_project();
    let s = Server::start(&p, &[], &[]);
    // a request whose body is still arriving when SIGTERM comes
    let body = json!({"query": "What does Alpha detect?", "k": 2}).to_string();
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    write!(
        conn,
        "POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // it no longer accepts
    assert!(std::net::TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)).is_err(), "still accepting");
    conn.write_all(&body.as_bytes()[5..]).unwrap();
    let mut reply = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = conn.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"hits\""), "{reply}");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn slow_clients_are_cut_off_by_the_header_and_request_timeouts() {
    let p = served_project();
    let s = Server::start(&p, &["--header-timeout", "1", "--request-timeout", "1"], &[]);
    // headers never finished: the connection is closed
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    conn.write_all(b"POST /v1/search HTTP/1.1\r\nHost: x\r\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf);
    assert!(t.elapsed() < Duration::from_secs(8), "the header timeout did not close the connection");
    // a body that never arrives: 503 after the request timeout
    let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
    conn.write_all(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"query\"").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("\"timeout\""), "{reply}");
    assert_eq!(s.get("/healthz", None).status, 200);
    assert!(s.terminate().success());
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random JSON-ish body: valid requests with odd values, valid JSON of the wrong shape, broken JSON,
/// random bytes.
fn fuzz_body(r: &mut Rng, route: &str) -> Vec<u8> {
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1),
        json!(100),
        json!(101),
        json!(1e308),
        json!(-0.5),
        json!(u64::MAX),
        json!(""),
        json!(" "),
        json!("x"),
        json!("é\u{0}\u{ffff}"),
        json!([]),
        json!(["a"]),
        json!([1, 2]),
        json!({}),
        json!({"a": {"b": [null]}}),
        json!("What does Alpha detect?"),
        json!("gamma"),
    ];
    let keys = ["query", "k", "project", "rerank", "queries", "input", "model", "encoding_format", "dimensions", "x"];
    let mut obj = serde_json::Map::new();
    for _ in 0..r.below(5) {
        obj.insert(keys[r.below(keys.len())].to_string(), values[r.below(values.len())].clone());
    }
    let text = Value::Object(obj).to_string();
    // a valid request for the route, with random text (any Unicode, sometimes very long) and random options
    let words = ["Alpha", "tumors", "é", "日本語", "\u{0}", "🙂", "\\", "\"", "trading", "<script>", " ", "\n"];
    let n = 1 + if r.below(10) == 0 { r.below(3000) } else { r.below(12) };
    let mut query = String::new();
    for _ in 0..n {
        query.push_str(words[r.below(words.len())]);
    }
    let query = if query.trim().is_empty() { "x".to_string() } else { query };
    let mut valid = match route {
        "/v1/search/batch" => json!({"queries": (0..1 + r.below(5)).map(|_| query.clone()).collect::<Vec<_>>()}),
        "/v1/embeddings" => {
            json!({"input": if r.below(2) == 0 { json!(query) } else { json!([query, "two"]) }, "model": "m"})
        }
        _ => json!({"query": query}),
    };
    if r.below(2) == 0 && route != "/v1/embeddings" && route != "/v1/explore" {
        valid["k"] = json!(1 + r.below(100));
    }
    if r.below(2) == 0 && route != "/v1/embeddings" {
        valid["rerank"] = json!(r.below(2) == 0);
    }
    if r.below(3) == 0 && (route == "/v1/search" || route == "/v1/explore") {
        valid["project"] = json!(["alpha", "beta", "gamma"][r.below(3)]);
    }
    match r.below(8) {
        0..=2 => valid.to_string().into_bytes(),
        3 => text.into_bytes(),
        4 => {
            let cut = r.below(text.len().max(1));
            text.as_bytes()[..cut].to_vec()
        }
        5 => {
            let mut b = valid.to_string().into_bytes();
            for _ in 0..1 + r.below(3) {
                let i = r.below(b.len());
                b[i] = r.next() as u8;
            }
            b
        }
        6 => (0..r.below(200)).map(|_| r.next() as u8).collect(),
        _ => values[r.below(values.len())].to_string().into_bytes(),
    }
}

#[test]
fn thousands_of_random_and_malformed_bodies_never_break_the_server() {
    let p = served_project();
    let s = Server::start(&p, &[], &[]);
    let routes = ["/v1/search", "/v1/search/batch", "/v1/ask", "/v1/explore", "/v1/compare", "/v1/embeddings"];
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let agent = server::agent();
    let mut by_status = std::collections::BTreeMap::new();
    for i in 0..3000 {
        let route = routes[i % routes.len()];
        let body = fuzz_body(&mut r, route);
        let reply = agent
            .post(format!("{}{route}", s.base))
            .header("content-type", "application/json")
            .send(&body[..])
            .unwrap_or_else(|e| panic!("{route} {:?}: {e}; stderr: {}", String::from_utf8_lossy(&body), s.stderr()));
        let status = reply.status().as_u16();
        let mut reply = reply;
        let text = reply.body_mut().read_to_string().unwrap();
        assert!(
            [200, 400, 413, 422].contains(&status),
            "{route} {:?}: {status} {text}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{route}: not JSON ({e}): {text}"));
        if status != 200 {
            assert!(v["error"]["message"].is_string(), "{text}");
        }
        *by_status.entry(status).or_insert(0) += 1;
    }
    // some of each kind of answer, so the fuzz reached past the parser
    for st in [200, 400, 422] {
        assert!(by_status.get(&st).copied().unwrap_or(0) > 50, "{by_status:?}");
    }
    // garbage that is not HTTP at all
    for _ in 0..200 {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        let junk: Vec<u8> = (0..r.below(300)).map(|_| r.next() as u8).collect();
        let _ = c.write_all(&junk);
        let _ = c.shutdown(std::net::Shutdown::Write);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    assert_eq!(s.get("/healthz", None).status, 200);
    assert_eq!(s.post_json("/v1/search", json!({"query": "Alpha"}))["hits"].as_array().unwrap().len(), 5);
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
    assert!(s.terminate().success());
}

#[test]
fn access_logs_are_json_lines_with_the_request_id() {
    let p = served_project();
    let s = Server::start(&p, &["--log-format", "json"], &[]);
    let r = s.post("/v1/search", &json!({"query": "Alpha"}).to_string());
    let id = r.header("x-request-id").unwrap().to_string();
    let agent = server::agent();
    let mine = agent.get(format!("{}/healthz", s.base)).header("x-request-id", "trace-42").call().unwrap();
    assert_eq!(mine.headers().get("x-request-id").unwrap(), "trace-42");
    std::thread::sleep(Duration::from_millis(200));
    let logs = s.stderr();
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "{logs}");
    let access = |rid: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["request_id"] == rid)
            .unwrap_or_else(|| panic!("no access line for {rid}: {logs}"))
    };
    let line = access(&id);
    assert_eq!((&line["fields"]["path"], &line["fields"]["status"]), (&json!("/v1/search"), &json!(200)));
    assert_eq!(access("trace-42")["fields"]["path"], "/healthz");
    assert!(s.terminate().success());
}

/// The openai Python package reads the embeddings as they are (when a Python with `openai` is around: the
/// bench venv, or $COLTRAST_TEST_PYTHON).
#[test]
fn the_openai_python_client_reads_the_embeddings() {
    let python = std::env::var("COLTRAST_TEST_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        let cache = std::env::var("COLTRAST_CACHE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/coltrast"));
        cache.join("bench-venv/bin/python")
    });
    let has = std::process::Command::new(&python).args(["-c", "import openai"]).output();
    if !has.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("skipping: no Python with the openai package at {} (make bench creates one)", python.display());
        return;
    }
    let p = served_project();
    let s = Server::start(&p, &[], &[]);
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
r = client.embeddings.create(model="coltrast", input=["Alpha detects tumors", "Beta classifies reviews"])
print(json.dumps([d.embedding for d in r.data]))
"#;
    let out = std::process::Command::new(&python).args(["-c", script, &s.base]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    let want = s.post_json("/v1/embeddings", json!({"input": ["Alpha detects tumors", "Beta classifies reviews"]}));
    for i in 0..2 {
        assert!(cosine(&got[i], &floats(&want["data"][i]["embedding"])) > 0.99999);
    }
    assert!(s.terminate().success());
}

/// MPNet through the ort seam: the whole pipeline on the tiny random MPNet (index and eval run on its ONNX
/// export), the CLI's search, the server over it, and the int8 export, which passes the export stage's parity
/// check and still serves.
#[test]
fn tiny_mpnet_runs_every_stage_and_is_served() {
    let p = tiny_mpnet_project("epochs = 1");
    let out = p.run(&["run"]).ok();
    assert_eq!(out.stages().len(), 8, "{:?}", out.stages());
    let export_dir = |p: &Project| {
        let arts = p.path().join("artifacts/export");
        arts.join(std::fs::read_to_string(arts.join("latest")).unwrap().trim())
    };
    for served in ["coltrast", "base"] {
        let info = coltrast::onnx::OnnxModelInfo::read(&export_dir(&p).join(served)).unwrap();
        assert_eq!((info.model_type.as_str(), info.pad_token_id), ("mpnet", 1), "{served}");
    }
    let q = "Which project trades crypto coins?";
    let cli = cli_json(&p, &["search", q, "-k", "3", "--json"]);
    assert_eq!(cli["chunks"].as_array().unwrap().len(), 3, "{cli}");

    let s = Server::start(&p, &[], &[]);
    let info = s.get("/v1/info", None).json();
    // export.model = "auto": whichever the validation guard chose, as the index stage recorded it
    let arts = p.path().join("artifacts/index");
    let latest = std::fs::read_to_string(arts.join("latest")).unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(arts.join(latest.trim()).join("manifest.json")).unwrap()).unwrap();
    assert_eq!(info["model"]["served"], index["stats"]["served_model"], "{info}");
    assert_eq!(info["model"]["served_system"], index["stats"]["served_system"], "{info}");
    let hits = s.post_json("/v1/search", json!({"query": q, "k": 3}));
    assert_same_hits(&hits["hits"], &cli["chunks"], "MPNet search");
    let e = s.post_json("/v1/embeddings", json!({"input": ["Alpha detects tumors", "a"], "model": "m"}));
    for row in e["data"].as_array().unwrap() {
        let v = floats(&row["embedding"]);
        assert_eq!(v.len() as u64, info["model"]["dim"].as_u64().unwrap());
        assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    }
    drop(s);

    let int8 = ["--set", "export.quantize=int8"];
    let out = p.run(&["run", int8[0], int8[1]]).ok();
    assert!(out.stages().contains(&"export ran".to_string()), "{:?}", out.stages());
    let info = coltrast::onnx::OnnxModelInfo::read(&export_dir(&p).join("coltrast")).unwrap();
    assert_eq!((info.quantize, info.model_type.as_str()), (coltrast::onnx::Quantize::Int8, "mpnet"));
    let v = cli_json(&p, &["search", q, "-k", "2", "--json", int8[0], int8[1]]);
    assert_eq!(v["chunks"].as_array().unwrap().len(), 2, "{v}");
}

/// `model.engine = "openvino"`: the server embeds queries with OpenVINO, says so in /v1/info, and its vectors
/// and hits agree with ONNX Runtime's (the same index, only the query encoder differs).
#[test]
fn the_openvino_engine_serves_the_same_vectors_and_says_so() {
    let ov = coltrast::settings::Settings::default().openvino_library_path();
    if !ov.exists() {
        eprintln!(
            "SKIP the_openvino_engine_serves_the_same_vectors_and_says_so: no OpenVINO at {} (make setup)",
            ov.display()
        );
        return;
    }
    let p = served_project();
    let ort = Server::start(&p, &[], &[]);
    let ovs = Server::start(&p, &[], &[("COLTRAST_MODEL__ENGINE", "openvino"), ("COLTRAST_MODEL__PRECISION", "f32")]);
    let info = ovs.get("/v1/info", None).json();
    assert_eq!((&info["model"]["engine"], &info["model"]["precision"]), (&json!("openvino"), &json!("f32")), "{info}");
    assert!(info["model"]["engine_version"].as_str().unwrap().starts_with("2026."), "{info}");
    let oi = ort.get("/v1/info", None).json();
    assert_eq!((&oi["model"]["engine"], &oi["model"]["precision"]), (&json!("onnxruntime"), &json!("f32")), "{oi}");
    let texts = json!(["Alpha detects tumors", "Which project trades crypto coins?", "x"]);
    let a = ort.post_json("/v1/embeddings", json!({"input": texts}));
    let b = ovs.post_json("/v1/embeddings", json!({"input": texts}));
    for i in 0..3 {
        let c = cosine(&floats(&a["data"][i]["embedding"]), &floats(&b["data"][i]["embedding"]));
        assert!(c > 0.9999, "text {i}: cosine {c}");
    }
    let q = json!({"query": "Which project trades crypto coins?", "k": 4});
    assert_same_hits(
        &ort.post_json("/v1/search", q.clone())["hits"],
        &ovs.post_json("/v1/search", q)["hits"],
        "search",
    );
}

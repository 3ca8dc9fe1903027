//! A real `coltrast serve` on a free loopback port, and a small HTTP client for it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Project;

pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub addr: std::net::SocketAddr,
    /// Everything the server wrote on stderr so far.
    pub stderr: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

impl Server {
    /// `coltrast serve --port 0 ARGS` in the project, with extra environment; returns once /readyz is 200.
    pub fn start(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Server {
        let s = Self::spawn(p, args, env);
        s.wait_ready();
        s
    }

    /// Start without waiting for /readyz.
    pub fn spawn(p: &Project, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = vec!["serve", "--port", "0"];
        all.extend_from_slice(args);
        let mut cmd = p.cmd(&all);
        cmd.env_remove("COLTRAST_API_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let err = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        let url = first
            .trim()
            .strip_prefix("coltrast serve: listening on ")
            .unwrap_or_else(|| panic!("no listening line: {first:?}; stderr: {}", stderr.lock().unwrap()));
        let addr: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        Server { child, base: url.to_string(), addr, stderr, agent: agent() }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get("/readyz", None);
            if r.status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "never ready: {} {}; stderr: {}", r.status, r.body, self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut r = r.unwrap_or_else(|e| panic!("request failed: {e}"));
        let headers = r.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
        let status = r.status().as_u16();
        let body = r.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
        Reply { status, body, headers }
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> Reply {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        Self::reply(req.call())
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.post_with(path, body, None)
    }

    pub fn post_with(&self, path: &str, body: &str, key: Option<&str>) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        Self::reply(req.send(body))
    }

    pub fn post_json(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = self.post(path, &body.to_string());
        assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
        r.json()
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
        assert!(ok.unwrap().success());
    }

    /// SIGTERM, then the exit status (within 60 s).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

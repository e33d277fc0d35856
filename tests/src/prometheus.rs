//! Debian's Prometheus server (`prometheus`, installed by `cargo xtask setup` with promtool), started by a test on
//! a free loopback port with a temporary configuration and storage, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::daemon::kill_with_parent;
use crate::http::get_tcp;
use crate::poll_until;

/// A running Prometheus server.
pub struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`HOST:PORT`) every second and evaluating `rules` (the text of a rule
    /// file) every second; waits until it is ready.
    pub fn start(target: std::net::SocketAddr, rules: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("write the rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: leakprobe\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write the configuration");
        // A free port: bound, read, released (Prometheus binds it a moment later).
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("the log file"));
        kill_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start prometheus (Debian's `prometheus`, installed by cargo xtask setup)");
        let prometheus = Self { child, addr, dir };
        poll_until(Duration::from_secs(30), "Prometheus to be ready", || {
            let ready =
                std::net::TcpStream::connect(addr).is_ok() && get_tcp(addr, "/-/ready", "*/*").status == Some(200);
            ready.then_some(())
        });
        prometheus
    }

    /// The result of an instant query (`data.result`), from Prometheus's HTTP API.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded = serde_urlencoded::to_string([("query", promql)]).expect("encode the query");
        let response = get_tcp(self.addr, &format!("/api/v1/query?{encoded}"), "application/json");
        assert_eq!(response.status, Some(200), "{promql}: {response}\nlog:\n{}", self.log());
        let json = response.json();
        assert_eq!(json["status"], "success", "{json:#}");
        json["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Prometheus's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

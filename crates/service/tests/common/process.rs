//! The real binary as a child process: started with exactly the given environment, its log
//! lines read while it runs (a service blocked writing its logs would never stop), signalled
//! and waited for. The waits are bounds on liveness (a test fails instead of hanging), never
//! measurements.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_messenger-handover");

/// How long a start, a log line or an exit may take before the test gives up.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Process {
    child: Child,
    logs: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    /// `messenger-handover ARGS` with only `env` in its environment, stderr captured.
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Process {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        Process {
            child,
            logs,
            reader: Some(reader),
        }
    }

    /// `serve` on `env`; returns once it logged `listening`, with its port.
    pub async fn serve(env: &[(String, String)]) -> (Process, u16) {
        let process = Process::spawn(&["serve"], env);
        let line = process
            .wait_for_line(|l| message(l) == Some("listening"))
            .await;
        let port = line["port"].as_u64().expect("listening names the port") as u16;
        (process, port)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The JSON log lines so far (others, e.g. a panic message, are skipped).
    pub fn json_lines(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a JSON log line that satisfies `pred`, and returns it.
    pub async fn wait_for_line(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.json_lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line; the logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (asserted) and returns everything it logged.
    pub async fn stop(mut self) -> String {
        self.signal("TERM");
        let (status, _) = self.wait_exit().await;
        let logs = self.logs();
        assert!(status.success(), "stopped with {status:?}:\n{logs}");
        logs
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the process to exit by itself (it is killed, and the test fails, after
    /// [`PATIENCE`]); returns its status and how long it took.
    pub async fn wait_exit(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return (status, started.elapsed());
            }
            if started.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("the process did not exit; the logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A JSON log line's message.
pub fn message(line: &Value) -> Option<&str> {
    line["message"].as_str()
}

/// A JSON log line's severity, as Cloud Logging reads it (`INFO`, `WARNING`, …).
pub fn severity(line: &Value) -> Option<&str> {
    line["severity"].as_str()
}

/// `pairs` as an owned environment.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

//! Load harness: the real daemon (release build) with the fake CLI flooding stdout, measured
//! from the outside: bytes per second from child stdout to sockets, the daemon's peak RSS, and
//! the time from a message to its first event.
//!
//! `cargo bench --bench load` runs the full scenarios and prints a table for BENCHMARKS.md.
//! Under `cargo test` (no `--bench` argument) it runs the same scenarios at a tiny size, so the
//! harness itself is kept working by `make test`.

#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../tests/it/common/mock_api.rs"]
mod mock_api;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Scenario {
    name: &'static str,
    sessions: usize,
    sockets_per_session: usize,
    flood_bytes: usize,
}

/// How long a reader waits for the next message before it gives up.
const READ_DEADLINE: Duration = Duration::from_secs(60);

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 1024 };
    let scenarios = [
        Scenario {
            name: "1 session, 1 socket",
            sessions: 1,
            sockets_per_session: 1,
            flood_bytes: (256 << 20) / scale,
        },
        Scenario {
            name: "1 session, 8 sockets",
            sessions: 1,
            sockets_per_session: 8,
            flood_bytes: (64 << 20) / scale,
        },
        Scenario {
            name: "16 sessions, 2 sockets each",
            sessions: 16,
            sockets_per_session: 2,
            flood_bytes: (16 << 20) / scale,
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fake = fake_cli()?;
    let mock = mock_api::MockApi::start();
    let dir = tempfile::tempdir()?;
    let mut daemon = Daemon::start(dir.path(), &fake, &mock.base_url())?;
    println!("| scenario | sockets done / closed slow | bytes to sockets | wall time | throughput | first event | daemon VmHWM |");
    println!("|---|---|---|---|---|---|---|");
    let result = runtime.block_on(async {
        let token = login(&daemon.base_url).await?;
        for scenario in &scenarios {
            let measured = run(&daemon.base_url, &token, scenario).await?;
            // At test size (kilobytes against megabyte queue caps) no reader can fall behind:
            // every socket must see its turn's result, or the harness itself is broken.
            let sockets = scenario.sessions * scenario.sockets_per_session;
            if !full && measured.completed != sockets {
                return Err(format!(
                    "{}: {} of {sockets} sockets saw the result ({} closed slow)",
                    scenario.name, measured.completed, measured.closed_slow
                )
                .into());
            }
            let hwm = daemon.peak_rss_kib().unwrap_or(0);
            println!(
                "| {} | {} / {} | {:.1} MiB | {:.2} s | {:.0} MiB/s | {:.0} ms | {} MiB |",
                scenario.name,
                measured.completed,
                measured.closed_slow,
                measured.bytes as f64 / (1 << 20) as f64,
                measured.elapsed.as_secs_f64(),
                measured.bytes as f64 / (1 << 20) as f64 / measured.elapsed.as_secs_f64(),
                measured.first_event.as_secs_f64() * 1000.0,
                hwm / 1024
            );
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    daemon.stop();
    result
}

struct Measured {
    completed: usize,
    closed_slow: usize,
    bytes: u64,
    elapsed: Duration,
    first_event: Duration,
}

/// Creates the sessions, connects the sockets, sends every flood at once, and reads every
/// socket to its `result`.
async fn run(base: &str, token: &str, scenario: &Scenario) -> Result<Measured> {
    let http = reqwest::Client::new();
    let mut sockets = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..scenario.sessions {
        let project = format!("p{}-{i}", scenario.sessions);
        http.post(format!("{base}/api/projects"))
            .bearer_auth(token)
            .json(&json!({"id": project}))
            .send()
            .await?;
        let created: Value = http
            .post(format!("{base}/api/sessions"))
            .bearer_auth(token)
            .json(&json!({"project": project}))
            .send()
            .await?
            .json()
            .await?;
        let id = created["id"].as_str().ok_or("no session id")?.to_owned();
        for _ in 0..scenario.sockets_per_session {
            let url = format!("{}/ws/sessions/{id}", base.replacen("http://", "ws://", 1));
            let mut request = url.into_client_request()?;
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            let (ws, _) = tokio_tungstenite::connect_async(request).await?;
            sockets.push(ws);
        }
        sessions.push(id);
    }
    let started = Instant::now();
    for id in &sessions {
        http.post(format!("{base}/api/sessions/{id}/messages"))
            .bearer_auth(token)
            .json(&json!({"content": format!("FLOOD:{}", scenario.flood_bytes)}))
            .send()
            .await?
            .error_for_status()?;
    }
    let readers = sockets.into_iter().map(|mut ws| async move {
        let mut bytes = 0u64;
        let mut first = None;
        let mut seen_user = false;
        let mut outcome = Outcome::Other;
        // A reader that hears nothing for a minute counts as neither done nor closed slow.
        while let Ok(Some(message)) = tokio::time::timeout(READ_DEADLINE, ws.next()).await {
            let text = match message? {
                Message::Text(text) => text,
                Message::Close(Some(frame)) if u16::from(frame.code) == 1013 => {
                    outcome = Outcome::ClosedSlow;
                    break;
                }
                _ => continue,
            };
            bytes += text.len() as u64;
            if !seen_user {
                seen_user = text.as_str().contains(r#""type":"user""#);
                continue;
            }
            first.get_or_insert_with(|| started.elapsed());
            if text.as_str().contains(r#""type":"result""#) {
                outcome = Outcome::Completed;
                break;
            }
        }
        let _ = ws.send(Message::Close(None)).await;
        Ok::<_, tokio_tungstenite::tungstenite::Error>((bytes, first.unwrap_or_default(), outcome))
    });
    let results = futures_util::future::join_all(readers).await;
    let elapsed = started.elapsed();
    let (mut bytes, mut completed, mut closed_slow) = (0, 0, 0);
    let mut first_event = Duration::ZERO;
    for r in results {
        let (b, f, outcome) = r?;
        bytes += b;
        first_event = first_event.max(f);
        match outcome {
            Outcome::Completed => completed += 1,
            Outcome::ClosedSlow => closed_slow += 1,
            Outcome::Other => {}
        }
    }
    Ok(Measured {
        completed,
        closed_slow,
        bytes,
        elapsed,
        first_event,
    })
}

#[derive(Clone, Copy)]
enum Outcome {
    Completed,
    ClosedSlow,
    Other,
}

async fn login(base: &str) -> Result<String> {
    let http = reqwest::Client::new();
    let creds = json!({"username": "bench", "password": "bench password"});
    http.post(format!("{base}/api/auth/register"))
        .json(&creds)
        .send()
        .await?
        .error_for_status()?;
    let answer: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&creds)
        .send()
        .await?
        .json()
        .await?;
    let token = answer["token"].as_str().ok_or("no token")?.to_owned();
    http.post(format!("{base}/api/claude/auth/api-key"))
        .bearer_auth(&token)
        .json(&json!({"apiKey": "sk-ant-api03-bench-key-000000000000"}))
        .send()
        .await?
        .error_for_status()?;
    Ok(token)
}

/// The fake CLI next to this executable (`target/<profile>/examples/fake_claude`). `cargo test
/// --all-targets` builds it; before `cargo bench`, `make bench` builds it. Building it from here
/// would fight the running cargo over the target directory.
fn fake_cli() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    let fake = profile_dir.join("examples").join("fake_claude");
    if !fake.exists() {
        return Err(format!(
            "{} is missing: run `make bench` (or `cargo build --release --example fake_claude`)",
            fake.display()
        )
        .into());
    }
    Ok(fake)
}

struct Daemon {
    child: Child,
    base_url: String,
}

impl Daemon {
    fn start(dir: &Path, fake: &Path, mock: &str) -> Result<Self> {
        let config = dir.join("sashad.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndata_dir = {:?}\n[anthropic]\nbase_url = {mock:?}\n\
                 [claude]\nbinary = {:?}\n[limits]\nsessions_per_user = 100\n[log]\nlevel = \"warn,sashad=info\"\n",
                dir.join("data"),
                fake
            ),
        )?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sashad"))
            .args(["--config", config.to_str().ok_or("path")?, "serve"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let base_url = loop {
            let line = lines.next().ok_or("daemon exited before listening")??;
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                break format!("http://{addr}");
            }
        };
        // Keep draining stderr so the daemon never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { child, base_url })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

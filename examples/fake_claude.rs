//! A fake Claude Code CLI for fault tests: it speaks the stream-json protocol of the real one
//! (npm `@anthropic-ai/claude-code` 2.1.332, as recorded in `tests/fixtures/`) and misbehaves on
//! request. The integration tests build it (`tests/it/common/fake_cli.rs`) and point
//! `claude.binary` at it.
//!
//! # Protocol facts it reproduces
//! - Started like the real CLI: `-p --input-format stream-json --output-format stream-json
//!   --verbose --include-partial-messages [--model M] [--permission-mode P] [--resume=ID] …`.
//!   Only `--model`, `--permission-mode` and `--resume` (`--resume=ID` or `--resume ID`) are
//!   read, and they show up in the `init` line; every other argument is ignored.
//! - It prints nothing until the first user message. Each turn then writes `system/init`
//!   (the session id is `--resume`'s, or a new UUID for the process), `system/status`,
//!   `stream_event` lines (always, as with `--include-partial-messages`), an `assistant` line,
//!   and a `result` line with `subtype` `success`. `init` also carries `cwd` and `apiKeySource`
//!   (`ANTHROPIC_API_KEY` if that variable is set, else `none`), so tests can see what the child
//!   was given. The JSON keys come out in alphabetical order, so `type` is rarely first, as in the
//!   real `result` line.
//! - Input: `{"type":"user","message":{"role":"user","content":…}}` lines, the content a string
//!   or content blocks, whose `text` blocks are joined to look for markers. User messages that
//!   arrive during a turn are queued and run after it, as the real CLI does.
//! - Interrupt, at any time: `{"type":"control_request","request_id":ID,"request":{"subtype":
//!   "interrupt"}}`. During a turn the answer is `{"type":"control_response","response":
//!   {"subtype":"success","request_id":ID,"response":{"still_queued":[]}}}`, the
//!   `[Request interrupted by user]` user line, and a `result` with subtype
//!   `error_during_execution` and `is_error` true. When idle, only the `control_response`. Other
//!   `control_request` subtypes get a bare success `control_response`.
//! - When stdin closes it finishes the running turn and exits 0, or 1 if the last turn was
//!   interrupted. A `SILENT` or `AUTHFAIL` turn never finishes, so closing stdin during one exits
//!   1 at once (a `DEAF` one does not exit at all). A stdout or stderr write error (the reader
//!   went away) exits 2.
//!
//! # Markers
//! Whitespace-separated words of the user message's text; several may be combined, and they take
//! effect in this order whatever their order in the text:
//! - `STDERR:<n>`: write `n` bytes to stderr before any stdout of the turn.
//! - `IGNORE_TERM`: from now on SIGTERM is ignored (blocked in every thread, so it stays pending
//!   and never acts), and a grandchild is started in the same process group: this program
//!   re-executed in a mode where it also ignores SIGTERM and sleeps for 1000 s, with its stdio on
//!   `/dev/null` so it holds no pipe. An `assistant` line says `IGNORE_TERM: grandchild pid <pid>`
//!   and has a top-level `fake_grandchild_pid` number.
//! - `NONJSON`: three lines that are not JSON, between JSON lines.
//! - `SPLIT`: one `assistant` line written in three `write`+`flush` calls 20 ms apart, cut inside
//!   `é` (2 bytes) and inside `🦀` (4 bytes); its text is `SPLIT: café 🦀 crab`.
//! - `BIGLINE:<n>`: one `assistant` line of exactly `n` bytes before its newline (or the smallest
//!   such line, about 300 bytes, if `n` is smaller), its text a run of `x`.
//! - `CRASH`: after `message_start` and one text delta, write `fake_claude: simulated crash` to
//!   stderr and exit with code 3, with no `result`.
//! - `FLOOD:<n>`: at least `n` bytes of `stream_event` text-delta lines of about 16 KiB each,
//!   written as fast as the reader takes them, checking for an interrupt about every MiB.
//! - `PACE:<n>`: `FLOOD` writes at most `n` bytes a second (still looking at stdin while it
//!   waits), for a flood that a healthy reader can follow on a loaded machine.
//! - `SILENT`: nothing more until interrupted (then the interrupt answer above).
//! - `DEAF`: nothing more, ever: interrupts (from the turn's start) and the closing of stdin
//!   are ignored, so only a signal ends the process (SIGTERM, unless `IGNORE_TERM` came first;
//!   SIGKILL). For the daemon's last resorts: the kill after an unanswered interrupt, and the
//!   stop's escalation.
//! - `AUTHFAIL`: a `system/api_retry` line with `error_status` 401 and `error`
//!   `authentication_failed` every 200 ms until interrupted or stdin closes, and no
//!   `system/status` line, as in `claude-2.1.332-badkey.jsonl`.
//! - Unless `CRASH`, `SILENT`, `DEAF` or `AUTHFAIL` ended the turn, it closes with the default
//!   reply, `Hello from the fake. You said: <text>`, streamed word by word, and `result`.
//!
//! `FAKE_CLAUDE_SCRIPT`, a comma-separated list read at startup, covers what must happen before
//! any input: `stderr_flood:<n>` writes `n` bytes to stderr at once, and `ignore_sigterm`
//! ignores SIGTERM from the start (no grandchild).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use serde_json::{json, Value};

/// The argument that turns this program into the `IGNORE_TERM` grandchild.
const GRANDCHILD_ARG: &str = "--fake-claude-grandchild";

/// Size of one `FLOOD` text delta, in bytes.
const FLOOD_DELTA_BYTES: usize = 16 * 1024;

/// How much `FLOOD` writes between two looks at stdin, in bytes.
const FLOOD_BATCH_BYTES: usize = 1024 * 1024;

/// The interval between two `AUTHFAIL` retry lines.
const AUTHFAIL_EVERY: Duration = Duration::from_millis(200);

/// Exit code of a `CRASH`.
const CRASH_EXIT: u8 = 3;

/// Exit code when stdout or stderr cannot be written.
const IO_ERROR_EXIT: u8 = 2;

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // stderr may be the broken pipe itself; there is nowhere else to say it.
            let _ = writeln!(io::stderr(), "fake_claude: {e}");
            ExitCode::from(IO_ERROR_EXIT)
        }
    }
}

fn run() -> io::Result<u8> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == GRANDCHILD_ARG) {
        return grandchild();
    }
    let args = Args::parse(&args);
    let script = std::env::var("FAKE_CLAUDE_SCRIPT").unwrap_or_default();
    let mut ignore_at_start = false;
    for item in script.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "ignore_sigterm" {
            ignore_at_start = true;
        } else if let Some(n) = item
            .strip_prefix("stderr_flood:")
            .and_then(|n| n.parse().ok())
        {
            stderr_flood(n)?;
        } else {
            writeln!(
                io::stderr(),
                "fake_claude: unknown FAKE_CLAUDE_SCRIPT item {item:?}"
            )?;
        }
    }

    // The stdin thread starts with SIGTERM blocked and keeps it so: a process-directed signal
    // goes to any thread that does not block it, so once the main thread blocks it too
    // (`IGNORE_TERM`), no thread takes it and it stays pending for ever.
    let term = sigterm();
    term.thread_block().map_err(io::Error::from)?;
    let input = spawn_stdin_reader()?;
    if !ignore_at_start {
        term.thread_unblock().map_err(io::Error::from)?;
    }

    let mut fake = Fake {
        session_id: args.resume.clone().unwrap_or_else(new_uuid),
        args,
        input,
        queued: VecDeque::new(),
        stdin_closed: false,
        messages: 0,
        deaf: false,
    };
    let mut last_interrupted = false;
    loop {
        let next = match fake.queued.pop_front() {
            Some(text) => Input::User(text),
            None if fake.stdin_closed => break,
            None => fake.input.recv().unwrap_or(Input::Eof),
        };
        match next {
            Input::User(text) => match fake.turn(&text) {
                Ok(()) => last_interrupted = false,
                Err(Stop::Interrupted(request_id)) => {
                    fake.interrupted(&request_id)?;
                    last_interrupted = true;
                }
                Err(Stop::StdinClosed) => return Ok(1),
                Err(Stop::Io(e)) => return Err(e),
            },
            // Nothing to interrupt: only acknowledge.
            Input::Interrupt(request_id) | Input::Control(request_id) => {
                fake.control_success(&request_id)?;
            }
            Input::Eof => fake.stdin_closed = true,
        }
    }
    Ok(u8::from(last_interrupted))
}

/// The `IGNORE_TERM` grandchild: ignores SIGTERM, so only SIGKILL (to it or its group) ends it.
fn grandchild() -> io::Result<u8> {
    // Blocking is enough: this process has a single thread.
    sigterm().thread_block().map_err(io::Error::from)?;
    std::thread::sleep(Duration::from_secs(1000));
    Ok(0)
}

fn sigterm() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set
}

/// The command-line arguments that show up in the output; the rest are ignored.
struct Args {
    model: String,
    permission_mode: String,
    resume: Option<String>,
}

impl Args {
    fn parse(args: &[String]) -> Self {
        let mut parsed = Args {
            model: "claude-opus-5-5".into(),
            permission_mode: "default".into(),
            resume: None,
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let field = match name {
                "--model" => Field::Model,
                "--permission-mode" => Field::PermissionMode,
                "--resume" | "-r" => Field::Resume,
                _ => continue,
            };
            let Some(value) = inline.or_else(|| iter.next().cloned()) else {
                break;
            };
            match field {
                Field::Model => parsed.model = value,
                Field::PermissionMode => parsed.permission_mode = value,
                Field::Resume => parsed.resume = Some(value),
            }
        }
        parsed
    }
}

/// The arguments that take a value and are read.
enum Field {
    Model,
    PermissionMode,
    Resume,
}

/// One parsed stdin line.
enum Input {
    /// The text of a user message.
    User(String),
    /// An interrupt `control_request`, with its id.
    Interrupt(String),
    /// Any other `control_request`, with its id.
    Control(String),
    /// stdin closed.
    Eof,
}

fn spawn_stdin_reader() -> io::Result<Receiver<Input>> {
    // Unbounded, because the test driving this program bounds what it writes.
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in io::stdin().lock().split(b'\n') {
                let Ok(line) = line else { break };
                match parse_input(&line) {
                    Some(input) => {
                        if tx.send(input).is_err() {
                            return;
                        }
                    }
                    None if line.iter().all(u8::is_ascii_whitespace) => {}
                    None => {
                        let _ = writeln!(
                            io::stderr(),
                            "fake_claude: ignoring stdin line {:?}",
                            String::from_utf8_lossy(&line)
                        );
                    }
                }
            }
            let _ = tx.send(Input::Eof);
        })?;
    Ok(rx)
}

fn parse_input(line: &[u8]) -> Option<Input> {
    let value: Value = serde_json::from_slice(line).ok()?;
    match value["type"].as_str()? {
        "user" => {
            let content = &value["message"]["content"];
            let text = match content {
                Value::String(s) => s.clone(),
                Value::Array(blocks) => blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => return None,
            };
            Some(Input::User(text))
        }
        "control_request" => {
            let id = value["request_id"].as_str()?.to_owned();
            if value["request"]["subtype"].as_str() == Some("interrupt") {
                Some(Input::Interrupt(id))
            } else {
                Some(Input::Control(id))
            }
        }
        _ => None,
    }
}

/// Why a turn stopped before its `result`.
enum Stop {
    Interrupted(String),
    StdinClosed,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// The markers found in one user message.
#[derive(Default)]
struct Markers {
    stderr: Option<usize>,
    ignore_term: bool,
    nonjson: bool,
    split: bool,
    bigline: Option<usize>,
    crash: bool,
    flood: Option<usize>,
    pace: Option<usize>,
    silent: bool,
    deaf: bool,
    authfail: bool,
}

impl Markers {
    fn parse(text: &str) -> Self {
        let mut m = Markers::default();
        for word in text.split_whitespace() {
            let (name, n) = match word.split_once(':') {
                Some((name, n)) => (name, n.parse::<usize>().ok()),
                None => (word, None),
            };
            match (name, n) {
                ("STDERR", Some(n)) => m.stderr = Some(n),
                ("BIGLINE", Some(n)) => m.bigline = Some(n),
                ("FLOOD", Some(n)) => m.flood = Some(n),
                ("PACE", Some(n)) if n > 0 => m.pace = Some(n),
                ("IGNORE_TERM", None) => m.ignore_term = true,
                ("NONJSON", None) => m.nonjson = true,
                ("SPLIT", None) => m.split = true,
                ("CRASH", None) => m.crash = true,
                ("SILENT", None) => m.silent = true,
                ("DEAF", None) => m.deaf = true,
                ("AUTHFAIL", None) => m.authfail = true,
                _ => {}
            }
        }
        m
    }
}

struct Fake {
    args: Args,
    session_id: String,
    input: Receiver<Input>,
    /// User messages that arrived during a turn.
    queued: VecDeque<String>,
    stdin_closed: bool,
    /// Counter for `msg_…` ids.
    messages: u64,
    /// A `DEAF` turn: interrupts are dropped from its first line on.
    deaf: bool,
}

impl Fake {
    fn turn(&mut self, text: &str) -> Result<(), Stop> {
        let started = Instant::now();
        let markers = Markers::parse(text);
        self.deaf = markers.deaf;
        if let Some(n) = markers.stderr {
            stderr_flood(n)?;
        }
        self.emit(&self.init_line())?;
        if !markers.authfail {
            self.emit(
                &self.event(json!({"type": "system", "subtype": "status", "status": "requesting"})),
            )?;
        }
        if markers.ignore_term {
            self.ignore_term()?;
        }
        if markers.nonjson {
            self.raw(b"fake_claude: this line is not JSON\n")?;
            self.emit(
                &self.event(json!({"type": "system", "subtype": "status", "status": "requesting"})),
            )?;
            self.raw(b"{\"type\": \"assistant\", truncated\n")?;
            self.raw("plain text, with an accent: é\n".as_bytes())?;
        }
        if markers.split {
            self.split_line()?;
        }
        if let Some(n) = markers.bigline {
            self.big_line(n)?;
        }
        if markers.crash {
            self.crash()?;
        }
        if let Some(n) = markers.flood {
            self.flood(n, markers.pace)?;
        }
        if markers.silent {
            loop {
                self.wait(None)?;
            }
        }
        if markers.deaf {
            // The stdin thread keeps reading (and queueing) whatever comes; nobody looks.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        if markers.authfail {
            self.auth_fail()?;
        }
        self.reply(&format!("Hello from the fake. You said: {text}"), started)
    }

    /// Writes one JSON line, then looks at stdin so an interrupt is seen within a line.
    fn emit(&mut self, line: &Value) -> Result<(), Stop> {
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.raw(&bytes)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()?;
        drop(out);
        self.poll()
    }

    /// Takes in whatever stdin has sent, without blocking.
    fn poll(&mut self) -> Result<(), Stop> {
        loop {
            match self.input.try_recv() {
                Ok(input) => self.take(input)?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    self.stdin_closed = true;
                    return Ok(());
                }
            }
        }
    }

    /// Blocks for input for up to `timeout` (`None`: no limit). Fails once stdin is closed,
    /// for the turns that would otherwise never end.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), Stop> {
        if self.stdin_closed {
            return Err(Stop::StdinClosed);
        }
        let input = match timeout {
            None => self.input.recv().unwrap_or(Input::Eof),
            Some(timeout) => match self.input.recv_timeout(timeout) {
                Ok(input) => input,
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => Input::Eof,
            },
        };
        self.take(input)?;
        if self.stdin_closed {
            return Err(Stop::StdinClosed);
        }
        Ok(())
    }

    fn take(&mut self, input: Input) -> Result<(), Stop> {
        match input {
            Input::User(text) => self.queued.push_back(text),
            Input::Interrupt(_) if self.deaf => {}
            Input::Interrupt(request_id) => return Err(Stop::Interrupted(request_id)),
            Input::Control(request_id) => self.control_success(&request_id)?,
            Input::Eof => self.stdin_closed = true,
        }
        Ok(())
    }

    fn control_success(&self, request_id: &str) -> io::Result<()> {
        write_line(&json!({
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request_id,
                "response": {"still_queued": []},
            },
        }))
    }

    /// What the real CLI writes after an interrupt (session fixture, third turn).
    fn interrupted(&self, request_id: &str) -> io::Result<()> {
        self.control_success(request_id)?;
        write_line(&self.event(json!({
            "type": "user",
            "message": {
                "role": "user",
                "content": [{"type": "text", "text": "[Request interrupted by user]"}],
            },
            "parent_tool_use_id": null,
            "timestamp": timestamp(),
        })))?;
        write_line(&self.event(json!({
            "type": "result",
            "subtype": "error_during_execution",
            "is_error": true,
            "api_error_status": null,
            "duration_ms": 0,
            "duration_api_ms": 0,
            "num_turns": 1,
            "stop_reason": null,
            "terminal_reason": "aborted_streaming",
            "total_cost_usd": 0.0,
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "permission_denials": [],
            "errors": ["[fake_claude] interrupted"],
        })))
    }

    fn ignore_term(&mut self) -> Result<(), Stop> {
        sigterm().thread_block().map_err(io::Error::from)?;
        let child = Command::new(std::env::current_exe()?)
            .arg(GRANDCHILD_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        // Never waited for: the grandchild is meant to outlive any stop but a group SIGKILL.
        drop(child);
        let mut line = self.assistant(&format!("IGNORE_TERM: grandchild pid {pid}"));
        line["fake_grandchild_pid"] = json!(pid);
        self.emit(&line)
    }

    fn split_line(&mut self) -> Result<(), Stop> {
        let text = "SPLIT: café 🦀 crab";
        let mut line = self.assistant(text).to_string();
        line.push('\n');
        let e = line.find('é').unwrap_or(0) + 1;
        let crab = line.find('🦀').unwrap_or(0) + 2;
        let parts = [
            &line.as_bytes()[..e],
            &line.as_bytes()[e..crab],
            &line.as_bytes()[crab..],
        ];
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut out = io::stdout().lock();
            out.write_all(part)?;
            out.flush()?;
        }
        self.poll()
    }

    fn big_line(&mut self, n: usize) -> Result<(), Stop> {
        let overhead = self.assistant("").to_string().len();
        let text = "x".repeat(n.saturating_sub(overhead));
        self.emit(&self.assistant(&text))
    }

    fn crash(&mut self) -> Result<(), Stop> {
        let id = self.next_message_id();
        self.emit(&self.message_start(&id))?;
        self.emit(&self.stream_event(&id, text_delta("about to ")))?;
        writeln!(io::stderr(), "fake_claude: simulated crash (CRASH marker)")?;
        std::process::exit(CRASH_EXIT.into())
    }

    fn flood(&mut self, n: usize, pace: Option<usize>) -> Result<(), Stop> {
        let started = Instant::now();
        let id = self.next_message_id();
        self.emit(&self.message_start(&id))?;
        let text: String = "flood text "
            .chars()
            .cycle()
            .take(FLOOD_DELTA_BYTES)
            .collect();
        let mut line = self
            .stream_event(&id, text_delta(&text))
            .to_string()
            .into_bytes();
        line.push(b'\n');
        let mut batch = Vec::with_capacity(FLOOD_BATCH_BYTES + line.len());
        let mut written = 0;
        while written < n {
            batch.clear();
            while batch.len() < FLOOD_BATCH_BYTES && written + batch.len() < n {
                batch.extend_from_slice(&line);
            }
            written += batch.len();
            self.raw(&batch)?;
            if let Some(pace) = pace {
                let due = started + Duration::from_secs_f64(written as f64 / pace as f64);
                while let Some(left) = due.checked_duration_since(Instant::now()) {
                    match self.wait(Some(left)) {
                        // As without a pace, a closed stdin does not cut the flood short.
                        Err(Stop::StdinClosed) => std::thread::sleep(left),
                        other => other?,
                    }
                }
            }
        }
        self.emit(&self.stream_event(&id, json!({"type": "message_stop"})))
    }

    fn auth_fail(&mut self) -> Result<(), Stop> {
        for attempt in 1u64.. {
            self.emit(&self.event(json!({
                "type": "system",
                "subtype": "api_retry",
                "attempt": attempt,
                "max_retries": 10,
                "retry_delay_ms": AUTHFAIL_EVERY.as_millis(),
                "error_status": 401,
                "error": "authentication_failed",
            })))?;
            let next = Instant::now() + AUTHFAIL_EVERY;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                self.wait(Some(left))?;
            }
        }
        Ok(())
    }

    /// A normal answer, streamed word by word, and the turn's `result`.
    fn reply(&mut self, text: &str, started: Instant) -> Result<(), Stop> {
        let id = self.next_message_id();
        self.emit(&self.message_start(&id))?;
        let block = json!({"type": "text", "text": ""});
        let start = json!({"type": "content_block_start", "index": 0, "content_block": block});
        self.emit(&self.stream_event(&id, start))?;
        for word in text.split_inclusive(' ') {
            self.emit(&self.stream_event(&id, text_delta(word)))?;
        }
        let mut assistant = self.assistant(text);
        assistant["message"]["id"] = json!(id);
        self.emit(&assistant)?;
        self.emit(&self.stream_event(&id, json!({"type": "content_block_stop", "index": 0})))?;
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 4},
        });
        self.emit(&self.stream_event(&id, delta))?;
        self.emit(&self.stream_event(&id, json!({"type": "message_stop"})))?;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.emit(&self.event(json!({
            "type": "result",
            "subtype": "success",
            "is_error": false,
            "api_error_status": null,
            "duration_ms": elapsed,
            "duration_api_ms": elapsed,
            "num_turns": 1,
            "result": text,
            "stop_reason": "end_turn",
            "terminal_reason": "completed",
            "total_cost_usd": 0.00012,
            "usage": {"input_tokens": 10, "output_tokens": 4},
            "permission_denials": [],
        })))
    }

    fn init_line(&self) -> Value {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let api_key_source = if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
            "ANTHROPIC_API_KEY"
        } else {
            "none"
        };
        self.event(json!({
            "type": "system",
            "subtype": "init",
            "cwd": cwd,
            "tools": ["Task", "Bash", "Edit", "Read", "Write", "WebFetch", "WebSearch"],
            "mcp_servers": [],
            "model": self.args.model,
            "permissionMode": self.args.permission_mode,
            "slash_commands": ["compact", "context", "init", "review"],
            "apiKeySource": api_key_source,
            "claude_code_version": "2.1.332-fake",
            "output_style": "default",
            "agents": ["general-purpose"],
            "skills": [],
            "plugins": [],
            "analytics_disabled": true,
            "fake": true,
        }))
    }

    /// Adds the `session_id` and `uuid` that every real line carries.
    fn event(&self, mut line: Value) -> Value {
        line["session_id"] = json!(self.session_id);
        line["uuid"] = json!(new_uuid());
        line
    }

    fn stream_event(&self, message_id: &str, event: Value) -> Value {
        self.event(json!({
            "type": "stream_event",
            "event": event,
            "parent_tool_use_id": null,
            "api_message_id": message_id,
        }))
    }

    fn message_start(&self, id: &str) -> Value {
        let message = json!({
            "id": id, "type": "message", "role": "assistant", "model": self.args.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        });
        self.stream_event(id, json!({"type": "message_start", "message": message}))
    }

    fn assistant(&self, text: &str) -> Value {
        self.event(json!({
            "type": "assistant",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": self.args.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
            "parent_tool_use_id": null,
            "timestamp": timestamp(),
        }))
    }

    fn next_message_id(&mut self) -> String {
        self.messages += 1;
        format!("msg_fake{:06}", self.messages)
    }
}

fn text_delta(text: &str) -> Value {
    let delta = json!({"type": "text_delta", "text": text});
    json!({"type": "content_block_delta", "index": 0, "delta": delta})
}

/// Writes one JSON line without looking at stdin, for the lines that answer an input.
fn write_line(line: &Value) -> io::Result<()> {
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    let mut out = io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()
}

/// Writes `n` bytes of numbered lines to stderr.
fn stderr_flood(n: usize) -> io::Result<()> {
    let mut err = io::stderr().lock();
    let mut left = n;
    let mut i = 0u64;
    while left > 0 {
        let mut line = format!("fake_claude: stderr flood line {i:08} ").into_bytes();
        line.resize(100, b'.');
        line[99] = b'\n';
        let take = left.min(line.len());
        err.write_all(&line[..take])?;
        left -= take;
        i += 1;
    }
    err.flush()
}

/// A random version-4 UUID, from std's randomly keyed hasher (this program uses no `rand`).
fn new_uuid() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let a = RandomState::new().hash_one((nanos, std::process::id()));
    let b = RandomState::new().hash_one((a, nanos));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The current time as ISO 8601 UTC with milliseconds, like the real `timestamp` field.
fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

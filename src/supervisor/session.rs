//! The Session actor: one chat session, owning at most one `claude` child (DESIGN §6).
//!
//! It owns: the child (through a [`ChildHandle`]), the session's sequence numbers and replay
//! ring, the subscribers (sockets) and their queues, the messages waiting for a turn, and the
//! state machine `stopped → starting → idle ⇄ busy → stopping → stopped`, with `exited` for an
//! unexpected exit and `failed` when starting fails or the restart budget is spent.
//!
//! Messages it takes, and who sends them:
//! - [`Subscribe`] (a socket task): replay after `seq`, then a live queue.
//! - [`SendMessage`], [`Interrupt`] (HTTP handlers and socket tasks).
//! - [`GetView`] (HTTP handlers), [`GetRecord`] (the registry at shutdown).
//! - [`Stop`], [`Close`], [`EvictIfIdle`], [`CredentialChanged`] (the [`Registry`]).
//! - child stdout lines (a stream added to its context) and the child's exit (a future).
//!
//! Invariants: two processes never run on one Claude session id (a new child starts only after
//! the old one has exited and been reaped); messages reach the child one turn at a time, in the
//! order they were accepted; every event gets the next `seq` and goes to every socket in order.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::child::{self, ChildHandle, ChildOptions, ExitReport, StopMode};
use super::fanout::{Fanout, QueueCaps, SubscriberRx};
use super::frame;
use super::registry::{AcquireChild, ChildReleased, RefreshCredential, Registry};
use super::replay::{Replay, ReplayRing};
use super::{SessionError, SessionState, SessionView};
use crate::claude::command::{self, CommandInput};
use crate::claude::lines::Line;
use crate::claude::protocol::{self, Classified};
use crate::metrics::metrics;
use crate::store::{now, SessionRecord, Store};

/// What every session of the daemon shares: settings and the environment children inherit.
#[derive(Debug)]
pub struct SessionConfig {
    /// Effective settings (reloadable).
    pub settings: Arc<crate::config::LiveSettings>,
    /// The daemon's PATH, for children.
    pub path: Option<String>,
    /// The daemon's LANG, for children.
    pub lang: Option<String>,
    /// The sandbox in force.
    pub isolation: crate::sandbox::Isolation,
    /// The delegated cgroup, when there is one.
    pub cgroups: Option<crate::sandbox::Cgroups>,
}

impl SessionConfig {
    fn child_options(&self) -> ChildOptions {
        let settings = self.settings.get();
        let s = &settings.sessions;
        ChildOptions {
            max_line_bytes: s.max_line_bytes,
            stderr_tail_bytes: s.stderr_tail_bytes,
            stop_timeout: s.stop_timeout,
            max_processes: settings.isolation.max_processes,
            max_open_files: settings.isolation.max_open_files,
        }
    }
}

/// What the registry hands a session to start a child.
pub struct ChildGrant {
    /// The user's credential variables.
    pub credential_env: Vec<(&'static str, Zeroizing<String>)>,
    /// The credential record's generation, to notice changes.
    pub credential_generation: u64,
    /// The credential's kind (an OAuth token is refreshed once on a 401).
    pub credential_kind: crate::credential::CredentialKind,
    /// HOME.
    pub home: PathBuf,
    /// cwd (the project folder).
    pub cwd: PathBuf,
    /// The sandbox's uid, gid and `/etc` files.
    pub sandbox: crate::sandbox::SandboxInput,
    /// The session's cgroup, when cgroup limits are in force.
    pub cgroup: Option<crate::sandbox::SessionCgroup>,
}

impl std::fmt::Debug for ChildGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildGrant")
            .field("home", &self.home)
            .field("cwd", &self.cwd)
            .finish_non_exhaustive()
    }
}

/// Why a child is being stopped on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `sessions.idle_timeout` passed.
    Idle,
    /// Its credential changed: restart with `--resume` before the next turn.
    Restart,
    /// The turn stalled past `sessions.turn_timeout`.
    TurnTimeout,
    /// Someone asked: the owner's credential was removed, the user was disabled, an admin.
    Requested,
    /// The session is being deleted.
    Delete,
    /// The daemon is stopping.
    Shutdown,
}

struct LiveChild {
    handle: ChildHandle,
    generation: u64,
    credential_generation: u64,
    credential_kind: crate::credential::CredentialKind,
    stdout_done: bool,
    exit: Option<ExitReport>,
    /// When it was spawned, until its first `system/init` line (for the spawn-to-init metric).
    spawned_at: Option<Instant>,
    /// Unix seconds when it was spawned.
    started_at: i64,
    /// Its cgroup, removed once the child is gone.
    _cgroup: Option<crate::sandbox::SessionCgroup>,
}

/// A message waiting for its turn.
struct Queued {
    content: Value,
    /// The sender waiting for the echo's `seq`: a message that needed a new child, not echoed
    /// yet. It is echoed only once the child is up, so no tab ever shows a message that a
    /// refused start never ran; the echo answers the sender, so `None` means echoed.
    reply: Option<oneshot::Sender<Result<u64, SessionError>>>,
}

impl Queued {
    /// A message whose echo already went out.
    fn echoed(content: Value) -> Self {
        Self {
            content,
            reply: None,
        }
    }

    fn is_echoed(&self) -> bool {
        self.reply.is_none()
    }
}

struct Turn {
    /// The message this turn answers, kept to send it again after a credential refresh.
    content: Value,
    last_output: Instant,
    interrupted_at: Option<Instant>,
    auth_failed: bool,
}

/// The actor.
pub struct Session {
    record: SessionRecord,
    owner_name: String,
    registry: Addr<Registry>,
    store: Store,
    cfg: Arc<SessionConfig>,
    state: SessionState,
    child: Option<LiveChild>,
    child_generation: u64,
    ring: ReplayRing,
    fanout: Fanout,
    queue: VecDeque<Queued>,
    turn: Option<Turn>,
    failures: VecDeque<Instant>,
    last_failure: Option<String>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    stop_reason: Option<StopReason>,
    credential_stale: bool,
    /// The one refresh-and-retry after an OAuth 401 was spent on the current message.
    auth_retry_used: bool,
    closing: bool,
    state_epoch: u64,
    persisting: bool,
    persist_again: bool,
}

impl Session {
    /// A session in state `stopped`, continuing `seq` from the record.
    pub fn new(
        record: SessionRecord,
        owner_name: String,
        registry: Addr<Registry>,
        store: Store,
        cfg: Arc<SessionConfig>,
    ) -> Self {
        let s = cfg.settings.get().sessions.clone();
        let ring = ReplayRing::new(record.last_seq, s.replay_events, s.replay_bytes);
        Self {
            record,
            owner_name,
            registry,
            store,
            cfg,
            state: SessionState::Stopped,
            child: None,
            child_generation: 0,
            ring,
            fanout: Fanout::default(),
            queue: VecDeque::new(),
            turn: None,
            failures: VecDeque::new(),
            last_failure: None,
            stop_waiters: Vec::new(),
            stop_reason: None,
            credential_stale: false,
            auth_retry_used: false,
            closing: false,
            state_epoch: 0,
            persisting: false,
            persist_again: false,
        }
    }

    fn view(&self) -> SessionView {
        SessionView {
            id: self.record.id.clone(),
            project: self.record.project.clone(),
            model: self.record.model.clone(),
            permission_mode: self.record.permission_mode.clone(),
            state: self.state,
            last_seq: self.ring.last_seq(),
            created_at: self.record.created_at,
            last_active: self.record.last_active,
            pid: self.child.as_ref().map(|c| c.handle.pid()),
            child_started_at: self.child.as_ref().map(|c| c.started_at),
            resumable: self.record.claude_session_id.is_some(),
            owner: Some(self.record.owner.clone()),
        }
    }

    // ---- events ----

    fn emit(&mut self, seq: u64, frame: ByteString) {
        self.fanout.send(&frame);
        self.ring.push(seq, frame);
    }

    fn emit_error(&mut self, code: &str, message: &str) {
        let seq = self.ring.next_seq();
        self.emit(seq, frame::error(seq, code, message));
    }

    fn set_state(&mut self, state: SessionState, details: Option<Value>) {
        if self.state == state && details.is_none() {
            return;
        }
        self.state = state;
        self.state_epoch += 1;
        let seq = self.ring.next_seq();
        self.emit(seq, frame::state(seq, state, details.as_ref()));
        tracing::debug!(session_id = %self.record.id, state = state.as_str(), "session state");
    }

    // ---- persistence ----

    /// Writes the record (last seq, Claude session id, activity), one write at a time so an
    /// older copy never lands after a newer one.
    fn persist(&mut self, ctx: &mut Context<Self>) {
        if self.closing && self.stop_reason == Some(StopReason::Delete) {
            return;
        }
        if self.persisting {
            self.persist_again = true;
            return;
        }
        self.persisting = true;
        self.record.last_seq = self.ring.last_seq();
        let record = self.record.clone();
        let store = self.store.clone();
        let fut = async move { store.run(move |s| s.put_session(&record)).await };
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            act.persisting = false;
            if let Err(e) = result {
                tracing::warn!(session_id = %act.record.id, error = %e, "cannot persist session");
            }
            if std::mem::take(&mut act.persist_again) {
                act.persist(ctx);
            }
        }));
    }

    // ---- turns ----

    /// Accepts a message for a child that runs: echoes it to every tab and queues it.
    fn accept(&mut self, content: Value) -> u64 {
        let seq = self.echo(&content);
        self.queue.push_back(Queued::echoed(content));
        seq
    }

    fn echo(&mut self, content: &Value) -> u64 {
        let seq = self.ring.next_seq();
        self.emit(seq, frame::user(seq, content));
        self.record.last_active = now();
        seq
    }

    /// A child is up: the messages that waited for it are echoed now, in order, and their
    /// senders learn their `seq`.
    fn echo_waiting(&mut self) {
        let mut queue = std::mem::take(&mut self.queue);
        for item in queue.iter_mut() {
            if let Some(reply) = item.reply.take() {
                let _ = reply.send(Ok(self.echo(&item.content)));
            }
        }
        self.queue = queue;
    }

    /// Drops every waiting message, telling their senders `error`. Returns how many had been
    /// echoed (and so were visible to the tabs).
    fn drop_queue(&mut self, error: &SessionError) -> usize {
        let mut visible = 0;
        for item in self.queue.drain(..) {
            visible += usize::from(item.is_echoed());
            if let Some(reply) = item.reply {
                let _ = reply.send(Err(error.clone()));
            }
        }
        visible
    }

    /// Hands the next queued message to an idle child, or restarts a child whose credential
    /// changed first.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.state != SessionState::Idle || self.turn.is_some() || self.queue.is_empty() {
            if self.state == SessionState::Idle && self.queue.is_empty() && self.turn.is_none() {
                self.arm_idle_timer(ctx);
            }
            return;
        }
        if self.credential_stale {
            self.stop_child(StopReason::Restart, StopMode::Graceful);
            return;
        }
        let Some(child) = &self.child else { return };
        let Some(Queued { content, .. }) = self.queue.pop_front() else {
            return;
        };
        match child.handle.write(protocol::user_message(&content)) {
            Ok(()) => {
                self.turn = Some(Turn {
                    content,
                    last_output: Instant::now(),
                    interrupted_at: None,
                    auth_failed: false,
                });
                self.set_state(SessionState::Busy, None);
                self.arm_turn_timer(ctx, self.cfg.settings.get().sessions.turn_timeout);
            }
            Err(e) => {
                // The child is going away; its exit handling restarts it for this message.
                tracing::debug!(session_id = %self.record.id, error = %e, "cannot write to child");
                self.queue.push_front(Queued::echoed(content));
            }
        }
    }

    fn arm_idle_timer(&mut self, ctx: &mut Context<Self>) {
        let epoch = self.state_epoch;
        ctx.run_later(
            self.cfg.settings.get().sessions.idle_timeout,
            move |act, _ctx| {
                if act.state_epoch == epoch
                    && act.state == SessionState::Idle
                    && act.queue.is_empty()
                    && act.turn.is_none()
                {
                    tracing::info!(session_id = %act.record.id, "child idle; stopping it");
                    act.stop_child(StopReason::Idle, StopMode::Graceful);
                }
            },
        );
    }

    fn arm_turn_timer(&mut self, ctx: &mut Context<Self>, after: Duration) {
        ctx.run_later(after, |act, ctx| act.check_turn(ctx));
    }

    /// A turn with no output for `turn_timeout` is interrupted; if it still has not ended
    /// `stop_timeout` later, its child is killed.
    fn check_turn(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.cfg.settings.get().sessions.turn_timeout;
        let grace = self.cfg.settings.get().sessions.stop_timeout;
        let Some(turn) = &mut self.turn else { return };
        if let Some(at) = turn.interrupted_at {
            let waited = at.elapsed();
            if waited >= grace {
                tracing::warn!(session_id = %self.record.id, "turn did not stop after interrupt; killing the child");
                self.emit_error(
                    "turn_timeout",
                    "the turn did not stop after an interrupt; its process was killed",
                );
                self.stop_child(StopReason::TurnTimeout, StopMode::Kill);
            } else {
                self.arm_turn_timer(ctx, grace - waited);
            }
            return;
        }
        let silent = turn.last_output.elapsed();
        if silent < timeout {
            self.arm_turn_timer(ctx, timeout - silent);
            return;
        }
        turn.interrupted_at = Some(Instant::now());
        let message = format!(
            "no output for {}; interrupting the turn",
            humantime::format_duration(Duration::from_secs(timeout.as_secs().max(1)))
        );
        self.emit_error("turn_timeout", &message);
        self.write_interrupt();
        self.arm_turn_timer(ctx, grace);
    }

    fn write_interrupt(&mut self) -> bool {
        let Some(child) = &self.child else {
            return false;
        };
        let request_id = protocol::new_request_id();
        match child.handle.write(protocol::interrupt_request(&request_id)) {
            Ok(()) => {
                tracing::debug!(session_id = %self.record.id, %request_id, "interrupt sent");
                if let Some(turn) = &mut self.turn {
                    turn.interrupted_at.get_or_insert_with(Instant::now);
                }
                true
            }
            Err(_) => false,
        }
    }

    // ---- child lines ----

    fn on_line(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        if let Some(turn) = &mut self.turn {
            turn.last_output = Instant::now();
        }
        let seq = self.ring.next_seq();
        // One UTF-8 scan (lines can be megabytes): the text is both parsed and spliced.
        let (class, text) = match std::str::from_utf8(&bytes) {
            Ok(text) => (protocol::classify_str(text), text),
            Err(_) => (Classified::NotJson, ""),
        };
        if let Classified::NotJson = class {
            self.emit(seq, frame::raw(seq, &bytes));
            return;
        }
        self.emit(seq, frame::claude(seq, text));
        match class {
            Classified::Init { session_id } => {
                if let Some(spawned) = self.child.as_mut().and_then(|c| c.spawned_at.take()) {
                    metrics()
                        .spawn_to_init
                        .observe(spawned.elapsed().as_secs_f64());
                }
                if self.record.claude_session_id.as_deref() != Some(session_id.as_str()) {
                    self.record.claude_session_id = Some(session_id);
                    self.persist(ctx);
                }
            }
            Classified::TurnEnded(result) => {
                // Some rejections never show as `api_retry`: an OAuth token's 401 ends the turn
                // with a synthetic answer and `api_error_status` (measured on 2.1.332).
                if result.is_error && result.api_error_status == Some(401) {
                    self.on_auth_failure(false, ctx);
                } else if !result.is_error {
                    self.auth_retry_used = false;
                }
                self.turn = None;
                self.record.last_active = now();
                if self.state == SessionState::Busy {
                    self.set_state(SessionState::Idle, None);
                }
                self.persist(ctx);
                if self.credential_stale && self.queue.is_empty() {
                    // Its environment holds an old or rejected credential: replace it now, not
                    // when the next message comes.
                    self.stop_child(StopReason::Restart, StopMode::Graceful);
                } else {
                    self.pump(ctx);
                }
            }
            Classified::AuthFailure { .. } => self.on_auth_failure(true, ctx),
            _ => {}
        }
    }

    /// The API rejected the credential. `interrupt`: the turn is still running (the CLI is
    /// retrying) and must be stopped. An OAuth token is refreshed once and the message sent
    /// again in a new child (resuming the conversation); anything else is reported at once and
    /// the credential marked `needsReauth`.
    fn on_auth_failure(&mut self, interrupt: bool, ctx: &mut Context<Self>) {
        let Some(turn) = &mut self.turn else { return };
        if turn.auth_failed {
            return;
        }
        turn.auth_failed = true;
        let content = turn.content.clone();
        if interrupt {
            self.write_interrupt();
        }
        self.credential_stale = true;
        let oauth = self
            .child
            .as_ref()
            .filter(|c| c.credential_kind == crate::credential::CredentialKind::Oauth);
        if let (Some(child), false) = (oauth, self.auth_retry_used) {
            self.auth_retry_used = true;
            tracing::info!(session_id = %self.record.id, "OAuth token rejected; refreshing once");
            let request = RefreshCredential {
                user_id: self.record.owner.clone(),
                seen_generation: child.credential_generation,
            };
            let fut = self.registry.send(request);
            ctx.spawn(
                fut.into_actor(self)
                    .map(move |result, act, ctx| match result {
                        Ok(Ok(_generation)) => {
                            // Sent again, first in line, once the new child (with --resume) is up.
                            act.queue.push_front(Queued::echoed(content));
                            act.pump(ctx);
                        }
                        Ok(Err(e)) => act.emit_error("credentials_expired", &e.to_string()),
                        Err(_) => {
                            act.emit_error("credentials_expired", "could not refresh the sign-in")
                        }
                    }),
            );
            return;
        }
        tracing::info!(session_id = %self.record.id, "credential rejected by the API");
        let (code, message) = match oauth {
            Some(_) => (
                "credentials_expired",
                "your Claude sign-in was rejected (401); sign in again",
            ),
            None => (
                "credentials_rejected",
                "Anthropic rejected your Claude credential (401); connect a valid one to continue",
            ),
        };
        // Marked (and flushed) before the tabs hear of it, so a client that reacts to the
        // error by reading the status sees `needsReauth`.
        let store = self.store.clone();
        let owner = self.record.owner.clone();
        let mark = async move {
            store
                .run(move |s| s.update_credential(&owner, |r| r.needs_reauth = true))
                .await
        };
        ctx.spawn(mark.into_actor(self).map(move |result, act, _ctx| {
            if let Err(e) = result {
                tracing::warn!(session_id = %act.record.id, error = %e, "cannot mark the credential as needing re-auth");
            }
            act.emit_error(code, message);
        }));
    }

    // ---- child lifecycle ----

    /// Whether another automatic restart is allowed now.
    fn budget_left(&mut self) -> bool {
        let window = self.cfg.settings.get().sessions.restart_window;
        while self.failures.front().is_some_and(|t| t.elapsed() > window) {
            self.failures.pop_front();
        }
        self.failures.len() < self.cfg.settings.get().sessions.restart_budget
    }

    /// Asks the registry for a slot and the credential, then spawns.
    fn start_child(&mut self, ctx: &mut Context<Self>) {
        if self.state == SessionState::Starting || self.child.is_some() {
            return;
        }
        if !self.budget_left() {
            let reason = self
                .last_failure
                .clone()
                .unwrap_or_else(|| "it exited too often".into());
            self.fail_start(SessionError::Failed(reason), SessionState::Failed);
            return;
        }
        self.set_state(SessionState::Starting, None);
        let request = AcquireChild {
            session_id: self.record.id.clone(),
            owner: self.record.owner.clone(),
            project: self.record.project.clone(),
        };
        let fut = self.registry.send(request);
        ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
            let grant = match result {
                Ok(Ok(grant)) => grant,
                Ok(Err(e)) => {
                    let state = if matches!(e, SessionError::SpawnFailed(_)) {
                        SessionState::Failed
                    } else {
                        SessionState::Stopped
                    };
                    act.fail_start(e, state);
                    return;
                }
                Err(_) => {
                    act.fail_start(SessionError::ShuttingDown, SessionState::Stopped);
                    return;
                }
            };
            if act.closing {
                act.registry.do_send(ChildReleased {
                    session_id: act.record.id.clone(),
                });
                act.fail_start(SessionError::ShuttingDown, SessionState::Stopped);
                return;
            }
            act.spawn_child(grant, ctx);
        }));
    }

    fn spawn_child(&mut self, grant: ChildGrant, ctx: &mut Context<Self>) {
        let settings = self.cfg.settings.get();
        let spec = command::build(CommandInput {
            binary: &settings.claude.binary,
            extra_args: &settings.claude.extra_args,
            model: self.record.model.as_deref(),
            permission_mode: self.record.permission_mode.as_deref(),
            resume: self.record.claude_session_id.as_deref(),
            home: grant.home,
            cwd: grant.cwd,
            user: &self.owner_name,
            credential_env: grant.credential_env,
            base_url: settings.anthropic.custom_base_url(),
            path: self.cfg.path.clone(),
            lang: self.cfg.lang.clone(),
        });
        let spec = crate::sandbox::wrap(spec, &self.cfg.isolation, &grant.sandbox);
        let spawned = match child::spawn(&spec, &self.cfg.child_options(), grant.cgroup.as_ref()) {
            Ok(spawned) => spawned,
            Err(e) => {
                drop(spec);
                tracing::warn!(session_id = %self.record.id, error = %e, binary = %settings.claude.binary.display(), "cannot start claude");
                self.registry.do_send(ChildReleased {
                    session_id: self.record.id.clone(),
                });
                metrics().child_spawns.with_label_values(&["error"]).inc();
                self.failures.push_back(Instant::now());
                let message = format!("{} ({e})", settings.claude.binary.display());
                self.last_failure = Some(message.clone());
                self.fail_start(SessionError::SpawnFailed(message), SessionState::Failed);
                return;
            }
        };
        drop(spec);
        self.child_generation += 1;
        let generation = self.child_generation;
        let pid = spawned.handle.pid();
        tracing::info!(session_id = %self.record.id, pid, resume = self.record.claude_session_id.is_some(), "child started");
        self.child = Some(LiveChild {
            handle: spawned.handle,
            generation,
            credential_generation: grant.credential_generation,
            credential_kind: grant.credential_kind,
            stdout_done: false,
            exit: None,
            spawned_at: Some(Instant::now()),
            started_at: now(),
            _cgroup: grant.cgroup,
        });
        metrics().child_spawns.with_label_values(&["ok"]).inc();
        metrics().live_children.inc();
        self.credential_stale = false;
        let lines = spawned
            .stdout
            .map(move |line| ChildLine {
                generation,
                line: Some(line),
            })
            .chain(futures_util::stream::once(async move {
                ChildLine {
                    generation,
                    line: None,
                }
            }));
        ctx.add_stream(lines);
        ctx.spawn(spawned.exit.into_actor(self).map(move |report, act, ctx| {
            if let Some(child) = act.child.as_mut().filter(|c| c.generation == generation) {
                child.exit = Some(report);
                act.finish_exit_if_done(ctx);
            }
        }));
        self.set_state(SessionState::Idle, Some(json!({ "pid": pid })));
        self.echo_waiting();
        self.pump(ctx);
    }

    /// Starting failed: tell every waiter and every tab; queued messages are not sent.
    fn fail_start(&mut self, error: SessionError, state: SessionState) {
        let dropped = self.drop_queue(&error);
        let mut message = error.to_string();
        if dropped > 0 {
            message.push_str(&format!(" ({dropped} waiting message(s) not sent)"));
        }
        self.emit_error(error.code(), &message);
        self.set_state(state, None);
    }

    fn stop_child(&mut self, reason: StopReason, mode: StopMode) {
        let Some(child) = &mut self.child else { return };
        if self.stop_reason.is_none() || mode == StopMode::Kill {
            self.stop_reason = Some(reason);
        }
        child.handle.stop(mode);
        self.set_state(SessionState::Stopping, None);
    }

    /// Runs once the child has both exited and closed stdout, so its last lines precede the
    /// state change.
    fn finish_exit_if_done(&mut self, ctx: &mut Context<Self>) {
        let done = self
            .child
            .as_ref()
            .is_some_and(|c| c.stdout_done && c.exit.is_some());
        if !done {
            return;
        }
        let Some(child) = self.child.take() else {
            return;
        };
        let report = child.exit.unwrap_or(ExitReport {
            code: None,
            signal: None,
            stderr_tail: String::new(),
        });
        self.registry.do_send(ChildReleased {
            session_id: self.record.id.clone(),
        });
        let interrupted_turn = self.turn.take().is_some();
        let reason = self.stop_reason.take();
        let cause = match reason {
            None => "crash",
            Some(StopReason::TurnTimeout) => "turn_timeout",
            Some(StopReason::Idle) => "idle",
            Some(_) => "requested",
        };
        metrics().child_exits.with_label_values(&[cause]).inc();
        metrics().live_children.dec();
        tracing::info!(
            session_id = %self.record.id, code = ?report.code, signal = ?report.signal, reason = ?reason,
            "child exited"
        );
        match reason {
            Some(_) => self.set_state(SessionState::Stopped, None),
            None => {
                self.failures.push_back(Instant::now());
                let what = match (report.code, report.signal) {
                    (Some(code), _) => format!("exit code {code}"),
                    (None, Some(signal)) => format!("signal {signal}"),
                    _ => "unknown cause".into(),
                };
                self.last_failure = Some(format!(
                    "{what}; stderr: {}",
                    last_line(&report.stderr_tail)
                ));
                self.set_state(
                    SessionState::Exited,
                    Some(json!({
                        "code": report.code,
                        "signal": report.signal,
                        "stderrTail": report.stderr_tail,
                        "duringTurn": interrupted_turn,
                    })),
                );
                if !self.budget_left() {
                    // Say so now, not when the next message comes.
                    let reason = self.last_failure.clone().unwrap_or_default();
                    self.fail_start(SessionError::Failed(reason), SessionState::Failed);
                }
            }
        }
        for waiter in self.stop_waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.persist(ctx);
        if !self.closing && !self.queue.is_empty() {
            self.start_child(ctx);
        }
    }
}

fn last_line(text: &str) -> &str {
    text.trim_end().rsplit('\n').next().unwrap_or("")
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Requests arrive with `send`; the mailbox bounds how many wait at once.
        ctx.set_mailbox_capacity(256);
    }
}

/// One stdout line of the child of generation `generation`; `None` marks EOF.
struct ChildLine {
    generation: u64,
    line: Option<Line>,
}

impl StreamHandler<ChildLine> for Session {
    fn handle(&mut self, item: ChildLine, ctx: &mut Context<Self>) {
        if self.child.as_ref().map(|c| c.generation) != Some(item.generation) {
            return;
        }
        match item.line {
            None => {
                if let Some(child) = &mut self.child {
                    child.stdout_done = true;
                }
                self.finish_exit_if_done(ctx);
            }
            Some(Line::Complete(bytes)) => self.on_line(bytes, ctx),
            Some(Line::Oversized { len }) => {
                let message = format!(
                    "a line of {len} bytes from Claude Code was over the {}-byte limit and was not passed on",
                    self.cfg.settings.get().sessions.max_line_bytes
                );
                self.emit_error("line_too_long", &message);
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // A child's stdout ending is handled per line (`line: None`); it must not stop the actor.
    }
}

// ---- messages ----

/// Subscribe a socket: the retained events after `after`, then a live queue. Sent by a socket
/// task when it connects.
#[derive(Debug)]
pub struct Subscribe {
    /// The last `seq` the client has; 0 for everything retained.
    pub after: u64,
    /// Its queue's caps.
    pub caps: QueueCaps,
}

/// The answer to [`Subscribe`].
#[derive(Debug)]
pub struct Subscribed {
    /// What to send first.
    pub replay: Replay,
    /// Then these.
    pub live: SubscriberRx,
}

impl Message for Subscribe {
    type Result = Result<Subscribed, SessionError>;
}

impl Handler<Subscribe> for Session {
    type Result = Result<Subscribed, SessionError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        if self.closing {
            return Err(SessionError::NotFound);
        }
        let live = self.fanout.subscribe(msg.caps);
        Ok(Subscribed {
            replay: self.ring.since(msg.after),
            live,
        })
    }
}

/// A user message (`content`: a string or an array of content blocks). Answers with the `seq`
/// of its `user` echo once it is queued for the child; when a child must be started first,
/// once it has started (so limits and missing credentials come back as errors).
#[derive(Debug)]
pub struct SendMessage {
    /// The message content.
    pub content: Value,
}

impl Message for SendMessage {
    type Result = Result<u64, SessionError>;
}

impl Handler<SendMessage> for Session {
    type Result = ResponseActFuture<Self, Result<u64, SessionError>>;

    fn handle(&mut self, msg: SendMessage, ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| Box::pin(actix::fut::ready(r)) as Self::Result;
        if self.closing {
            return ready(Err(SessionError::ShuttingDown));
        }
        if let Err(e) = validate_content(&msg.content) {
            return ready(Err(e));
        }
        if self.queue.len() >= self.cfg.settings.get().sessions.queued_messages {
            return ready(Err(SessionError::QueueFull));
        }
        // A message that will only run in a new child answers once that child has started,
        // so a refused start (limits, credentials) reaches the sender as an error.
        let needs_new_child = match self.state {
            SessionState::Busy => false,
            SessionState::Idle => self.credential_stale && self.turn.is_none(),
            SessionState::Starting
            | SessionState::Stopping
            | SessionState::Stopped
            | SessionState::Exited
            | SessionState::Failed => true,
        };
        if !needs_new_child {
            let seq = self.accept(msg.content);
            self.pump(ctx);
            return ready(Ok(seq));
        }
        let (tx, rx) = oneshot::channel();
        self.queue.push_back(Queued {
            content: msg.content,
            reply: Some(tx),
        });
        if self.child.is_none() {
            self.start_child(ctx);
        } else {
            // A child that is stopping (or must restart) is replaced once it has exited.
            self.pump(ctx);
        }
        Box::pin(
            async move { rx.await.unwrap_or(Err(SessionError::ShuttingDown)) }.into_actor(self),
        )
    }
}

/// Checks a message's shape: a non-empty string, or a non-empty array of content blocks
/// (objects with a string `type`).
fn validate_content(content: &Value) -> Result<(), SessionError> {
    match content {
        Value::String(s) if !s.trim().is_empty() => Ok(()),
        Value::Array(blocks)
            if !blocks.is_empty()
                && blocks
                    .iter()
                    .all(|b| b.get("type").is_some_and(Value::is_string)) =>
        {
            Ok(())
        }
        _ => Err(SessionError::InvalidMessage(
            "content must be a non-empty string or an array of content blocks with a \"type\""
                .into(),
        )),
    }
}

/// Interrupts the running turn: writes the `control_request` envelope with a unique
/// `request_id` (DESIGN §6); the CLI answers with a `control_response`, then a `result`.
#[derive(Debug)]
pub struct Interrupt;

impl Message for Interrupt {
    type Result = Result<(), SessionError>;
}

impl Handler<Interrupt> for Session {
    type Result = Result<(), SessionError>;

    fn handle(&mut self, _: Interrupt, _ctx: &mut Context<Self>) -> Self::Result {
        if self.turn.is_none() {
            return Err(SessionError::NotBusy);
        }
        if self.write_interrupt() {
            Ok(())
        } else {
            Err(SessionError::NotBusy)
        }
    }
}

/// The session as the API shows it.
#[derive(Debug)]
pub struct GetView;

impl Message for GetView {
    type Result = SessionView;
}

impl Handler<GetView> for Session {
    type Result = MessageResult<GetView>;

    fn handle(&mut self, _: GetView, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.view())
    }
}

/// The session's record, with the current `last_seq` (the registry persists it at shutdown).
#[derive(Debug)]
pub struct GetRecord;

impl Message for GetRecord {
    type Result = SessionRecord;
}

impl Handler<GetRecord> for Session {
    type Result = MessageResult<GetRecord>;

    fn handle(&mut self, _: GetRecord, _ctx: &mut Context<Self>) -> Self::Result {
        let mut record = self.record.clone();
        record.last_seq = self.ring.last_seq();
        MessageResult(record)
    }
}

/// Stops the child (if any) and answers once it has exited. `Delete` and `Shutdown` also make
/// the session refuse further messages. Sent by the registry.
#[derive(Debug)]
pub struct Stop {
    /// Why.
    pub reason: StopReason,
}

impl Message for Stop {
    type Result = ();
}

impl Handler<Stop> for Session {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Stop, _ctx: &mut Context<Self>) -> Self::Result {
        if matches!(msg.reason, StopReason::Delete | StopReason::Shutdown) {
            self.closing = true;
        }
        let visible = self.drop_queue(&SessionError::Stopped);
        if visible > 0 {
            self.emit_error(
                "stopped",
                &format!("the session was stopped; {visible} waiting message(s) not sent"),
            );
        }
        if self.child.is_none() {
            if self.state == SessionState::Starting {
                // The grant in flight is released when it arrives (closing), or the next
                // message restarts.
            }
            return Box::pin(async {});
        }
        self.stop_child(msg.reason, StopMode::Graceful);
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// Ends the actor after a [`Stop`]: every socket is closed (1001) and nothing more is accepted.
#[derive(Debug)]
pub struct Close;

impl Message for Close {
    type Result = ();
}

impl Handler<Close> for Session {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.closing = true;
        self.fanout.close_all();
        ctx.stop();
    }
}

/// Stops the child if it is idle, to free a slot for another session; answers whether it
/// did, after the child has exited.
#[derive(Debug)]
pub struct EvictIfIdle;

impl Message for EvictIfIdle {
    type Result = bool;
}

impl Handler<EvictIfIdle> for Session {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, _: EvictIfIdle, _ctx: &mut Context<Self>) -> Self::Result {
        let idle = self.state == SessionState::Idle && self.queue.is_empty() && self.turn.is_none();
        if !idle || self.child.is_none() {
            return Box::pin(async { false });
        }
        tracing::info!(session_id = %self.record.id, "stopping idle child to make room");
        self.stop_child(StopReason::Idle, StopMode::Graceful);
        let (tx, rx) = oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move { rx.await.is_ok() })
    }
}

/// The owner's credential changed (`generation` is the new record's, or 0 when it was
/// removed): a child started with the old one is restarted with `--resume` before its next
/// turn (at once if idle, after the current turn if busy).
#[derive(Debug)]
pub struct CredentialChanged {
    /// The new generation.
    pub generation: u64,
}

impl Message for CredentialChanged {
    type Result = ();
}

impl Handler<CredentialChanged> for Session {
    type Result = ();

    fn handle(&mut self, msg: CredentialChanged, ctx: &mut Context<Self>) {
        let Some(child) = &self.child else { return };
        if child.credential_generation == msg.generation {
            return;
        }
        self.credential_stale = true;
        if self.state == SessionState::Idle && self.turn.is_none() {
            if self.queue.is_empty() {
                self.stop_child(StopReason::Restart, StopMode::Graceful);
            } else {
                self.pump(ctx);
            }
        }
    }
}

/// The owner's OAuth sign-in could not be refreshed (`invalid_grant`): tell the tabs. Sent by
/// the registry.
#[derive(Debug)]
pub struct CredentialExpired;

impl Message for CredentialExpired {
    type Result = ();
}

impl Handler<CredentialExpired> for Session {
    type Result = ();

    fn handle(&mut self, _: CredentialExpired, _ctx: &mut Context<Self>) {
        self.credential_stale = true;
        self.emit_error(
            "credentials_expired",
            "your Claude sign-in expired or was revoked; sign in again",
        );
    }
}

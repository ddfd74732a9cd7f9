//! The Registry actor: every session of the daemon, and the limits between them.
//!
//! It owns the map of sessions (started at boot from the store, all `stopped`), the count of
//! live children, and the shutdown. It is the only place that opens a user's credential, and
//! only when a child must start.
//!
//! Messages it takes, and who sends them:
//! - [`CreateSession`], [`FindSession`], [`ListSessions`], [`DeleteSession`] (HTTP handlers);
//! - [`AcquireChild`], [`ChildReleased`], [`MarkNeedsReauth`] (sessions);
//! - [`CredentialChanged`], [`StopUserSessions`] (HTTP handlers, after a credential changes
//!   or a user is disabled);
//! - [`Shutdown`] (the daemon, on SIGTERM or SIGINT).
//!
//! `limits.live_children` counts children from the moment a slot is granted until the child
//! has been reaped. When every slot is taken, the registry stops the least recently started
//! idle child (it resumes transparently on its next message) before refusing with 429.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::session::{
    self, ChildGrant, Close, EvictIfIdle, GetRecord, Session, SessionConfig, Stop, StopReason,
};
use super::{SessionError, SessionView};
use crate::credential::{Credential, SEAL_KIND};
use crate::crypto::Keyring;
use crate::store::{now, SessionRecord, Store};
use crate::workspace::Workspace;

/// How long a client refused for limits is told to wait.
const LIMIT_RETRY_AFTER: Duration = Duration::from_secs(5);

struct Entry {
    addr: Addr<Session>,
    owner: String,
}

/// The actor.
pub struct Registry {
    store: Store,
    keyring: Arc<Keyring>,
    workspace: Workspace,
    cfg: Arc<SessionConfig>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    sessions: HashMap<String, Entry>,
    /// Session id → when its slot was granted.
    children: HashMap<String, Instant>,
    shutting_down: bool,
}

impl Registry {
    /// A registry over `store`. Sessions will run on `arbiters` (long-lived threads), round
    /// robin.
    pub fn new(
        store: Store,
        keyring: Arc<Keyring>,
        workspace: Workspace,
        cfg: Arc<SessionConfig>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        Self {
            store,
            keyring,
            workspace,
            cfg,
            arbiters,
            next_arbiter: 0,
            sessions: HashMap::new(),
            children: HashMap::new(),
            shutting_down: false,
        }
    }

    fn start_session(
        &mut self,
        record: SessionRecord,
        owner_name: String,
        registry: Addr<Registry>,
    ) -> Addr<Session> {
        let store = self.store.clone();
        let cfg = self.cfg.clone();
        let make = move |_ctx: &mut Context<Session>| {
            Session::new(record, owner_name, registry, store, cfg)
        };
        if self.arbiters.is_empty() {
            return Session::create(make);
        }
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter += 1;
        Session::start_in_arbiter(arbiter, make)
    }

    fn owned(&self, id: &str, owner: Option<&str>) -> Option<&Entry> {
        self.sessions
            .get(id)
            .filter(|e| owner.is_none_or(|o| o == e.owner))
    }

    fn limit_children(&self) -> usize {
        self.cfg.settings.limits.live_children
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// Starts the actors of every stored session (all `stopped`). Sent once by the daemon at boot.
#[derive(Debug)]
pub struct LoadSessions {
    /// Stored sessions with their owners' usernames.
    pub sessions: Vec<(SessionRecord, String)>,
}

impl Message for LoadSessions {
    type Result = usize;
}

impl Handler<LoadSessions> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: LoadSessions, ctx: &mut Context<Self>) -> usize {
        let n = msg.sessions.len();
        for (record, owner_name) in msg.sessions {
            let id = record.id.clone();
            let owner = record.owner.clone();
            let addr = self.start_session(record, owner_name, ctx.address());
            self.sessions.insert(id, Entry { addr, owner });
        }
        n
    }
}

/// Creates a session on an existing project. Errors: `session_limit`, `no_credentials`.
#[derive(Debug)]
pub struct CreateSession {
    /// Owner's user id.
    pub owner: String,
    /// Owner's username (the child's USER).
    pub owner_name: String,
    /// Project id (already checked to exist).
    pub project: String,
    /// `--model`.
    pub model: Option<String>,
    /// `--permission-mode`.
    pub permission_mode: Option<String>,
}

impl Message for CreateSession {
    type Result = Result<(String, Addr<Session>), SessionError>;
}

impl Handler<CreateSession> for Registry {
    type Result = ResponseActFuture<Self, Result<(String, Addr<Session>), SessionError>>;

    fn handle(&mut self, msg: CreateSession, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(SessionError::ShuttingDown)));
        }
        let limit = self.cfg.settings.limits.sessions_per_user;
        let owned = self
            .sessions
            .values()
            .filter(|e| e.owner == msg.owner)
            .count();
        if owned >= limit {
            return Box::pin(actix::fut::ready(Err(SessionError::Limit(
                format!("you have {owned} sessions, the most allowed; delete one first"),
                LIMIT_RETRY_AFTER,
            ))));
        }
        let record = SessionRecord {
            v: 1,
            id: hex::encode(rand::random::<[u8; 16]>()),
            owner: msg.owner.clone(),
            project: msg.project,
            model: msg.model,
            permission_mode: msg.permission_mode,
            claude_session_id: None,
            last_seq: 0,
            created_at: now(),
            last_active: now(),
        };
        let store = self.store.clone();
        let owner = msg.owner.clone();
        let to_store = record.clone();
        let fut = async move {
            store
                .run(move |s| {
                    if s.credential(&owner)?.is_none() {
                        return Ok(Err(SessionError::NoCredentials));
                    }
                    s.put_session(&to_store)?;
                    Ok(Ok(()))
                })
                .await
        };
        let owner_name = msg.owner_name;
        Box::pin(fut.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(e.into()),
            }
            // Re-check: another create may have finished while this one wrote.
            let id = record.id.clone();
            let owner = record.owner.clone();
            let addr = act.start_session(record, owner_name, ctx.address());
            act.sessions.insert(
                id.clone(),
                Entry {
                    addr: addr.clone(),
                    owner,
                },
            );
            tracing::info!(session_id = %id, "session created");
            Ok((id, addr))
        }))
    }
}

/// Looks a session up; `owner: None` finds anyone's (admins).
#[derive(Debug)]
pub struct FindSession {
    /// Session id.
    pub id: String,
    /// Required owner, if any.
    pub owner: Option<String>,
}

impl Message for FindSession {
    type Result = Option<Addr<Session>>;
}

impl Handler<FindSession> for Registry {
    type Result = Option<Addr<Session>>;

    fn handle(&mut self, msg: FindSession, _ctx: &mut Context<Self>) -> Self::Result {
        self.owned(&msg.id, msg.owner.as_deref())
            .map(|e| e.addr.clone())
    }
}

/// Every session (of `owner`, or all for `None`), as views.
#[derive(Debug)]
pub struct ListSessions {
    /// Owner filter.
    pub owner: Option<String>,
}

impl Message for ListSessions {
    type Result = Vec<SessionView>;
}

impl Handler<ListSessions> for Registry {
    type Result = ResponseFuture<Vec<SessionView>>;

    fn handle(&mut self, msg: ListSessions, _ctx: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<Session>> = self
            .sessions
            .values()
            .filter(|e| msg.owner.as_deref().is_none_or(|o| o == e.owner))
            .map(|e| e.addr.clone())
            .collect();
        Box::pin(async move {
            let views =
                futures_util::future::join_all(addrs.iter().map(|a| a.send(session::GetView)))
                    .await;
            let mut views: Vec<SessionView> = views.into_iter().flatten().collect();
            views.sort_by(|a, b| {
                a.created_at
                    .cmp(&b.created_at)
                    .then_with(|| a.id.cmp(&b.id))
            });
            views
        })
    }
}

/// Deletes a session: stops its child, closes its sockets, removes its record.
#[derive(Debug)]
pub struct DeleteSession {
    /// Session id.
    pub id: String,
    /// Required owner (`None` for admins).
    pub owner: Option<String>,
}

impl Message for DeleteSession {
    type Result = Result<(), SessionError>;
}

impl Handler<DeleteSession> for Registry {
    type Result = ResponseFuture<Result<(), SessionError>>;

    fn handle(&mut self, msg: DeleteSession, _ctx: &mut Context<Self>) -> Self::Result {
        if self.owned(&msg.id, msg.owner.as_deref()).is_none() {
            return Box::pin(async { Err(SessionError::NotFound) });
        }
        let Some(entry) = self.sessions.remove(&msg.id) else {
            return Box::pin(async { Err(SessionError::NotFound) });
        };
        let store = self.store.clone();
        let id = msg.id;
        Box::pin(async move {
            let _ = entry
                .addr
                .send(Stop {
                    reason: StopReason::Delete,
                })
                .await;
            let _ = entry.addr.send(Close).await;
            let id2 = id.clone();
            store.run(move |s| s.delete_session(&id2)).await?;
            tracing::info!(session_id = %id, "session deleted");
            Ok(())
        })
    }
}

/// A session needs a child: a slot under `limits.live_children` and the owner's credential.
#[derive(Debug)]
pub struct AcquireChild {
    /// The asking session.
    pub session_id: String,
    /// Its owner.
    pub owner: String,
    /// Its project.
    pub project: String,
}

impl Message for AcquireChild {
    type Result = Result<ChildGrant, SessionError>;
}

impl Handler<AcquireChild> for Registry {
    type Result = ResponseActFuture<Self, Result<ChildGrant, SessionError>>;

    fn handle(&mut self, msg: AcquireChild, _ctx: &mut Context<Self>) -> Self::Result {
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(SessionError::ShuttingDown)));
        }
        let limit = self.limit_children();
        let session_id = msg.session_id;
        // Reserve the slot now, before any await, so concurrent requests cannot overbook.
        let need_room = self.children.len() >= limit;
        let mut victims: Vec<(Instant, String, Addr<Session>)> = Vec::new();
        if need_room {
            victims = self
                .children
                .iter()
                .filter(|(id, _)| **id != session_id)
                .filter_map(|(id, at)| {
                    let entry = self.sessions.get(id)?;
                    Some((*at, id.clone(), entry.addr.clone()))
                })
                .collect();
            victims.sort_by_key(|(at, _, _)| *at);
        } else {
            self.children.insert(session_id.clone(), Instant::now());
        }
        let evict = async move {
            for (granted_at, id, addr) in victims {
                if addr.send(EvictIfIdle).await.unwrap_or(false) {
                    return Some((id, granted_at));
                }
            }
            None
        };
        let (store, keyring, workspace) = (
            self.store.clone(),
            self.keyring.clone(),
            self.workspace.clone(),
        );
        let (owner, project) = (msg.owner, msg.project);
        let reserve_id = session_id.clone();
        Box::pin(
            evict
                .into_actor(self)
                .map(move |evicted, act, _ctx| {
                    if !need_room {
                        return Ok(());
                    }
                    if let Some((id, granted_at)) = &evicted {
                        // EvictIfIdle answers once the child has been reaped, but the
                        // ChildReleased it sent before comes through the mailbox and may not
                        // have been handled yet: free that slot here. Only that grant (same
                        // time): if the session already got a new one, it stays.
                        if act.children.get(id) == Some(granted_at) {
                            act.children.remove(id);
                        }
                    }
                    if evicted.is_some() && act.children.len() < limit && !act.shutting_down {
                        act.children.insert(reserve_id, Instant::now());
                        return Ok(());
                    }
                    Err(SessionError::Limit(
                        format!("all {limit} Claude processes are busy; try again shortly"),
                        LIMIT_RETRY_AFTER,
                    ))
                })
                .then(move |slot, act, _ctx| {
                    async move {
                        slot?;
                        load_grant(store, keyring, workspace, owner, project).await
                    }
                    .into_actor(act)
                })
                .map(move |result, act, _ctx| {
                    if result.is_err() {
                        // A refused start holds no slot; a granted one is released with
                        // ChildReleased once its child has been reaped.
                        act.children.remove(&session_id);
                    }
                    result
                }),
        )
    }
}

/// Opens the owner's credential and prepares the child's folders (blocking work).
async fn load_grant(
    store: Store,
    keyring: Arc<Keyring>,
    workspace: Workspace,
    owner: String,
    project: String,
) -> Result<ChildGrant, SessionError> {
    store
        .run(move |s| {
            let Some(record) = s.credential(&owner)? else {
                return Ok(Err(SessionError::NoCredentials));
            };
            if record.needs_reauth {
                return Ok(Err(SessionError::CredentialsRejected));
            }
            let credential = match keyring
                .open(&owner, SEAL_KIND, &record.sealed)
                .ok()
                .and_then(|plain| Credential::from_plaintext(&plain).ok())
            {
                Some(c) => c,
                None => {
                    tracing::error!(user_id = %owner, kid = %record.sealed.kid, "cannot open a stored credential");
                    return Ok(Err(SessionError::CredentialUnreadable));
                }
            };
            let paths = workspace.home(&owner).and_then(|home| Ok((home, workspace.project(&owner, &project)?)));
            let (home, cwd) = match paths {
                Ok(p) => p,
                Err(e) => return Ok(Err(SessionError::SpawnFailed(e.to_string()))),
            };
            Ok(Ok(ChildGrant {
                credential_env: credential.env(),
                credential_generation: record.generation,
                home,
                cwd,
            }))
        })
        .await
        .unwrap_or_else(|e| Err(e.into()))
}

/// A session's child has been reaped (or never started): its slot is free.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildReleased {
    /// The session.
    pub session_id: String,
}

impl Handler<ChildReleased> for Registry {
    type Result = ();

    fn handle(&mut self, msg: ChildReleased, _ctx: &mut Context<Self>) {
        self.children.remove(&msg.session_id);
    }
}

/// The API rejected a user's credential during a turn: mark it `needsReauth`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MarkNeedsReauth {
    /// The owner.
    pub user_id: String,
}

impl Handler<MarkNeedsReauth> for Registry {
    type Result = ();

    fn handle(&mut self, msg: MarkNeedsReauth, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let user_id = msg.user_id;
        ctx.spawn(
            async move {
                let uid = user_id.clone();
                if let Err(e) = store.run(move |s| s.update_credential(&uid, |r| r.needs_reauth = true)).await {
                    tracing::warn!(user_id = %user_id, error = %e, "cannot mark credential as needing re-auth");
                }
            }
            .into_actor(self),
        );
    }
}

/// A user's credential changed (`generation` 0: removed). Each of their live children started
/// with another generation is restarted before its next turn.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CredentialChanged {
    /// The user.
    pub user_id: String,
    /// The new credential generation.
    pub generation: u64,
}

impl Handler<CredentialChanged> for Registry {
    type Result = ();

    fn handle(&mut self, msg: CredentialChanged, _ctx: &mut Context<Self>) {
        for entry in self.sessions.values().filter(|e| e.owner == msg.user_id) {
            // At most `limits.sessions_per_user` sends, once per credential change.
            let _ = entry.addr.try_send(session::CredentialChanged {
                generation: msg.generation,
            });
        }
    }
}

/// Stops every child of a user (credential removed, user disabled); answers when they have
/// exited.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopUserSessions {
    /// The user.
    pub user_id: String,
}

impl Handler<StopUserSessions> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopUserSessions, _ctx: &mut Context<Self>) -> Self::Result {
        let addrs: Vec<Addr<Session>> = self
            .sessions
            .values()
            .filter(|e| e.owner == msg.user_id)
            .map(|e| e.addr.clone())
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(addrs.iter().map(|a| {
                a.send(Stop {
                    reason: StopReason::Requested,
                })
            }))
            .await;
        })
    }
}

/// Stops every session's child, persists every session, and closes every socket. Answers when
/// no child is left. Sent once by the daemon on SIGTERM or SIGINT.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

impl Handler<Shutdown> for Registry {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let addrs: Vec<Addr<Session>> = self.sessions.values().map(|e| e.addr.clone()).collect();
        let live = self.children.len();
        let store = self.store.clone();
        tracing::info!(
            sessions = addrs.len(),
            live_children = live,
            "stopping every session"
        );
        Box::pin(async move {
            futures_util::future::join_all(addrs.iter().map(|a| {
                a.send(Stop {
                    reason: StopReason::Shutdown,
                })
            }))
            .await;
            let records: Vec<SessionRecord> =
                futures_util::future::join_all(addrs.iter().map(|a| a.send(GetRecord)))
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
            let saved = records.len();
            if let Err(e) = store
                .run(move |s| {
                    for r in &records {
                        s.put_session(r)?;
                    }
                    Ok(())
                })
                .await
            {
                tracing::error!(error = %e, "cannot persist sessions at shutdown");
            }
            futures_util::future::join_all(addrs.iter().map(|a| a.send(Close))).await;
            saved
        })
    }
}

//! The Registry actor: every session of the daemon, and the limits between them.
//!
//! It owns the map of sessions (started at boot from the store, all `stopped`), the count of
//! live children, and the shutdown. It is the only place that opens a user's credential, and
//! only when a child must start.
//!
//! Messages it takes, and who sends them:
//! - [`CreateSession`], [`FindSession`], [`ListSessions`], [`DeleteSession`] (HTTP handlers);
//! - [`AcquireChild`], [`ChildReleased`], [`RefreshCredential`] (sessions);
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
use crate::credential::{CredentialKeeper, CredentialKind, RefreshError};
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
    keeper: Arc<CredentialKeeper>,
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
        keeper: Arc<CredentialKeeper>,
        workspace: Workspace,
        cfg: Arc<SessionConfig>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        Self {
            store,
            keeper,
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
        self.cfg.settings.get().limits.live_children
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Often enough that a token is refreshed well within the margin.
        let oauth = &self.cfg.settings.get().oauth;
        let every = (oauth.refresh_margin / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        );
        ctx.run_interval(every, |act, ctx| act.refresh_live_users(ctx));
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
        crate::metrics::metrics()
            .sessions
            .set(self.sessions.len() as i64);
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
        let limit = self.cfg.settings.get().limits.sessions_per_user;
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
            crate::metrics::metrics()
                .sessions
                .set(act.sessions.len() as i64);
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
        crate::metrics::metrics()
            .sessions
            .set(self.sessions.len() as i64);
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
        let (keeper, workspace) = (self.keeper.clone(), self.workspace.clone());
        let place = Placement {
            cfg: self.cfg.clone(),
            store: self.store.clone(),
            session_id: session_id.clone(),
        };
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
                        load_grant(keeper, workspace, place, owner, project).await
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

/// A child that cannot start, for the reason `e` gives.
fn spawn_failed(e: impl std::fmt::Display) -> SessionError {
    SessionError::SpawnFailed(e.to_string())
}

/// Opens the owner's credential (refreshing an expiring OAuth token first) and prepares the
/// child's folders and credential files.
async fn load_grant(
    keeper: Arc<CredentialKeeper>,
    workspace: Workspace,
    place: Placement,
    owner: String,
    project: String,
) -> Result<ChildGrant, SessionError> {
    // A socket opened before an operator disabled (or is deleting) the user still delivers
    // messages; none of them may start a child.
    let id = owner.clone();
    match place.store.run(move |s| s.user(&id)).await? {
        Some(user) if !user.disabled => {}
        _ => return Err(SessionError::AccountDisabled),
    }
    let subscription_login = place.cfg.settings.get().claude_auth.subscription_login;
    let (record, credential) = match keeper.for_child(&owner).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(SessionError::NoCredentials),
        Err(RefreshError::InvalidGrant) => {
            return Err(SessionError::CredentialsExpired(
                "the provider refused the refresh token".into(),
            ))
        }
        Err(RefreshError::Unavailable(reason)) => {
            return Err(SessionError::CredentialsExpired(reason))
        }
        Err(RefreshError::Store(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!(user_id = %owner, error = %e, "cannot open a stored credential");
            return Err(SessionError::CredentialUnreadable);
        }
    };
    if record.needs_reauth {
        return Err(match record.kind {
            CredentialKind::Oauth => {
                SessionError::CredentialsExpired("the sign-in needs renewing".into())
            }
            _ => SessionError::CredentialsRejected,
        });
    }
    if record.kind.is_subscription() && !subscription_login {
        return Err(SessionError::SubscriptionDisabled);
    }
    let files = credential.files();
    let sandboxing = place.cfg.isolation.clone();
    let settings = place.cfg.settings.get();
    let cgroups = place.cfg.cgroups.clone();
    let session_id = place.session_id;
    let store = place.store;
    let paths = actix_web::rt::task::spawn_blocking(move || {
        let user = store
            .user(&owner)
            .ok()
            .flatten()
            .ok_or_else(|| spawn_failed("the session's owner is gone"))?;
        // Again, just before anything is written: an operator may have disabled (or be
        // deleting) the user while the credential was opened or refreshed.
        if user.disabled {
            return Err(SessionError::AccountDisabled);
        }
        let home = workspace.home(&owner).map_err(spawn_failed)?;
        let cwd = workspace.project(&owner, &project).map_err(spawn_failed)?;
        let base = settings.isolation.uid_base;
        let count = settings.isolation.uid_count;
        let (uid, gid) = match (&sandboxing, user.uid(base, count)) {
            (crate::sandbox::Isolation::Uid { .. }, Some(uid)) => (uid, uid),
            (crate::sandbox::Isolation::Uid { .. }, None) => {
                tracing::error!(user_id = %owner, uid_slot = ?user.uid_slot, uid_count = count, "the user's uid slot is outside isolation.uid_count; raise it");
                return Err(spawn_failed("this user has no uid in isolation.uid_base..+uid_count; ask the operator"));
            }
            (_, uid) => (uid.unwrap_or(base), uid.unwrap_or(base)),
        };
        let mut etc = (None, None);
        if !matches!(sandboxing, crate::sandbox::Isolation::None) {
            let (passwd, group) = crate::sandbox::passwd_files(&user.username, uid, gid, &home);
            let dir = workspace.sandbox_etc(&owner).map_err(spawn_failed)?;
            std::fs::write(dir.join("passwd"), passwd).map_err(spawn_failed)?;
            std::fs::write(dir.join("group"), group).map_err(spawn_failed)?;
            etc = (Some(dir.join("passwd")), Some(dir.join("group")));
        }
        let owner = match sandboxing {
            crate::sandbox::Isolation::Uid { .. } => {
                // The user's own folders (and anything the daemon made in them) belong to their
                // uid.
                crate::ownership::hand_over(&home, uid, gid).map_err(spawn_failed)?;
                crate::ownership::hand_over(&cwd, uid, gid).map_err(spawn_failed)?;
                Some((uid, gid))
            }
            _ => None,
        };
        for (relative, contents) in &files {
            crate::ownership::write_private_file(&home, relative, contents, owner)
                .map_err(|e| spawn_failed(format!("cannot write {} in the home: {e}", relative.display())))?;
        }
        // Looked up at each start, so a CLI installed or moved while the daemon runs is found.
        let binary = &settings.claude.binary;
        let sandbox_program = match &sandboxing {
            crate::sandbox::Isolation::None => None,
            _ => {
                let program = crate::sandbox::program(binary).ok_or_else(|| {
                    spawn_failed(format!("{} was not found (claude.binary)", binary.display()))
                })?;
                // The CLI's folder is shown read-only in every sandbox: one that holds the data
                // directory would show the store, every user's files and maybe the key.
                // Nor one inside it: a user's home would then hold the program every user runs.
                if let Some(dir) = &program.dir {
                    let real = |p: &std::path::Path| p.canonicalize().unwrap_or(p.to_path_buf());
                    let (data, root) = (real(&settings.storage.data_dir), real(workspace.root()));
                    if data.starts_with(dir)
                        || root.starts_with(dir)
                        || dir.starts_with(&data)
                        || dir.starts_with(&root)
                    {
                        return Err(spawn_failed(format!(
                            "{} would show the data directory in the sandbox; install the CLI \
                             outside it (claude.binary)",
                            dir.display()
                        )));
                    }
                }
                Some(program)
            }
        };
        let cgroup = match &cgroups {
            // Startup and the admin API said these limits are in force: a child without them
            // would break that word, so it does not start.
            Some(c) => match c.session(&session_id, &settings.isolation) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    tracing::error!(session_id = %session_id, error = %e, "cannot create the session's cgroup");
                    return Err(spawn_failed(format!(
                        "cannot set the session's resource limits: {e}"
                    )));
                }
            },
            None => None,
        };
        let sandbox = crate::sandbox::SandboxInput {
            uid,
            gid,
            etc_passwd: etc.0,
            etc_group: etc.1,
            program: sandbox_program,
            tmp_max_bytes: settings.isolation.tmp_max_bytes,
        };
        Ok::<_, SessionError>((home, cwd, sandbox, cgroup))
    })
    .await
    .map_err(|_| SessionError::ShuttingDown)?;
    let (home, cwd, sandbox, cgroup) = paths?;
    Ok(ChildGrant {
        credential_env: credential.env(&home),
        credential_generation: record.generation,
        credential_kind: record.kind,
        home,
        cwd,
        sandbox,
        cgroup,
    })
}

/// Where a grant goes: what `load_grant` needs besides the credential.
struct Placement {
    cfg: Arc<SessionConfig>,
    store: Store,
    session_id: String,
}

/// A turn failed with 401 on an OAuth credential: refresh once (single-flight with any other
/// refresh of that user). On success every session of the user restarts its child with the new
/// token; on failure they all get `credentials_expired`. Answers the new generation.
#[derive(Debug)]
pub struct RefreshCredential {
    /// The owner.
    pub user_id: String,
    /// The generation the failing child ran with.
    pub seen_generation: u64,
}

impl Message for RefreshCredential {
    type Result = Result<u64, SessionError>;
}

impl Handler<RefreshCredential> for Registry {
    type Result = ResponseActFuture<Self, Result<u64, SessionError>>;

    fn handle(&mut self, msg: RefreshCredential, _ctx: &mut Context<Self>) -> Self::Result {
        let keeper = self.keeper.clone();
        let user_id = msg.user_id.clone();
        let fut = async move { keeper.refresh(&user_id, Some(msg.seen_generation)).await };
        Box::pin(fut.into_actor(self).map(move |result, act, _ctx| {
            act.after_refresh(&msg.user_id, &result);
            result
                .map(|record| record.generation)
                .map_err(|e| SessionError::CredentialsExpired(e.to_string()))
        }))
    }
}

impl Registry {
    /// Tells a user's sessions what a refresh did.
    fn after_refresh(
        &self,
        user_id: &str,
        result: &Result<crate::store::CredentialRecord, RefreshError>,
    ) {
        let sessions = self.sessions.values().filter(|e| e.owner == user_id);
        match result {
            Ok(record) => {
                for entry in sessions {
                    let _ = entry.addr.try_send(session::CredentialChanged {
                        generation: record.generation,
                    });
                }
            }
            Err(RefreshError::InvalidGrant) => {
                for entry in sessions {
                    let _ = entry.addr.try_send(session::CredentialExpired);
                }
            }
            Err(_) => {}
        }
    }

    /// Background refresh: OAuth tokens of users with live children that expire within the
    /// refresh margin are refreshed now, so no turn meets an expired token.
    fn refresh_live_users(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down || self.keeper.oauth().is_none() {
            return;
        }
        let mut owners: Vec<String> = self
            .children
            .keys()
            .filter_map(|id| self.sessions.get(id).map(|e| e.owner.clone()))
            .collect();
        owners.sort();
        owners.dedup();
        for user_id in owners {
            let keeper = self.keeper.clone();
            let uid = user_id.clone();
            let fut = async move {
                match keeper.open(&uid).await {
                    Ok(Some((record, _))) if keeper.expiring(&record) && !record.needs_reauth => {
                        Some(keeper.refresh(&uid, None).await)
                    }
                    _ => None,
                }
            };
            ctx.spawn(fut.into_actor(self).map(move |result, act, _ctx| {
                if let Some(result) = result {
                    act.after_refresh(&user_id, &result);
                }
            }));
        }
    }
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

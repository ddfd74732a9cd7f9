//! The typed operations of [`Store`] over sled trees. Every write flushes before it returns;
//! writes that span trees run in one sled transaction.

use ::sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{
    decode, encode, now, trees, Admission, CreateUser, CredentialRecord, OAuthPendingRecord,
    PendingStatus, Role, SessionRecord, Store, StoreError, TokenRecord, UserRecord,
};

/// The `meta` key holding the next free uid slot (big-endian u32).
pub(super) const NEXT_UID_SLOT_KEY: &[u8] = b"next_uid_slot";

/// The `meta` key recording that the first user exists (read inside the registration
/// transaction, so two first registrations cannot both become admin).
const FIRST_USER_KEY: &[u8] = b"first_user";

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

impl Store {
    // ---- meta ----

    /// A raw `meta` value.
    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(trees::META)?.get(key)?.map(|v| v.to_vec()))
    }

    /// Sets a raw `meta` value and flushes.
    pub fn meta_set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree(trees::META)?.insert(key, value)?;
        self.flush()
    }

    /// Removes a `meta` value and flushes.
    pub fn meta_remove(&self, key: &str) -> Result<(), StoreError> {
        self.tree(trees::META)?.remove(key)?;
        self.flush()
    }

    /// Readiness probe: writes, flushes and reads back a value.
    pub fn health_check(&self) -> Result<(), StoreError> {
        let stamp = format!("{}:{}", now(), rand::random::<u64>());
        self.meta_set("health_probe", stamp.as_bytes())?;
        match self.meta_get("health_probe")? {
            Some(v) if v == stamp.as_bytes() => Ok(()),
            _ => Err(StoreError::Corrupt {
                tree: trees::META,
                key: "health_probe".into(),
                reason: "read back a different value than written".into(),
            }),
        }
    }

    // ---- users ----

    /// Creates a user under the registration rule `admission`. The first user ever created
    /// becomes admin whatever `role` says. Username uniqueness is case-insensitive. Each user
    /// takes the next uid slot for good (a deleted user's is not reused, so no new user inherits
    /// files a uid still owns); past `uid_slots` (`isolation.uid_count`) the answer is
    /// [`CreateUser::Full`].
    pub fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        admission: Admission,
        uid_slots: u32,
    ) -> Result<CreateUser, StoreError> {
        let users = self.tree(trees::USERS)?;
        let by_name = self.tree(trees::USERS_BY_NAME)?;
        let meta = self.tree(trees::META)?;
        let name_key = username.to_lowercase();
        let id = hex::encode(rand::random::<[u8; 16]>());
        let outcome = (&users, &by_name, &meta).transaction(|(users, by_name, meta)| {
            let first = meta.get(FIRST_USER_KEY)?.is_none();
            let allowed = match admission {
                Admission::FirstUserOnly => first,
                Admission::Open | Admission::Admin => true,
            };
            if !allowed {
                return Ok(CreateUser::Closed);
            }
            if by_name.get(name_key.as_bytes())?.is_some() {
                return Ok(CreateUser::Taken);
            }
            let slot = meta
                .get(NEXT_UID_SLOT_KEY)?
                .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
                .map_or(0, u32::from_be_bytes);
            if slot >= uid_slots {
                return Ok(CreateUser::Full);
            }
            meta.insert(NEXT_UID_SLOT_KEY, &(slot + 1).to_be_bytes())?;
            let record = UserRecord {
                v: 1,
                id: id.clone(),
                username: username.to_owned(),
                password_hash: password_hash.to_owned(),
                role: if first { Role::Admin } else { role },
                disabled: false,
                created_at: now(),
                uid_slot: Some(slot),
            };
            users.insert(id.as_bytes(), encode(&record))?;
            by_name.insert(name_key.as_bytes(), id.as_bytes())?;
            if first {
                meta.insert(FIRST_USER_KEY, id.as_bytes())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(CreateUser::Created(record))
        })?;
        if matches!(outcome, CreateUser::Created(_)) {
            self.flush()?;
        }
        Ok(outcome)
    }

    /// Whether any user exists.
    pub fn has_users(&self) -> Result<bool, StoreError> {
        Ok(self.tree(trees::META)?.get(FIRST_USER_KEY)?.is_some())
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.tree(trees::USERS)?
            .get(id)?
            .map(|v| decode(trees::USERS, id.as_bytes(), &v))
            .transpose()
    }

    /// A user by username (case-insensitive).
    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = username.to_lowercase();
        let Some(id) = self.tree(trees::USERS_BY_NAME)?.get(key.as_bytes())? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(&id).map_err(|_| StoreError::Corrupt {
            tree: trees::USERS_BY_NAME,
            key: key.clone(),
            reason: "user id is not UTF-8".into(),
        })?;
        match self.user(id)? {
            Some(user) => Ok(Some(user)),
            None => Err(StoreError::Corrupt {
                tree: trees::USERS_BY_NAME,
                key,
                reason: format!("points at missing user {id}"),
            }),
        }
    }

    /// Every user, in id order.
    pub fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.tree(trees::USERS)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(trees::USERS, &k, &v)
            })
            .collect()
    }

    /// Sets a user's `disabled` flag. Disabling also revokes every token of theirs. Returns the
    /// updated user, or `None` when there is no such user.
    pub fn set_disabled(&self, id: &str, disabled: bool) -> Result<Option<UserRecord>, StoreError> {
        let users = self.tree(trees::USERS)?;
        let Some(bytes) = users.get(id)? else {
            return Ok(None);
        };
        let mut user: UserRecord = decode(trees::USERS, id.as_bytes(), &bytes)?;
        user.disabled = disabled;
        users.insert(id.as_bytes(), encode(&user))?;
        if disabled {
            self.remove_tokens_of(id)?;
        }
        self.flush()?;
        Ok(Some(user))
    }

    /// Deletes a user and everything keyed by them: name index, credential, tokens, sign-ins
    /// under way and session records. Returns whether the user existed.
    pub fn delete_user(&self, id: &str) -> Result<bool, StoreError> {
        let Some(user) = self.user(id)? else {
            return Ok(false);
        };
        self.remove_tokens_of(id)?;
        let pending = self.tree(trees::OAUTH_PENDING)?;
        for (state, record) in self.all_pending()? {
            if record.user_id == id {
                pending.remove(state.as_bytes())?;
            }
        }
        let sessions = self.tree(trees::SESSIONS)?;
        for record in self.list_sessions()? {
            if record.owner == id {
                sessions.remove(record.id.as_bytes())?;
            }
        }
        self.tree(trees::CREDENTIALS)?.remove(id)?;
        let users = self.tree(trees::USERS)?;
        let by_name = self.tree(trees::USERS_BY_NAME)?;
        let name_key = user.username.to_lowercase();
        (&users, &by_name).transaction(|(users, by_name)| {
            users.remove(id.as_bytes())?;
            by_name.remove(name_key.as_bytes())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        self.flush()?;
        Ok(true)
    }

    /// Stores a user record as it is (migrations).
    pub(super) fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.tree(trees::USERS)?
            .insert(user.id.as_bytes(), encode(user))?;
        Ok(())
    }

    // ---- tokens ----

    /// Stores a token record under the token's SHA-256.
    pub fn insert_token(&self, hash: &[u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        self.tree(trees::TOKENS)?.insert(hash, encode(record))?;
        self.flush()
    }

    /// The record of a token hash, if any.
    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        self.tree(trees::TOKENS)?
            .get(hash)?
            .map(|v| decode(trees::TOKENS, hash, &v))
            .transpose()
    }

    /// Revokes a token. Returns whether it existed.
    pub fn remove_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let existed = self.tree(trees::TOKENS)?.remove(hash)?.is_some();
        self.flush()?;
        Ok(existed)
    }

    fn remove_tokens_of(&self, user_id: &str) -> Result<usize, StoreError> {
        let tokens = self.tree(trees::TOKENS)?;
        let mut removed = 0;
        for kv in tokens.iter() {
            let (k, v) = kv?;
            let record: TokenRecord = decode(trees::TOKENS, &k, &v)?;
            if record.user_id == user_id {
                tokens.remove(k)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes expired tokens; returns how many.
    pub fn purge_expired_tokens(&self) -> Result<usize, StoreError> {
        let tokens = self.tree(trees::TOKENS)?;
        let now = now();
        let mut removed = 0;
        for kv in tokens.iter() {
            let (k, v) = kv?;
            let record: TokenRecord = decode(trees::TOKENS, &k, &v)?;
            if record.expires_at <= now {
                tokens.remove(k)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.flush()?;
        }
        Ok(removed)
    }

    // ---- credentials ----

    /// A user's credential record.
    pub fn credential(&self, user_id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        self.tree(trees::CREDENTIALS)?
            .get(user_id)?
            .map(|v| decode(trees::CREDENTIALS, user_id.as_bytes(), &v))
            .transpose()
    }

    /// Stores a user's credential record, replacing any earlier one; `generation` is set one
    /// past the replaced record's. Returns the stored record.
    pub fn put_credential(
        &self,
        user_id: &str,
        mut record: CredentialRecord,
    ) -> Result<CredentialRecord, StoreError> {
        let tree = self.tree(trees::CREDENTIALS)?;
        let previous = self.credential(user_id)?;
        record.generation = previous.map_or(1, |p| p.generation + 1);
        tree.insert(user_id.as_bytes(), encode(&record))?;
        self.flush()?;
        Ok(record)
    }

    /// Updates a credential record in place with `f`, unless it is gone. Returns the new one.
    /// A compare-and-swap loop, so a concurrent replacement is never overwritten with a stale
    /// copy, and a record that does not parse is an error, never removed.
    pub fn update_credential(
        &self,
        user_id: &str,
        f: impl Fn(&mut CredentialRecord),
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let tree = self.tree(trees::CREDENTIALS)?;
        loop {
            let Some(old) = tree.get(user_id)? else {
                return Ok(None);
            };
            let mut record: CredentialRecord =
                decode(trees::CREDENTIALS, user_id.as_bytes(), &old)?;
            f(&mut record);
            if tree
                .compare_and_swap(user_id, Some(old), Some(encode(&record)))?
                .is_ok()
            {
                self.flush()?;
                return Ok(Some(record));
            }
        }
    }

    /// Deletes a user's credential. Returns whether there was one.
    pub fn delete_credential(&self, user_id: &str) -> Result<bool, StoreError> {
        let existed = self.tree(trees::CREDENTIALS)?.remove(user_id)?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// Every credential record with its user id (for key rotation).
    pub fn all_credentials(&self) -> Result<Vec<(String, CredentialRecord)>, StoreError> {
        self.tree(trees::CREDENTIALS)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let record = decode(trees::CREDENTIALS, &k, &v)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), record))
            })
            .collect()
    }

    /// Replaces a credential record only if it still equals `expected` (compare-and-swap), so
    /// a rotation never overwrites a concurrent change. Returns whether it was replaced.
    pub fn replace_credential(
        &self,
        user_id: &str,
        expected: &CredentialRecord,
        new: &CredentialRecord,
    ) -> Result<bool, StoreError> {
        let swapped = self.tree(trees::CREDENTIALS)?.compare_and_swap(
            user_id.as_bytes(),
            Some(encode(expected)),
            Some(encode(new)),
        )?;
        self.flush()?;
        Ok(swapped.is_ok())
    }

    // ---- oauth_pending ----

    /// Stores a started sign-in under its `state`.
    pub fn put_pending(&self, state: &str, record: &OAuthPendingRecord) -> Result<(), StoreError> {
        self.tree(trees::OAUTH_PENDING)?
            .insert(state.as_bytes(), encode(record))?;
        self.flush()
    }

    /// A started sign-in by `state`.
    pub fn pending(&self, state: &str) -> Result<Option<OAuthPendingRecord>, StoreError> {
        self.tree(trees::OAUTH_PENDING)?
            .get(state)?
            .map(|v| decode(trees::OAUTH_PENDING, state.as_bytes(), &v))
            .transpose()
    }

    /// Moves a sign-in from `Pending` to `Exchanging` atomically, so a `state` is used at most
    /// once even when a callback and a pasted code race. Returns the record as it was when
    /// the claim failed (`Err`) or succeeded (`Ok`); `None` when there is no such state.
    pub fn claim_pending(
        &self,
        state: &str,
    ) -> Result<Option<Result<OAuthPendingRecord, OAuthPendingRecord>>, StoreError> {
        let tree = self.tree(trees::OAUTH_PENDING)?;
        loop {
            let Some(old) = tree.get(state)? else {
                return Ok(None);
            };
            let record: OAuthPendingRecord = decode(trees::OAUTH_PENDING, state.as_bytes(), &old)?;
            if record.status != PendingStatus::Pending || record.expires_at <= now() {
                return Ok(Some(Err(record)));
            }
            let mut claimed = record.clone();
            claimed.status = PendingStatus::Exchanging;
            if tree
                .compare_and_swap(state, Some(old), Some(encode(&claimed)))?
                .is_ok()
            {
                self.flush()?;
                return Ok(Some(Ok(claimed)));
            }
        }
    }

    /// Sets the final status of a sign-in.
    pub fn finish_pending(
        &self,
        state: &str,
        status: PendingStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        let tree = self.tree(trees::OAUTH_PENDING)?;
        if let Some(old) = tree.get(state)? {
            let mut record: OAuthPendingRecord =
                decode(trees::OAUTH_PENDING, state.as_bytes(), &old)?;
            record.status = status;
            record.reason = reason;
            tree.insert(state.as_bytes(), encode(&record))?;
            self.flush()?;
        }
        Ok(())
    }

    /// Every started sign-in with its state (for key rotation and purging).
    pub fn all_pending(&self) -> Result<Vec<(String, OAuthPendingRecord)>, StoreError> {
        self.tree(trees::OAUTH_PENDING)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode(trees::OAUTH_PENDING, &k, &v)?,
                ))
            })
            .collect()
    }

    /// Deletes sign-ins that expired more than `keep_secs` ago; returns how many.
    pub fn purge_pending(&self, keep_secs: i64) -> Result<usize, StoreError> {
        let tree = self.tree(trees::OAUTH_PENDING)?;
        let mut removed = 0;
        for (state, record) in self.all_pending()? {
            if record.expires_at + keep_secs <= now() {
                tree.remove(state.as_bytes())?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.flush()?;
        }
        Ok(removed)
    }

    // ---- sessions ----

    /// A session by id.
    pub fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.tree(trees::SESSIONS)?
            .get(id)?
            .map(|v| decode(trees::SESSIONS, id.as_bytes(), &v))
            .transpose()
    }

    /// Stores a session record.
    pub fn put_session(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.tree(trees::SESSIONS)?
            .insert(record.id.as_bytes(), encode(record))?;
        self.flush()
    }

    /// Deletes a session record. Returns whether it existed.
    pub fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.tree(trees::SESSIONS)?.remove(id)?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// Every session record.
    pub fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.tree(trees::SESSIONS)?
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(trees::SESSIONS, &k, &v)
            })
            .collect()
    }

    /// Number of records in each tree, for `user list` and diagnostics.
    pub fn tree_sizes(&self) -> Result<Vec<(&'static str, usize)>, StoreError> {
        trees::ALL
            .iter()
            .map(|name| Ok((*name, self.tree(name)?.len())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialKind;
    use crate::crypto::{Keyring, MasterKey};
    use crate::store::Validation;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn first_user_is_admin_and_policy_closes_registration() {
        let (_dir, store) = open();
        let CreateUser::Created(first) = store
            .create_user("Alice", "h", Role::User, Admission::FirstUserOnly, u32::MAX)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(first.role, Role::Admin);
        assert!(matches!(
            store
                .create_user("bob", "h", Role::User, Admission::FirstUserOnly, u32::MAX)
                .unwrap(),
            CreateUser::Closed
        ));
        assert!(matches!(
            store
                .create_user("ALICE", "h", Role::User, Admission::Admin, u32::MAX)
                .unwrap(),
            CreateUser::Taken
        ));
        let CreateUser::Created(bob) = store
            .create_user("bob", "h", Role::User, Admission::Admin, u32::MAX)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(bob.role, Role::User);
        assert_eq!(store.user_by_name("alice").unwrap().unwrap().id, first.id);
        assert_eq!(store.list_users().unwrap().len(), 2);
    }

    #[test]
    fn a_second_open_is_refused_with_database_in_use() {
        let (dir, _store) = open();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("database in use"), "{err}");
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_record_names_tree_and_key() {
        let (_dir, store) = open();
        store
            .tree(trees::USERS)
            .unwrap()
            .insert("deadbeef", &b"{not json"[..])
            .unwrap();
        let err = store.user("deadbeef").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"users\"") && text.contains("deadbeef"),
            "{text}"
        );
        assert!(store.list_users().is_err());
    }

    #[test]
    fn disabling_revokes_tokens() {
        let (_dir, store) = open();
        let CreateUser::Created(user) = store
            .create_user("a", "h", Role::User, Admission::Open, u32::MAX)
            .unwrap()
        else {
            panic!()
        };
        let record = TokenRecord {
            v: 1,
            user_id: user.id.clone(),
            kind: super::super::TokenKind::Login,
            label: None,
            created_at: now(),
            expires_at: now() + 60,
        };
        store.insert_token(&[1; 32], &record).unwrap();
        assert!(store.token(&[1; 32]).unwrap().is_some());
        store.set_disabled(&user.id, true).unwrap();
        assert!(store.token(&[1; 32]).unwrap().is_none());
        assert!(store.user(&user.id).unwrap().unwrap().disabled);
    }

    #[test]
    fn credential_generation_grows_and_cas_protects() {
        let (_dir, store) = open();
        let keyring = Keyring::new(MasterKey::from_bytes([3; 32]));
        let record = CredentialRecord {
            v: 1,
            kind: CredentialKind::ApiKey,
            hint: "…".into(),
            validated_at: None,
            validation: Validation::Ok,
            needs_reauth: false,
            expires_at: None,
            updated_at: now(),
            generation: 0,
            sealed: keyring.seal("u", "credential", b"x").unwrap(),
        };
        let first = store.put_credential("u", record.clone()).unwrap();
        assert_eq!(first.generation, 1);
        let second = store.put_credential("u", record.clone()).unwrap();
        assert_eq!(second.generation, 2);
        assert!(
            !store.replace_credential("u", &first, &record).unwrap(),
            "stale expected value"
        );
        assert!(store.replace_credential("u", &second, &record).unwrap());
        let updated = store
            .update_credential("u", |r| r.needs_reauth = true)
            .unwrap()
            .unwrap();
        assert!(updated.needs_reauth);
        assert!(store.delete_credential("u").unwrap());
        assert!(store.credential("u").unwrap().is_none());
    }

    #[test]
    fn health_check_round_trips() {
        let (_dir, store) = open();
        store.health_check().unwrap();
    }
}

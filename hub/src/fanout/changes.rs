//! What an organisation change means for queues and sessions: a new unit or group gets a
//! queue named by its address; a member assigned to a unit (or added to a group) has every
//! device subscribed to it from the next message on, and live sessions reload their queues; a
//! deactivated member's sessions are closed; a deleted member's account is closed.

use bytes::Bytes;
use switchboard_protocol::{Address, Envelope, Flags, MessageId};

use crate::{
    fanout::{Hub, entry::encode_message},
    org::{Actor, Change, Command, Event, OrgError, OrgState, ServiceError},
    store::{
        DeviceRecord, EnqueueRequest, QueueId, StartAt, StoreError, UserStatus, system_clock_ms,
    },
};

/// Whether a change can change who reads a group.
fn touches_groups(change: &Change) -> bool {
    matches!(
        change,
        Change::MemberDeleted { .. }
            | Change::Applied(
                Command::CreateGroup { .. }
                    | Command::AddGroupMember { .. }
                    | Command::RemoveGroupMember { .. }
                    | Command::AddSubgroup { .. }
                    | Command::DeleteGroup { .. }
                    | Command::DeleteMember { .. }
            )
    )
}

/// The users whose unit lines a change can change.
fn users_whose_lines_change(change: &Change) -> Vec<&str> {
    match change {
        Change::Applied(
            Command::Assign { user, .. }
            | Command::MoveMember { user, .. }
            | Command::ChangeMemberType { user, .. }
            | Command::Reactivate { user, .. }
            | Command::Deactivate { user, .. },
        )
        | Change::MemberDeactivated { user, .. } => vec![user],
        Change::MemberDeleted { reassign_to: Some(heir), .. }
        | Change::Applied(Command::DeleteMember { reassign_to: Some(heir), .. }) => vec![heir],
        _ => Vec::new(),
    }
}

/// The unit lines `user` reads in `state`, in every organisation.
fn unit_lines_read_by(state: &OrgState, user: &str) -> std::collections::BTreeSet<String> {
    state
        .memberships(user)
        .flat_map(|m| state.lines_of(m.org, user))
        .map(|unit| unit.address.clone())
        .collect()
}

impl Hub {
    /// Runs an organisation command by `actor`, then does what the change means for queues
    /// and sessions.
    pub async fn org_execute(
        &self,
        actor: &Actor,
        mut command: Command,
    ) -> Result<Event, ServiceError> {
        if let Command::CreateOrg { seat_limit: seat_limit @ None, .. } = &mut command {
            *seat_limit = Some(self.config().org.default_seats);
        }
        if let Command::CreateOrg { domain, .. } | Command::AddDomain { domain, .. } = &command
            && self.config().org.is_public_mail_domain(domain)
        {
            return Err(OrgError::Field {
                field: "domain".into(),
                why: format!(
                    "{domain} is a public mail domain; no organisation may take it \
                     (see [org] public_mail_domains)"
                ),
            }
            .into());
        }
        if let Command::CreateUnit { line, .. } | Command::CreateOrg { line, .. } = &command
            && self.directory.contains(line.as_str())
        {
            return Err(OrgError::Taken(line.clone()).into());
        }
        self.require_named_users(&command).await?;
        let before = self.org.snapshot();
        let event = self.org.execute(actor, command).await?;
        let after = self.org.snapshot();
        if touches_groups(&event.change) {
            self.sync_groups(&before, &after).await?;
        }
        for user in users_whose_lines_change(&event.change) {
            self.sync_lines(user, &before, &after).await?;
        }
        self.apply_change(&event.change).await?;
        if let Change::Applied(Command::AddGroupMember { group, user }) = &event.change
            && !before.group(group).is_some_and(|g| g.members.contains(user))
        {
            self.send_group_invitation(&after, actor, group, user).await?;
        }
        Ok(event)
    }

    /// Tells a user added to a group, in the name of the group's owner: a `NOTICE` in their
    /// own queue (see the protocol's envelope). Users of other hubs get none yet.
    async fn send_group_invitation(
        &self,
        state: &OrgState,
        actor: &Actor,
        group: &str,
        user: &str,
    ) -> Result<(), StoreError> {
        let (Some(group), Some(queue)) = (state.group(group), self.directory.queue(user)) else {
            return Ok(());
        };
        let (Ok(from), Ok(to)) = (Address::parse(&group.owner), Address::parse(user)) else {
            return Ok(());
        };
        let added_by = match actor {
            Actor::User(by) => by.as_str(),
            Actor::Operator => "operator",
            Actor::Hub => "hub",
        };
        let body = serde_json::json!({
            "notice": "group_invitation",
            "group": group.address,
            "owner": group.owner,
            "added_by": added_by,
        });
        let id = MessageId::from_parts(system_clock_ms(), rand::random());
        self.write_notice(queue, id, from, to, body).await.map(drop)
    }

    /// Writes a `NOTICE` (see the protocol's envelope) with the id `id` in the name of `from`
    /// into `queue`, and wakes its readers. The same (`from`, `id`) again within the dedupe
    /// window writes nothing. Answers the notice's sequence in `queue` (the first copy's).
    pub async fn write_notice(
        &self,
        queue: QueueId,
        id: MessageId,
        from: Address,
        to: Address,
        body: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let now = system_clock_ms();
        let envelope = Envelope {
            id,
            from,
            to,
            created_ms: now,
            ttl_secs: self.config().delivery.default_ttl_secs,
            flags: Flags::NOTICE,
            body: Bytes::from(body.to_string()),
        };
        let request = EnqueueRequest {
            id: envelope.id.0,
            sender: Bytes::copy_from_slice(envelope.from.as_str().as_bytes()),
            expires_ms: now.saturating_add(u64::from(envelope.ttl_secs) * 1000),
            payload: encode_message(&envelope),
        };
        let enqueued = self.store.enqueue(queue, request).await?;
        self.notifier.wake(queue);
        Ok(enqueued.seq)
    }

    /// Users a command gives powers or ownership to must be users of this hub who may log in:
    /// no group, admin or ownership for an address nobody holds, or a closed account.
    async fn require_named_users(&self, command: &Command) -> Result<(), ServiceError> {
        let (field, named) = match command {
            Command::CreateGroup { owner, .. } => ("owner", owner),
            Command::NameAdmin { user, .. } | Command::NameGroupAdmin { user, .. } => {
                ("user", user)
            }
            Command::TransferOwnership { to, .. } => ("to", to),
            _ => return Ok(()),
        };
        crate::org::account_in(field, named)?;
        let name = named.clone();
        let user = self.store.blocking(move |store| store.user(&name)).await?;
        match user {
            Some(user) if user.status == UserStatus::Active && !self.is_deactivated(named) => {
                Ok(())
            }
            _ => {
                Err(OrgError::Invalid(format!("{named} is not an active user of this hub")).into())
            }
        }
    }

    async fn apply_change(&self, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::OrgCreated { root, org } => {
                let queue = self.add_line(&root.address).await?;
                // The owner belongs to the root unit.
                self.subscribe_user(&org.owner, queue).await?;
            }
            Change::UnitCreated(unit) => {
                self.add_line(&unit.address).await?;
            }
            Change::Applied(Command::SetIncludeSubUnits { unit, include, .. }) => {
                let snapshot = self.org.snapshot();
                if let Some(line) = snapshot.unit(*unit) {
                    let queue = self.add_line(&line.address).await?;
                    if *include {
                        for member in snapshot.readers_of_line(*unit) {
                            self.subscribe_user(&member.user, queue).await?;
                        }
                    } else {
                        // Members below the unit stop reading its line; its own members stay.
                        let below: Vec<String> = snapshot
                            .units()
                            .filter(|u| u.id != *unit && snapshot.is_within(u.id, *unit))
                            .flat_map(|u| snapshot.members_of(u.id).map(|m| m.user.clone()))
                            .collect();
                        for user in below {
                            self.unsubscribe_user(&user, queue).await?;
                        }
                    }
                }
            }
            // Deleting a member closes their account, with or without an heir.
            Change::MemberDeleted { user, .. }
            | Change::Applied(Command::DeleteMember { user, reassign_to: None, .. }) => {
                self.close_account(user).await?;
            }
            Change::MemberDeactivated { user, .. }
            | Change::Applied(Command::Deactivate { user, .. }) => {
                for device in self.devices_of(user).await? {
                    self.sessions.kick(device.device);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Makes `user`'s devices read the unit lines the change gave them and stop reading those
    /// it took away (groups are [`Hub::sync_groups`]'s).
    async fn sync_lines(
        &self,
        user: &str,
        before: &OrgState,
        after: &OrgState,
    ) -> Result<(), StoreError> {
        let old = unit_lines_read_by(before, user);
        let new = unit_lines_read_by(after, user);
        for line in new.difference(&old) {
            let queue = self.add_line(line).await?;
            self.subscribe_user(user, queue).await?;
        }
        for line in old.difference(&new) {
            if let Some(queue) = self.directory.queue(line) {
                self.unsubscribe_user(user, queue).await?;
            }
        }
        Ok(())
    }

    /// A member deleted without an heir: their devices go with them (revoked, reading
    /// nothing), and their personal queue is closed, its waiting messages deleted, the
    /// address no longer a recipient.
    async fn close_account(&self, user: &str) -> Result<(), StoreError> {
        let devices = self.devices_of(user).await?;
        for device in devices.iter().filter(|d| !d.revoked) {
            self.store.revoke_device(&device.name).await?;
            self.sessions.kick(device.device);
        }
        match self.store.close_account(user).await {
            Ok(_) | Err(StoreError::UnknownUser(_)) => {}
            Err(error) => return Err(error),
        }
        self.directory.remove(user);
        Ok(())
    }

    /// Creates a line's queue (idempotent) and puts it in the directory.
    async fn add_line(&self, address: &str) -> Result<QueueId, StoreError> {
        let queue = self.store.create_queue(address).await?;
        self.directory.insert(address, queue);
        Ok(queue)
    }

    /// Every device record of `user`.
    async fn devices_of(&self, user: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        let name = user.to_string();
        self.store.blocking(move |store| store.device_records(Some(&name))).await
    }

    /// Makes every device of `user` read `queue` from now on, and tells their live sessions.
    async fn subscribe_user(&self, user: &str, queue: QueueId) -> Result<(), StoreError> {
        let devices = self.devices_of(user).await?;
        for device in devices.iter().filter(|d| !d.revoked) {
            self.store.subscribe(device.device, queue, StartAt::Next).await?;
            self.sessions.refresh(device.device);
        }
        Ok(())
    }

    /// Stops every device of `user` reading `queue`.
    async fn unsubscribe_user(&self, user: &str, queue: QueueId) -> Result<(), StoreError> {
        let devices = self.devices_of(user).await?;
        for device in devices.iter().filter(|d| !d.revoked) {
            self.store.unsubscribe(device.device, queue).await?;
            self.sessions.refresh(device.device);
        }
        Ok(())
    }

    /// Makes group queues' readers follow a change: who reads a group now and did not
    /// before is subscribed (from the next message), who no longer does is unsubscribed.
    async fn sync_groups(&self, before: &OrgState, after: &OrgState) -> Result<(), StoreError> {
        let mut addresses: Vec<String> = before.groups().map(|g| g.address.clone()).collect();
        addresses.extend(after.groups().map(|g| g.address.clone()));
        addresses.sort();
        addresses.dedup();
        for address in addresses {
            let old = before.group_readers(&address);
            let new = after.group_readers(&address);
            if old == new && after.group(&address).is_some() {
                continue;
            }
            let queue = self.add_line(&address).await?;
            for user in new.difference(&old) {
                self.subscribe_user(user, queue).await?;
            }
            for user in old.difference(&new) {
                self.unsubscribe_user(user, queue).await?;
            }
        }
        Ok(())
    }
}

//! What an organisation change means for queues and sessions: a new unit or group gets a
//! queue named by its address; a member assigned to a unit (or added to a group) has every
//! device subscribed to it from the next message on, and live sessions reload their queues; a
//! deactivated member's sessions are closed; a deleted member's account is closed.

use crate::{
    fanout::Hub,
    org::{Actor, Change, Command, Event, OrgError, OrgState, ServiceError},
    store::{DeviceRecord, QueueId, StartAt, StoreError},
};

impl Hub {
    /// Runs an organisation command by `actor`, then does what the change means for queues
    /// and sessions.
    pub async fn org_execute(
        &self,
        actor: &Actor,
        command: Command,
    ) -> Result<Event, ServiceError> {
        if let Command::CreateUnit { line, .. } | Command::CreateOrg { line, .. } = &command
            && self.directory.contains(line.as_str())
        {
            return Err(OrgError::Taken(line.clone()).into());
        }
        let before = self.org.snapshot();
        let event = self.org.execute(actor, command).await?;
        if let Change::Applied(
            Command::CreateGroup { .. }
            | Command::AddGroupMember { .. }
            | Command::RemoveGroupMember { .. }
            | Command::AddSubgroup { .. }
            | Command::DeleteGroup { .. }
            | Command::DeleteMember { .. },
        ) = &event.change
        {
            self.sync_groups(&before, &self.org.snapshot()).await?;
        }
        self.apply_change(&event.change).await?;
        Ok(event)
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
            Change::Applied(Command::Assign { org, user, .. })
            | Change::Applied(Command::DeleteMember { reassign_to: Some(user), org, .. }) => {
                // An heir may have taken over a unit: their devices read its lines too.
                let snapshot = self.org.snapshot();
                for unit in snapshot.lines_of(*org, user) {
                    let queue = self.add_line(&unit.address).await?;
                    self.subscribe_user(user, queue).await?;
                }
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
            Change::Applied(Command::DeleteMember { user, reassign_to: None, .. }) => {
                self.close_account(user).await?;
            }
            Change::Applied(Command::Deactivate { user, .. }) => {
                for device in self.devices_of(user).await? {
                    self.sessions.kick(device.device);
                }
            }
            _ => {}
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

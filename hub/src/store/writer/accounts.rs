//! Registry commands on users and devices, in the shard that owns the account's queue, so that
//! enrolment (check the code, refuse a taken name, register, spend the code) is one batch.

use super::*;

impl ShardWriter {
    /// A registry record as this batch leaves it.
    pub(super) fn record(
        &self,
        staged: &Staged,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match staged.records.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.db.get(key)?),
        }
    }

    /// The keys of the enrolment codes of `account`, on disk or staged in this batch.
    pub(super) fn codes_of(
        &self,
        account: QueueId,
        staged: &Staged,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut prefix = vec![codec::ENROLMENT_CODE];
        prefix.extend_from_slice(&account.0.to_be_bytes());
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(codec::prefix_end(&prefix));
        let mode = rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        let mut keys = Vec::new();
        for item in self.db.iterator_opt(mode, options) {
            let (key, _) = item?;
            if !matches!(staged.records.get(&key[..]), Some(None)) {
                keys.push(key.to_vec());
            }
        }
        for (key, value) in &staged.records {
            if value.is_some() && key.starts_with(&prefix) && !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        Ok(keys)
    }

    pub(super) fn create_user(
        &mut self,
        name: Box<str>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<UserRecord, StoreError> {
        let key = codec::user_key(&name);
        if self.record(staged, &key)?.is_some() {
            return Err(StoreError::Exists(name.into()));
        }
        let queue = self.create_queue(name.clone(), batch, staged)?;
        let user = UserRecord {
            name: name.into(),
            queue,
            status: UserStatus::Active,
            created_ms: (self.shared.clock)(),
        };
        put_record(batch, staged, key, codec::encode_user(&user));
        Ok(user)
    }

    pub(super) fn enrol(
        &mut self,
        account: QueueId,
        name: Box<str>,
        public_key: [u8; 32],
        code: Option<Vec<u8>>,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceRecord, StoreError> {
        let now = (self.shared.clock)();
        if let Some(code) = &code {
            let expires = match self.record(staged, code)? {
                Some(value) => decode_u64(&value, "enrolment code")?,
                None => return Err(StoreError::EnrolmentRefused("unknown or already used code")),
            };
            if expires <= now {
                return Err(StoreError::EnrolmentRefused("the code has expired"));
            }
        }
        let key = codec::device_key(&name);
        if self.record(staged, &key)?.is_some() {
            return Err(StoreError::Exists(name.into()));
        }
        let device = self.add_device(account, batch, staged)?;
        let record = DeviceRecord {
            name: name.into(),
            device,
            account,
            public_key,
            revoked: false,
            enrolled_ms: now,
            kind: Default::default(),
        };
        if let Some(code) = code {
            batch.delete(code.clone());
            staged.records.insert(code, None);
        }
        put_record(batch, staged, key, codec::encode_device(&record));
        Ok(record)
    }

    pub(super) fn set_kind(
        &mut self,
        name: &str,
        kind: crate::store::DeviceKind,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceRecord, StoreError> {
        let key = codec::device_key(name);
        let value =
            self.record(staged, &key)?.ok_or_else(|| StoreError::UnknownDeviceName(name.into()))?;
        let mut record = codec::decode_device(name.into(), &value)?;
        if record.kind != kind {
            record.kind = kind;
            put_record(batch, staged, key, codec::encode_device(&record));
        }
        Ok(record)
    }

    pub(super) fn revoke(
        &mut self,
        name: &str,
        batch: &mut Batch,
        staged: &mut Staged,
    ) -> Result<DeviceRecord, StoreError> {
        let key = codec::device_key(name);
        let value =
            self.record(staged, &key)?.ok_or_else(|| StoreError::UnknownDeviceName(name.into()))?;
        let mut record = codec::decode_device(name.into(), &value)?;
        if !record.revoked {
            record.revoked = true;
            put_record(batch, staged, key, codec::encode_device(&record));
        }
        Ok(record)
    }
}

//! The handshake: `hello`, a lookup of the user, `challenge`, `proof` checked against the
//! device's key with `verify_strict`, a lookup of the device (or its enrolment with a code),
//! then `welcome`.

use ed25519_dalek::{Signature, VerifyingKey};
use switchboard_protocol::{Address, Challenge, Frame, Hello, Proof, Welcome, proof_message};

use crate::{
    fanout::{Account, Login},
    session::{Action, Now, Open, Session, SessionError, State},
    store::{DeviceRecord, QueueId},
};

/// Why an enrolment failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    /// The code is unknown, spent, expired or issued for another user.
    #[error("{0}")]
    Refused(String),
    /// Another device of that name exists.
    #[error("this device name is taken")]
    Taken,
    /// The store failed.
    #[error("{0}")]
    Failed(String),
}

/// A device to enrol with a code, in one atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The user's queue.
    pub account: QueueId,
    /// The device's address.
    pub device: Address,
    /// Its ed25519 public key.
    pub public_key: [u8; 32],
    /// The one-time code.
    pub code: String,
}

/// Where the handshake stands.
pub(super) struct Handshake {
    nonce: [u8; 32],
    step: Step,
}

enum Step {
    Hello,
    User(Hello),
    Proof(Hello, QueueId),
    Device(Hello, QueueId),
    Enrolling,
}

impl Handshake {
    pub(super) fn new(nonce: [u8; 32]) -> Self {
        Self { nonce, step: Step::Hello }
    }

    pub(super) fn wants_frame(&self) -> bool {
        matches!(self.step, Step::Hello | Step::Proof(..))
    }

    /// The frame the handshake waits for, for errors.
    pub(super) fn expected(&self) -> &'static str {
        match self.step {
            Step::Hello => "hello",
            _ => "proof",
        }
    }
}

impl Session {
    pub(super) fn handshake_frame(&mut self, frame: Frame) {
        let State::Handshake(handshake) = &mut self.state else { return };
        match (std::mem::replace(&mut handshake.step, Step::Enrolling), frame) {
            (Step::Hello, Frame::Hello(hello)) => {
                let Some(account) = hello.device.account() else {
                    return self.close(SessionError::Authentication(
                        "hello.device is not a device address",
                    ));
                };
                handshake.step = Step::User(hello);
                self.actions.push_back(Action::LookupUser(account));
            }
            (Step::Proof(hello, user), Frame::Proof(proof)) => {
                if let Err(error) = verify(&hello, &proof, &handshake.nonce) {
                    return self.close(error);
                }
                let device = hello.device.clone();
                handshake.step = Step::Device(hello, user);
                self.actions.push_back(Action::LookupDevice(device));
            }
            (step, other) => {
                let expected = match step {
                    Step::Hello => "hello",
                    _ => "proof",
                };
                self.close(SessionError::TooEarly { frame: other.frame_type().name(), expected });
            }
        }
    }

    /// The answer to [`Action::LookupUser`].
    pub fn user_looked_up(&mut self, login: Result<Option<Login>, String>) {
        let State::Handshake(handshake) = &mut self.state else { return };
        let Step::User(hello) = std::mem::replace(&mut handshake.step, Step::Enrolling) else {
            return;
        };
        match login {
            Ok(None) => self.close(SessionError::Authentication("unknown user")),
            Ok(Some(login)) if login.deactivated => self.close(SessionError::Deactivated),
            Ok(Some(login)) => {
                let nonce = handshake.nonce;
                handshake.step = Step::Proof(hello, login.queue);
                self.push(&Challenge { nonce }.into());
            }
            Err(error) => self.close(SessionError::Internal(error)),
        }
    }

    /// The answer to [`Action::LookupDevice`].
    pub fn device_looked_up(&mut self, known: Result<Option<DeviceRecord>, String>, now: Now) {
        let State::Handshake(handshake) = &mut self.state else { return };
        let Step::Device(hello, user) = std::mem::replace(&mut handshake.step, Step::Enrolling)
        else {
            return;
        };
        match known {
            // Also the case of an enrolment whose welcome was lost: the code is spent, but the
            // device proved the key it enrolled with.
            Ok(Some(known)) if known.public_key != hello.public_key => {
                self.close(SessionError::Authentication("another key is enrolled for this device"))
            }
            Ok(Some(known)) if known.revoked => self.close(SessionError::Revoked),
            Ok(Some(known)) => self.open(known, now),
            Ok(None) => match hello.enrolment_code {
                None => {
                    self.close(SessionError::Authentication("unknown device; enrol it with a code"))
                }
                Some(code) => self.actions.push_back(Action::Enrol(Enrolment {
                    account: user,
                    device: hello.device,
                    public_key: hello.public_key,
                    code,
                })),
            },
            Err(error) => self.close(SessionError::Internal(error)),
        }
    }

    /// The answer to [`Action::Enrol`].
    pub fn enrolled(&mut self, result: Result<DeviceRecord, EnrolError>, now: Now) {
        if !matches!(&self.state, State::Handshake(h) if matches!(h.step, Step::Enrolling)) {
            return;
        }
        match result {
            Ok(record) => {
                tracing::info!(device = %record.name, "device enrolled");
                self.open(record, now);
            }
            Err(EnrolError::Failed(error)) => self.close(SessionError::Internal(error)),
            Err(error) => self.close(SessionError::Enrolment(error.to_string())),
        }
    }

    /// Authenticated: `welcome`, then the device's queues.
    fn open(&mut self, device: DeviceRecord, now: Now) {
        let account = device.name.split('/').next().and_then(|a| Address::parse(a).ok());
        let Some(address) = account else {
            tracing::error!(device = %device.name, "a device record names no account");
            return self.close(SessionError::Store);
        };
        let account = Account { address, queue: device.account };
        let welcome = Welcome {
            session_id: self.id,
            server_time_ms: now.unix_ms,
            max_payload: self.config.max_payload,
            send_credit: self.config.send_credit,
            window: self.config.window,
            idle_timeout_ms: u32::try_from(self.config.idle_timeout.as_millis())
                .unwrap_or(u32::MAX),
        };
        self.push(&welcome.into());
        tracing::debug!(session_id = self.id, device = %device.name, "session open");
        let id = device.device;
        self.state = State::Open(Box::new(Open::new(device, &self.config, now.instant)));
        self.metrics.sessions_opened.inc();
        self.actions.push_back(Action::Opened { device: id, account });
        self.actions.push_back(Action::LoadReadings { device: id, known: Vec::new() });
    }
}

/// Checks the device's proof of its key.
fn verify(hello: &Hello, proof: &Proof, nonce: &[u8; 32]) -> Result<(), SessionError> {
    let key = match VerifyingKey::from_bytes(&hello.public_key) {
        Ok(key) if !key.is_weak() => key,
        _ => return Err(SessionError::Authentication("not a usable ed25519 public key")),
    };
    let signature = Signature::from_bytes(&proof.signature);
    key.verify_strict(&proof_message(nonce, &hello.device), &signature)
        .map_err(|_| SessionError::Authentication("the proof does not verify"))
}

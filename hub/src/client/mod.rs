//! The device side of the protocol: identity, connect (with enrolment), send, receive, ack.
//!
//! ```no_run
//! # async fn demo(identity: switchboard_hub::client::DeviceIdentity) -> Result<(), Box<dyn std::error::Error>> {
//! use switchboard_hub::client::{Client, Event, client_endpoint};
//! let endpoint = client_endpoint()?;
//! let mut client = Client::connect(&endpoint, &identity, None).await?;
//! let id = client.send_text(&"bob@example.org".parse()?, "hello").await?;
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Accepted(accepted) if accepted == id => break,
//!         Event::Deliver(deliver) => client.ack(deliver.queue, deliver.seq, vec![]).await?,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod admin;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    Ack, Address, AddressKind, Close, Credit, Deliver, DeliverReceipt, Envelope, ErrorCode,
    ErrorFrame, Flags, Frame, Hello, MessageId, Proof, Receipt, Rejected, Send, Welcome,
    proof_message,
};
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::{
    admin::hex,
    net::{
        endpoint,
        framed::{FrameReader, FrameWriter, ReadError, WriteFrameError},
        tls,
    },
    store::system_clock_ms,
};

/// A device's identity: its address, its secret key, and the hub it belongs to.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeviceIdentity {
    /// `user@domain/device`.
    #[serde(with = "address_text")]
    pub address: Address,
    /// The hub's QUIC address.
    pub hub: SocketAddr,
    /// The ed25519 secret key (32 bytes, hex in the file).
    #[serde(with = "hex_bytes")]
    pub secret_key: Vec<u8>,
    /// The hub's certificate (DER, hex in the file), the only one this device accepts.
    #[serde(with = "hex_bytes")]
    pub hub_cert: Vec<u8>,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("address", &self.address)
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

mod address_text {
    use switchboard_protocol::Address;
    pub(super) fn serialize<S: serde::Serializer>(a: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_str())
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        Address::parse(&text).map_err(serde::de::Error::custom)
    }
}

mod hex_bytes {
    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::admin::hex(bytes))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        super::unhex(&text).ok_or_else(|| serde::de::Error::custom("not hex"))
    }
}

/// Bytes from hex digits; `None` for an odd length or a character that is not a hex digit.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The identity file could not be read or written, or is not valid.
    #[error("identity {path}: {reason}")]
    Identity {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A device address was expected.
    #[error("{0} is not a device address (user@domain/device)")]
    NotADevice(Address),
    /// Setting up QUIC or TLS failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The QUIC connection failed.
    #[error("connection: {0}")]
    Connect(String),
    /// The hub closed the session.
    #[error("the hub refused: {code}: {reason}")]
    Refused {
        /// The hub's code.
        code: ErrorCode,
        /// The hub's reason.
        reason: String,
    },
    /// The hub sent something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Writing to the hub failed.
    #[error(transparent)]
    Write(#[from] WriteFrameError),
}

impl DeviceIdentity {
    /// A new identity with a fresh key pair.
    pub fn generate(
        address: Address,
        hub: SocketAddr,
        hub_cert: Vec<u8>,
    ) -> Result<Self, ClientError> {
        if address.kind() != AddressKind::Device {
            return Err(ClientError::NotADevice(address));
        }
        let secret: [u8; 32] = rand::random();
        Ok(Self { address, hub, secret_key: secret.to_vec(), hub_cert })
    }

    fn signing_key(&self) -> SigningKey {
        let mut secret = [0u8; 32];
        let n = self.secret_key.len().min(32);
        secret[..n].copy_from_slice(&self.secret_key[..n]);
        SigningKey::from_bytes(&secret)
    }

    /// The device's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    /// The account the device belongs to.
    pub fn account(&self) -> Address {
        // An identity holds a device address (checked on creation and load).
        self.address.account().expect("a device address has an account")
    }

    /// Reads an identity file.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let bad =
            |reason: String| ClientError::Identity { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let identity: Self = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if identity.address.kind() != AddressKind::Device || identity.secret_key.len() != 32 {
            return Err(bad("not a device address or not a 32-byte key".into()));
        }
        Ok(identity)
    }

    /// Writes the identity to `path`, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        let bad =
            |reason: String| ClientError::Identity { path: path.display().to_string(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        }
        let text = toml::to_string(self).map_err(|e| bad(e.to_string()))?;
        tls::write_private(path, text.as_bytes()).map_err(|e| bad(e.to_string()))
    }
}

/// A QUIC endpoint for clients (one can carry many connections), on an ephemeral port.
pub fn client_endpoint() -> Result<quinn::Endpoint, ClientError> {
    client_endpoint_at(SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// A QUIC endpoint for clients bound at `local`, with 4 MiB socket buffers.
pub fn client_endpoint_at(local: SocketAddr) -> Result<quinn::Endpoint, ClientError> {
    let socket =
        endpoint::udp_socket(local, 4 << 20).map_err(|e| ClientError::Setup(e.to_string()))?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| ClientError::Setup("no async runtime".into()))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|e| ClientError::Setup(e.to_string()))
}

/// Connection settings of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// UDP segmentation offload (turn off where an interface fails with it).
    pub segmentation_offload: bool,
    /// Idle timeout of the connection.
    pub idle_timeout: Duration,
    /// QUIC keep-alive interval (keeps an idle session open).
    pub keep_alive: Duration,
    /// How long connecting may take, QUIC and TLS handshake and the device's proof included.
    /// A handshake whose packets were lost in a burst otherwise waits for the idle timeout.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            segmentation_offload: true,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What the hub sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A sent message is durable at the hub.
    Accepted(MessageId),
    /// A sent message was refused.
    Rejected(Rejected),
    /// A message from a queue this device reads; acknowledge it with [`ClientHandle::ack`].
    Deliver(Deliver),
    /// A receipt from a queue this device reads; acknowledge it like a message.
    Receipt(DeliverReceipt),
    /// The hub reported an error that did not end the session.
    Error(ErrorFrame),
    /// The session ended.
    Closed {
        /// The hub's code (normal when the stream simply ended).
        code: ErrorCode,
        /// Why.
        reason: String,
    },
}

/// A connected device.
pub struct Client {
    handle: ClientHandle,
    events: mpsc::Receiver<Event>,
    welcome: Welcome,
}

/// The sending side of a connected device; cheap to clone and usable from many tasks while
/// another task reads the events. [`Client`] dereferences to it.
#[derive(Clone)]
pub struct ClientHandle {
    identity_address: Address,
    account: Address,
    connection: quinn::Connection,
    writer: Arc<Mutex<FrameWriter>>,
    credit: Arc<Semaphore>,
}

impl std::ops::Deref for Client {
    type Target = ClientHandle;
    fn deref(&self) -> &ClientHandle {
        &self.handle
    }
}

impl Client {
    /// Connects to the identity's hub and proves the device's key; with `enrolment_code`, the
    /// first connection enrols the device.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        identity: &DeviceIdentity,
        enrolment_code: Option<&str>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, identity, enrolment_code, &ClientOptions::default()).await
    }

    /// [`Client::connect`] with explicit connection settings.
    pub async fn connect_with(
        endpoint: &quinn::Endpoint,
        identity: &DeviceIdentity,
        enrolment_code: Option<&str>,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let connecting = Self::connect_inner(endpoint, identity, enrolment_code, options);
        match tokio::time::timeout(options.connect_timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Connect(format!(
                "no welcome from the hub within {:?}",
                options.connect_timeout
            ))),
        }
    }

    async fn connect_inner(
        endpoint: &quinn::Endpoint,
        identity: &DeviceIdentity,
        enrolment_code: Option<&str>,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let crypto = tls::client_crypto(identity.hub_cert.clone())
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(endpoint::transport(
            options.idle_timeout,
            Some(options.keep_alive),
            options.segmentation_offload,
        ));
        let connection = endpoint
            .connect_with(config, identity.hub, "localhost")
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (send, recv) =
            connection.open_bi().await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut writer = FrameWriter::new(send, switchboard_protocol::DEFAULT_MAX_PAYLOAD);
        let mut reader = FrameReader::new(recv, switchboard_protocol::DEFAULT_MAX_PAYLOAD);
        let hello = Hello {
            device: identity.address.clone(),
            public_key: identity.public_key(),
            enrolment_code: enrolment_code.map(str::to_string),
            agent: format!("switchboard-hub-client/{}", env!("CARGO_PKG_VERSION")),
        };
        writer.send(&hello.into()).await?;
        let nonce = match expect(&mut reader).await? {
            Frame::Challenge(challenge) => challenge.nonce,
            other => return Err(unexpected(other)),
        };
        let signature = identity.signing_key().sign(&proof_message(&nonce, &identity.address));
        writer.send(&Proof { signature: signature.to_bytes() }.into()).await?;
        let welcome = match expect(&mut reader).await? {
            Frame::Welcome(welcome) => welcome,
            other => return Err(unexpected(other)),
        };
        writer.set_max_payload(welcome.max_payload);
        let credit = Arc::new(Semaphore::new(welcome.send_credit as usize));
        let (tx, events) = mpsc::channel(4096);
        tokio::spawn(read_events(reader, tx, credit.clone()));
        let handle = ClientHandle {
            identity_address: identity.address.clone(),
            account: identity.account(),
            connection,
            writer: Arc::new(Mutex::new(writer)),
            credit,
        };
        Ok(Self { handle, events, welcome })
    }

    /// The hub's welcome.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// A handle for sending from other tasks.
    pub fn handle(&self) -> ClientHandle {
        self.handle.clone()
    }

    /// The next event; `None` after [`Event::Closed`] was returned.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event if one has arrived already, without waiting. A device that takes every
    /// waiting delivery this way before acknowledging can acknowledge them all with one
    /// cumulative ack per queue.
    pub fn try_next_event(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Ends the session with `close(normal)`.
    pub async fn close(self) {
        self.handle.close().await;
    }
}

impl ClientHandle {
    /// This device's address.
    pub fn address(&self) -> &Address {
        &self.identity_address
    }

    /// This device's account.
    pub fn account(&self) -> &Address {
        &self.account
    }

    /// Sends an envelope; waits while the send credit is used up. The answer arrives as
    /// [`Event::Accepted`] or [`Event::Rejected`].
    pub async fn send(&self, envelope: Envelope) -> Result<(), ClientError> {
        let permit = self
            .credit
            .acquire()
            .await
            .map_err(|_| ClientError::Connect("session ended".into()))?;
        permit.forget();
        self.writer.lock().await.send(&Send { envelope }.into()).await?;
        Ok(())
    }

    /// Sends `text` to `to` with a new id; returns the id.
    pub async fn send_text(&self, to: &Address, text: &str) -> Result<MessageId, ClientError> {
        let envelope =
            self.envelope(to, Bytes::copy_from_slice(text.as_bytes()), Flags::WANT_RECEIPTS);
        let id = envelope.id;
        self.send(envelope).await?;
        Ok(id)
    }

    /// A new envelope from this device's account.
    pub fn envelope(&self, to: &Address, body: Bytes, flags: Flags) -> Envelope {
        let now = system_clock_ms();
        Envelope {
            id: MessageId::from_parts(now, rand::random()),
            from: self.account.clone(),
            to: to.clone(),
            created_ms: now,
            ttl_secs: 0,
            flags,
            body,
        }
    }

    /// Acknowledges every entry of `queue` up to `up_to`, and `selective` ones above it.
    pub async fn ack(
        &self,
        queue: Address,
        up_to: u64,
        selective: Vec<u64>,
    ) -> Result<(), ClientError> {
        self.writer.lock().await.send(&Ack { queue, up_to, selective }.into()).await?;
        Ok(())
    }

    /// Sends a receipt (read, answered) for a message.
    pub async fn receipt(&self, receipt: Receipt) -> Result<(), ClientError> {
        self.writer.lock().await.send(&receipt.into()).await?;
        Ok(())
    }

    /// Raises this device's delivery window by `grant`.
    pub async fn credit(&self, grant: u32) -> Result<(), ClientError> {
        self.writer.lock().await.send(&Credit { grant }.into()).await?;
        Ok(())
    }

    /// Sends any frame (for tests of the hub's handling of odd input).
    pub async fn send_frame(&self, frame: Frame) -> Result<(), ClientError> {
        self.writer.lock().await.send(&frame).await?;
        Ok(())
    }

    /// Sends raw bytes on the session's stream (for tests of the hub's handling of garbage).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut writer = self.writer.lock().await;
        writer.flush().await.map_err(WriteFrameError::from)?;
        writer.write_raw(bytes).await.map_err(WriteFrameError::from)?;
        Ok(())
    }

    /// Ends the session with `close(normal)`.
    pub async fn close(&self) {
        let mut writer = self.writer.lock().await;
        let _ = writer.push(&Close { code: ErrorCode::NORMAL, reason: "bye".into() }.into());
        writer.finish().await;
        self.connection.close(0u32.into(), b"bye");
    }
}

async fn expect(reader: &mut FrameReader) -> Result<Frame, ClientError> {
    match reader.next().await {
        Ok(Some(Frame::Close(close))) => {
            Err(ClientError::Refused { code: close.code, reason: close.reason })
        }
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(ClientError::Connect("the hub ended the stream".into())),
        Err(ReadError::Decode(error)) => Err(ClientError::Protocol(error.to_string())),
        Err(ReadError::Stream(error)) => Err(ClientError::Connect(error.to_string())),
    }
}

fn unexpected(frame: Frame) -> ClientError {
    ClientError::Protocol(format!("unexpected {} during the handshake", frame.frame_type().name()))
}

async fn read_events(mut reader: FrameReader, tx: mpsc::Sender<Event>, credit: Arc<Semaphore>) {
    loop {
        let event = match reader.next().await {
            Ok(Some(Frame::Accepted(accepted))) => {
                credit.add_permits(1);
                Event::Accepted(accepted.id)
            }
            Ok(Some(Frame::Rejected(rejected))) => {
                credit.add_permits(1);
                Event::Rejected(rejected)
            }
            Ok(Some(Frame::Deliver(deliver))) => Event::Deliver(deliver),
            Ok(Some(Frame::DeliverReceipt(receipt))) => Event::Receipt(receipt),
            Ok(Some(Frame::Error(error))) => Event::Error(error),
            Ok(Some(Frame::Credit(grant))) => {
                credit.add_permits(grant.grant as usize);
                continue;
            }
            Ok(Some(Frame::Ping(_) | Frame::Pong(_))) => continue,
            Ok(Some(Frame::Close(close))) => {
                Event::Closed { code: close.code, reason: close.reason }
            }
            Ok(Some(other)) => Event::Error(ErrorFrame {
                code: ErrorCode::UNEXPECTED_FRAME,
                text: format!("the hub sent {}", other.frame_type().name()),
            }),
            Ok(None) => Event::Closed { code: ErrorCode::NORMAL, reason: "stream ended".into() },
            Err(ReadError::Decode(error)) if !error.is_fatal() => {
                Event::Error(ErrorFrame { code: error.code(), text: error.to_string() })
            }
            Err(error) => Event::Closed { code: ErrorCode::INTERNAL, reason: error.to_string() },
        };
        let last = matches!(event, Event::Closed { .. });
        if tx.send(event).await.is_err() || last {
            credit.close();
            return;
        }
    }
}

/// Hex of a public key, for display.
pub fn key_fingerprint(key: &[u8; 32]) -> String {
    hex(&key[..8])
}

//! UDP sockets with large buffers, and QUIC transport settings shared by the hub and clients.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds a UDP socket at `addr` asking the kernel for `buffer` bytes of receive and send
/// buffer. The kernel may grant less (`net.core.rmem_max`); what it granted is logged.
pub fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // A refused size is not fatal: the socket still works, with the kernel's maximum.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    let granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < buffer {
        tracing::debug!(
            asked = buffer,
            granted,
            "UDP receive buffer is smaller than asked (net.core.rmem_max)"
        );
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Transport settings: one bidirectional stream per connection, no unidirectional ones, the
/// given idle timeout, and optional segmentation offload.
pub fn transport(
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    gso: bool,
) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle_timeout)
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
    ));
    transport.keep_alive_interval(keep_alive);
    transport.enable_segmentation_offload(gso);
    Arc::new(transport)
}

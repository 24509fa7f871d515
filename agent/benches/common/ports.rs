//! Ports for the benchmarks' agents and listeners (shared by the `proxy` and `http` benches).

/// A port that was free a moment ago on 127.0.0.1 (UDP or TCP).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

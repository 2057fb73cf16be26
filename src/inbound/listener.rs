//! Binding the proxy's listening socket. The binary and the tests bind through here, so both
//! get the same backlog.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// Binds `address` with a listen backlog of `backlog` connections. The kernel caps it at
/// `net.core.somaxconn`. tokio's own `bind` uses the standard library's 128, which a burst of
/// a few hundred new clients overflows: the overflow's SYNs are dropped and retried a second
/// later, and that second shows up as time to first token. nginx uses 511.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

//! A TCP relay between the board and the broker that a test can cut, as a flaky
//! cellular link or a restarted gateway would.
//!
//! Cutting closes both sides of every relayed connection at once: the broker sees the
//! device vanish (and publishes its last-will), QEMU's reconnecting chardev dials again
//! a second later, and the firmware, which cannot see TCP through its UART, has to
//! notice by its keep-alive and log in again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// A relay from a local port to `upstream`, stopped on drop.
pub struct Proxy {
    /// The port the board connects to.
    pub port: u16,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Relays connections on a free loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("proxy address: {e}"));
        let live = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let accept = {
            let (live, stop) = (live.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(upstream) else { continue };
                    relay(client, server, &live);
                }
            })
        };
        Proxy { port, live, stop, accept: Some(accept) }
    }

    /// Closes every relayed connection (new ones are still accepted).
    pub fn cut(&self) {
        for stream in self.live.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Pumps bytes both ways until either side closes, then closes both.
fn relay(client: TcpStream, server: TcpStream, live: &Mutex<Vec<TcpStream>>) {
    let mut streams = live.lock().unwrap_or_else(PoisonError::into_inner);
    for stream in [&client, &server] {
        if let Ok(clone) = stream.try_clone() {
            streams.push(clone);
        }
    }
    drop(streams);
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { continue };
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        // Wake the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

//! The headers of a kept-alive connection's next request, bounded.
//!
//! actix-web bounds the headers of a connection's first request (`client_request_timeout`)
//! and an idle kept-alive connection (`keep_alive`), but once the first byte of a later
//! request arrives nothing bounds the rest of its headers: a client could hold the connection
//! for ever with `GET /hea`. So each connection is watched: when it has been without a request
//! in progress for `KEEP_ALIVE_SECS` + `REQUEST_HEADER_TIMEOUT_MS` (time to start the next
//! request, then to send its headers), it is shut down. Hand-written: actix has no such limit,
//! and this needs only its connection hook and a middleware.

use std::any::Any;
use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::rt::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};

/// Where a connection is: `None` while a request is handled (or before the first, which
/// actix bounds), `Some(t)` when it has been idle, or sending the next headers, since `t`.
#[derive(Clone)]
struct Idle(Rc<Cell<Option<Instant>>>);

/// What the connection's extensions hold: its `Idle`, and the sender whose drop, with the
/// connection, ends its watchdog at once.
struct Watched {
    idle: Idle,
    _closed: oneshot::Sender<()>,
}

/// The connection hook: watches each new connection with `grace` as its limit between
/// requests.
pub fn watch(grace: Duration) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |io, extensions| {
        let Some(stream) = io.downcast_ref::<TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let idle = Idle(Rc::new(Cell::new(None)));
        let weak = Rc::downgrade(&idle.0);
        let (closed_tx, closed) = oneshot::channel();
        extensions.insert(Watched {
            idle,
            _closed: closed_tx,
        });
        let socket = Socket {
            fd: stream.as_raw_fd(),
            peer,
        };
        actix_web::rt::spawn(watchdog(weak, closed, socket, grace));
    }
}

/// Middleware: marks each connection busy while one of its requests is handled.
pub async fn mark_busy(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let idle = req.conn_data::<Watched>().map(|w| w.idle.clone());
    if let Some(idle) = &idle {
        idle.0.set(None);
    }
    let response = next.call(req).await;
    if let Some(idle) = idle {
        idle.0.set(Some(Instant::now()));
    }
    response
}

/// Runs on the connection's worker thread until the connection ends (`closed` fails when its
/// extensions are dropped with it), or shuts the connection down once it has been idle longer
/// than `grace`.
async fn watchdog(
    idle: Weak<Cell<Option<Instant>>>,
    mut closed: oneshot::Receiver<()>,
    socket: Socket,
    grace: Duration,
) {
    loop {
        let Some(since) = idle.upgrade().map(|c| c.get()) else {
            return;
        };
        let wake = match since {
            None => Instant::now() + grace,
            Some(since) if since.elapsed() >= grace => {
                if idle.upgrade().is_some() {
                    socket.shut_down();
                }
                return;
            }
            Some(since) => since + grace,
        };
        tokio::select! {
            _ = &mut closed => return,
            () = sleep_until(wake) => {}
        }
    }
}

/// A connection's socket: its descriptor, and the peer it was accepted from.
struct Socket {
    fd: RawFd,
    peer: SocketAddr,
}

impl Socket {
    /// Shuts the socket down in both directions: the connection's own reads then end and
    /// actix closes it.
    fn shut_down(&self) {
        // SAFETY: the caller checked, on this thread and without yielding, that the
        // connection's `Idle` is alive: the connection, and with it the socket that owns `fd`,
        // has not been dropped (actix drops both together, on this worker thread). The stream
        // is never dropped here, so `fd` is not closed twice.
        let stream = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(self.fd) });
        // And it is still the same connection (a second line of defence).
        if stream.peer_addr().is_ok_and(|peer| peer == self.peer) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

//! Fan-out of a session's frames to its sockets, each through its own bounded queue.
//!
//! The session never waits for a socket: a frame goes to each subscriber with `try_send`, and a
//! subscriber whose queue is over its frame or byte cap is dropped at once and told so
//! (the socket task closes with 1013, and the client may reconnect with `?after=N`). A closed
//! subscriber (its socket went away) is removed on the next frame. So memory per socket is at
//! most its caps, whatever the client does, and one slow tab never stalls the child or the
//! other tabs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::{mpsc, Notify};

/// Caps of one subscriber's queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueCaps {
    /// Frames.
    pub frames: usize,
    /// Bytes (a single larger frame still passes into an empty queue).
    pub bytes: usize,
}

struct Shared {
    queued_bytes: AtomicUsize,
    overflowed: AtomicBool,
    notify: Notify,
}

struct Subscriber {
    tx: mpsc::Sender<ByteString>,
    shared: Arc<Shared>,
    caps: QueueCaps,
}

/// The receiving end, held by a socket task.
pub struct SubscriberRx {
    rx: mpsc::Receiver<ByteString>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SubscriberRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscriberRx")
    }
}

impl SubscriberRx {
    /// The next frame, or `None` once the session dropped this subscriber (overflow, session
    /// stopped or deleted) and the queue is drained.
    pub async fn recv(&mut self) -> Option<ByteString> {
        let frame = self.rx.recv().await?;
        self.shared
            .queued_bytes
            .fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }

    /// The next frame if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<ByteString> {
        let frame = self.rx.try_recv().ok()?;
        self.shared
            .queued_bytes
            .fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }

    /// A handle that tells when the session dropped this subscriber for being too slow,
    /// usable while [`Self::recv`] is pending.
    pub fn overflow(&self) -> Overflow {
        Overflow(self.shared.clone())
    }

    /// Whether it was dropped for being too slow.
    pub fn is_overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
    }
}

/// See [`SubscriberRx::overflow`].
#[derive(Clone)]
pub struct Overflow(Arc<Shared>);

impl Overflow {
    /// Resolves when the subscriber has been dropped for being too slow.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The subscribers of one session.
#[derive(Default)]
pub struct Fanout {
    subscribers: Vec<Subscriber>,
    dropped_slow: u64,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl Fanout {
    /// Adds a subscriber with its own queue.
    pub fn subscribe(&mut self, caps: QueueCaps) -> SubscriberRx {
        let (tx, rx) = mpsc::channel(caps.frames.max(1));
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            notify: Notify::new(),
        });
        self.subscribers.push(Subscriber {
            tx,
            shared: shared.clone(),
            caps,
        });
        SubscriberRx { rx, shared }
    }

    /// Queues `frame` for every subscriber, dropping the ones that cannot take it.
    pub fn send(&mut self, frame: &ByteString) {
        let mut slow = 0;
        self.subscribers.retain(|sub| {
            let queued = sub.shared.queued_bytes.load(Ordering::Relaxed);
            if queued > 0 && queued + frame.len() > sub.caps.bytes {
                sub.overflow();
                slow += 1;
                return false;
            }
            match sub.tx.try_send(frame.clone()) {
                Ok(()) => {
                    sub.shared
                        .queued_bytes
                        .fetch_add(frame.len(), Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.overflow();
                    slow += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.dropped_slow += slow;
    }

    /// Drops every subscriber (their sockets drain, then close).
    pub fn close_all(&mut self) {
        self.subscribers.clear();
    }

    /// Live subscribers (those whose socket went away are counted until the next frame).
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// Subscribers dropped for being too slow, in all.
    pub fn dropped_slow(&self) -> u64 {
        self.dropped_slow
    }
}

impl Subscriber {
    fn overflow(&self) {
        self.shared.overflowed.store(true, Ordering::Release);
        self.shared.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: QueueCaps = QueueCaps {
        frames: 4,
        bytes: 10,
    };

    #[tokio::test]
    async fn every_subscriber_gets_every_frame_in_order() {
        let mut fanout = Fanout::default();
        let mut a = fanout.subscribe(CAPS);
        let mut b = fanout.subscribe(CAPS);
        for f in ["1", "2", "3"] {
            fanout.send(&ByteString::from(f));
        }
        for rx in [&mut a, &mut b] {
            for f in ["1", "2", "3"] {
                assert_eq!(rx.recv().await.unwrap(), f);
            }
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_without_touching_the_others() {
        let mut fanout = Fanout::default();
        let mut fast = fanout.subscribe(CAPS);
        let mut slow = fanout.subscribe(CAPS);
        for i in 0..20 {
            fanout.send(&ByteString::from(format!("{}", i % 10)));
            assert_eq!(fast.recv().await.unwrap(), format!("{}", i % 10));
        }
        assert_eq!(fanout.len(), 1);
        assert_eq!(fanout.dropped_slow(), 1);
        assert!(slow.is_overflowed());
        slow.overflow().wait().await;
        // What was queued before the overflow can still be read; then the queue ends.
        let mut got = 0;
        while slow.recv().await.is_some() {
            got += 1;
        }
        assert!((1..=4).contains(&got), "{got}");
    }

    #[tokio::test]
    async fn a_big_frame_passes_into_an_empty_queue_only() {
        let mut fanout = Fanout::default();
        let mut rx = fanout.subscribe(CAPS);
        fanout.send(&ByteString::from("x".repeat(50)));
        assert_eq!(fanout.len(), 1);
        fanout.send(&ByteString::from("y"));
        assert_eq!(fanout.len(), 0, "queue held 50 bytes over its 10-byte cap");
        assert_eq!(rx.recv().await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn closed_subscribers_are_removed() {
        let mut fanout = Fanout::default();
        drop(fanout.subscribe(CAPS));
        fanout.send(&ByteString::from("x"));
        assert!(fanout.is_empty());
        assert_eq!(fanout.dropped_slow(), 0);
    }
}

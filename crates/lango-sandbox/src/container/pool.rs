//! The warm pool (spec §2.3.5, Rust column): containers created ahead of time but not
//! started, each used for exactly one call and then removed. Nothing a call leaves behind can
//! reach the next caller, because no container is ever returned to the pool.
//!
//! A background task keeps the pool at its target size (refilling after every take) and
//! replaces containers older than the idle timeout, checking every
//! `min(idle timeout / 2, 60 s)`. Closing removes exactly the pool's own containers, by ID.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle, time::Instant};

use super::{PoolState, docker::Engine};

/// A handle on the pool (cheap to clone).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    target: usize,
    idle: Duration,
    queue: Mutex<VecDeque<(String, Instant)>>,
    closed: AtomicBool,
    wake: Notify,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn start(engine: Arc<Engine>, target: usize, idle: Duration) -> Self {
        let inner = Arc::new(Inner {
            engine,
            target,
            idle,
            queue: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            task: Mutex::new(None),
        });
        let every = (idle / 2)
            .min(Duration::from_secs(60))
            .max(Duration::from_millis(100));
        let bg = inner.clone();
        let task = tokio::spawn(async move {
            while !bg.closed.load(Ordering::Acquire) {
                bg.expire(bg.idle).await;
                bg.fill().await;
                tokio::select! {
                    _ = bg.wake.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        if let Ok(mut t) = inner.task.lock() {
            *t = Some(task);
        }
        Self { inner }
    }

    /// Pops the oldest unexpired container; `None` when the pool is empty or closed (the
    /// caller then creates one). Never blocks on the engine.
    pub async fn take(&self) -> Option<String> {
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut expired = Vec::new();
        let taken = {
            let Ok(mut q) = self.inner.queue.lock() else {
                return None;
            };
            loop {
                match q.pop_front() {
                    Some((id, at)) if at.elapsed() < self.inner.idle => break Some(id),
                    Some((id, _)) => expired.push(id),
                    None => break None,
                }
            }
        };
        for id in expired {
            let _ = self.inner.engine.remove(&id).await;
        }
        self.inner.wake.notify_one();
        taken
    }

    /// Current and target sizes.
    pub fn state(&self) -> PoolState {
        PoolState {
            current: self.inner.queue.lock().map(|q| q.len()).unwrap_or(0),
            target: self.inner.target,
        }
    }

    /// The IDs waiting in the pool, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.inner
            .queue
            .lock()
            .map(|q| q.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// Replaces every container older than `age` now (the idle check, on demand) and returns
    /// how many were removed.
    pub async fn expire_older_than(&self, age: Duration) -> usize {
        let n = self.inner.expire(age).await;
        self.inner.wake.notify_one();
        n
    }

    /// Waits until the pool holds its target size (bounded by `within`).
    pub async fn wait_full(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.state().current >= self.inner.target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops refilling and removes the pool's containers by ID. Closing twice is harmless.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(mut t) = self.inner.task.lock().ok().and_then(|mut t| t.take()) {
            // Let a create in flight finish: the refill sees `closed` and removes what it just
            // made, where an abort would leak it. Creates are bounded by 10 s.
            self.inner.wake.notify_one();
            if tokio::time::timeout(Duration::from_secs(15), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
        let ids: Vec<String> = self
            .inner
            .queue
            .lock()
            .map(|mut q| q.drain(..).map(|(id, _)| id).collect())
            .unwrap_or_default();
        for id in ids {
            if let Err(e) = self.inner.engine.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "could not remove a pooled container");
            }
        }
    }
}

impl Inner {
    async fn fill(&self) {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let len = self.queue.lock().map(|q| q.len()).unwrap_or(usize::MAX);
            if len >= self.target {
                return;
            }
            match self.engine.create("pool", true).await {
                Ok(id) => {
                    let keep = self
                        .queue
                        .lock()
                        .map(|mut q| {
                            if self.closed.load(Ordering::Acquire) {
                                false
                            } else {
                                q.push_back((id.clone(), Instant::now()));
                                true
                            }
                        })
                        .unwrap_or(false);
                    if !keep {
                        let _ = self.engine.remove(&id).await;
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not pre-create a sandbox container");
                    return;
                }
            }
        }
    }

    async fn expire(&self, age: Duration) -> usize {
        let old: Vec<String> = match self.queue.lock() {
            Ok(mut q) => {
                let (keep, old): (VecDeque<_>, VecDeque<_>) =
                    q.drain(..).partition(|(_, at)| at.elapsed() < age);
                *q = keep;
                old.into_iter().map(|(id, _)| id).collect()
            }
            Err(_) => Vec::new(),
        };
        for id in &old {
            let _ = self.engine.remove(id).await;
        }
        old.len()
    }
}

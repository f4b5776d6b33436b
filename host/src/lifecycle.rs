//! Where the process is in its life: starting, ready, draining. Written by
//! the server (ready once every listener is bound and its policy serving;
//! draining from the first SIGTERM), read by the admin endpoint (`/ready`)
//! and by anything that must stop taking new work while draining.

use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by the server and its readers; cheap to read on any path.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    /// Every listener is bound and its policy serving.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The process stopped taking new work and is finishing what it has.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Ready and not draining: what `/ready` answers 200 for.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    /// Draining has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle;

    #[test]
    fn ready_until_draining() {
        let life = Lifecycle::default();
        assert!(!life.is_ready());
        life.set_ready();
        assert!(life.is_ready());
        life.start_draining();
        assert!(!life.is_ready());
        assert!(life.is_draining());
    }
}

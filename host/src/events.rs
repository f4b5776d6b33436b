//! What the server announces (for operators' tooling and tests): the
//! lowest layer, so that every layer can announce without importing the
//! ones above it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A change of a backend's health, as announced in
/// [`ServerEvent::BackendHealth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// `fall` failing active checks in a row: down.
    Down,
    /// `rise` passing active checks in a row: up.
    Up,
    /// Passive checking ejected it.
    Ejected,
    /// Its ejection is over: its time is up, or `rise` passing active
    /// checks in a row ended it early.
    Returned,
}

/// Something that happened to the server, for operators' tooling and tests.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A module version is now serving (at start, after a file change, or
    /// after a config reload that compiled it).
    PolicyLoaded {
        /// Policy name (file stem).
        policy: String,
        /// Its version number.
        version: u64,
    },
    /// A module was refused; the previous version keeps serving.
    PolicyRejected {
        /// The refused file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A new config is serving.
    ConfigReloaded,
    /// A config was refused; the previous one keeps serving.
    ConfigRejected {
        /// `FILE: key: reason` lines.
        reason: String,
    },
    /// A backend's health changed: its active check took it down or
    /// brought it up, or passive checking ejected it or let it back in
    /// (also logged, once per change, with the reason).
    BackendHealth {
        /// The pool.
        pool: String,
        /// The backend's address.
        backend: SocketAddr,
        /// What changed.
        change: HealthChange,
        /// Why.
        reason: String,
    },
    /// A decision trapped, timed out or was invalid; `on_error` handled it.
    DecisionFailed {
        /// The listener.
        listener: String,
        /// The policy.
        policy: String,
        /// Why.
        reason: String,
    },
    /// A listener's policy failed repeatedly and was tripped (logged once):
    /// its requests go to `on_error` without calling it for `back_off`,
    /// then one request tries it again; a failure of that one trips it
    /// again, for longer.
    PolicyTripped {
        /// The listener.
        listener: String,
        /// The policy.
        policy: String,
        /// How long it is off.
        back_off: Duration,
        /// The failure that tripped it.
        reason: String,
    },
    /// A backend name was looked up again (every `[resolver] refresh`)
    /// and what it meant was applied: when its addresses changed, the
    /// pools using it serve the new set by the time this is sent.
    NameResolved {
        /// The name (lower case), `SRV ` before an SRV name.
        name: String,
        /// `ok` (same addresses), `changed`, `failed` or `empty` (the
        /// last two keep the last good set).
        result: &'static str,
    },
}

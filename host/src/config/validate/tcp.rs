//! The keys of `tcp` listeners (`peek_timeout`, `idle_timeout`), and the
//! HTTP-only keys a `tcp` listener refuses.
//!
//! A `tcp` listener relays bytes: it has no requests, responses, headers
//! or certificates of its own. `certificates`, `handshake_timeout`,
//! `unknown_sni` and `redirect_to_https` are refused on it by their own
//! checks (they name the protocol they need); `send_timeout` (a stalled
//! response write) is refused here, since a relay's stalls are what its
//! `idle_timeout` bounds.

use super::Checker;
use crate::config::model::{Protocol, TcpTimeouts};
use crate::config::raw::RawListener;

impl Checker<'_> {
    /// `peek_timeout` and `idle_timeout` of the listener at `key`: set
    /// only on a `tcp` listener, more than zero; the defaults elsewhere.
    pub(super) fn tcp_options(&mut self, key: &str, raw: &RawListener) -> TcpTimeouts {
        let defaults = TcpTimeouts::default();
        if raw.protocol != Protocol::Tcp {
            for (name, set) in [
                ("peek_timeout", raw.peek_timeout.is_some()),
                ("idle_timeout", raw.idle_timeout.is_some()),
            ] {
                if set {
                    self.error(
                        format!("{key}.{name}"),
                        "only used by tcp listeners; set protocol = \"tcp\" or remove it",
                    );
                }
            }
            return defaults;
        }
        if raw.send_timeout.is_some() {
            self.error(
                format!("{key}.send_timeout"),
                "only used by http and https listeners (a response write); a tcp listener's \
                 stalled relay is closed by its idle_timeout",
            );
        }
        TcpTimeouts {
            peek: self.duration(
                &format!("{key}.peek_timeout"),
                raw.peek_timeout.as_ref(),
                defaults.peek,
            ),
            idle: self.duration(
                &format!("{key}.idle_timeout"),
                raw.idle_timeout.as_ref(),
                defaults.idle,
            ),
        }
    }
}

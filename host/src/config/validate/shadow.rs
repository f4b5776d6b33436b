//! `[listeners.shadow]`: a candidate policy that decides sampled requests
//! after the live one, for comparison only.
//!
//! Refused: a missing or invalid `policy`, the listener's own policy (a
//! shadow of itself compares nothing), a `sample` outside `0.0..=1.0`
//! (NaN included), a zero `decision_timeout`, a shadow on a `tcp`
//! listener (its connections are decided once, before any byte is
//! relayed, and are not shadowed) and on one with `redirect_to_https`
//! (which decides nothing). Whether the module file exists is
//! checked with the live policies' files (`Config::check_policy_files`).

use super::Checker;
use crate::config::model::{Protocol, ShadowConfig};
use crate::config::raw::RawListener;

impl Checker<'_> {
    /// The shadow of the listener at `key`, when it has one.
    pub(super) fn shadow(&mut self, key: &str, raw: &RawListener) -> Option<ShadowConfig> {
        let shadow = raw.shadow.as_ref()?;
        let key = format!("{key}.shadow");
        if raw.protocol == Protocol::Tcp {
            self.error(
                &key,
                "only http and https listeners shadow decisions: a tcp listener's connections \
                 are not shadowed; remove [listeners.shadow]",
            );
        } else if raw.redirect_to_https.is_some() {
            self.error(
                &key,
                "a listener with redirect_to_https answers every request itself and makes no \
                 decisions to shadow; remove [listeners.shadow]",
            );
        }
        let policy = shadow.policy.clone().unwrap_or_default();
        let policy_key = format!("{key}.policy");
        self.policy_name(&policy_key, &policy);
        if !policy.is_empty() && policy == raw.policy {
            self.error(
                &policy_key,
                format!(
                    "`{policy}` is the listener's live policy: a shadow must be another module \
                     (copy the candidate under its own name)"
                ),
            );
        }
        let sample = shadow.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            self.error(
                format!("{key}.sample"),
                format!("{sample}: must be a share of requests from 0.0 to 1.0"),
            );
        }
        let decision_timeout = shadow.decision_timeout.as_ref().map(|raw| {
            let key = format!("{key}.decision_timeout");
            self.duration(&key, Some(raw), std::time::Duration::from_millis(1))
        });
        Some(ShadowConfig {
            policy,
            sample,
            policy_config: (shadow.policy_config.clone())
                .unwrap_or_else(|| raw.policy_config.clone()),
            decision_timeout,
        })
    }
}

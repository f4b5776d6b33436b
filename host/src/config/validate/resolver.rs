//! `[resolver]`: the nameservers backend names are asked of, and how
//! often they are asked again.

use super::Checker;
use crate::config::model::ResolverConfig;
use crate::config::raw::RawResolver;

impl Checker<'_> {
    pub(super) fn resolver(&mut self, raw: Option<&RawResolver>) -> ResolverConfig {
        let defaults = ResolverConfig::default();
        let Some(raw) = raw else { return defaults };
        let refresh = self.duration("resolver.refresh", raw.refresh.as_ref(), defaults.refresh);
        let nameservers = raw.nameservers.iter().flatten().enumerate();
        let nameservers = nameservers
            .filter_map(|(i, text)| match text.parse() {
                Ok(address) => Some(address),
                Err(_) => {
                    self.error(
                        format!("resolver.nameservers[{i}]"),
                        format!("invalid nameserver `{text}`: expected IP:port, e.g. 10.0.0.2:53"),
                    );
                    None
                }
            })
            .collect();
        ResolverConfig {
            nameservers,
            refresh,
        }
    }
}

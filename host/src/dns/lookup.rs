//! Asking DNS: the resolver a `[resolver]` section describes, and one
//! round of lookups of a set of names, as an owned future that the
//! control loop can poll alongside its other work.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use crate::config::ResolverConfig;

/// How long one nameserver may take to answer one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What one lookup of a name gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These addresses (sorted, distinct, at least one), valid until the
    /// instant (the answer's TTL; far off when it has none).
    Addresses(Vec<IpAddr>, Instant),
    /// The name exists but has no address (or does not exist).
    Empty,
    /// No answer: a timeout, a refused or malformed one; why.
    Failed(String),
}

/// Builds the resolver `settings` describe: its nameservers over UDP and
/// TCP, or the system's configuration when it names none. Every A and
/// AAAA record of a name is asked for (STRICT_DNS: each is a backend).
pub fn build(settings: &ResolverConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?
    } else {
        let servers = settings.nameservers.iter().map(|server| {
            let mut udp = ConnectionConfig::udp();
            udp.port = server.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = server.port();
            NameServerConfig::new(server.ip(), true, vec![udp, tcp])
        });
        let config = HickoryConfig::from_name_servers(servers.collect());
        TokioResolver::builder_with_config(config, provider)
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.timeout = QUERY_TIMEOUT;
    options.attempts = 1;
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

/// Looks up every name in `names` at once; the outcomes in the same order.
pub async fn lookup_all(resolver: TokioResolver, names: Vec<String>) -> Vec<(String, Outcome)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, name) in names.iter().enumerate() {
        let resolver = resolver.clone();
        let name = name.clone();
        tasks.spawn(async move { (index, lookup(&resolver, &name).await) });
    }
    let mut outcomes = vec![Outcome::Failed("the lookup did not finish".to_owned()); names.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((index, outcome)) = done {
            outcomes[index] = outcome;
        }
    }
    names.into_iter().zip(outcomes).collect()
}

/// One name's A and AAAA records.
pub async fn lookup(resolver: &TokioResolver, name: &str) -> Outcome {
    match resolver.lookup_ip(name).await {
        Ok(answer) => {
            let addresses: BTreeSet<IpAddr> = answer.iter().collect();
            if addresses.is_empty() {
                Outcome::Empty
            } else {
                let until = answer.valid_until();
                Outcome::Addresses(addresses.into_iter().collect(), until)
            }
        }
        Err(error) if error.is_no_records_found() || error.is_nx_domain() => Outcome::Empty,
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

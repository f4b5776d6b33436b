//! Asking DNS: the resolver a `[resolver]` section describes, and one
//! round of lookups of a set of names (A and AAAA, or SRV and then its
//! targets' addresses), as an owned future that the control loop can
//! poll alongside its other work.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
    ResolverOpts,
};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};

use super::Query;
use crate::config::ResolverConfig;

/// How long one nameserver may take to answer one query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What one lookup of a name gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These addresses (sorted, distinct, at least one; port 0 for an
    /// A/AAAA name, whose entries give the port), valid until the instant
    /// (the answer's shortest TTL; far off when it has none).
    Addresses(Vec<SocketAddr>, Instant),
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

/// Looks up every query at once; the outcomes in the same order.
pub async fn lookup_all(resolver: TokioResolver, queries: Vec<Query>) -> Vec<(Query, Outcome)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, query) in queries.iter().enumerate() {
        let resolver = resolver.clone();
        let query = query.clone();
        tasks.spawn(async move {
            let outcome = if query.srv {
                lookup_srv(&resolver, &query.name).await
            } else {
                lookup(&resolver, &query.name).await
            };
            (index, outcome)
        });
    }
    let mut outcomes = vec![Outcome::Failed("the lookup did not finish".to_owned()); queries.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((index, outcome)) = done {
            outcomes[index] = outcome;
        }
    }
    queries.into_iter().zip(outcomes).collect()
}

/// One name's A and AAAA records (port 0).
pub async fn lookup(resolver: &TokioResolver, name: &str) -> Outcome {
    match resolver.lookup_ip(name).await {
        Ok(answer) => {
            let addresses: BTreeSet<SocketAddr> =
                answer.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            outcome(addresses, answer.valid_until())
        }
        Err(error) => failure(error),
    }
}

/// One SRV name: each record's target (its A and AAAA records) on the
/// record's port. Priority and weight are not used: every target is a
/// backend with the entry's weight, as every address of a name is.
/// Records with port 0 or target `.` (no service) give nothing; a target
/// that does not resolve gives nothing, one whose lookup fails fails the
/// whole answer (the last good set stays).
pub async fn lookup_srv(resolver: &TokioResolver, name: &str) -> Outcome {
    let answer = match resolver.srv_lookup(name).await {
        Ok(answer) => answer,
        Err(error) => return failure(error),
    };
    let mut valid_until = answer.valid_until();
    let targets: BTreeSet<(Name, u16)> = (answer.answers().iter())
        .filter_map(|record| match &record.data {
            RData::SRV(srv) if srv.port != 0 && !srv.target.is_root() => {
                Some((srv.target.clone(), srv.port))
            }
            _ => None,
        })
        .collect();
    let mut addresses = BTreeSet::new();
    for (target, port) in targets {
        match resolver.lookup_ip(target.clone()).await {
            Ok(found) => {
                valid_until = valid_until.min(found.valid_until());
                addresses.extend(found.iter().map(|ip: IpAddr| SocketAddr::new(ip, port)));
            }
            Err(error) => match failure(error) {
                Outcome::Failed(reason) => {
                    return Outcome::Failed(format!("SRV target {target}: {reason}"));
                }
                _ => continue,
            },
        }
    }
    outcome(addresses, valid_until)
}

fn outcome(addresses: BTreeSet<SocketAddr>, valid_until: Instant) -> Outcome {
    if addresses.is_empty() {
        Outcome::Empty
    } else {
        Outcome::Addresses(addresses.into_iter().collect(), valid_until)
    }
}

/// A lookup's error: no such name or record is an empty answer, anything
/// else a failure.
fn failure(error: NetError) -> Outcome {
    if error.is_no_records_found() || error.is_nx_domain() {
        Outcome::Empty
    } else {
        Outcome::Failed(error.to_string())
    }
}

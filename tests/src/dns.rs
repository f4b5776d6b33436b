//! A small authoritative DNS server on 127.0.0.1 (UDP and TCP, one port)
//! whose answers a test changes while the proxy runs: A and AAAA records
//! and SRV records of the names it was given, with a TTL of 0, NXDOMAIN
//! for the others, and no answer at all once told to go
//! [`DnsServer::set_silent`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::RwLock;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Zone {
    /// Lower-case name without the final dot -> its addresses.
    records: RwLock<HashMap<String, Vec<IpAddr>>>,
    /// Lower-case name without the final dot -> its SRV targets and ports.
    services: RwLock<HashMap<String, Vec<(String, u16)>>>,
    silent: AtomicBool,
    queries: AtomicU64,
}

/// A UDP socket on a free port of 127.0.0.1 and a TCP listener on the same
/// port. The port the system picks for UDP may be in use for TCP (by
/// another test's connection, say): then it tries another, a bounded
/// number of times.
async fn bind_pair() -> anyhow::Result<(UdpSocket, TcpListener)> {
    const TRIES: usize = 100;
    for _ in 1..TRIES {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(error) => return Err(error.into()),
        }
    }
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let tcp = TcpListener::bind(udp.local_addr()?).await?;
    Ok((udp, tcp))
}

/// A running server; stops when dropped.
pub struct DnsServer {
    zone: Arc<Zone>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DnsServer {
    /// Binds UDP `127.0.0.1:0`, and TCP on the same port, and serves.
    pub async fn start() -> anyhow::Result<DnsServer> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let zone = Arc::new(Zone::default());
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&zone))),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&zone))),
        ];
        Ok(DnsServer { zone, addr, tasks })
    }

    /// Where it listens (the `[resolver] nameservers` entry).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on `name` resolves to `addresses` (none: NXDOMAIN).
    pub async fn set(&self, name: &str, addresses: &[IpAddr]) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.zone
            .records
            .write()
            .await
            .insert(name, addresses.to_vec());
    }

    /// From now on `name` has one SRV record per `(target, port)`.
    pub async fn set_srv(&self, name: &str, targets: &[(&str, u16)]) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let targets = targets.iter().map(|(t, p)| ((*t).to_owned(), *p));
        self.zone
            .services
            .write()
            .await
            .insert(name, targets.collect());
    }

    /// Stops (true) or resumes (false) answering any query.
    pub fn set_silent(&self, silent: bool) {
        self.zone.silent.store(silent, Ordering::SeqCst);
    }

    /// Queries received so far (answered or not).
    pub fn queries(&self) -> u64 {
        self.zone.queries.load(Ordering::SeqCst)
    }
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if let Some(answer) = answer(&zone, &buffer[..len]).await {
            let _ = socket.send_to(&answer, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_connection(stream, Arc::clone(&zone)));
    }
}

/// Messages on TCP are each preceded by their length (two bytes).
async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(answer) = answer(&zone, &query).await else {
            continue;
        };
        let len = u16::try_from(answer.len()).unwrap_or(u16::MAX);
        if stream.write_u16(len).await.is_err() || stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// The encoded answer to `query`; none when silent or unreadable.
async fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    zone.queries.fetch_add(1, Ordering::SeqCst);
    if zone.silent.load(Ordering::SeqCst) {
        return None;
    }
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.add_queries(request.queries.iter().cloned());
    let mut known = false;
    for query in &request.queries {
        let name = query.name().to_ascii();
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let answers = match query.query_type() {
            RecordType::SRV => srv_records(zone, &key).await,
            kind => address_records(zone, &key, kind).await,
        };
        let Some(answers) = answers else { continue };
        known = true;
        for rdata in answers {
            response.add_answer(Record::from_rdata(query.name().clone(), 0, rdata));
        }
    }
    if !known {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response.to_vec().ok()
}

/// The A or AAAA records of `key` (`kind`); none for an unknown name.
async fn address_records(zone: &Zone, key: &str, kind: RecordType) -> Option<Vec<RData>> {
    let records = zone.records.read().await;
    let addresses = records.get(key)?;
    let records = addresses
        .iter()
        .filter_map(|address| match (address, kind) {
            (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        });
    Some(records.collect())
}

/// The SRV records of `key` (priority 0, weight 1); none for an unknown name.
async fn srv_records(zone: &Zone, key: &str) -> Option<Vec<RData>> {
    let services = zone.services.read().await;
    let targets = services.get(key)?;
    let records = targets.iter().filter_map(|(target, port)| {
        let target = Name::from_ascii(format!("{target}.")).ok()?;
        Some(RData::SRV(SRV::new(0, 1, *port, target)))
    });
    Some(records.collect())
}

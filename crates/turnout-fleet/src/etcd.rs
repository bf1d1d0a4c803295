//! [`FleetStore`] on etcd's v3 API: linearizable range reads, leases kept alive over a stream,
//! transactions that compare revisions, and a prefix watch from a revision.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

use crate::desired::{parse, Desired, MemberRecord, Prepare};
use crate::error::FleetError;
use crate::store::{Event, Expect, FleetRead, FleetStore, Lease, Versioned};

/// How etcd is reached: endpoints, credentials and TLS.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// `http://HOST:PORT` or `https://HOST:PORT`, one or more.
    pub endpoints: Vec<String>,
    /// User and password (from `TURNOUT_ETCD_USER` and `TURNOUT_ETCD_PASSWORD`).
    pub user: Option<(String, String)>,
    /// TLS to etcd, with `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// How long one call may take.
    pub timeout: Duration,
}

/// The PEM files of TLS to etcd, read.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed etcd's certificate.
    pub ca: Vec<u8>,
    /// The client certificate and key, if etcd asks for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A fleet's keys in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// How long one call is retried when it could not be sent (an endpoint down, a leader
    /// election): `EtcdOptions::timeout`.
    timeout: Duration,
    fleet: String,
    prefix: String,
    endpoints: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("fleet", &self.fleet)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Any failure: for reads and writes that may be repeated (a read, a lease grant or revoke,
/// a member's report of the same record).
fn any(_: &etcd_client::Error) -> bool {
    true
}

/// A failure before the request was acted on: no connection to the endpoint the balancer
/// chose (it is down; another one may answer), or a member refusing it for want of a leader
/// (with `require_leader`, before proposing it). The client says so only in words, so this
/// reads them.
fn not_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    text.contains("tcp connect error")
        || text.contains("Connection refused")
        || text.contains("etcdserver: no leader")
}

/// The key prefix of fleet `name`.
pub fn prefix(name: &str) -> String {
    format!("/turnout/fleets/{name}/")
}

impl EtcdStore {
    /// Connects to `options.endpoints` for fleet `fleet`. The connection is made lazily by the
    /// client; a store that is down fails the first call, not this one, unless credentials
    /// are given (they are checked here).
    pub async fn connect(fleet: &str, options: &EtcdOptions) -> Result<EtcdStore, FleetError> {
        let endpoints = options.endpoints.join(",");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.timeout)
            .with_timeout(options.timeout)
            // A dead connection is noticed within seconds, not at the kernel's TCP timeout.
            .with_keep_alive(Duration::from_secs(1), options.timeout)
            .with_keep_alive_while_idle(true)
            // An etcd member cut off from its cluster answers nothing rather than stale data.
            .with_require_leader(true);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        if let Some(t) = &options.tls {
            let mut tls =
                TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&t.ca));
            if let Some((cert, key)) = &t.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| FleetError::Unreachable {
                endpoints: endpoints.clone(),
                detail: e.to_string(),
            })?;
        Ok(EtcdStore {
            client,
            timeout: options.timeout,
            fleet: fleet.to_string(),
            prefix: prefix(fleet),
            endpoints,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `op` on a client, again every 50 ms while it fails and `again` says the failure
    /// is one to retry, for at most the store's timeout.
    async fn retry<T, F, Fut>(
        &self,
        again: fn(&etcd_client::Error) -> bool,
        mut op: F,
    ) -> Result<T, FleetError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match op(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if again(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(self.unreachable(e)),
            }
        }
    }

    /// A transaction, sent again only when it was certainly not sent (a write that may have
    /// happened is never repeated blindly: the caller reads to learn).
    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, FleetError> {
        self.retry(not_sent, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// What a coordinator's prepare and commit hold on: the desired state, the roster and the
    /// prepare at `expect`'s revisions (a prepare revision of 0: none, by its creation), and
    /// the lock under `lease`.
    fn unmoved(&self, lease: Lease, expect: Expect) -> [Compare; 4] {
        [
            Compare::mod_revision(self.key("desired"), CompareOp::Equal, expect.desired),
            Compare::mod_revision(self.key("roster"), CompareOp::Equal, expect.roster),
            if expect.prepare == 0 {
                Compare::create_revision(self.key("prepare"), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(self.key("prepare"), CompareOp::Equal, expect.prepare)
            },
            Compare::lease(self.key("lock"), CompareOp::Equal, lease.0),
        ]
    }

    fn unreachable(&self, e: etcd_client::Error) -> FleetError {
        FleetError::Unreachable {
            endpoints: self.endpoints.clone(),
            detail: e.to_string(),
        }
    }

    fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).expect("the fleet's records serialize")
    }

    /// Turns one key's value into an event (`None`: not a fleet key turnout knows).
    fn event(&self, kv: &KeyValue, deleted: bool) -> Option<Event> {
        let key = String::from_utf8_lossy(kv.key());
        let name = key.strip_prefix(&self.prefix)?;
        let revision = kv.mod_revision();
        let parsed = |f: &dyn Fn() -> Result<Event, FleetError>| f().unwrap_or_else(Event::Corrupt);
        Some(match name {
            "desired" if !deleted => parsed(&|| {
                Ok(Event::Desired(Versioned {
                    value: parse(&key, kv.value())?,
                    revision,
                }))
            }),
            "desired" => Event::Corrupt(FleetError::Corrupt {
                key: key.to_string(),
                detail: "deleted: members keep their routing; a coordinator must re-seed".into(),
            }),
            "prepare" if deleted => Event::Prepare(None),
            "prepare" => parsed(&|| {
                Ok(Event::Prepare(Some(Versioned {
                    value: parse(&key, kv.value())?,
                    revision,
                })))
            }),
            "lock" if deleted => Event::Lock(None),
            "lock" => Event::Lock(Some(String::from_utf8_lossy(kv.value()).into_owned())),
            "roster" => Event::Roster(revision),
            other => {
                let instance = other.strip_prefix("members/")?.to_string();
                if deleted {
                    Event::Member(instance, None)
                } else {
                    let key = key.to_string();
                    match parse::<MemberRecord>(&key, kv.value()) {
                        Ok(value) => Event::Member(instance, Some(Versioned { value, revision })),
                        Err(e) => Event::Corrupt(e),
                    }
                }
            }
        })
    }
}

impl FleetStore for EtcdStore {
    fn fleet(&self) -> &str {
        &self.fleet
    }

    async fn read(&self) -> Result<FleetRead, FleetError> {
        let resp = self
            .retry(any, |mut c| {
                let prefix = self.prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut read = FleetRead {
            revision: resp.header().map_or(0, |h| h.revision()),
            ..FleetRead::default()
        };
        for kv in resp.kvs() {
            match self.event(kv, false) {
                Some(Event::Desired(d)) => read.desired = Some(d),
                Some(Event::Prepare(p)) => read.prepare = p,
                Some(Event::Lock(holder)) => {
                    read.lock = holder.map(|value| Versioned {
                        value,
                        revision: kv.mod_revision(),
                    })
                }
                Some(Event::Roster(r)) => read.roster = r,
                Some(Event::Member(_, Some(m))) => read.members.push(m),
                Some(Event::Corrupt(e)) => {
                    // The desired state must be readable; a member's bad report is skipped.
                    if kv.key().ends_with(b"/desired") || kv.key().ends_with(b"/prepare") {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "skipped a fleet record");
                }
                _ => {}
            }
        }
        Ok(read)
    }

    async fn seed(&self, desired: &Desired) -> Result<bool, FleetError> {
        let key = self.key("desired");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, Self::json(desired), None)]);
        let resp = self.txn(txn).await?;
        Ok(resp.succeeded())
    }

    async fn grant(&self, ttl: Duration) -> Result<Lease, FleetError> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let resp = self
            .retry(any, |mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        Ok(Lease(resp.id()))
    }

    async fn keep_alive(&self, lease: Lease, ttl: Duration) -> String {
        let every = ttl / 3;
        // The lease is alive until this instant at least (from the last renewal the store
        // confirmed); past it, it may be gone.
        let mut alive_until = tokio::time::Instant::now() + ttl;
        loop {
            let mut client = self.client.clone();
            let stream = client.lease_keep_alive(lease.0).await;
            let (mut keeper, mut answers) = match stream {
                Ok(s) => s,
                Err(e) => {
                    if tokio::time::Instant::now() >= alive_until {
                        return format!("the lease could not be renewed in time: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                let answer = tokio::time::timeout(every, answers.message()).await;
                match answer {
                    Ok(Ok(Some(a))) if a.ttl() > 0 => {
                        alive_until = tokio::time::Instant::now()
                            + Duration::from_secs(u64::try_from(a.ttl()).unwrap_or(0));
                    }
                    Ok(Ok(Some(_))) => return "the store ended the lease".into(),
                    _ => break,
                }
                tokio::time::sleep(every).await;
            }
            if tokio::time::Instant::now() >= alive_until {
                return "the lease could not be renewed in time".into();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn revoke(&self, lease: Lease) -> Result<(), FleetError> {
        self.retry(any, |mut c| async move { c.lease_revoke(lease.0).await })
            .await
            .map(drop)
    }

    async fn join(
        &self,
        lease: Lease,
        member: &MemberRecord,
        desired_revision: i64,
    ) -> Result<bool, FleetError> {
        let with_lease = Some(PutOptions::new().with_lease(lease.0));
        let txn = Txn::new()
            .when([
                Compare::mod_revision(self.key("desired"), CompareOp::Equal, desired_revision),
                Compare::create_revision(self.key("prepare"), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(
                    self.key(&format!("members/{}", member.instance)),
                    Self::json(member),
                    with_lease,
                ),
                TxnOp::put(self.key("roster"), member.instance.clone(), None),
            ]);
        let resp = self.txn(txn).await?;
        Ok(resp.succeeded())
    }

    async fn report(&self, lease: Lease, member: &MemberRecord) -> Result<(), FleetError> {
        let key = self.key(&format!("members/{}", member.instance));
        let value = Self::json(member);
        self.retry(any, |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease.0)))
                    .await
            }
        })
        .await
        .map(drop)
    }

    async fn lock(&self, lease: Lease, holder: &str) -> Result<Result<(), String>, FleetError> {
        let key = self.key("lock");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                holder,
                Some(PutOptions::new().with_lease(lease.0)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return Ok(Ok(()));
        }
        let holder = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_else(|| "another coordinator".into());
        Ok(Err(holder))
    }

    async fn prepare(
        &self,
        lease: Lease,
        prepare: &Prepare,
        expect: Expect,
    ) -> Result<Option<i64>, FleetError> {
        let txn = Txn::new()
            .when(self.unmoved(lease, expect))
            .and_then([TxnOp::put(
                self.key("prepare"),
                Self::json(prepare),
                Some(PutOptions::new().with_lease(lease.0)),
            )]);
        let resp = self.txn(txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    async fn commit(
        &self,
        lease: Lease,
        desired: &Desired,
        expect: Expect,
    ) -> Result<Option<i64>, FleetError> {
        let txn = Txn::new().when(self.unmoved(lease, expect)).and_then([
            TxnOp::put(self.key("desired"), Self::json(desired), None),
            TxnOp::delete(self.key("prepare"), None),
        ]);
        let resp = self.txn(txn).await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    async fn restore(&self, desired: &Desired, desired_revision: i64) -> Result<bool, FleetError> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(self.key("desired"), CompareOp::Equal, desired_revision),
                Compare::create_revision(self.key("lock"), CompareOp::Equal, 0),
                Compare::create_revision(self.key("prepare"), CompareOp::Equal, 0),
            ])
            .and_then([TxnOp::put(self.key("desired"), Self::json(desired), None)]);
        let resp = self.txn(txn).await?;
        Ok(resp.succeeded())
    }

    async fn withdraw(&self, revision: i64) -> Result<(), FleetError> {
        let key = self.key("prepare");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        self.txn(txn).await.map(drop)
    }

    async fn watch(&self, after: i64) -> Result<mpsc::Receiver<Event>, FleetError> {
        let mut stream = self
            .retry(any, |mut c| {
                let prefix = self.prefix.clone();
                async move {
                    c.watch(
                        prefix,
                        Some(
                            WatchOptions::new()
                                .with_prefix()
                                .with_start_revision(after + 1),
                        ),
                    )
                    .await
                }
            })
            .await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.clone();
        tokio::spawn(async move {
            let end = loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            break format!(
                                "revision {} was compacted (oldest kept: {})",
                                after + 1,
                                resp.compact_revision()
                            );
                        }
                        if resp.canceled() {
                            break format!("the watch was cancelled: {}", resp.cancel_reason());
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let deleted = ev.event_type() == EventType::Delete;
                            if let Some(event) = store.event(kv, deleted) {
                                if tx.send(event).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Ok(None) => break "the store closed the watch".to_string(),
                    Err(e) => break format!("the watch broke: {e}"),
                }
            };
            let _ = tx.send(Event::Ended(end)).await;
        });
        Ok(rx)
    }
}

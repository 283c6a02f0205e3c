//! One log, many writers: several nodes (store instances with their own keys) appending
//! to one PostgreSQL database at once, and the cluster key as the log's one trust root.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aura_core::door::SystemClock;
use aura_ledger::Checkpoint;
use aura_ledger::bundle::verify_bundle;
use aura_store::postgres::PgStore;
use aura_store::{Error, Seq, Store, Verification};
use common::{Backend, Ledger, agent, note, signer};

/// Reads an export back after the store wrote it.
#[derive(Clone, Default)]
struct SharedBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn export(store: &Arc<dyn Store>) -> Vec<u8> {
    let out = SharedBuf::default();
    store
        .export(Box::new(out.clone()), Box::new(|_| {}))
        .await
        .unwrap();
    out.0.lock().unwrap().clone()
}

/// Three nodes append concurrently, each with many tasks and agents of its own plus
/// agents they share: leaf indices come out unique and gapless, every agent's sequence
/// is gapless, there is one signed root per tree size, each checkpoint is signed by the
/// node that integrated it with a time later than the last, and the export verifies with
/// the cluster key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_append_concurrently_into_one_verifiable_log() {
    let Some(l) = Ledger::new(Backend::Postgres, 20).await else {
        return;
    };
    let cluster = Arc::new(
        aura_core::keystore::Signer::ephemeral(
            "cluster",
            &aura_core::door::SeededEntropy::new(20 + 100_000),
        )
        .unwrap(),
    );
    assert_eq!(cluster.public_key(), l.trusted);
    let nodes = [l.signer.clone(), signer(21), signer(22)];
    for n in &nodes[1..] {
        PgStore::enroll(
            l.url(),
            cluster.clone(),
            n.public_key(),
            "eu",
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
    }
    let mut stores = Vec::new();
    for n in &nodes {
        stores.push(l.open_as(n).await);
    }
    let base = stores[0].tree_size().await.unwrap();
    assert_eq!(base, 3, "three enrollments");

    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        for w in 0..8u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for k in 0..25usize {
                    // Agents of this node, plus agent 250 that all nodes write with Next.
                    let a = if k % 5 == 0 {
                        agent(250)
                    } else {
                        agent(i as u8 * 16 + w)
                    };
                    let batch = (0..1 + k % 3)
                        .map(|j| note(a, Seq::Next, &format!("n{i} w{w} k{k} j{j}")))
                        .collect();
                    let r = store.append(batch).await.unwrap();
                    acked.extend(r.entries.iter().map(|e| (e.index, e.agent, e.seq, e.hash)));
                }
                acked
            }));
        }
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let size = stores[1].tree_size().await.unwrap();
    assert_eq!(size, base + acked.len() as u64);
    let indices: HashSet<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(indices.len(), acked.len(), "a leaf index was given twice");
    assert_eq!(
        indices,
        (base..size).collect::<HashSet<_>>(),
        "leaf indices have gaps"
    );
    let mut per_agent: HashMap<_, Vec<u64>> = HashMap::new();
    for (_, a, seq, _) in &acked {
        per_agent.entry(*a).or_default().push(*seq);
    }
    for (a, mut seqs) in per_agent {
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{a}");
    }

    // One root per tree size; checkpoints by the three nodes (and the cluster key for
    // the enrollments), each later than the last.
    let cps = stores[2].checkpoints(0, usize::MAX).await.unwrap();
    let sizes: HashSet<u64> = cps.iter().map(|c| c.checkpoint.tree_size).collect();
    assert_eq!(sizes.len(), cps.len());
    let signers: HashSet<_> = cps.iter().map(|c| c.checkpoint.node).collect();
    for n in &nodes {
        assert!(signers.contains(&n.public_key().node_id()));
    }
    for w in cps.windows(2) {
        assert!(
            w[1].checkpoint.time > w[0].checkpoint.time,
            "time went back"
        );
    }
    for s in &stores {
        match s.verify(Box::new(|_| {})).await.unwrap() {
            Verification::Ok(sum) => assert_eq!(sum.entries, size),
            Verification::Failed(f) => panic!("{f}"),
        }
    }
    let bytes = export(&stores[0]).await;
    let summary = verify_bundle(&bytes[..], &cluster.public_key()).unwrap();
    assert_eq!(summary.entries, size);
    // A node's own key is not the log's trust root.
    assert!(verify_bundle(&bytes[..], &nodes[0].public_key()).is_err());
    // Proofs carry a checkpoint some node signed: they verify with that node's key.
    let p = stores[0].inclusion_proof(base + 5, None).await.unwrap();
    let by = nodes
        .iter()
        .find(|n| n.public_key().node_id() == p.checkpoint.checkpoint.node)
        .unwrap();
    p.verify(&by.public_key()).unwrap();
}

/// A node whose key the cluster never enrolled cannot open the store, and a checkpoint
/// signed by such a key makes verification fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_cluster_did_not_enroll_is_refused() {
    let Some(l) = Ledger::new(Backend::Postgres, 30).await else {
        return;
    };
    let stranger = signer(31);
    let err = PgStore::open(
        l.url(),
        stranger.clone(),
        Arc::new(SystemClock),
        aura_store::postgres::Options::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::NotEnrolled { .. }), "{err}");
    // Only the cluster key enrolls.
    assert!(
        PgStore::enroll(
            l.url(),
            stranger.clone(),
            stranger.public_key(),
            "",
            Arc::new(SystemClock)
        )
        .await
        .is_err()
    );

    let store = l.open().await;
    store
        .append(vec![note(agent(1), Seq::Next, "x")])
        .await
        .unwrap();
    // Re-sign the last checkpoint with the stranger's key, in the database.
    let last = store.latest_checkpoint().await.unwrap().unwrap();
    let forged = Checkpoint {
        node: stranger.public_key().node_id(),
        ..last.checkpoint
    }
    .sign(&stranger);
    let (client, conn) = tokio_postgres::connect(l.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .execute(
            "UPDATE checkpoints SET signed = $1 WHERE tree_size = $2",
            &[
                &forged.encode().as_slice(),
                &(last.checkpoint.tree_size as i64),
            ],
        )
        .await
        .unwrap();
    match store.verify(Box::new(|_| {})).await.unwrap() {
        Verification::Failed(f) => assert!(f.to_string().contains("checkpoint"), "{f}"),
        Verification::Ok(_) => panic!("a checkpoint by an unenrolled key verified"),
    }
}

/// Tampering with any stored row of the log is caught by verification and refuses an
/// export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_rows_fail_verification() {
    let tampers = [
        "UPDATE entries SET raw = set_byte(raw, length(raw) - 1, get_byte(raw, length(raw) - 1) # 1) WHERE idx = 7",
        "UPDATE entries SET seq = seq + 100 WHERE idx = 9",
        "UPDATE entries SET hash = sha256(hash) WHERE idx = 11",
        "UPDATE heads SET seq = seq + 1 WHERE agent = (SELECT agent FROM heads ORDER BY agent LIMIT 1)",
        "UPDATE merkle_tiles SET hash = sha256(hash) WHERE idx = 0",
        "UPDATE log SET tree_size = tree_size - 1",
        "UPDATE checkpoints SET signed = set_byte(signed, 99, get_byte(signed, 99) # 1) WHERE tree_size = 51",
        "DELETE FROM entries WHERE idx = (SELECT max(idx) FROM entries)",
    ];
    for sql in tampers {
        let Some(l) = Ledger::new(Backend::Postgres, 40).await else {
            return;
        };
        let store = l.open().await;
        for i in 0..30u64 {
            let batch = (0..10)
                .map(|_| note(agent((i % 4) as u8), Seq::Next, "body"))
                .collect();
            store.append(batch).await.unwrap();
        }
        assert!(matches!(
            store.verify(Box::new(|_| {})).await.unwrap(),
            Verification::Ok(_)
        ));
        let (client, conn) = tokio_postgres::connect(l.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        assert_eq!(client.execute(sql, &[]).await.unwrap(), 1, "{sql}");
        let outcome = store.verify(Box::new(|_| {})).await.unwrap();
        assert!(
            matches!(outcome, Verification::Failed(_)),
            "tampering went unnoticed: {sql}"
        );
        assert!(
            store
                .export(Box::new(std::io::sink()), Box::new(|_| {}))
                .await
                .is_err(),
            "a tampered log was exported: {sql}"
        );
    }
}

/// Opens the ledger as `signer` with appends fenced by shard lease.
async fn open_fenced(l: &Ledger, signer: &Arc<aura_core::keystore::Signer>) -> PgStore {
    PgStore::open(
        l.url(),
        signer.clone(),
        Arc::new(SystemClock),
        aura_store::postgres::Options {
            fenced: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// One writer per agent across nodes: appends to an agent need its shard's lease; when a
/// paused owner's lease expires and another node takes the shard (bumping its epoch), the
/// old owner's next append is refused in its own transaction, and nothing of it is
/// stored, while the new owner carries on after the old owner's last entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owner_is_fenced_once_another_node_takes_the_shard() {
    let Some(l) = Ledger::new(Backend::Postgres, 50).await else {
        return;
    };
    let cluster = Arc::new(
        aura_core::keystore::Signer::ephemeral(
            "cluster",
            &aura_core::door::SeededEntropy::new(50 + 100_000),
        )
        .unwrap(),
    );
    let other = signer(51);
    PgStore::enroll(
        l.url(),
        cluster,
        other.public_key(),
        "",
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let a = open_fenced(&l, &l.signer).await;
    let b = open_fenced(&l, &other).await;
    let agent = agent(7);
    let shard = aura_store::postgres::shard_of(agent);

    // No lease, no append; the node's own stream is never fenced.
    let err = a
        .append(vec![note(agent, Seq::Next, "no lease")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Fenced { shard: s } if s == shard),
        "{err}"
    );
    a.append(vec![note(aura_core::AgentId::NODE, Seq::Next, "node")])
        .await
        .unwrap();

    let ttl = std::time::Duration::from_millis(500);
    let lease_a = a.acquire(shard, ttl).await.unwrap().unwrap();
    a.append(vec![note(agent, Seq::Exactly(1), "a1")])
        .await
        .unwrap();
    // A live lease is A's: B cannot take the shard, and its appends are fenced.
    assert_eq!(b.acquire(shard, ttl).await.unwrap(), None);
    assert!(matches!(
        b.append(vec![note(agent, Seq::Next, "b?")]).await,
        Err(Error::Fenced { .. })
    ));
    // Renewing keeps the epoch.
    assert!(a.renew(lease_a, ttl).await.unwrap());
    assert_eq!(a.acquire(shard, ttl).await.unwrap(), Some(lease_a));

    // A pauses past its lease; B takes the shard with a new epoch.
    tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
    let lease_b = b.acquire(shard, ttl * 20).await.unwrap().unwrap();
    assert!(lease_b.epoch > lease_a.epoch);
    let state = b.shards().await.unwrap()[shard as usize];
    assert_eq!(state.owner, Some(other.public_key().node_id()));
    assert_eq!(state.epoch, lease_b.epoch);
    assert!(state.expires_in_ms.is_some());
    // A wakes up and writes as if it still owned the agent: refused, nothing stored.
    let size = a.tree_size().await.unwrap();
    let err = a
        .append(vec![note(agent, Seq::Exactly(2), "stale")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert_eq!(a.tree_size().await.unwrap(), size);
    assert!(
        !a.renew(lease_a, ttl).await.unwrap(),
        "a moved lease renewed"
    );
    // B continues the agent's stream after A's last committed entry.
    let r = b
        .append(vec![note(agent, Seq::Exactly(2), "b2")])
        .await
        .unwrap();
    assert_eq!(r.entries[0].seq, 2);
    // Releasing lets A take the shard back at once, at yet another epoch.
    b.release(lease_b).await.unwrap();
    let again = a.acquire(shard, ttl).await.unwrap().unwrap();
    assert!(again.epoch > lease_b.epoch);
    a.append(vec![note(agent, Seq::Exactly(3), "a3")])
        .await
        .unwrap();
    assert!(matches!(
        a.verify(Box::new(|_| {})).await.unwrap(),
        Verification::Ok(_)
    ));
}

/// The fence holds under contention: two nodes both append to one agent while the shard
/// changes hands back and forth; every entry that was acknowledged is in the ledger, the
/// agent's sequence has no gap, and the stream is made of runs, one per lease: the
/// writers never interleave, which they would at every append without the fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_under_moving_leases_never_commit_for_a_stale_owner() {
    let Some(l) = Ledger::new(Backend::Postgres, 60).await else {
        return;
    };
    let cluster = Arc::new(
        aura_core::keystore::Signer::ephemeral(
            "cluster",
            &aura_core::door::SeededEntropy::new(60 + 100_000),
        )
        .unwrap(),
    );
    let other = signer(61);
    PgStore::enroll(
        l.url(),
        cluster,
        other.public_key(),
        "",
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let nodes = [
        open_fenced(&l, &l.signer).await,
        open_fenced(&l, &other).await,
    ];
    let agent = agent(9);
    let shard = aura_store::postgres::shard_of(agent);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let n = n.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match n
                    .append(vec![note(agent, Seq::Next, &format!("n{i}"))])
                    .await
                {
                    Ok(_) => acked += 1,
                    Err(Error::Fenced { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
            acked
        }));
    }
    // Hand the shard back and forth: release, then the other takes it.
    let ttl = std::time::Duration::from_secs(5);
    let mut holder = 0usize;
    let mut lease = nodes[0].acquire(shard, ttl).await.unwrap().unwrap();
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        nodes[holder].release(lease).await.unwrap();
        holder = 1 - holder;
        lease = nodes[holder].acquire(shard, ttl).await.unwrap().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = 0;
    for w in writers {
        acked += w.await.unwrap();
    }
    let head = nodes[0].head(agent).await.unwrap().unwrap();
    assert_eq!(
        head.seq, acked,
        "acknowledged appends and the stream disagree"
    );
    assert!(acked > 0);
    let writers: Vec<Vec<u8>> = nodes[0]
        .agent_entries(agent, 1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.body)
        .collect();
    let switches = writers.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches <= 20,
        "{switches} changes of writer in {} entries, with 20 hand-overs",
        writers.len()
    );
    assert!(matches!(
        nodes[1].verify(Box::new(|_| {})).await.unwrap(),
        Verification::Ok(_)
    ));
}

/// What the serving nodes' lease managers rely on: heartbeats on the database's clock
/// (live while younger than a lease, gone after `leave`), the owner of a shard with the
/// URL it advertised, and `renew_all` renewing the leases still held in one statement
/// while dropping (and fencing) the one another node took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_owners_and_renewing_every_lease_at_once() {
    let Some(l) = Ledger::new(Backend::Postgres, 70).await else {
        return;
    };
    let cluster = Arc::new(
        aura_core::keystore::Signer::ephemeral(
            "cluster",
            &aura_core::door::SeededEntropy::new(70 + 100_000),
        )
        .unwrap(),
    );
    let other = signer(71);
    PgStore::enroll(
        l.url(),
        cluster,
        other.public_key(),
        "us",
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let a = open_fenced(&l, &l.signer).await;
    let b = open_fenced(&l, &other).await;
    let ttl = std::time::Duration::from_millis(600);
    assert!(a.nodes().await.unwrap().is_empty());
    assert!(a.live_nodes(ttl).await.unwrap().is_empty());
    let advert = |url: &str| aura_store::postgres::Advert {
        url: url.into(),
        region: "eu".into(),
        models: vec!["smollm2".into()],
        agents: 3,
        missions: 1,
    };
    a.heartbeat(&advert("http://a:8080")).await.unwrap();
    b.heartbeat(&advert("http://b:8080")).await.unwrap();
    let nodes = a.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    let me = nodes.iter().find(|n| n.node == a.node_id()).unwrap();
    assert_eq!(me.advert, advert("http://a:8080"));
    assert!(me.heartbeat_ms < 1000, "{}", me.heartbeat_ms);
    assert_eq!(a.live_nodes(ttl).await.unwrap().len(), 2);
    b.leave().await.unwrap();
    assert_eq!(a.live_nodes(ttl).await.unwrap(), vec![a.node_id()]);

    let (s1, s2, s3) = (1, 2, 3);
    let l1 = a.acquire(s1, ttl).await.unwrap().unwrap();
    let l2 = a.acquire(s2, ttl).await.unwrap().unwrap();
    assert_eq!(
        a.owner(s1).await.unwrap(),
        Some((a.node_id(), "http://a:8080".to_owned()))
    );
    assert_eq!(a.owner(s3).await.unwrap(), None);
    // Shard 2's lease runs out and B takes it; shard 1's is renewed in time.
    tokio::time::sleep(ttl / 2).await;
    assert_eq!(a.renew_all(&[l1], ttl).await.unwrap(), vec![l1]);
    tokio::time::sleep(ttl / 2 + std::time::Duration::from_millis(150)).await;
    b.acquire(s2, ttl * 10).await.unwrap().unwrap();
    assert_eq!(a.renew_all(&[l1, l2], ttl).await.unwrap(), vec![l1]);
    assert_eq!(
        a.owner(s2).await.unwrap(),
        Some((b.node_id(), "http://b:8080".to_owned()))
    );
    // The lost lease is fenced here at once; the renewed one still takes appends.
    let in_shard = |shard: u32| {
        (0..=255u8)
            .map(agent)
            .find(|x| aura_store::postgres::shard_of(*x) == shard)
            .unwrap()
    };
    assert!(matches!(
        a.append(vec![note(in_shard(s2), Seq::Next, "stale")]).await,
        Err(Error::Fenced { .. })
    ));
    a.append(vec![note(in_shard(s1), Seq::Next, "live")])
        .await
        .unwrap();
    // Abandoning a lease fences it here without touching the database.
    a.abandon(s1);
    assert!(matches!(
        a.append(vec![note(in_shard(s1), Seq::Next, "abandoned")])
            .await,
        Err(Error::Fenced { .. })
    ));
    assert_eq!(
        a.owner(s1).await.unwrap().map(|(n, _)| n),
        Some(a.node_id())
    );
}
